//! The systemd units in `dist/systemd`: `systemd-analyze verify` accepts
//! them without a single complaint, and the daemon works inside the
//! sandbox `tandemd.service` sets up: no new privileges and only the
//! capabilities of its `CapabilityBoundingSet` (applied with setpriv, as
//! systemd would), with io_uring, O_DIRECT, the sockets and replication.

mod common;

use common::pair::*;
use common::*;
use std::path::Path;
use std::process::Command;

const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/systemd");

/// A unit's text with the installed paths pointing at the built binaries.
fn unit(name: &str) -> String {
    std::fs::read_to_string(Path::new(UNITS).join(name))
        .expect("unit")
        .replace("/usr/sbin/tandemd", env!("CARGO_BIN_EXE_tandemd"))
        .replace("/usr/sbin/tandemadm", env!("CARGO_BIN_EXE_tandemadm"))
}

#[test]
fn the_units_pass_systemd_analyze_verify_without_a_warning() {
    require_tool("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("tandemd.service"), unit("tandemd.service")).expect("unit");
    std::fs::write(dir.path().join("tandem@r0.service"), unit("tandem@.service")).expect("unit");
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no", "./tandemd.service", "./tandem@r0.service"])
        .current_dir(dir.path()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // verify exits 0 on unknown keys and misspellings: any output is a defect.
    assert!(err.trim().is_empty(), "{err}");
}

/// `setpriv` arguments for the unit's NoNewPrivileges and bounding set.
fn sandbox_of_the_unit() -> Vec<String> {
    let text = unit("tandemd.service");
    let caps: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(text.contains("NoNewPrivileges=yes"));
    vec![
        "setpriv".to_owned(),
        "--no-new-privs".to_owned(),
        "--inh-caps=-all".to_owned(),
        if caps.is_empty() {
            "--bounding-set=-all".to_owned()
        } else {
            format!("--bounding-set=-all,{}", caps.join(","))
        },
    ]
}

#[test]
fn the_daemon_replicates_inside_the_units_capability_sandbox() {
    require_tool("setpriv", "util-linux");
    require_tool("qemu-io", "qemu-utils");
    let wrap = sandbox_of_the_unit();
    let mut p = Pair::up("s3cret");
    // Restart alpha inside the sandbox (the pair was brought up plainly).
    p.alpha.kill9();
    p.alpha.wrap = wrap;
    p.alpha.start();
    p.alpha.adm_ok(&["up", "r0"]);
    let pid = p.alpha.child.as_ref().expect("alpha runs").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex"))
        .expect("CapBnd");
    const CAP_SYS_MODULE: u32 = 16;
    assert_eq!(
        bounding & (1 << CAP_SYS_MODULE),
        0,
        "the sandbox did not apply: {bounding:#x}"
    );
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");

    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 60);
    let uri = format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha);
    qemu_io(&uri, &["write -P 0x3c 0 1M", "read -P 0x3c 0 1M"]);
    p.assert_identical();
}
