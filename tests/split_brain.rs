//! Split brain: both nodes write as Primary while apart. Detected on both
//! sides, handlers run, never merged; `split-brain-report` tells what each
//! side wrote; manual recovery and every automatic policy converge to the
//! chosen side, moving the union of both sides' changes and saving the
//! loser's blocks first.

mod common;

use common::pair::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SMALL: u64 = 16 << 20;

fn uri(port: u16) -> String {
    format!("nbd://127.0.0.1:{port}/r0")
}

/// A connected, synced pair (alpha Primary) with `net` options.
fn synced_pair(net: &str, extra: &str) -> Pair {
    let p = Pair::up_full("s3cret", SMALL, "c-max-rate 4G;", net, extra);
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 60);
    p.beta.wait_for("ds:UpToDate/UpToDate", 10);
    p
}

/// Split the pair and let both write as Primary: alpha writes
/// `alpha_kib` at 0 with 0xaa, beta `beta_kib` at 1 MiB with 0xbb. The
/// roles left afterwards are the caller's choice.
fn diverge(p: &Pair, alpha_kib: u64, beta_kib: u64, alpha_stays: bool, beta_stays: bool) {
    p.beta.adm_ok(&["disconnect", "r0"]);
    p.alpha.adm_ok(&["disconnect", "r0"]);
    if alpha_kib > 0 {
        qemu_io(&uri(p.nbd_alpha), &[&format!("write -P 0xaa 0 {alpha_kib}k")]);
    }
    p.beta.adm_ok(&["primary", "r0"]);
    if beta_kib > 0 {
        qemu_io(&uri(p.nbd_beta), &[&format!("write -P 0xbb 1M {beta_kib}k")]);
    }
    if !alpha_stays {
        p.alpha.adm_ok(&["secondary", "r0"]);
    }
    if !beta_stays {
        p.beta.adm_ok(&["secondary", "r0"]);
    }
}

fn region(image: &Path, at: u64, kib: u64) -> Vec<u8> {
    let all = std::fs::read(image).expect("image");
    all[at as usize..(at + kib * 1024) as usize].to_vec()
}

fn all(v: &[u8], b: u8) -> bool {
    v.iter().all(|&x| x == b)
}

