//! `wait-sync` shows the resync as a progress bar with speed and ETA on a
//! terminal (run under `script`, which gives it one), and prints nothing
//! but the outcome when its output goes to a pipe.

mod common;

use common::pair::*;
use common::*;
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
    p.alpha.wait_for("ds:UpToDate/UpToDate", 30);
}
