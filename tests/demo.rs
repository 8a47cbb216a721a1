//! The README's first command: `tandemadm demo` runs the two-node story and
//! shows the result a newcomer should see.

mod common;

use common::*;
use std::process::Command;

#[test]
fn the_demo_syncs_cuts_the_link_resyncs_only_dirty_blocks_and_ends_identical() {
    let port = free_port();
    let out = run_ok(Command::new(TANDEMADM).args([
        "demo",
        "--size",
        "128M",
        "--duration",
        "1",
        "--port",
        &port.to_string(),
    ]));
    for line in [
        "1. initial sync alpha → beta",
        "alpha now has 4096 KiB out of sync with beta",
        "resync sent 4096 KiB",
        "5. replicas identical: yes",
        "cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C",
        "stopping demo",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}
