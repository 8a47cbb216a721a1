//! The admin's path without the nbd kernel module: NBD export → nbdfuse →
//! loop device → ext4 mounted at `data/mysql`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The nbdfuse + loop + mount stack; `Drop` takes it down in the order that
/// always works (umount, losetup -d, fusermount3 -u), even after a failure.
struct Stack {
    fuse_dir: PathBuf,
    mnt: PathBuf,
    loop_dev: Option<String>,
    mounted: bool,
}

impl Stack {
    fn up(uri: &str, base: &Path) -> Stack {
        let fuse_dir = base.join("fuse");
        let mnt = base.join("data/mysql");
        std::fs::create_dir_all(&fuse_dir).expect("fuse dir");
        std::fs::create_dir_all(&mnt).expect("mount dir");
        let pid = base.join("nbdfuse.pid");
        // nbdfuse outlives setsid: give it a log file, not our pipes, or
        // waiting for setsid's output would wait for nbdfuse to exit.
        let log = std::fs::File::create(base.join("nbdfuse.log")).expect("nbdfuse log");
        let status = Command::new("setsid")
            .args(["-f", "nbdfuse", "-P"])
            .arg(&pid)
            .arg(fuse_dir.join("disk"))
            .arg(uri)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .status()
            .expect("start nbdfuse");
        assert!(status.success(), "nbdfuse did not start");
        let mut stack = Stack {
            fuse_dir,
            mnt,
            loop_dev: None,
            mounted: false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stack.fuse_dir.join("disk").exists() {
            assert!(Instant::now() < deadline, "nbdfuse did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        let dev = run_ok(
            Command::new("losetup")
                .args(["--find", "--show", "--direct-io=on"])
                .arg(stack.fuse_dir.join("disk")),
        );
        stack.loop_dev = Some(dev.trim().to_owned());
        stack
    }

    fn dev(&self) -> &str {
        self.loop_dev.as_deref().expect("loop device")
    }

    fn mount(&mut self) {
        run_ok(Command::new("mount").arg(self.dev()).arg(&self.mnt));
        self.mounted = true;
    }

    fn umount(&mut self) {
        run_ok(Command::new("umount").arg(&self.mnt));
        self.mounted = false;
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mnt).status();
        }
        if let Some(dev) = self.loop_dev.take() {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
        let _ = Command::new("fusermount3").arg("-u").arg(&self.fuse_dir).status();
    }
}

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
