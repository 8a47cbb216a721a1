//! The activity log as an operator meets it after a crash: a Primary that
//! had more extents hot than one 4 KiB log block holds (DRBD's default
//! `al-extents` is 1237, a block holds 1015) finds every one of them in the
//! on-disk ring when it comes back (`dump-md`), and marks them all out of
//! sync (the status file's `oos`). An `al-extents` beyond what the ring
//! holds is read as its maximum, and tandemadm says so. `adjust` applies a
//! new `al-extents` to a running resource at once (the status file's `al`).

mod common;

use common::pair::*;
use common::*;

/// Extents of the device (4 MiB each): more than one log block's 1015.
const EXTENTS: u64 = 1280;
/// Extents written before the crash, each once.
const WRITTEN: u64 = 1100;
const EXTENT_BYTES: u64 = 4 << 20;

/// A connected pair on blank images of `extents` extents, with these
/// `disk` options, alpha Primary. Both images are blank, so identical: no
/// initial sync.
fn blank_pair_alpha_primary(extents: u64, disk: &str) -> Pair {
    let p = Pair::up_full(
        "s3cret",
        extents * EXTENT_BYTES,
        &format!("c-max-rate 4G; {disk}"),
        "",
        "",
    );
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 20);
    p.alpha.adm_ok(&["primary", "r0"]);
    p
}

#[test]
fn a_crashed_primary_finds_and_resyncs_a_hot_set_larger_than_one_log_block() {
    let mut p = blank_pair_alpha_primary(EXTENTS, "al-extents 65534;");
    // The peer away: what alpha writes alone must reach it later.
    p.beta.adm_ok(&["disconnect", "r0"]);
    p.alpha.wait_for("cs:WFConnection", 10);

    let (mut c, _) = RawClient::handshake(p.nbd_alpha);
    for e in 0..WRITTEN {
        assert_eq!(
            c.write(e, e * EXTENT_BYTES, &pattern(e, 4096)),
            0,
            "write into extent {e}"
        );
    }
    drop(c);
    p.alpha.kill9();

    // The configuration asked for more than the ring holds: capped, said.
    let out = p.alpha.adm(&["dump-md", "r0"]);
    let (dump, warning) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{warning}");
    assert!(
        warning.contains("al-extents 65534") && warning.contains("using 8120"),
        "{warning}"
    );
    // Every extent written is in the ring (two blocks), none lost to a
    // block's bound.
    assert!(dump.contains("need apply-al"), "{dump}");
    assert!(
        dump.contains(&format!("{WRITTEN} hot extents: 0-{}", WRITTEN - 1)),
        "{dump}"
    );

    // Back up: all of them are out of sync, for the peer to receive.
    p.alpha.start();
    p.alpha.adm_ok(&["up", "r0"]);
    p.alpha.wait_for("cs:WFConnection", 20);
    assert_eq!(p.alpha.counter("oos"), WRITTEN * EXTENT_BYTES / 1024);
    assert!(
        p.alpha.log_text().contains(&format!("{WRITTEN} activity-log extents")),
        "{}",
        p.alpha.log_text()
    );
}

/// The first 4 KiB of each of `extents` extents written, one after another,
/// through qemu-io.
fn write_every_extent(uri: &str, extents: u64) {
    let cmds: Vec<String> = (0..extents)
        .map(|e| format!("write -P 0x5a {} 4k", e * EXTENT_BYTES))
        .collect();
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io(uri, &cmds);
}

#[test]
fn adjust_applies_a_new_al_extents_at_once() {
    const SMALL_EXTENTS: u64 = 16;
    let p = blank_pair_alpha_primary(SMALL_EXTENTS, "al-extents 7;");
    let uri = p.uri();

    // 7 extents hot, 16 written in turn: every write needs a transaction.
    write_every_extent(&uri, SMALL_EXTENTS);
    let before = p.alpha.counter("al");
    write_every_extent(&uri, SMALL_EXTENTS);
    assert_eq!(
        p.alpha.counter("al") - before,
        SMALL_EXTENTS,
        "al-extents 7 keeps evicting"
    );

    // The operator raises it the DRBD way; no detach, no restart.
    p.alpha.edit_conf("al-extents 7;", "al-extents 64;");
    p.beta.edit_conf("al-extents 7;", "al-extents 64;");
    p.alpha.adm_ok(&["adjust", "r0"]);
    p.beta.adm_ok(&["adjust", "r0"]);
    write_every_extent(&uri, SMALL_EXTENTS);
    let warm = p.alpha.counter("al");
    write_every_extent(&uri, SMALL_EXTENTS);
    assert_eq!(
        p.alpha.counter("al"),
        warm,
        "all 16 extents stay hot once adjust applied 64"
    );
}
