//! The OCF resource agent `dist/ocf/tandem` against a live pair: it passes
//! `ocf-tester` (Debian resource-agents), reports roles with the OCF codes
//! for promoted and unpromoted instances, answers promote and demote on a
//! stopped resource as Pacemaker needs, and keeps the promotion score
//! current through notify without touching it during promote.

mod common;

use common::pair::*;
use common::*;
use std::process::{Command, Output};

const AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/ocf/tandem");

fn agent_cmd(d: &Daemon, action: &str) -> Command {
    let mut cmd = Command::new(AGENT);
    cmd.arg(action)
        .env("OCF_ROOT", "/usr/lib/ocf")
        .env("OCF_RESKEY_resource", "r0")
        .env("OCF_RESKEY_config", &d.conf)
        .env("OCF_RESKEY_node", d.name)
        .env("OCF_RESKEY_run_dir", &d.run_dir)
        .env("TANDEMADM", TANDEMADM);
    cmd
}

fn agent(d: &Daemon, action: &str) -> Output {
    run(&mut agent_cmd(d, action))
}

/// Pacemaker's view of the promotion score: a `crm_master` first in PATH
/// that records each call instead of talking to a cluster.
struct ScoreCalls {
    dir: tempfile::TempDir,
}

impl ScoreCalls {
    fn new() -> ScoreCalls {
        let dir = tempfile::Builder::new()
            .prefix("tandem-crm-master-")
            .tempdir()
            .expect("tempdir");
        stand_in(
            &dir.path().join("crm_master"),
            &format!("echo \"$*\" >> {}/calls", dir.path().display()),
        );
        ScoreCalls { dir }
    }

    /// The agent run as a clone instance (Pacemaker passes clone_max), with
    /// these notify variables or others.
    fn agent(&self, d: &Daemon, action: &str, env: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = agent_cmd(d, action);
        cmd.env("PATH", path).env("OCF_RESKEY_CRM_meta_clone_max", "2");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(&mut cmd)
    }

    /// The calls made since the last look, each as its arguments.
    fn take(&self) -> Vec<String> {
        let file = self.dir.path().join("calls");
        let calls = std::fs::read_to_string(&file).unwrap_or_default();
        let _ = std::fs::remove_file(&file);
        calls.lines().map(str::to_owned).collect()
    }
}

#[test]
fn the_agent_passes_ocf_tester_and_reports_roles_with_ocf_codes() {
    require_tool("ocf-tester", "resource-agents");
    require_tool("xmllint", "libxml2-utils");
    // A synced pair; alpha then handed to the agent, down and Secondary.
    let p = Pair::synced_sized(16 << 20);
    p.alpha.adm_ok(&["down", "r0"]);
    assert_eq!(
        agent(&p.alpha, "monitor").status.code(),
        Some(7),
        "down: OCF_NOT_RUNNING"
    );

    let out = run(Command::new("ocf-tester")
        .args(["-n", "tandem-r0", "-o", "resource=r0"])
        .arg("-o")
        .arg(format!("config={}", p.alpha.conf.display()))
        .args(["-o", "node=alpha"])
        .arg("-o")
        .arg(format!("run_dir={}", p.alpha.run_dir.display()))
        .arg(AGENT)
        .env("TANDEMADM", TANDEMADM));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ocf-tester failed:\n{text}\n{}",
        p.alpha.log_text()
    );
    assert!(text.contains("passed all tests"), "{text}");

    // The codes Pacemaker reads: 0 unpromoted, 8 promoted.
    assert!(agent(&p.alpha, "start").status.success());
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 20);
    assert_eq!(agent(&p.alpha, "monitor").status.code(), Some(0));
    assert!(agent(&p.alpha, "promote").status.success());
    assert_eq!(agent(&p.alpha, "monitor").status.code(), Some(8));
    // beta cannot be promoted while alpha is: the agent says so (generic error).
    assert_eq!(agent(&p.beta, "promote").status.code(), Some(1));
    assert!(agent(&p.alpha, "demote").status.success());
    assert_eq!(agent(&p.alpha, "monitor").status.code(), Some(0));
    assert!(agent(&p.alpha, "stop").status.success());
    assert_eq!(agent(&p.alpha, "monitor").status.code(), Some(7));
    let meta = agent(&p.alpha, "meta-data");
    let xml = String::from_utf8_lossy(&meta.stdout);
    assert!(
        xml.contains(r#"role="Promoted""#) && xml.contains(r#"name="resource""#),
        "{xml}"
    );
}