fn wait_file_lines(path: &Path, want: usize, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= want {
            return text;
        }
        assert!(Instant::now() < deadline, "{} has {text:?}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn saved_files(run_dir: &Path) -> Vec<PathBuf> {
    saved_files_in(&run_dir.join("saved"))
}

fn saved_files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn json_u64(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_u64().unwrap_or_else(|| panic!("{path:?} in {v}"))
}

#[test]
fn split_brain_is_detected_reported_and_recovered_by_hand_moving_only_the_union() {
    // Removed with the directory, even when the test fails.
    let handler_dir = tempfile::tempdir().expect("tempdir");
    let handlers_log = handler_dir.path().join("handlers.log");
    let handlers = format!(
        r#"handlers {{ split-brain "echo split-brain $DRBD_RESOURCE $TANDEM_NODE >> {log}"; initial-split-brain "echo initial $DRBD_RESOURCE $TANDEM_NODE >> {log}"; }}"#,
        log = handlers_log.display()
    );
    let p = synced_pair("", &handlers);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // alpha: 64 KiB = 16 blocks; beta: 32 KiB = 8 blocks, both as Primary.
    diverge(&p, 64, 32, true, true);
    p.alpha.adm_ok(&["connect", "r0"]);
    p.beta.adm_ok(&["connect", "r0"]);
    p.alpha.wait_for("cs:StandAlone", 20);
    p.beta.wait_for("cs:StandAlone", 20);

    // Both sides ran both handlers, with the resource's name.
    let calls = wait_file_lines(&handlers_log, 4, 20);
    for line in [
        "initial r0 alpha",
        "initial r0 beta",
        "split-brain r0 alpha",
        "split-brain r0 beta",
    ] {
        assert!(calls.lines().any(|l| l == line), "{line:?} missing from {calls:?}");
    }
    let logs = p.alpha.log_text() + &p.beta.log_text();
    assert!(logs.contains("Split-Brain detected but unresolved"), "{logs}");
    let status = p.alpha.adm_ok(&["status", "r0"]);
    assert!(status.contains("split-brain:yes"), "{status}");

    // Nothing merged: each disk still has only its own writes.
    assert!(all(&region(&p.alpha.image, 0, 64), 0xaa));
    assert!(all(&region(&p.alpha.image, 1 << 20, 32), 0));
    assert!(all(&region(&p.beta.image, 0, 64), 0));
    assert!(all(&region(&p.beta.image, 1 << 20, 32), 0xbb));

    // The report's figures are what was written.
    let text = p.alpha.adm_ok(&["split-brain-report", "r0"]);
    assert!(text.contains("split brain between alpha and beta"), "{text}");
    assert!(text.contains("16 blocks (64 KiB)"), "{text}");
    assert!(text.contains("8 blocks (32 KiB)"), "{text}");
    assert!(text.contains("If beta discards its data"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&p.beta.adm_ok(&["split-brain-report", "--json", "r0"])).expect("report json");
    assert_eq!(json["split_brain"], true, "{json}");
    assert_eq!(json_u64(&json, &["me", "blocks_changed"]), 8, "{json}");
    assert_eq!(json_u64(&json, &["me", "bytes_changed"]), 32 * 1024, "{json}");
    assert_eq!(json_u64(&json, &["peer", "blocks_changed"]), 16, "{json}");
    let now = before + 600;
    for side in ["me", "peer"] {
        let first = json_u64(&json, &[side, "first_write_s"]);
        let last = json_u64(&json, &[side, "last_write_s"]);
        assert!(before <= first && first <= last && last <= now, "{side}: {json}");
    }

    // Manual recovery, beta the victim: refused while Primary, then done.
    let out = p.beta.adm(&["connect", "--discard-my-data", "r0"]);
    assert_eq!(out.status.code(), Some(11), "{out:?}");
    p.beta.adm_ok(&["secondary", "r0"]);
    let sent_before = p.alpha.counter("ns");
    p.beta.adm_ok(&["--", "--discard-my-data", "connect", "r0"]);
    p.alpha.adm_ok(&["connect", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 30);
    p.beta.wait_for("ds:UpToDate/UpToDate", 10);
    p.assert_identical();
    assert!(
        all(&region(&p.beta.image, 0, 64), 0xaa),
        "the survivor's writes are kept"
    );
    assert!(
        all(&region(&p.beta.image, 1 << 20, 32), 0),
        "the victim's writes are discarded"
    );
    // The resync moved the union of both sides' changes: 16 + 8 blocks.
    assert_eq!(p.alpha.counter("ns") - sent_before, 24 * 4);

    // And beta's discarded blocks were saved first.
    let files = saved_files(&p.beta.run_dir);
    let img = files.iter().find(|f| f.extension().is_some_and(|e| e == "img"));
    let ranges = files.iter().find(|f| f.extension().is_some_and(|e| e == "ranges"));
    let (img, ranges) = (img.expect("saved image"), ranges.expect("saved ranges"));
    let list = std::fs::read_to_string(ranges).expect("ranges");
    assert!(list.lines().any(|l| l == "1048576 32768"), "{list}");
    assert!(all(&region(img, 1 << 20, 32), 0xbb), "saved image holds beta's writes");
    assert_eq!(
        std::fs::metadata(img).expect("img").len(),
        SMALL,
        "the image mirrors the device's offsets"
    );
}

/// After an automatic recovery: identical replicas, the winner's writes.
fn assert_winner(p: &Pair, winner: &str) {
    p.alpha.wait_for("cs:Connected", 30);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 30);
    p.beta.wait_for("ds:UpToDate/UpToDate", 30);
    p.assert_identical();
    let img = &p.alpha.image;
    let (a, b) = (all(&region(img, 0, 64), 0xaa), all(&region(img, 1 << 20, 32), 0xbb));
    match winner {
        "alpha" => assert!(a && !b, "alpha should have won"),
        _ => assert!(b && !a, "beta should have won"),
    }
    let logs = p.alpha.log_text() + &p.beta.log_text();
    assert!(logs.contains("automatically solved"), "{logs}");
    let loser = if winner == "alpha" { &p.beta } else { &p.alpha };
    assert!(
        !saved_files(&loser.run_dir).is_empty(),
        "the loser's blocks were not saved"
    );
}

fn reconnect(p: &Pair) {
    p.alpha.adm_ok(&["connect", "r0"]);
    p.beta.adm_ok(&["connect", "r0"]);
}

#[test]
fn discard_least_changes_keeps_the_side_that_wrote_more() {
    let p = synced_pair("after-sb-0pri discard-least-changes;", "");
    diverge(&p, 64, 32, false, false);
    reconnect(&p);
    assert_winner(&p, "alpha");
}

#[test]
fn discard_younger_primary_keeps_the_primary_from_before_the_split() {
    // beta wrote more, but alpha was Primary before the split.
    let p = synced_pair("after-sb-0pri discard-younger-primary;", "");
    diverge(&p, 64, 512, false, false);
    reconnect(&p);
    assert_winner(&p, "alpha");
}

#[test]
fn discard_older_primary_keeps_the_node_promoted_during_the_split() {
    let p = synced_pair("after-sb-0pri discard-older-primary;", "");
    diverge(&p, 64, 32, false, false);
    reconnect(&p);
    assert_winner(&p, "beta");
}

#[test]
fn discard_node_names_the_loser() {
    let p = synced_pair("after-sb-0pri discard-node-alpha;", "");
    diverge(&p, 64, 32, false, false);
    reconnect(&p);
    assert_winner(&p, "beta");
}

#[test]
fn discard_zero_changes_refuses_when_both_wrote() {
    let p = synced_pair("after-sb-0pri discard-zero-changes;", "");
    diverge(&p, 64, 32, false, false);
    reconnect(&p);
    p.alpha.wait_for("cs:StandAlone", 20);
    p.beta.wait_for("cs:StandAlone", 20);
    let logs = p.alpha.log_text();
    assert!(logs.contains("both sides changed data"), "{logs}");
}

#[test]
fn discard_secondary_keeps_the_primary() {
    // alpha stays Primary (no client holds it); beta wrote more but is Secondary.
    let p = synced_pair("after-sb-1pri discard-secondary;", "");
    diverge(&p, 64, 512, true, false);
    reconnect(&p);
    assert_winner(&p, "alpha");
    p.alpha.wait_for("ro:Primary/Secondary", 5);
}

#[test]
fn two_primaries_call_pri_lost_demotes_the_loser() {
    let p = synced_pair(
        "after-sb-0pri discard-least-changes; after-sb-2pri call-pri-lost-after-sb;",
        "",
    );
    diverge(&p, 64, 512, true, true);
    reconnect(&p);
    assert_winner(&p, "beta");
    p.beta.wait_for("ro:Primary/Secondary", 5);
}

#[test]
fn manual_recovery_with_the_old_primary_as_victim_converges_too() {
    let mut p = synced_pair("", "");
    // alpha saves a victim's blocks where the operator said (`--save-dir`),
    // not under its run directory. It restarts for that: a crash, then up.
    let save_dir = p.dir.path().join("elsewhere");
    p.alpha.kill9();
    p.alpha.args = vec!["--save-dir".into(), save_dir.to_string_lossy().into_owned()];
    p.alpha.start();
    p.alpha.adm_ok(&["up", "r0"]);
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 30);
    p.alpha.adm_ok(&["primary", "r0"]);
    diverge(&p, 64, 32, true, true);
    reconnect(&p);
    p.alpha.wait_for("cs:StandAlone", 20);
    p.beta.wait_for("cs:StandAlone", 20);
    // alpha is the victim this time: it steps down and discards.
    p.alpha.adm_ok(&["secondary", "r0"]);
    let sent_before = p.beta.counter("ns");
    p.alpha.adm_ok(&["connect", "--discard-my-data", "r0"]);
    p.beta.adm_ok(&["connect", "r0"]);
    p.beta
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 30);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 10);
    p.assert_identical();
    assert!(
        all(&region(&p.alpha.image, 1 << 20, 32), 0xbb),
        "the survivor's writes are kept"
    );
    assert!(
        all(&region(&p.alpha.image, 0, 64), 0),
        "the victim's writes are discarded"
    );
    assert_eq!(
        p.beta.counter("ns") - sent_before,
        24 * 4,
        "the union of both sides' changes moved"
    );
    let files = saved_files_in(&save_dir);
    let img = files.iter().find(|f| f.extension().is_some_and(|e| e == "img"));
    let img = img.unwrap_or_else(|| panic!("no saved image in {}: {files:?}", save_dir.display()));
    assert!(all(&region(img, 0, 64), 0xaa), "the saved image holds alpha's writes");
    assert!(
        saved_files(&p.alpha.run_dir).is_empty(),
        "nothing saved under the run directory"
    );
}

