//! Heartbeat v1's resource script `dist/heartbeat/tandemdisk`, the
//! counterpart of `drbddisk`: start promotes, stop demotes, status says
//! "running" only on the Primary — driven against a real pair.

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
    let p = Pair::up_full("s3cret", 16 << 20, "c-max-rate 4G;", "", "");
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 30);
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
