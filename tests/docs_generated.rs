//! Man pages and shell completions are generated from the CLI definitions
//! (clap_mangen, clap_complete): `man` renders every page without a groff
//! warning, each tandemadm command has its page, and bash completes the
//! commands once the generated script is sourced.

mod common;

use common::*;
use std::process::Command;

const TANDEMADM: &str = env!("CARGO_BIN_EXE_tandemadm");
const TANDEMD: &str = env!("CARGO_BIN_EXE_tandemd");

#[test]
fn every_man_page_renders_and_every_command_has_one() {
    require_tool("man", "man-db");
    let dir = tempfile::tempdir().expect("tmp");
    run_ok(Command::new(TANDEMADM).arg("man").arg(dir.path()));
    let tandemd = run_ok(Command::new(TANDEMD).arg("--man"));
    std::fs::write(dir.path().join("tandemd.8"), tandemd).expect("page");
    let help = run_ok(Command::new(TANDEMADM).arg("--help"));
    // Every command the help lists has its page.
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A description that wraps continues on a line indented to its column.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() > 25, "{help}");
    for c in &commands {
        assert!(dir.path().join(format!("tandemadm-{c}.8")).exists(), "no page for {c}");
    }
    for page in std::fs::read_dir(dir.path()).expect("dir") {
        let page = page.expect("entry").path();
        let out = run(Command::new("man")
            .args(["--warnings", "-l", "-P", "cat"])
            .arg(&page)
            .env("MANWIDTH", "80"));
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "{}: {err}",
            page.display()
        );
        assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
    }
    let connect = run_ok(
        Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(dir.path().join("tandemadm-connect.8")),
    );
    assert!(connect.contains("--discard-my-data"), "{connect}");
}

#[test]
fn bash_completes_commands_and_options_from_the_generated_script() {
    require_tool("bash", "bash");
    let script = run_ok(Command::new(TANDEMADM).args(["completions", "bash"]));
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("tandemadm.bash");
    std::fs::write(&path, script).expect("script");
    // Ask the completion function what it offers, as bash would on TAB.
    let complete = |words: &str| {
        let n = words.split_whitespace().count() - 1 + usize::from(words.ends_with(' '));
        run_ok(Command::new("bash").arg("-c").arg(format!(
            "source {}; COMP_WORDS=({words}); {extra} COMP_CWORD={n}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; _tandemadm tandemadm; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display(),
            extra = if words.ends_with(' ') { "COMP_WORDS+=('');" } else { "" },
        )))
    };
    let first = complete("tandemadm wait-");
    assert!(first.contains("wait-connect") && first.contains("wait-sync"), "{first}");
    let options = complete("tandemadm connect --");
    assert!(
        options.contains("--discard-my-data") && options.contains("--dry-run"),
        "{options}"
    );
}
