//! `wait-sync` shows the resync as a progress bar with speed and ETA on a
//! terminal (run under `script`, which gives it one), one per resource
//! resyncing, and prints nothing but the outcome when its output goes to a
//! pipe. `verify --wait` follows an online verify the same way on a
//! terminal, with plain progress lines in a pipe, and ends with the number
//! of blocks found out of sync.

mod common;

use common::pair::*;
use common::*;
use std::os::unix::fs::FileExt;
use std::process::Command;

#[test]
fn wait_sync_draws_a_bar_on_a_terminal_and_nothing_into_a_pipe() {
    require_tool("script", "util-linux");
    // 16 MiB at 4 MiB/s: a resync that lasts a few seconds.
    let p = Pair::up_on(None, "s3cret", 16 << 20, "resync-rate 4M; c-plan-ahead 0;", "", "");
    p.alpha.wait_for("cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.wait_for("SyncSource", 10);
    let adm = |extra: &str| {
        format!(
            "{} -c {} --node alpha --run-dir {} wait-sync r0{extra}",
            env!("CARGO_BIN_EXE_tandemadm"),
            p.alpha.conf.display(),
            p.alpha.run_dir.display()
        )
    };
    let piped = run(Command::new("sh")
        .arg("-c")
        .arg(format!("{} 2>&1 | cat", adm(" --timeout 1"))));
    let piped = String::from_utf8_lossy(&piped.stdout).into_owned();
    assert!(!piped.contains("ETA") && !piped.contains('['), "{piped}");
    let tty = run_ok(Command::new("script").args(["-qec", &adm(""), "/dev/null"]));
    assert!(
        tty.contains("r0: SyncSource") && tty.contains("ETA") && tty.contains('%'),
        "{tty}"
    );
    // The bar appears with the resync, never as an empty one before it.
    assert!(!tty.contains("0 B/0 B"), "{tty}");
    p.alpha.wait_for("ds:UpToDate/UpToDate", 30);
}

#[test]
fn verify_wait_draws_a_bar_on_a_terminal_and_lines_into_a_pipe_then_counts_the_differences() {
    require_tool("script", "util-linux");
    // 16 MiB verified at 4 MiB/s: a verify that lasts a few seconds.
    let p = Pair::up_on(
        None,
        "s3cret",
        16 << 20,
        "resync-rate 4M; c-plan-ahead 0;",
        "verify-alg crc32c;",
        "",
    );
    p.alpha.wait_for("cs:Connected", 20);
    // Both disks are blank and so identical: no initial sync to wait for.
    p.alpha.adm_ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
    p.alpha.adm_ok(&["primary", "r0"]);
    p.alpha.wait_for("ds:UpToDate/UpToDate", 10);
    let adm = format!(
        "{} -c {} --node alpha --run-dir {} verify --wait r0",
        env!("CARGO_BIN_EXE_tandemadm"),
        p.alpha.conf.display(),
        p.alpha.run_dir.display()
    );
    let piped = run(Command::new("sh").arg("-c").arg(format!("{adm} 2>&1 | cat")));
    let piped = String::from_utf8_lossy(&piped.stdout).into_owned();
    assert!(
        piped.contains("r0: verified ") && piped.contains(" blocks (") && piped.contains("ETA"),
        "{piped}"
    );
    assert!(!piped.contains('[') && !piped.contains('\x1b'), "{piped}");
    assert!(
        piped.trim_end().ends_with("r0: verify done: 0 blocks out of sync"),
        "{piped}"
    );
    // 4 KiB of the Secondary's disk changed behind Tandem's back.
    let beta = std::fs::OpenOptions::new()
        .write(true)
        .open(&p.beta.image)
        .expect("image");
    beta.write_all_at(&[0x5a; 4096], 5 << 20).expect("corrupt");
    beta.sync_all().expect("sync");
    let tty = run_ok(Command::new("script").args(["-qec", &adm, "/dev/null"]));
    assert!(
        tty.contains("r0: VerifyS") && tty.contains(" blocks ") && tty.contains("ETA") && tty.contains('%'),
        "{tty}"
    );
    assert!(tty.contains("r0: verify done: 1 block (4 KiB) out of sync"), "{tty}");
    p.alpha.wait_for("oos:4", 10);
}

#[test]
fn wait_sync_all_draws_a_bar_per_resource_resyncing() {
    require_tool("script", "util-linux");
    // Two resyncs of 16 MiB at 4 MiB/s at once.
    let slow = "resync-rate 4M; c-plan-ahead 0;";
    let p = Pair::up_two(16 << 20, slow, slow);
    p.alpha.wait_for_on(0, "cs:Connected", 20);
    p.alpha.wait_for_on(1, "cs:Connected", 20);
    p.alpha.adm_ok(&["primary", "--force", "r0"]);
    p.alpha.adm_ok(&["primary", "--force", "r1"]);
    p.alpha.wait_for_on(1, "cs:SyncSource", 10);
    let adm = format!(
        "{} -c {} --node alpha --run-dir {} wait-sync all",
        env!("CARGO_BIN_EXE_tandemadm"),
        p.alpha.conf.display(),
        p.alpha.run_dir.display()
    );
    let tty = run_ok(Command::new("script").args(["-qec", &adm, "/dev/null"]));
    assert!(
        tty.contains("r0: SyncSource") && tty.contains("r1: SyncSource"),
        "{tty}"
    );
    assert!(!tty.contains("0 B/0 B"), "{tty}");
    for minor in [0, 1] {
        assert!(
            p.alpha.device_line(minor).contains("ds:UpToDate/UpToDate"),
            "{}",
            p.alpha.status()
        );
    }
}
