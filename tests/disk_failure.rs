//! A backing disk that starts returning EIO: nbdkit's error filter behind
//! nbdfuse is the Primary's disk. With `on-io-error detach` the Primary
//! detaches it and keeps serving its NBD client through the peer (reads and
//! writes; fio's verify stays green); a replaced disk attached afterwards is
//! resynced in full.

mod common;

use common::pair::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SMALL: u64 = 16 << 20;

/// nbdkit (memory, error filter keyed on a trigger file) shown as a plain
/// file by nbdfuse. Drop unmounts and stops both.
struct FailingDisk {
    dir: PathBuf,
    nbdkit_pid: PathBuf,
    trigger: PathBuf,
}

impl FailingDisk {
    fn start(dir: &Path) -> FailingDisk {
        require_tool("nbdkit", "nbdkit");
        require_tool("nbdfuse", "libnbd-bin");
        std::fs::create_dir_all(dir.join("fuse")).expect("fuse dir");
        let port = free_port();
        let d = FailingDisk {
            dir: dir.to_owned(),
            nbdkit_pid: dir.join("nbdkit.pid"),
            trigger: dir.join("fail"),
        };
        let log = std::fs::File::create(dir.join("nbdkit.log")).expect("log");
        let status = Command::new("setsid")
            .args(["-f", "nbdkit", "-f", "-p", &port.to_string(), "-i", "127.0.0.1", "-P"])
            .arg(&d.nbdkit_pid)
            .args(["--filter=error", "memory", &format!("{SMALL}")])
            .args(["error=EIO", "error-rate=100%"])
            .arg(format!("error-file={}", d.trigger.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .status()
            .expect("nbdkit");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nbdkit did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::File::create(dir.join("nbdfuse.log")).expect("log");
        let status = Command::new("setsid")
            .args(["-f", "nbdfuse", "-P"])
            .arg(dir.join("nbdfuse.pid"))
            .arg(d.file())
            .arg(format!("nbd://127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .status()
            .expect("nbdfuse");
        assert!(status.success());
        while !d.file().exists() {
            assert!(Instant::now() < deadline, "nbdfuse did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn file(&self) -> PathBuf {
        self.dir.join("fuse/disk")
    }

    fn fail(&self, on: bool) {
        if on {
            std::fs::write(&self.trigger, b"").expect("trigger");
        } else {
            let _ = std::fs::remove_file(&self.trigger);
        }
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(self.dir.join("fuse"))
            .status();
        if let Ok(pid) = std::fs::read_to_string(&self.nbdkit_pid) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn fio(uri: &str, verify_only: bool) -> String {
    let mut args = vec![
        "--name=disk-failure".to_owned(),
        "--ioengine=nbd".to_owned(),
        format!("--uri={uri}"),
        "--size=8m".to_owned(),
        "--bs=4k".to_owned(),
        "--iodepth=8".to_owned(),
        "--rw=randwrite".to_owned(),
        "--verify=crc32c".to_owned(),
        "--verify_fatal=1".to_owned(),
        "--verify_state_save=0".to_owned(),
        "--randseed=7".to_owned(),
    ];
    if verify_only {
        args.push("--verify_only=1".to_owned());
    } else {
        args.push("--do_verify=1".to_owned());
    }
    run_ok(Command::new("fio").args(&args))
}

#[test]
fn a_failing_disk_is_detached_the_primary_serves_through_the_peer_and_a_new_disk_resyncs() {
    require_tool("fio", "fio");
    let scratch = tempfile::Builder::new().prefix("tandem-eio-").tempdir().expect("tmp");
    let disk = FailingDisk::start(scratch.path());
    let handler_log = scratch.path().join("local-io-error.log");
    let p = Pair::up_on(
        Some(&disk.file()),
        "s3cret",
        SMALL,
        "c-max-rate 4G; on-io-error call-local-io-error;",
        "",
        &format!(
            r#"handlers {{ local-io-error "echo $DRBD_RESOURCE >> {}"; }}"#,
            handler_log.display()
        ),
    );
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 60);
    let uri = format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha);

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
    p.assert_identical();
    fio(&uri, true);
}

#[test]
fn on_io_error_pass_on_keeps_the_disk_and_marks_what_it_missed() {
    let scratch = tempfile::Builder::new().prefix("tandem-eio-").tempdir().expect("tmp");
    let disk = FailingDisk::start(scratch.path());
    let p = Pair::up_on(
        Some(&disk.file()),
        "s3cret",
        SMALL,
        "c-max-rate 4G; on-io-error pass_on;",
        "",
        "",
    );
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 60);
    let uri = format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha);

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
fn a_secondary_whose_disk_fails_detaches_and_a_replacement_is_resynced_in_full() {
    require_tool("fio", "fio");
    let scratch = tempfile::Builder::new().prefix("tandem-eio-").tempdir().expect("tmp");
    let disk = FailingDisk::start(scratch.path());
    // alpha's disk is the failing one; beta is the Primary here.
    let p = Pair::up_on(Some(&disk.file()), "s3cret", SMALL, "c-max-rate 4G;", "", "");
    p.beta.wait_for("cs:Connected", 20);
    p.beta.adm_ok(&["primary", "--force", "r0"]);
    p.beta.wait_for("ds:UpToDate/UpToDate", 60);
    let uri = format!("nbd://127.0.0.1:{}/r0", p.nbd_beta);

    // The Secondary's disk fails under the Primary's writes: it detaches,
    // stays connected, and the Primary's client never notices.
    disk.fail(true);
    fio(&uri, false);
    p.alpha.wait_for("ro:Secondary/Primary ds:Diskless/UpToDate", 10);
    p.beta.wait_for("ds:UpToDate/Diskless", 10);
    assert!(p.alpha.log_text().contains("disk detached"));

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
