//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the
//! same bodies the libFuzzer targets run, so every test run re-checks every
//! input the fuzzers ever found interesting, crashes included.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        body(&data);
        n += 1;
    }
    assert!(n > 0, "corpus {} is empty", dir.display());
}

#[test]
fn nbd_option_corpus() {
    replay("nbd_option", tandem::fuzz_entry::nbd_option);
}

#[test]
fn nbd_request_corpus() {
    replay("nbd_request", tandem::fuzz_entry::nbd_request);
}

#[test]
fn config_corpus() {
    replay("config", tandem::fuzz_entry::config);
}

#[test]
fn superblock_corpus() {
    replay("superblock", tandem::fuzz_entry::superblock);
}

#[test]
fn control_corpus() {
    replay("control", tandem::fuzz_entry::control);
}

#[test]
fn peer_frame_corpus() {
    replay("peer_frame", tandem::fuzz_entry::peer_frame);
}

/// The seeds written in the current frame version decode whole, so the
/// fuzzer starts from frames that reach every message's decoder (the older
/// seeds stop at the version check), completion marks included.
#[test]
fn the_current_versions_peer_frame_seeds_decode_whole() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/peer_frame");
    for name in ["marks", "data-v2", "verify-state"] {
        let data = std::fs::read(dir.join(name)).expect("seed");
        let mut rest = &data[..];
        let mut frames = 0;
        while !rest.is_empty() {
            let (_, _, used) = tandem::wire::decode_frame(rest)
                .unwrap_or_else(|e| panic!("{name}, frame {frames}: {e}"))
                .unwrap_or_else(|| panic!("{name}, frame {frames}: cut short"));
            rest = &rest[used..];
            frames += 1;
        }
        assert!(frames > 0, "{name}");
    }
}
