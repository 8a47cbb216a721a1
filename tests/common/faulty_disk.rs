//! A backing disk that can fail or hang on command: a sparse image file
//! served by nbdkit's file plugin behind two error filters and a pause
//! filter, shown to `tandemd` as a plain file by nbdfuse.
//!
//! ```text
//! tandemd ── O_DIRECT ──► nbdfuse file ──► nbdkit (nbd → pause, `NAME.pause` socket → error ENOSPC on writes, `NAME.full`)
//!                                             └──► nbdkit (file NAME.img → error EIO on everything, `NAME.eio`)
//! ```
//!
//! Two processes because one error filter has one errno per operation: the
//! inner one fails every operation with EIO (a dying disk), the outer one
//! refuses writes with ENOSPC (the thin pool or filesystem under a sparse
//! image ran full) while reads still work. Each is switched by the
//! existence of a trigger file. The image itself stays an ordinary file the
//! test can compare byte for byte. Drop unmounts and stops everything.

#![allow(dead_code)]

use super::require_tool;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct FaultyDisk {
    dir: PathBuf,
    name: String,
    /// The two nbdkits, owned: killed on drop, and an early exit is seen.
    servers: Vec<std::process::Child>,
}

impl FaultyDisk {
    /// A `size`-byte sparse image `DIR/NAME.img`, presented as
    /// [`FaultyDisk::file`].
    pub fn start(dir: &Path, name: &str, size: u64) -> FaultyDisk {
        require_tool("nbdkit", "nbdkit");
        require_tool("nbdfuse", "libnbd-bin");
        let mut d = FaultyDisk {
            dir: dir.to_owned(),
            name: name.to_owned(),
            servers: Vec::new(),
        };
        std::fs::File::create(d.image())
            .and_then(|f| f.set_len(size))
            .expect("image");
        std::fs::create_dir_all(d.path("fuse")).expect("fuse dir");
        let inner = d.path("inner.sock");
        d.nbdkit(
            "inner",
            &["error"],
            &[
                "file".to_owned(),
                d.image().display().to_string(),
                "error=EIO".to_owned(),
                "error-rate=100%".to_owned(),
                format!("error-file={}", d.path("eio").display()),
            ],
        );
        // The pause filter sits nearest the client: it holds requests
        // before any error is decided.
        d.nbdkit(
            "outer",
            &["pause", "error"],
            &[
                "nbd".to_owned(),
                format!("pause-control={}", d.path("pause").display()),
                format!("socket={}", inner.display()),
                "error=ENOSPC".to_owned(),
                "error-pwrite-rate=100%".to_owned(),
                "error-zero-rate=100%".to_owned(),
                format!("error-file={}", d.path("full").display()),
            ],
        );
        let log = std::fs::File::create(d.path("nbdfuse.log")).expect("log");
        let status = Command::new("setsid")
            .args(["-f", "nbdfuse", "-P"])
            .arg(d.path("nbdfuse.pid"))
            .arg(d.file())
            .arg(format!("nbd+unix:///?socket={}", d.path("outer.sock").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .status()
            .expect("nbdfuse");
        assert!(status.success(), "nbdfuse did not start");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !d.file().exists() {
            let pid = std::fs::read_to_string(d.path("nbdfuse.pid")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "nbdfuse did not come up (pid file: {:?}, alive: {}):\n{}",
                pid.trim(),
                Path::new(&format!("/proc/{}", pid.trim())).exists(),
                d.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn logs(&self) -> String {
        ["inner.log", "outer.log", "nbdfuse.log"]
            .iter()
            .map(|l| format!("{l}: {}", std::fs::read_to_string(self.path(l)).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn path(&self, what: &str) -> PathBuf {
        self.dir.join(format!("{}.{what}", self.name))
    }

    /// `filters`, the first nearest the client, before the plugin and its
    /// (and the filters') arguments.
    fn nbdkit(&mut self, which: &str, filters: &[&str], plugin_args: &[String]) {
        let sock = self.path(&format!("{which}.sock"));
        let log = std::fs::File::create(self.path(&format!("{which}.log"))).expect("log");
        let child = Command::new("nbdkit")
            .args(["-f", "-U"])
            .arg(&sock)
            .args(filters.iter().map(|f| format!("--filter={f}")))
            .args(plugin_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("nbdkit");
        self.servers.push(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Some(Ok(Some(status))) = self.servers.last_mut().map(|c| c.try_wait()) {
                panic!("nbdkit ({which}) exited with {status}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "nbdkit ({which}) did not start:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What `tandemd` opens as its backing disk.
    pub fn file(&self) -> PathBuf {
        self.path("fuse").join("disk")
    }

    /// The image underneath, for byte-for-byte comparison.
    pub fn image(&self) -> PathBuf {
        self.dir.join(format!("{}.img", self.name))
    }

    fn trigger(&self, what: &str, on: bool) {
        if on {
            std::fs::write(self.path(what), b"").expect("trigger");
        } else {
            let _ = std::fs::remove_file(self.path(what));
        }
    }

    /// Every operation fails with EIO while `on`.
    pub fn fail(&self, on: bool) {
        self.trigger("eio", on);
    }

    /// Writes fail with ENOSPC while `on`; reads work.
    pub fn fill(&self, on: bool) {
        self.trigger("full", on);
    }

    /// While `on`, every request the disk receives waits, unanswered, as
    /// on a disk whose controller stopped responding; requests already
    /// running finish first. See also [`FaultyDisk::hung`].
    pub fn hang(&self, on: bool) {
        let (cmd, ack) = if on { (b'p', b'P') } else { (b'r', b'R') };
        let answer = self.pause_control(cmd).expect("pause control");
        assert_eq!(answer, ack, "the pause filter answered {:?}", answer as char);
    }

    /// The disk hangs until the guard is dropped, also when the test fails
    /// first: a daemon with a thread stuck on the disk cannot be reaped, and
    /// the test's clean-up would wait for it forever.
    pub fn hung(&self) -> Hung<'_> {
        self.hang(true);
        Hung(self)
    }

    fn pause_control(&self, cmd: u8) -> std::io::Result<u8> {
        use std::io::{Read, Write};
        let mut control = std::os::unix::net::UnixStream::connect(self.path("pause"))?;
        control.write_all(&[cmd])?;
        let mut answer = [0u8];
        control.read_exact(&mut answer)?;
        Ok(answer[0])
    }
}

/// A [`FaultyDisk`] hanging until this is dropped.
pub struct Hung<'a>(&'a FaultyDisk);

impl Drop for Hung<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.pause_control(b'r');
        } else {
            self.0.hang(false);
        }
    }
}

impl Drop for FaultyDisk {
    fn drop(&mut self) {
        // A hung request would keep the FUSE mount busy.
        let _ = self.pause_control(b'r');
        let _ = Command::new("fusermount3").arg("-u").arg(self.path("fuse")).status();
        for mut c in self.servers.drain(..).rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
