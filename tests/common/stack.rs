//! The admin's stack without the nbd kernel module: NBD export → nbdfuse →
//! loop device → a filesystem mounted at `data/mysql`.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The nbdfuse + loop + mount stack; `Drop` takes it down in the order that
/// always works (umount, losetup -d, fusermount3 -u), even after a failure.
pub struct Stack {
    pub fuse_dir: PathBuf,
    pub mnt: PathBuf,
    loop_dev: Option<String>,
    mounted: bool,
    fuse_gone: bool,
    pid_file: PathBuf,
}

impl Stack {
    pub fn up(uri: &str, base: &Path) -> Stack {
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
            fuse_gone: false,
            pid_file: pid.clone(),
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

    pub fn dev(&self) -> &str {
        self.loop_dev.as_deref().expect("loop device")
    }

    pub fn mount(&mut self) {
        run_ok(Command::new("mount").arg(self.dev()).arg(&self.mnt));
        self.mounted = true;
    }

    pub fn umount(&mut self) {
        run_ok(Command::new("umount").arg(&self.mnt));
        self.mounted = false;
    }
}

impl Stack {
    /// The NBD server under it died: detach lazily, nothing can be flushed.
    pub fn abandon(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            self.mounted = false;
        }
        if let Some(dev) = self.loop_dev.take() {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
        let _ = Command::new("fusermount3").arg("-uz").arg(&self.fuse_dir).status();
        self.fuse_gone = true;
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
        if !self.fuse_gone {
            let _ = Command::new("fusermount3").arg("-u").arg(&self.fuse_dir).status();
        }
        // nbdfuse exits (closing its NBD connections) shortly after the
        // unmount; wait, so that the export is really free afterwards.
        let pid: Option<i32> = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok());
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(10);
            // SAFETY: signal 0 only asks whether the process exists.
            while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
