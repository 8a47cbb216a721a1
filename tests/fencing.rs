//! `fencing resource-only`: a Primary that loses its peer runs `fence-peer`
//! before completing further writes. The handler's exit code decides: the
//! peer outdated → writes go on, and the outdated peer refuses promotion;
//! the handler failed → writes stay held and the operator sees why.

mod common;

use common::pair::*;
use common::{stand_in, TANDEMADM};
use std::time::Duration;

const SMALL: u64 = 16 << 20;

fn pair_with_fence_handler(handler: &str) -> Pair {
    let extra = format!(r#"handlers {{ fence-peer "{handler}"; }}"#);
    let p = Pair::up_full("s3cret", SMALL, "c-max-rate 4G; fencing resource-only;", "", &extra);
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 60);
    p.beta.wait_for("ds:UpToDate/UpToDate", 10);
    p
}

fn uri(p: &Pair) -> String {
    format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha)
}

#[test]
fn a_peer_outdated_by_the_handler_lets_writes_continue_and_cannot_be_promoted() {
    // The handler outdates beta over "another channel": its control socket.
    let dir = tempfile::tempdir().expect("tmp");
    let script = dir.path().join("fence.sh");
    let p = pair_with_fence_handler(&script.to_string_lossy());
    stand_in(
        &script,
        &format!(
            "[ \"$DRBD_RESOURCE\" = r0 ] || exit 1\n{} -c {} --node beta --run-dir {} outdate r0 && exit 4\nexit 1",
            TANDEMADM,
            p.beta.conf.display(),
            p.beta.run_dir.display()
        ),
    );

    p.beta.adm_ok(&["disconnect", "r0"]);
    // The write completes: the handler outdated beta (exit code 4).
    qemu_io(&uri(&p), &["write -P 0x61 0 64k"]);
    p.beta.wait_for("ds:Outdated/DUnknown", 10);
    let log = p.alpha.log_text();
    assert!(log.contains("fence-peer") && log.contains("is Outdated"), "{log}");
    let out = p.beta.adm(&["primary", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Outdated"), "{err}");

    // Reconnected, beta catches up and is UpToDate again.
    p.beta.adm_ok(&["connect", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 30);
    p.assert_identical();
}

#[test]
fn a_failing_handler_holds_writes_until_the_peer_returns() {
    let p = pair_with_fence_handler("exit 1");
    p.beta.adm_ok(&["disconnect", "r0"]);
    let u = uri(&p);
    let writer = std::thread::spawn(move || qemu_io(&u, &["write -P 0x62 0 64k"]));
    p.alpha.wait_for("C s--", 10);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!writer.is_finished(), "a write completed although fencing failed");
    let status = p.alpha.adm_ok(&["status", "r0"]);
    assert!(
        status.contains("suspended:fencing") && status.contains("exit code 1"),
        "{status}"
    );
    // The peer comes back: the held write completes, nothing is lost.
    p.beta.adm_ok(&["connect", "r0"]);
    writer.join().expect("writer");
    p.alpha
        .wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 30);
    p.assert_identical();
    let beta = std::fs::read(&p.beta.image).expect("beta");
    assert!(beta[..65536].iter().all(|&b| b == 0x62));
}

#[test]
fn resume_io_releases_held_writes_on_the_operators_word() {
    let p = pair_with_fence_handler("exit 6");
    p.beta.adm_ok(&["disconnect", "r0"]);
    let u = uri(&p);
    let writer = std::thread::spawn(move || qemu_io(&u, &["write -P 0x63 0 4k"]));
    p.alpha.wait_for("C s--", 10);
    let status = p.alpha.adm_ok(&["status", "r0"]);
    assert!(status.contains("is Primary"), "{status}");
    p.alpha.adm_ok(&["resume-io", "r0"]);
    writer.join().expect("writer");
    p.alpha.wait_for("C r--", 10);
}
