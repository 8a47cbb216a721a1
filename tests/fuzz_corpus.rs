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

/// The seeds written in the current frame version (`*-v2`, `marks`,
/// `verify-state`) decode whole, so the fuzzer starts from frames that
/// reach every message's decoder, completion marks included (the older
/// seeds, kept as they were found, stop at the version check).
#[test]
fn the_current_versions_peer_frame_seeds_decode_whole() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/peer_frame");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus") {
        let path = entry.expect("corpus entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !(name.ends_with("-v2") || name == "marks" || name == "verify-state") {
            continue;
        }
        let data = std::fs::read(&path).expect("seed");
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
        seeds += 1;
    }
    assert!(seeds >= 9, "{seeds} current-version seeds");
}