#[test]
fn discard_zero_changes_picks_the_side_that_wrote() {
    // beta was promoted but wrote nothing: its (empty) changes are discarded.
    let p = synced_pair("after-sb-0pri discard-zero-changes;", "");
    diverge(&p, 64, 0, false, false);
    reconnect(&p);
    p.alpha.wait_for("cs:Connected", 30);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 30);
    p.assert_identical();
    assert!(all(&region(&p.beta.image, 0, 64), 0xaa));
    let logs = p.alpha.log_text() + &p.beta.log_text();
    assert!(
        logs.contains("automatically solved") && logs.contains("changed nothing"),
        "{logs}"
    );
}

#[test]
fn consensus_accepts_only_a_victim_that_is_secondary() {
    // The 0pri policy (younger primary) picks beta, the Secondary: accepted.
    let p = synced_pair("after-sb-0pri discard-younger-primary; after-sb-1pri consensus;", "");
    diverge(&p, 64, 32, true, false);
    reconnect(&p);
    assert_winner(&p, "alpha");
    // Least changes would pick alpha, the Primary: refused.
    let p = synced_pair("after-sb-0pri discard-least-changes; after-sb-1pri consensus;", "");
    diverge(&p, 32, 64, true, false);
    reconnect(&p);
    p.alpha.wait_for("cs:StandAlone", 20);
    let logs = p.alpha.log_text();
    assert!(logs.contains("that victim is the Primary"), "{logs}");
}
