//! The admin's path without the nbd kernel module: NBD export → nbdfuse →
//! loop device → ext4 mounted at `data/mysql`.

mod common;

use common::stack::Stack;
use common::*;
use std::process::Command;

#[test]
fn ext4_on_the_export_survives_remount_with_identical_checksums() {
    require_tool("nbdfuse", "nbdfuse (package libnbd-bin/nbdfuse)");
    require_tool("mkfs.ext4", "e2fsprogs");
    let node = Node::primary(256 << 20);
    let mut stack = Stack::up(&node.uri(), node.dir.path());
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F", stack.dev()]));
    stack.mount();
    let mnt = stack.mnt.clone();
    let mut sums = Vec::new();
    for i in 0..8u64 {
        let path = mnt.join(format!("ibdata{i}"));
        std::fs::write(&path, pattern(i + 1, (1 + i as usize) * 1_000_003)).expect("write file");
        sums.push((path.clone(), sha_of(&path)));
    }
    run_ok(Command::new("sync").arg("-f").arg(mnt.join("ibdata0")));
    stack.umount();
    // Drop the page cache's copy: the second mount must read from Tandem.
    run_ok(Command::new("blockdev").args(["--flushbufs", stack.dev()]));
    stack.mount();
    for (path, sum) in &sums {
        assert_eq!(&sha_of(path), sum, "{} changed across remount", path.display());
    }
    stack.umount();
    let fsck = run(Command::new("e2fsck").args(["-fn", stack.dev()]));
    assert!(
        fsck.status.success(),
        "e2fsck -fn found problems:\n{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    drop(stack);
    // Nothing written was lost at the NBD layer either: the counters agree.
    let status = node.status_file();
    assert!(status.contains("ro:Primary/Unknown"), "{status}");
}
