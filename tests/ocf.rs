//! The OCF resource agent `dist/ocf/tandem` against a live pair: it passes
//! `ocf-tester` (Debian resource-agents) and reports roles with the OCF codes
//! for promoted and unpromoted instances.

mod common;

use common::pair::*;
use common::*;
use std::process::Command;

const AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/ocf/tandem");

fn agent(d: &Daemon, action: &str) -> std::process::Output {
    run(Command::new(AGENT)
        .arg(action)
        .env("OCF_ROOT", "/usr/lib/ocf")
        .env("OCF_RESKEY_resource", "r0")
        .env("OCF_RESKEY_config", &d.conf)
        .env("OCF_RESKEY_node", d.name)
        .env("OCF_RESKEY_run_dir", &d.run_dir)
        .env("TANDEMADM", TANDEMADM))
}

#[test]
fn the_agent_passes_ocf_tester_and_reports_roles_with_ocf_codes() {
    require_tool("ocf-tester", "resource-agents");
    require_tool("xmllint", "libxml2-utils");
    // A synced pair; alpha then handed to the agent, down and Secondary.
    let p = Pair::up_full("s3cret", 16 << 20, "c-max-rate 4G;", "", "");
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 30);
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
