//! The README's first command: `tandemadm demo` runs the two-node story and
//! shows the result a newcomer should see.

mod common;

use common::*;
use std::process::Command;

#[test]
fn the_demo_syncs_cuts_the_link_resyncs_only_dirty_blocks_and_ends_identical() {
    // Four consecutive ports, below the kernel's ephemeral range so that no
    // outgoing connection of another process can be holding one of them.
    let port = (0..200u16)
        .map(|i| 21_000 + (std::process::id() as u16 % 50) * 80 + i * 4)
        .find(|&p| (p..p + 4).all(|q| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok()))
        .expect("four free ports");
    let out = run_ok(Command::new(TANDEMADM).args([
        "demo",
        "--size",
        "128M",
        "--duration",
        "4",
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
    // Into a pipe, the idle pair's status is written when it changes, not
    // once a second for the 4 s it watched.
    let screens = out.matches("── alpha ──").count();
    assert!((1..=2).contains(&screens), "{screens} status screens:\n{out}");
}
