//! Online verify and checksum-based resync on a real pair: a clean pair
//! verifies with zero differences even under live writes, a block corrupted
//! behind Tandem's back on either side is found and repaired, and with
//! `csums-alg` only blocks that differ travel.

mod common;

use common::pair::*;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const SMALL: u64 = 16 << 20;

fn synced_pair(net: &str) -> Pair {
    let p = Pair::up_full("s3cret", SMALL, "c-max-rate 4G;", net, "");
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 60);
    p.beta.wait_for("ds:UpToDate/UpToDate", 10);
    p
}

/// Wait for a verify started on `d` to end; returns the log line.
fn verify_result(d: &Daemon, nth: usize) -> String {
    log_line(d, "online verify done", nth)
}

/// Wait for the `nth` line of `d`'s log that contains `what`; returns it.
fn log_line(d: &Daemon, what: &str, nth: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = d.log_text();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(what)).collect();
        if let Some(l) = lines.get(nth) {
            return (*l).to_owned();
        }
        assert!(Instant::now() < deadline, "no {what:?} (#{nth}) in:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Change 4 KiB of a backing file without telling the daemon.
fn corrupt(d: &Daemon, at: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(&d.image).expect("image");
    f.write_all_at(&[0x5a; 4096], at).expect("corrupt");
    f.sync_all().expect("sync");
}

#[test]
fn a_clean_pair_verifies_with_zero_differences_even_under_writes() {
    let p = synced_pair("verify-alg sha256;");
    qemu_io(&format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha), &["write -P 0x11 0 4M"]);
    // Writes keep landing while verify runs; none may be reported.
    let uri = format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha);
    let writer = std::thread::spawn(move || {
        for i in 0..20u64 {
            qemu_io(
                &uri,
                &[&format!("write -P 0x{:02x} {}k 256k", 0x20 + i, (i * 700) % 15000)],
            );
        }
    });
    p.alpha.adm_ok(&["verify", "r0"]);
    writer.join().expect("writer");
    let done = verify_result(&p.alpha, 0);
    assert!(done.contains("no differences"), "{done}\n{}", p.alpha.log_text());
    p.alpha.wait_for("oos:0", 10);
    p.assert_identical();
}

#[test]
fn verify_finds_a_block_corrupted_on_the_secondary_and_resync_oos_repairs_it() {
    let p = synced_pair("verify-alg crc32c;");
    qemu_io(&format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha), &["write -P 0x33 0 8M"]);
    corrupt(&p.beta, 2 << 20);
    // Verify may run from either side; here from the Secondary.
    p.beta.adm_ok(&["verify", "r0"]);
    let done = verify_result(&p.beta, 0);
    assert!(done.contains("1 blocks (4 KiB) out of sync"), "{done}");
    assert!(done.contains("2097152+4096"), "{done}");
    p.beta.wait_for("oos:4", 10);
    // The repair runs from the Primary, whose data the application sees.
    let out = p.beta.adm(&["resync-oos", "r0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run resync-oos there"),
        "{out:?}"
    );
    let sent = p.alpha.counter("ns");
    p.alpha.adm_ok(&["resync-oos", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 20);
    p.beta.wait_for("oos:0", 10);
    p.assert_identical();
    assert_eq!(p.alpha.counter("ns") - sent, 4, "only the bad block travels");
    // A second verify is clean.
    p.alpha.adm_ok(&["verify", "r0"]);
    assert!(verify_result(&p.alpha, 0).contains("no differences"));
}

