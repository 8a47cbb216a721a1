//! Test harness: real `tandemd` processes on loopback, driven by real tools.
//!
//! Every process a test starts is owned by a guard whose `Drop` stops it, so
//! a failing test leaves nothing running. Tools that a test needs and that
//! are missing make the test fail with the package to install: a test that
//! skips itself proves nothing.

#![allow(dead_code)]

pub mod faulty_disk;
pub mod netns;
pub mod pair;
pub mod stack;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TANDEMD: &str = env!("CARGO_BIN_EXE_tandemd");
pub const TANDEMADM: &str = env!("CARGO_BIN_EXE_tandemadm");

/// A port nobody listens on right now, for a daemon to listen on.
///
/// Taken below the kernel's ephemeral range (32768 and up), where outgoing
/// connections (the daemons dial each other) never land, and never the same
/// port twice in one test binary, whose tests run in parallel.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Each test binary starts at its own place in 20000..32000.
    let start = 20_000 + (std::process::id() % 600) as u16 * 20;
    let _ = NEXT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let mut port = NEXT.fetch_add(1, Ordering::SeqCst);
        if port >= 32_000 {
            port = 20_000 + port % 12_000;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Fail loudly, naming the Debian package, when a client tool is missing.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "'{tool}' is not installed: apt-get install {package} (scripts/test.sh installs every test dependency)"
    );
}

