//! A backing disk that starts returning EIO (nbdkit's error filter behind
//! nbdfuse, `common::faulty_disk`). With `on-io-error detach` a Primary
//! detaches it and keeps serving its NBD client through the peer (reads and
//! writes; fio's verify stays green), a Secondary detaches and stays
//! connected; a replaced disk attached afterwards is resynced in full, the
//! same disk attached again only where it missed writes, and a Primary's
//! clients read on throughout. A Secondary's disk that hangs (nbdkit's
//! pause filter) costs the Primary its link after `timeout × ko-count`,
//! not its writes.

mod common;

use common::faulty_disk::FaultyDisk;
use common::pair::*;
use common::*;
use std::process::Command;

const SMALL: u64 = 16 << 20;

fn fio(uri: &str, verify_only: bool) -> String {
    let mode = if verify_only {
        "--verify_only=1"
    } else {
        "--do_verify=1"
    };
    fio_verified(
        uri,
        &[
            "--name=disk-failure",
            "--size=8m",
            "--bs=4k",
            "--iodepth=8",
            "--rw=randwrite",
            "--randseed=7",
            mode,
        ],
    )
}

/// qemu-io's `cmds` on `uri` complete, within 60 s: a client a hung disk
/// left waiting fails the test instead of hanging it.
fn client_io_completes(p: &Pair, uri: &str, cmds: &[&str]) {
    let mut c = Command::new("timeout");
    c.args(["60", "qemu-io", "-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = run(c.arg(uri));
    assert!(
        out.status.success(),
        "the client's I/O did not complete: {out:?}\nalpha:\n{}\nbeta:\n{}",
        p.alpha.log_text(),
        p.beta.log_text()
    );
}

/// `tandemadm attach r0` on `d` is refused, saying `why`.
fn attach_is_refused(d: &Daemon, why: &str) {
    let out = d.adm(&["attach", "r0"]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "attach of a disk still hung was accepted: {text}"
    );
    assert!(text.contains(why), "{text}");
}

/// Wait up to `secs` for `d`'s log to say `what`.
fn wait_for_log(d: &Daemon, what: &str, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !d.log_text().contains(what) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {what:?} in:\n{}",
            d.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// alpha's disk is a [`FaultyDisk`] in `scratch`; the pair is connected,
/// `primary` ("alpha" or "beta") is Primary and both are UpToDate. Returns
/// the disk, the pair and the Primary's NBD URI.
fn faulty_pair(scratch: &std::path::Path, disk_opts: &str, extra: &str, primary: &str) -> (FaultyDisk, Pair, String) {
    faulty_pair_net(scratch, disk_opts, "", extra, primary)
}

/// [`faulty_pair`] with more `net` options.
fn faulty_pair_net(
    scratch: &std::path::Path,
    disk_opts: &str,
    net: &str,
    extra: &str,
    primary: &str,
) -> (FaultyDisk, Pair, String) {
    let disk = FaultyDisk::start(scratch, "alpha", SMALL);
    let p = Pair::up_on(Some(&disk.file()), "s3cret", SMALL, disk_opts, net, extra);
    let (d, port) = if primary == "alpha" {
        (&p.alpha, p.nbd_alpha)
    } else {
        (&p.beta, p.nbd_beta)
    };
    d.wait_for("cs:Connected", 20);
    d.adm_ok(&["primary", "--force", "r0"]);
    d.wait_for("ds:UpToDate/UpToDate", 60);
    let uri = format!("nbd://127.0.0.1:{port}/r0");
    (disk, p, uri)
}

#[test]
fn a_failing_disk_is_detached_the_primary_serves_through_the_peer_and_a_new_disk_resyncs() {
    require_tool("fio", "fio");
    let scratch = tempfile::Builder::new().prefix("tandem-eio-").tempdir().expect("tmp");
    let handler_log = scratch.path().join("local-io-error.log");
    let (disk, p, uri) = faulty_pair(
        scratch.path(),
        "c-max-rate 4G; on-io-error call-local-io-error;",
        &format!(
            r#"handlers {{ local-io-error "echo $DRBD_RESOURCE >> {}"; }}"#,
            handler_log.display()
        ),
        "alpha",
    );

    // The disk fails; the client's writes and verify reads all succeed.
    disk.fail(true);
    let out = fio(&uri, false);
    assert!(!out.contains("verify:"), "{out}");
    p.alpha.wait_for("ds:Diskless/UpToDate", 10);
    assert!(p.alpha.status().contains("cs:Connected ro:Primary/Secondary"));
    let log = p.alpha.log_text();
    assert!(log.contains("disk detached"), "{log}");
    assert_eq!(std::fs::read_to_string(&handler_log).unwrap_or_default().trim(), "r0");
    // A fresh client reads the same data, from the peer.
    fio(&uri, true);

    // The disk is replaced: fresh metadata, attach, full resync.
    disk.fail(false);
    p.alpha.adm_ok(&["create-md", "--force", "r0"]);
    p.alpha.adm_ok(&["attach", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 60);
    let log = p.alpha.log_text();
    assert!(
        log.contains("beta sends every block (the disk is not the one detached), the link stays up"),
        "{log}"
    );
    p.assert_identical();
    fio(&uri, true);

    // The blank disk a running Primary attached says so: were the node to
    // crash now, its copy would be known as the Primary's.
    let mut p = p;
    p.alpha.kill9();
    let flags = p.alpha.md_flags();
    assert!(flags.iter().any(|f| f == "primary"), "{flags:?}");
}

#[test]
fn a_primary_reattaching_its_disk_keeps_serving_and_resyncs_only_what_it_missed() {
    let scratch = tempfile::Builder::new().prefix("tandem-eio-").tempdir().expect("tmp");
    let (disk, p, uri) = faulty_pair(scratch.path(), "c-max-rate 4G;", "", "alpha");
    qemu_io(&uri, &["write -P 0x33 0 1M"]);

    // The disk fails under a write, which lands on beta; alpha marks it.
    disk.fail(true);
    qemu_io(&uri, &["write -P 0x5a 1M 256k"]);
    p.alpha.wait_for("ds:Diskless/UpToDate", 10);
    disk.fail(false);
    // Written while diskless, in an extent the activity log never held:
    // only beta's bitmap knows that alpha's disk lacks it.
    qemu_io(&uri, &["write -P 0x6b 8M 64k"]);

    // A client reads on while the same disk is attached again: every read
    // must succeed, whether it is served by beta or by alpha's own disk.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, uri) = (std::sync::Arc::clone(&stop), uri.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = Command::new("qemu-io")
                    .args(["-f", "raw", "-r", &uri])
                    .args(["-c", "read -P 0x33 0 1M", "-c", "read -P 0x5a 1M 256k"])
                    .args(["-c", "read -P 0x6b 8M 64k"])
                    .output()
                    .expect("qemu-io");
                let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
                if out.status.success() && !said.contains("fail") && !said.contains("error") {
                    ok += 1;
                } else {
                    failed.push(said);
                }
            }
            (ok, failed)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    p.alpha.adm_ok(&["attach", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 30);
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = reader.join().expect("reader");
    assert!(
        failed.is_empty(),
        "{} reads failed across the attach: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(ok >= 3, "only {ok} reads");

    // Beta sent what alpha may have missed, not the 16 MiB device, over
    // the link that stayed up: as after a crash, the 4 MiB extent the
    // activity log held hot (the writes in flight when the disk failed may
    // or may not be on it), and the 64 KiB written while alpha was
    // diskless, which alpha learns of from beta.
    let log = p.beta.log_text();
    assert!(log.contains("resync started: 4160 KiB to send"), "{log}");
    let log = p.alpha.log_text();
    assert!(
        log.contains("disk attached while Primary; beta sends the 4096 KiB it may have missed, the link stays up"),
        "{log}"
    );
    p.assert_identical();
    qemu_io(
        &uri,
        &["read -P 0x33 0 1M", "read -P 0x5a 1M 256k", "read -P 0x6b 8M 64k"],
    );

    // The disk a running Primary attached says so: after a crash of the
    // node, its copy is known as the Primary's, not a Secondary's.
    let mut p = p;
    p.alpha.kill9();
    let flags = p.alpha.md_flags();
    assert!(flags.iter().any(|f| f == "primary"), "{flags:?}");
    assert!(
        !flags.iter().any(|f| f == "crashed-primary"),
        "it did not crash before: {flags:?}"
    );
}

#[test]
fn on_io_error_pass_on_keeps_the_disk_and_marks_what_it_missed() {
    let scratch = tempfile::Builder::new().prefix("tandem-eio-").tempdir().expect("tmp");
    let (disk, p, uri) = faulty_pair(scratch.path(), "c-max-rate 4G; on-io-error pass_on;", "", "alpha");

    // Every local I/O fails; the client's write lands on the peer and its
    // read is served from there.
    disk.fail(true);
    qemu_io(&uri, &["write -P 0x77 0 64k", "read -P 0x77 0 64k"]);
    // Its copy can no longer be trusted: Inconsistent, as DRBD does.
    p.alpha.wait_for("ds:Inconsistent/UpToDate", 5);
    p.alpha.wait_for("oos:64", 5);
    assert!(p.alpha.log_text().contains("on-io-error pass_on"));

    // The disk recovers; a reconnect makes it the SyncTarget.
    disk.fail(false);
    p.beta.adm_ok(&["disconnect", "r0"]);
    p.beta.adm_ok(&["connect", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 30);
    p.alpha.wait_for("oos:0", 30);
    p.assert_identical();
    // And the write the client was told succeeded is what both now hold.
    qemu_io(&uri, &["read -P 0x77 0 64k"]);
}

#[test]
fn a_primary_refuses_to_attach_a_disk_of_other_data_and_keeps_serving() {
    let scratch = tempfile::Builder::new().prefix("tandem-eio-").tempdir().expect("tmp");
    let (disk, p, uri) = faulty_pair(scratch.path(), "c-max-rate 4G;", "", "alpha");
    qemu_io(&uri, &["write -P 0x44 0 64k"]);
    disk.fail(true);
    qemu_io(&uri, &["write -P 0x45 64k 64k"]);
    p.alpha.wait_for("ds:Diskless/UpToDate", 10);
    disk.fail(false);

    // Metadata of other data: a resource that was Primary somewhere else.
    let mut other = Node::configured(SMALL, "meta-disk DIR/other.md;");
    other.adm_ok(&["create-md", "r0"]);
    other.start();
    other.adm_ok(&["up", "r0"]);
    other.adm_ok(&["primary", "--force", "r0"]);
    other.adm_ok(&["down", "r0"]);
    other.stop();
    let alpha_md = p.dir.path().join("alpha.md");
    std::fs::copy(other.dir.path().join("other.md"), &alpha_md).expect("copy metadata");

    let out = p.alpha.adm(&["attach", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("this disk holds data of a generation it never had") && err.contains("create-md --force r0"),
        "{err}"
    );
    // Nothing changed: the Primary serves through beta, over the same link.
    assert!(p
        .alpha
        .status()
        .contains("cs:Connected ro:Primary/Secondary ds:Diskless/UpToDate"));
    qemu_io(&uri, &["read -P 0x44 0 64k", "read -P 0x45 64k 64k"]);

    // The way out the refusal names.
    p.alpha.adm_ok(&["create-md", "--force", "r0"]);
    p.alpha.adm_ok(&["attach", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 60);
    p.assert_identical();
}

#[test]
fn a_secondary_whose_disk_fails_detaches_and_a_replacement_is_resynced_in_full() {
    require_tool("fio", "fio");
    let scratch = tempfile::Builder::new().prefix("tandem-eio-").tempdir().expect("tmp");
    // alpha's disk is the failing one; beta is the Primary here.
    let (disk, p, uri) = faulty_pair(scratch.path(), "c-max-rate 4G;", "", "beta");

    // The Secondary's disk fails under the Primary's writes: it detaches,
    // stays connected, and the Primary's client never notices.
    disk.fail(true);
    fio(&uri, false);
    p.alpha.wait_for("ro:Secondary/Primary ds:Diskless/UpToDate", 10);
    p.beta.wait_for("ds:UpToDate/Diskless", 10);
    assert!(p.alpha.log_text().contains("disk detached"));

    // The link drops and comes back while alpha has no disk: connected,
    // nothing to resync (there is nothing to write it to).
    p.beta.adm_ok(&["disconnect", "r0"]);
    p.beta.adm_ok(&["connect", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Secondary/Primary ds:Diskless/UpToDate", 20);
    p.beta
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/Diskless", 20);
    assert!(
        p.beta
            .log_text()
            .contains("alpha has no disk; connected without a resync"),
        "{}",
        p.beta.log_text()
    );
    fio(&uri, true);

    // Replaced and attached while connected: the connect that follows
    // decides on a full resync, and both end identical.
    disk.fail(false);
    p.alpha.adm_ok(&["create-md", "--force", "r0"]);
    p.alpha.adm_ok(&["attach", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate", 60);
    p.assert_identical();
    fio(&uri, true);
}

#[test]
fn a_full_disk_refuses_writes_with_enospc_stays_attached_and_resync_oos_repairs_it() {
    let scratch = tempfile::Builder::new().prefix("tandem-full-").tempdir().expect("tmp");
    let (disk, p, uri) = faulty_pair(scratch.path(), "c-max-rate 4G;", "", "alpha");
    qemu_io(&uri, &["write -P 0x11 0 64k"]);

    // The thin pool under the image runs full: the client is told ENOSPC
    // (not EIO: nothing is broken), reads go on, and the disk stays.
    disk.fill(true);
    let out = run(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x22 0 64k", &uri]));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("No space left on device"), "{text}");
    qemu_io(&uri, &["read -P 0x11 0 64k"]);
    // The peer took the write this disk refused: those blocks may differ,
    // and the bitmap says so.
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 5);
    p.alpha.wait_for("oos:64", 5);

    // Space is freed; the operator resyncs what is marked.
    disk.fill(false);
    p.alpha.adm_ok(&["resync-oos", "r0"]);
    p.alpha.wait_for("oos:0", 30);
    p.assert_identical();
    qemu_io(&uri, &["write -P 0x33 0 64k", "read -P 0x33 0 64k"]);
}

#[test]
fn a_secondary_whose_disk_runs_full_detaches_and_catches_up_by_bitmap_once_reattached() {
    let scratch = tempfile::Builder::new().prefix("tandem-full-").tempdir().expect("tmp");
    let (disk, p, uri) = faulty_pair(scratch.path(), "c-max-rate 4G;", "", "beta");
    let ns_after_initial_sync = p.beta.counter("ns");

    disk.fill(true);
    qemu_io(&uri, &["write -P 0x44 1M 256k", "read -P 0x44 1M 256k"]);
    p.alpha.wait_for("ds:Diskless/UpToDate", 10);
    qemu_io(&uri, &["write -P 0x45 4M 128k"]);

    // Space freed, the same disk attached again (no create-md): only what
    // it missed moves, not the whole device.
    disk.fill(false);
    p.alpha.adm_ok(&["attach", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate", 60);
    p.assert_identical();
    let status = p.beta.status();
    let moved = p.beta.counter("ns") - ns_after_initial_sync;
    // 384 KiB written while it was away, rounded to bitmap blocks and
    // activity-log replay; far from the device's 16 MiB.
    assert!((384..SMALL / 1024 / 2).contains(&moved), "{moved} KiB moved:\n{status}");
}

#[test]
fn a_secondary_whose_disk_hangs_is_dropped_after_timeout_times_ko_count_and_resynced_once_it_answers() {
    let scratch = tempfile::Builder::new().prefix("tandem-hang-").tempdir().expect("tmp");
    // alpha's disk is the one that hangs; beta is the Primary. It starts
    // with ko-count 0 (wait forever) and the operator shortens the wait to
    // 1 s × 3 the way DRBD's would: edit the file, `adjust`.
    let (disk, p, uri) = faulty_pair_net(scratch.path(), "c-max-rate 4G;", "timeout 10; ko-count 0;", "", "beta");
    p.beta.edit_conf("ko-count 0;", "ko-count 3;");
    p.beta.adm_ok(&["adjust", "r0"]);
    p.beta
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 20);
    qemu_io(&uri, &["write -P 0x11 0 64k"]);

    // alpha's disk stops answering; alpha's process, the link and its
    // pings stay alive, so only ko-count can tell. The client's write
    // completes on beta alone instead of waiting forever.
    let hung = disk.hung();
    client_io_completes(&p, &uri, &["write -P 0x22 1M 64k", "read -P 0x22 1M 64k"]);
    let log = p.beta.log_text();
    assert!(
        log.contains("Remote failed to finish a request within ko-count * timeout: alpha left one unanswered"),
        "{log}"
    );
    p.beta.wait_for("oos:64", 10);

    // The disk answers again: alpha finishes what it held, the link comes
    // back and the resync brings alpha the write it missed.
    drop(hung);
    p.beta
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 60);
    p.beta.wait_for("oos:0", 30);
    p.assert_identical();
    qemu_io(&uri, &["read -P 0x11 0 64k", "read -P 0x22 1M 64k"]);
}

#[test]
fn a_primary_whose_disk_hangs_detaches_it_after_disk_timeout_serves_through_the_peer_and_resyncs_it_once_it_answers() {
    let scratch = tempfile::Builder::new()
        .prefix("tandem-disk-timeout-")
        .tempdir()
        .expect("tmp");
    // alpha is the Primary and its own disk is the one that hangs: with
    // disk-timeout 2 s the client's I/O goes on through beta instead of
    // waiting for the disk forever. It starts at 0 (forever, the default)
    // and the operator sets it the DRBD way: edit the file, `adjust`.
    let (disk, p, uri) = faulty_pair(scratch.path(), "c-max-rate 4G; disk-timeout 0;", "", "alpha");
    p.alpha.edit_conf("disk-timeout 0;", "disk-timeout 20;");
    p.alpha.adm_ok(&["adjust", "r0"]);
    qemu_io(&uri, &["write -P 0x11 0 64k"]);

    let hung = disk.hung();
    client_io_completes(
        &p,
        &uri,
        &["write -P 0x22 1M 64k", "read -P 0x22 1M 64k", "read -P 0x11 0 64k"],
    );
    let log = p.alpha.log_text();
    assert!(
        log.contains("unanswered for") && log.contains("(disk-timeout 2.0 s): disk detached as failed"),
        "{log}"
    );
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:Diskless/UpToDate", 10);
    // A link that drops and comes back finds alpha without a disk: it
    // connects without a resync and serves through beta again.
    p.beta.adm_ok(&["disconnect", "r0"]);
    p.beta.adm_ok(&["connect", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:Diskless/UpToDate", 20);
    qemu_io(&uri, &["read -P 0x22 1M 64k", "read -P 0x11 0 64k"]);

    // The old disk still holds the abandoned write: attaching it now could
    // let that write land after the resync. Refused, saying why; `status`
    // says so before anyone tries.
    let status = p.alpha.adm_ok(&["status", "r0"]);
    assert!(
        status.contains("1 request(s) abandoned by disk-timeout still on the old disk"),
        "{status}"
    );
    attach_is_refused(&p.alpha, "disk-timeout gave up on have not come back");

    // The disk answers again: what was abandoned comes back (and is
    // ignored), the same disk is attached and gets what it missed.
    drop(hung);
    wait_for_log(&p.alpha, "none is outstanding now", 30);
    p.alpha.adm_ok(&["attach", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 60);
    p.alpha.wait_for("oos:0", 30);
    p.assert_identical();
    qemu_io(&uri, &["read -P 0x11 0 64k", "read -P 0x22 1M 64k"]);
}

#[test]
fn a_primary_whose_disk_hangs_under_an_activity_log_write_fails_it_after_disk_timeout_instead_of_hanging() {
    let scratch = tempfile::Builder::new()
        .prefix("tandem-md-timeout-")
        .tempdir()
        .expect("tmp");
    let (disk, p, _) = faulty_pair(scratch.path(), "c-max-rate 4G; disk-timeout 20;", "", "alpha");
    // The metadata on the disk that hangs: internal, on both nodes (the
    // same data size), made afresh.
    let dir = p.dir.path().display().to_string();
    for d in [&p.beta, &p.alpha] {
        d.adm_ok(&["down", "r0"]);
        for node in ["alpha", "beta"] {
            d.edit_conf(&format!("meta-disk {dir}/{node}.md;"), "meta-disk internal;");
        }
        d.adm_ok(&["create-md", "--force", "r0"]);
        d.adm_ok(&["adjust", "r0"]);
        d.adm_ok(&["up", "r0"]);
    }
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 60);
    let uri = format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha);
    qemu_io(&uri, &["write -P 0x11 0 64k"]);

    // A write into a cold 4 MiB extent needs an activity-log transaction
    // first, on the disk that hangs: without a deadline on it, the whole
    // daemon would wait with it.
    let hung = disk.hung();
    client_io_completes(&p, &uri, &["write -P 0x33 8M 64k", "read -P 0x33 8M 64k"]);
    // The write queued behind it may be the first to reach disk-timeout:
    // either way the disk is failed.
    let log = p.alpha.log_text();
    assert!(
        log.contains("the activity log write did not finish within disk-timeout")
            && log.contains("disk detached as failed"),
        "{log}"
    );
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:Diskless/UpToDate", 10);
    // The activity-log write is still the kernel's: attach waits for it,
    // and status counts it with the disk's other abandoned requests.
    attach_is_refused(&p.alpha, "disk-timeout gave up on have not come back");
    let status = p.alpha.adm_ok(&["status", "r0"]);
    assert!(
        status.contains("abandoned by disk-timeout still on the old disk"),
        "{status}"
    );

    drop(hung);
    wait_for_log(&p.alpha, "none is outstanding now: the disk may be attached again", 30);
    p.alpha.adm_ok(&["attach", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 60);
    p.alpha.wait_for("oos:0", 30);
    let size = run_ok(Command::new("nbdinfo").args(["--size", &uri]));
    p.assert_identical_up_to(Some(size.trim().parse().expect("nbdinfo --size")));
    qemu_io(&uri, &["read -P 0x11 0 64k", "read -P 0x33 8M 64k"]);
}
