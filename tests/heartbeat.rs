//! Heartbeat v1's resource script `dist/heartbeat/tandemdisk`, the
//! counterpart of `drbddisk`: start promotes, stop demotes, status says
//! "running" on the Primary — driven against a real pair — and, as
//! drbddisk does, when it cannot tell.

mod common;

use common::pair::*;
use common::*;
use std::process::Command;

fn tandemdisk(d: &Daemon, args: &[&str]) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/heartbeat/tandemdisk");
    run(Command::new(script)
        .args(args)
        .env("TANDEMADM", TANDEMADM)
        .env(
            "TANDEMADM_ARGS",
            format!(
                "-c {} --node {} --run-dir {}",
                d.conf.display(),
                d.name,
                d.run_dir.display()
            ),
        )
        .env("TANDEMDISK_TRIES", "2"))
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn tandemdisk_start_stop_and_status_drive_the_roles() {
    let p = Pair::synced_sized(16 << 20);
    assert_eq!(
        stdout(&tandemdisk(&p.alpha, &["r0", "status"])).trim(),
        "running (Primary)"
    );
    assert_eq!(
        stdout(&tandemdisk(&p.beta, &["r0", "status"])).trim(),
        "stopped (Secondary)"
    );

    // beta cannot take over while alpha still holds the role: it says so.
    let out = tandemdisk(&p.beta, &["r0", "start"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot make r0 Primary"),
        "{out:?}"
    );

    // Heartbeat's failover: stop on alpha, start on beta.
    assert!(tandemdisk(&p.alpha, &["r0", "stop"]).status.success());
    assert!(tandemdisk(&p.beta, &["r0", "start"]).status.success());
    assert_eq!(
        stdout(&tandemdisk(&p.beta, &["r0", "status"])).trim(),
        "running (Primary)"
    );
    assert_eq!(
        stdout(&tandemdisk(&p.alpha, &["r0", "status"])).trim(),
        "stopped (Secondary)"
    );
    p.beta.wait_for("ro:Primary/Secondary", 10);
}

/// `status` with a stand-in tandemadm that exits `code` without a word.
fn status_when_tandemadm_exits(code: i32) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = stand_in(&dir.path().join("tandemadm"), &format!("exit {code}"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/heartbeat/tandemdisk");
    let out = run(Command::new(script).args(["r0", "status"]).env("TANDEMADM", &fake));
    assert!(out.status.success(), "{out:?}");
    stdout(&out).trim().to_owned()
}

#[test]
fn status_says_stopped_only_when_tandemd_is_away_or_the_resource_down() {
    // tandemadm: 3, no tandemd answers; 21, the resource is down.
    assert_eq!(status_when_tandemadm_exits(3), "stopped (Unconfigured)");
    assert_eq!(status_when_tandemadm_exits(21), "stopped (Unconfigured)");
    // Any other failure to ask (10: permission denied, a daemon that does
    // not answer in time): in doubt, running, so that heartbeat stops it here
    // before it starts the resource on the peer.
    let doubt = status_when_tandemadm_exits(10);
    assert!(
        doubt.starts_with("running") && doubt.contains("exit status 10"),
        "{doubt}"
    );
}