/// An executable shell script at `path`: the stand-ins for `crm_master`
/// or `tandemadm` that the agent tests put in front of the real ones.
pub fn stand_in(path: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("stand-in script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_owned()
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// fio through the NBD export at `uri`, each block it writes carrying a
/// crc32c that fio checks when it reads the block back (a mismatch fails
/// the run); `args` name the job and say what it writes. Its output.
pub fn fio_verified(uri: &str, args: &[&str]) -> String {
    require_tool("fio", "fio");
    run_ok(
        Command::new("fio")
            // Before the job's --name: they apply to every job.
            .args([
                "--ioengine=nbd",
                &format!("--uri={uri}"),
                "--verify=crc32c",
                "--verify_fatal=1",
                "--verify_state_save=0",
            ])
            .args(args),
    )
}

/// One node: a config, a sparse backing image, a run dir and a `tandemd`.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub run_dir: PathBuf,
    pub image: PathBuf,
    pub port: u16,
    pub name: String,
    daemon: Option<Child>,
}

impl Node {
    /// A standalone resource `r0` on a sparse image of `size` bytes, with
    /// metadata created, brought up and promoted: ready for NBD clients.
    pub fn primary(size: u64) -> Node {
        let node = Node::configured(size, "meta-disk internal;");
        node.adm_ok(&["create-md", "r0"]);
        let mut node = node;
        node.start();
        node.adm_ok(&["up", "r0"]);
        node.adm_ok(&["primary", "--force", "r0"]);
        node
    }

    /// Config and image only; nothing started.
    pub fn configured(size: u64, meta_line: &str) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("tandem-test-")
            .tempdir()
            .expect("tempdir");
        let image = dir.path().join("r0.img");
        let f = std::fs::File::create(&image).expect("create image");
        f.set_len(size).expect("size image");
        let port = free_port();
        let conf = dir.path().join("tandem.conf");
        let meta_line = meta_line.replace("DIR", &dir.path().display().to_string());
        std::fs::write(
            &conf,
            format!(
                "resource r0 {{\n  on alpha {{\n    device nbd://127.0.0.1:{port}/r0;\n    disk {};\n    {meta_line}\n  }}\n}}\n",
                image.display()
            ),
        )
        .expect("write config");
        let run_dir = dir.path().join("run");
        Node {
            conf,
            run_dir,
            image,
            port,
            name: "alpha".into(),
            daemon: None,
            dir,
        }
    }

    pub fn uri(&self) -> String {
        format!("nbd://127.0.0.1:{}/r0", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tandemd.log")).unwrap_or_default()
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Start `tandemd` with more arguments (e.g. `--admin-group`).
    pub fn start_with(&mut self, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tandemd.log"))
            .expect("log file");
        let child = Command::new(TANDEMD)
            .args(["-c", &self.conf.to_string_lossy(), "--node", &self.name, "--run-dir"])
            .arg(&self.run_dir)
            .args(extra)
            .env("TANDEM_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tandemd");
        self.daemon = Some(child);
        let sock = self.run_dir.join("tandemd.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Answering, not merely present: a killed daemon leaves its socket file.
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "tandemd did not start:\n{}", self.log());
            if let Some(Ok(Some(status))) = self.daemon.as_mut().map(Child::try_wait) {
                panic!("tandemd exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM and wait: the clean shutdown path.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.daemon.take()?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.daemon.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    pub fn adm(&self, args: &[&str]) -> Output {
        run(Command::new(TANDEMADM)
            .args(["-c", &self.conf.to_string_lossy(), "--node", &self.name, "--run-dir"])
            .arg(&self.run_dir)
            .args(args))
    }

    pub fn adm_ok(&self, args: &[&str]) -> String {
        let out = self.adm(args);
        assert!(
            out.status.success(),
            "tandemadm {args:?} failed ({}):\n{}\n{}\nlog:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status_file(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("drbd")).expect("status file")
    }

    /// The exported size, as a client sees it.
    pub fn export_size(&self) -> u64 {
        run_ok(Command::new("nbdinfo").args(["--size", &self.uri()]))
            .trim()
            .parse()
            .expect("size")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal raw NBD client for hostile-input tests: it speaks exactly the
/// bytes a test gives it.
pub struct RawClient {
    pub stream: TcpStream,
}

pub const NBD_OPT_GO: u32 = 7;
pub const NBD_CMD_READ: u16 = 0;
pub const NBD_CMD_WRITE: u16 = 1;
pub const NBD_CMD_DISC: u16 = 2;
pub const NBD_CMD_FLUSH: u16 = 3;
pub const NBD_CMD_TRIM: u16 = 4;

impl RawClient {
    pub fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        RawClient { stream }
    }

    /// Fixed-newstyle handshake with OPT_GO for `r0`, no structured replies.
    /// Returns the export size.
    pub fn handshake(port: u16) -> (RawClient, u64) {
        let mut c = RawClient::connect(port);
        let mut greet = [0u8; 18];
        c.stream.read_exact(&mut greet).expect("greeting");
        assert_eq!(&greet[..8], b"NBDMAGIC");
        c.stream.write_all(&3u32.to_be_bytes()).expect("client flags"); // FIXED_NEWSTYLE | NO_ZEROES
        let name = b"r0";
        let mut opt = Vec::new();
        opt.extend_from_slice(&0x4948_4156_454F_5054u64.to_be_bytes());
        opt.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
        opt.extend_from_slice(&((4 + name.len() + 2) as u32).to_be_bytes());
        opt.extend_from_slice(&(name.len() as u32).to_be_bytes());
        opt.extend_from_slice(name);
        opt.extend_from_slice(&0u16.to_be_bytes());
        c.stream.write_all(&opt).expect("OPT_GO");
        let mut size = 0;
        loop {
            let mut hdr = [0u8; 20];
            c.stream.read_exact(&mut hdr).expect("option reply");
            let reply_type = u32::from_be_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]);
            let len = u32::from_be_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]) as usize;
            let mut data = vec![0u8; len];
            c.stream.read_exact(&mut data).expect("option reply data");
            match reply_type {
                1 => return (c, size), // NBD_REP_ACK
                3 if len >= 12 && u16::from_be_bytes([data[0], data[1]]) == 0 => {
                    size = u64::from_be_bytes(data[2..10].try_into().expect("8 bytes"));
                }
                3 => {}
                t => panic!("OPT_GO refused: type {t:#x}: {}", String::from_utf8_lossy(&data)),
            }
        }
    }

    pub fn send_request(&mut self, cmd: u16, flags: u16, cookie: u64, offset: u64, len: u32, payload: &[u8]) {
        let mut req = Vec::with_capacity(28 + payload.len());
        req.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        req.extend_from_slice(&flags.to_be_bytes());
        req.extend_from_slice(&cmd.to_be_bytes());
        req.extend_from_slice(&cookie.to_be_bytes());
        req.extend_from_slice(&offset.to_be_bytes());
        req.extend_from_slice(&len.to_be_bytes());
        req.extend_from_slice(payload);
        self.stream.write_all(&req).expect("send request");
    }

    /// Read one simple reply: (cookie, error).
    pub fn simple_reply(&mut self) -> (u64, u32) {
        let mut r = [0u8; 16];
        self.stream.read_exact(&mut r).expect("simple reply");
        assert_eq!(u32::from_be_bytes([r[0], r[1], r[2], r[3]]), 0x6744_6698, "reply magic");
        (
            u64::from_be_bytes(r[8..16].try_into().expect("8 bytes")),
            u32::from_be_bytes([r[4], r[5], r[6], r[7]]),
        )
    }

    pub fn read(&mut self, cookie: u64, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
        self.send_request(NBD_CMD_READ, 0, cookie, offset, len, &[]);
        let (c, err) = self.simple_reply();
        assert_eq!(c, cookie);
        if err != 0 {
            return Err(err);
        }
        let mut data = vec![0u8; len as usize];
        self.stream.read_exact(&mut data).expect("read data");
        Ok(data)
    }

    pub fn write(&mut self, cookie: u64, offset: u64, data: &[u8]) -> u32 {
        self.send_request(NBD_CMD_WRITE, 0, cookie, offset, data.len() as u32, data);
        let (c, err) = self.simple_reply();
        assert_eq!(c, cookie);
        err
    }

    /// True when the server closed the connection.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha_of(path: &Path) -> String {
    run_ok(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}