#[test]
fn promote_and_demote_of_a_stopped_resource_and_notify_refreshing_the_score() {
    let p = Pair::synced_sized(16 << 20);
    p.alpha.adm_ok(&["secondary", "r0"]);
    p.alpha.adm_ok(&["down", "r0"]);
    let scores = ScoreCalls::new();
    let code = |out: &Output| out.status.code();

    // Stopped. promote cannot put it in the promoted role: a generic error
    // with the reason (7 is monitor's answer, and Pacemaker reads it from
    // promote as a failure anyway). demote finds it not promoted, which is
    // what demote is for: success.
    let promote = scores.agent(&p.alpha, "promote", &[]);
    assert_eq!(code(&promote), Some(1), "promote of a stopped resource");
    let reason = String::from_utf8_lossy(&promote.stderr);
    assert!(reason.contains("not started"), "{reason}");
    assert_eq!(
        code(&scores.agent(&p.alpha, "demote", &[])),
        Some(0),
        "demote of a stopped resource"
    );
    // A stopped instance sets no score, not even when notified.
    let post = [
        ("OCF_RESKEY_CRM_meta_notify_type", "post"),
        ("OCF_RESKEY_CRM_meta_notify_operation", "start"),
    ];
    assert_eq!(code(&scores.agent(&p.alpha, "notify", &post)), Some(0));
    assert_eq!(code(&scores.agent(&p.alpha, "monitor", &[])), Some(7));
    assert_eq!(scores.take(), Vec::<String>::new(), "score calls while stopped");

    assert_eq!(code(&scores.agent(&p.alpha, "start", &[])), Some(0));
    p.alpha
        .wait_for("cs:Connected ro:Secondary/Secondary ds:UpToDate/UpToDate", 20);
    assert_eq!(code(&scores.agent(&p.alpha, "monitor", &[])), Some(0));
    assert_eq!(scores.take().last().map(String::as_str), Some("-Q -l reboot -v 10000"));

    // promote leaves the score alone: a change there would abort the
    // transition that is promoting, delaying what is ordered after it.
    assert_eq!(code(&scores.agent(&p.alpha, "promote", &[])), Some(0));
    assert_eq!(scores.take(), Vec::<String>::new(), "score calls during promote");
    // The post-promote notification refreshes it; the pre one does nothing.
    let pre_promote = [
        ("OCF_RESKEY_CRM_meta_notify_type", "pre"),
        ("OCF_RESKEY_CRM_meta_notify_operation", "promote"),
    ];
    let post_promote = [
        ("OCF_RESKEY_CRM_meta_notify_type", "post"),
        ("OCF_RESKEY_CRM_meta_notify_operation", "promote"),
    ];
    assert_eq!(code(&scores.agent(&p.alpha, "notify", &pre_promote)), Some(0));
    assert_eq!(scores.take(), Vec::<String>::new(), "score calls on pre-promote");
    assert_eq!(code(&scores.agent(&p.alpha, "notify", &post_promote)), Some(0));
    assert_eq!(scores.take(), ["-Q -l reboot -v 10000"]);

    // The peer stops: after its post-stop notification the Primary's score
    // says UpToDate with the peer unknown.
    p.beta.adm_ok(&["down", "r0"]);
    p.alpha.wait_for("ro:Primary/Unknown", 20);
    let post_stop = [
        ("OCF_RESKEY_CRM_meta_notify_type", "post"),
        ("OCF_RESKEY_CRM_meta_notify_operation", "stop"),
    ];
    assert_eq!(code(&scores.agent(&p.alpha, "notify", &post_stop)), Some(0));
    assert_eq!(scores.take(), ["-Q -l reboot -v 1000"]);
    assert_eq!(code(&scores.agent(&p.alpha, "demote", &[])), Some(0));
    assert_eq!(code(&scores.agent(&p.alpha, "monitor", &[])), Some(0));
    scores.take();

    // stop removes the score, as DRBD's agent does, also when it finds the
    // resource already stopped.
    assert_eq!(code(&scores.agent(&p.alpha, "stop", &[])), Some(0));
    assert_eq!(scores.take(), ["-Q -l reboot -D"]);
    assert_eq!(code(&scores.agent(&p.alpha, "stop", &[])), Some(0));
    assert_eq!(scores.take(), ["-Q -l reboot -D"]);
}

/// monitor reads tandemadm's exit status: 3 (tandemd not running) and 21
/// (resource down) are "stopped", anything else is a failure, never
/// "stopped": Pacemaker skips the stop of a resource it believes stopped,
/// and a Primary whose daemon only stopped answering would stay Primary.
/// In doubt the score is left alone.
#[test]
fn monitor_tells_a_stopped_resource_from_a_daemon_it_cannot_ask() {
    let p = Pair::up_full("s3cret", 16 << 20, "", "", "");
    let scores = ScoreCalls::new();
    for (status, ocf) in [(3, 7), (21, 7), (10, 1), (1, 1)] {
        let fake = stand_in(
            &scores.dir.path().join(format!("tandemadm-exits-{status}")),
            &format!("exit {status}"),
        );
        let tandemadm = fake.display().to_string();
        let out = scores.agent(&p.alpha, "monitor", &[("TANDEMADM", tandemadm.as_str())]);
        assert_eq!(
            out.status.code(),
            Some(ocf),
            "tandemadm exiting {status}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            scores.take(),
            Vec::<String>::new(),
            "score calls when tandemadm exits {status}"
        );
    }
    // And the real answer for a resource that is down is 21.
    p.alpha.adm_ok(&["down", "r0"]);
    let out = p.alpha.adm(&["role", "r0"]);
    assert_eq!(out.status.code(), Some(21), "{}", String::from_utf8_lossy(&out.stderr));
}
