//! `wait-connect all` and `wait-sync all` wait for every resource, as
//! drbdadm's do, not for the first one only: with two resources on one
//! pair, each returns 0 only once both are there, and a timeout names the
//! resource still missing, with its state.

mod common;

use common::pair::*;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn wait_connect_all_waits_for_every_resource() {
    let p = Pair::up_two(16 << 20, "c-max-rate 4G;", "c-max-rate 4G;");
    p.alpha.wait_for_on(0, "cs:Connected", 20);
    p.alpha.wait_for_on(1, "cs:Connected", 20);
    // beta leaves r1 only: alpha's r0 stays connected, its r1 waits.
    p.beta.adm_ok(&["disconnect", "r1"]);
    p.alpha.wait_for_on(1, "cs:WFConnection", 10);
    p.alpha.adm_ok(&["wait-connect", "--timeout", "3", "r0"]);
    let out = p.alpha.adm(&["wait-connect", "--timeout", "3", "all"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert!(err.contains("r1: still WFConnection after 3s"), "{err}");
    assert!(!err.contains("r0"), "{err}");
    // Still waiting while r1 is away, and done once it is back.
    let mut waiting = Command::new(TANDEMADM)
        .args(["-c", &p.alpha.conf.to_string_lossy(), "--node", "alpha", "--run-dir"])
        .arg(&p.alpha.run_dir)
        .args(["wait-connect", "--timeout", "30", "all"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("wait-connect");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        matches!(waiting.try_wait(), Ok(None)),
        "wait-connect all returned with r1 away"
    );
    p.beta.adm_ok(&["connect", "r1"]);
    let out = waiting.wait_with_output().expect("wait-connect");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(p.alpha.device_line(1).contains("cs:Connected"), "{}", p.alpha.status());
    // A resource that does not exist is still an unknown resource.
    let out = p.alpha.adm(&["wait-connect", "--timeout", "3", "r7"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(20), "{err}");
    assert!(err.contains("r7: no such resource"), "{err}");
}

#[test]
fn wait_sync_all_waits_for_every_resync() {
    // r0 resyncs at full speed; r1's 32 MiB at 4 MiB/s take 8 seconds.
    let p = Pair::up_two(32 << 20, "c-max-rate 4G;", "resync-rate 4M; c-plan-ahead 0;");
    p.alpha.wait_for_on(0, "cs:Connected", 20);
    p.alpha.wait_for_on(1, "cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r1"]);
    p.alpha.wait_for_on(1, "cs:SyncSource", 10);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for_on(0, "ds:UpToDate/UpToDate", 30);
    // r0 is in sync, r1 is not yet.
    let out = p.alpha.adm(&["wait-sync", "--timeout", "1", "all"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert!(err.contains("r1: still SyncSource after 1s"), "{err}");
    assert!(!err.contains("r0"), "{err}");
    p.alpha.adm_ok(&["wait-sync", "--timeout", "60", "all"]);
    for minor in [0, 1] {
        assert!(
            p.alpha.device_line(minor).contains("cs:Connected")
                && p.alpha.device_line(minor).contains("ds:UpToDate/UpToDate"),
            "{}",
            p.alpha.status()
        );
    }
}