#[test]
fn verify_finds_a_block_corrupted_on_the_primary_and_a_reconnect_resyncs_it() {
    let p = synced_pair("verify-alg md5;");
    corrupt(&p.alpha, 5 << 20);
    p.alpha.adm_ok(&["verify", "r0"]);
    let done = verify_result(&p.alpha, 0);
    assert!(done.contains("1 blocks (4 KiB) out of sync"), "{done}");
    p.alpha.wait_for("oos:4", 10);
    p.beta.adm_ok(&["disconnect", "r0"]);
    p.beta.adm_ok(&["connect", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 30);
    p.alpha.wait_for("oos:0", 10);
    p.assert_identical();
}

#[test]
fn the_target_of_a_verify_keeps_what_it_found_across_a_crash_of_its_own() {
    let mut p = synced_pair("verify-alg crc32c;");
    corrupt(&p.alpha, 3 << 20);
    p.alpha.adm_ok(&["verify", "r0"]);
    assert!(verify_result(&p.alpha, 0).contains("1 blocks (4 KiB) out of sync"));
    log_line(&p.beta, "online verify by alpha done", 0);
    // Answered after beta handled the verify's end, its bitmap write included.
    assert_eq!(p.beta.adm_ok(&["cstate", "r0"]).trim(), "Connected");
    p.beta.wait_for("oos:4", 10);
    p.beta.kill9();
    let dump = p.beta.adm_ok(&["dump-md", "r0"]);
    assert!(dump.contains("out of sync: 4 KiB (1 blocks)"), "{dump}");
    // Back, it connects and the block travels.
    p.beta.start();
    p.beta.adm_ok(&["up", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 30);
    p.alpha.wait_for("oos:0", 10);
    p.assert_identical();
}

#[test]
fn verify_without_an_algorithm_is_refused_with_the_fix() {
    let p = synced_pair("");
    let out = p.alpha.adm(&["verify", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(-14) Need a verify algorithm") && err.contains("verify-alg"),
        "{err}"
    );
}

#[test]
fn checksum_resync_sends_only_blocks_that_differ() {
    let p = synced_pair("csums-alg sha1;");
    p.beta.adm_ok(&["disconnect", "r0"]);
    // 64 KiB rewritten with the bytes already there (zeroes), 32 KiB changed.
    let uri = format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha);
    qemu_io(&uri, &["write -P 0 0 64k", "write -P 0x44 1M 32k"]);
    p.alpha.wait_for("oos:96", 10);
    let sent = p.alpha.counter("ns");
    let same = same_csum_kib(&p.alpha);
    p.beta.adm_ok(&["connect", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 30);
    p.assert_identical();
    assert_eq!(p.alpha.counter("ns") - sent, 32, "only the changed blocks travel");
    assert_eq!(same_csum_kib(&p.alpha) - same, 64, "the unchanged blocks were not sent");
}

/// `rs-same-csum:` of `status --verbose` (KiB not sent because digests matched).
fn same_csum_kib(d: &Daemon) -> u64 {
    let status = d.adm_ok(&["status", "--verbose", "r0"]);
    status
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rs-same-csum:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rs-same-csum in {status}"))
}

#[test]
fn an_interrupted_verify_resumes_where_it_stopped() {
    // 2 MiB/s: the 16 MiB verify takes about 8 s, time to interrupt it.
    let p = Pair::up_full(
        "s3cret",
        SMALL,
        "c-plan-ahead 0; resync-rate 2M;",
        "verify-alg crc32c;",
        "",
    );
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
    p.alpha.adm_ok(&["primary", "r0"]);
    p.alpha.adm_ok(&["verify", "r0"]);
    p.alpha.wait_for("cs:VerifyS", 5);
    // The other node is the verify's target, as in DRBD: VerifyT, with the
    // progress its monitoring reads.
    p.beta.wait_for("cs:VerifyT", 5);
    p.beta.wait_for("verified:", 5);
    assert_eq!(p.beta.adm_ok(&["cstate", "r0"]).trim(), "VerifyT");
    std::thread::sleep(Duration::from_millis(1500));
    p.beta.adm_ok(&["disconnect", "r0"]);
    p.alpha.wait_for("cs:WFConnection", 10);
    assert!(p.alpha.log_text().contains("online verify interrupted at block"));
    p.beta.adm_ok(&["connect", "r0"]);
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["verify", "r0"]);
    let done = verify_result(&p.alpha, 0);
    assert!(done.contains("no differences"), "{done}");
    p.beta.wait_for("cs:Connected", 10);
    assert!(p.beta.log_text().contains("online verify by alpha done"));
    let log = p.alpha.log_text();
    let resumed = log
        .lines()
        .find(|l| l.contains("online verify resumes at block"))
        .unwrap_or_else(|| panic!("no resume in\n{log}"));
    assert!(!resumed.contains("at block 0 "), "{resumed}");
}
