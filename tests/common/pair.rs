//! Two `tandemd` processes on loopback, each with its own backing file,
//! metadata, run directory and log, owned by guards that kill them on drop.

use super::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SIZE: u64 = 64 << 20;

/// One `tandemd` with its configuration, run directory and log; in a
/// network namespace when `ns` is set.
pub struct Daemon {
    pub name: &'static str,
    pub conf: PathBuf,
    pub run_dir: PathBuf,
    pub image: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    pub ns: Option<String>,
    /// A command tandemd runs under (e.g. `setpriv …`), outside a namespace.
    pub wrap: Vec<String>,
    /// More tandemd arguments (e.g. `--save-dir DIR`).
    pub args: Vec<String>,
}

impl Daemon {
    /// Node `name` of `conf`, its run directory and log under `dir`.
    pub fn new(name: &'static str, conf: PathBuf, dir: &Path, image: PathBuf) -> Daemon {
        Daemon {
            name,
            conf,
            run_dir: dir.join(name),
            image,
            log: dir.join(format!("{name}.log")),
            child: None,
            ns: None,
            wrap: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn adm(&self, args: &[&str]) -> Output {
        run(Command::new(TANDEMADM)
            .args(["-c", &self.conf.to_string_lossy(), "--node", self.name, "--run-dir"])
            .arg(&self.run_dir)
            .args(args))
    }

    pub fn adm_ok(&self, args: &[&str]) -> String {
        let out = self.adm(args);
        assert!(
            out.status.success(),
            "{}: tandemadm {args:?} failed: {}\nlog:\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, TANDEMD]);
                c
            }
            None => match self.wrap.split_first() {
                Some((first, rest)) => {
                    let mut c = Command::new(first);
                    c.args(rest).arg(TANDEMD);
                    c
                }
                None => Command::new(TANDEMD),
            },
        };
        self.child = Some(
            cmd.args(["-c", &self.conf.to_string_lossy(), "--node", self.name, "--run-dir"])
                .arg(&self.run_dir)
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start tandemd"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(self.run_dir.join("tandemd.sock")).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not start:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.run_dir.join("tandemd.sock"));
    }

    /// The operator's edit of this node's configuration file: `from`
    /// (which must be there) becomes `to`. Apply it with `adjust`.
    pub fn edit_conf(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.conf).expect("conf");
        assert!(text.contains(from), "no {from:?} in {text}");
        std::fs::write(&self.conf, text.replace(from, to)).expect("conf");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn status(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("drbd")).unwrap_or_default()
    }

    /// The metadata flags `tandemadm dump-md` shows (the daemon down).
    pub fn md_flags(&self) -> Vec<String> {
        let dump = self.adm_ok(&["dump-md", "r0"]);
        let line = dump
            .lines()
            .find_map(|l| l.strip_prefix("flags: "))
            .unwrap_or_else(|| panic!("no flags line in dump-md:\n{dump}"));
        line.split(',').map(str::to_owned).collect()
    }

    /// Wait until the status file contains `what`.
    pub fn wait_for(&self, what: &str, secs: u64) {
        self.wait_until(
            secs,
            || self.status().contains(what),
            || format!("status never showed {what:?}"),
        );
    }

    /// Poll `done` until it holds; after `secs`, fail with `what` and the
    /// status file and log.
    fn wait_until(&self, secs: u64, done: impl Fn() -> bool, what: impl Fn() -> String) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{}: {}:\n{}\nlog:\n{}",
                self.name,
                what(),
                self.status(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The status file's line of resource number `minor` (` 1: cs:… ds:…`),
    /// for one resource of several.
    pub fn device_line(&self, minor: u32) -> String {
        let start = format!("{minor:2}: ");
        let status = self.status();
        status
            .lines()
            .find(|l| l.starts_with(&start))
            .unwrap_or_default()
            .to_owned()
    }

    /// Wait until the line of resource number `minor` contains `what`.
    pub fn wait_for_on(&self, minor: u32, what: &str, secs: u64) {
        self.wait_until(
            secs,
            || self.device_line(minor).contains(what),
            || format!("resource {minor} never showed {what:?}"),
        );
    }

    /// A `/proc/drbd` counter as the daemon holds it now. The status file
    /// is rewritten at most once a second while counters move, so a test
    /// that reads it right after its I/O would see a stale value.
    pub fn counter(&self, key: &str) -> u64 {
        let out = self.adm_ok(&["status", "--json", "r0"]);
        let json: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out}"));
        json[0]["counters"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {key} in {out}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Pair {
    pub alpha: Daemon,
    pub beta: Daemon,
    pub nbd_alpha: u16,
    pub nbd_beta: u16,
    /// Last, so dropped last: the daemons are killed first. Removed while
    /// one still ran, the directory could gain a file mid-removal (a status
    /// file rewritten) and be left behind in /tmp.
    pub dir: tempfile::TempDir,
}

pub fn write_conf(path: &Path, dir: &Path, secret: &str, ports: [u16; 4], disk: &str, net: &str, extra: &str) {
    std::fs::write(path, resource_conf("r0", dir, secret, ports, disk, net, extra)).expect("config");
}

/// Resource `name` between alpha and beta, their backing files and
/// metadata in `dir`: `alpha.img` and `alpha.md` for r0, `alpha-NAME.img`
/// and `alpha-NAME.md` for another.
pub fn resource_conf(
    name: &str,
    dir: &Path,
    secret: &str,
    ports: [u16; 4],
    disk: &str,
    net: &str,
    extra: &str,
) -> String {
    let file = |node: &str| match name {
        "r0" => format!("{}/{node}", dir.display()),
        _ => format!("{}/{node}-{name}", dir.display()),
    };
    format!(
        r#"resource {name} {{
  net {{ shared-secret "{secret}"; cram-hmac-alg sha256; connect-int 1; ping-int 1; ping-timeout 10; {net} }}
  disk {{ {disk} }}
  {extra}
  on alpha {{
    device nbd://127.0.0.1:{}/{name}; disk {a}.img; address 127.0.0.1:{}; meta-disk {a}.md;
  }}
  on beta {{
    device nbd://127.0.0.1:{}/{name}; disk {b}.img; address 127.0.0.1:{}; meta-disk {b}.md;
  }}
}}
"#,
        ports[0],
        ports[1],
        ports[2],
        ports[3],
        a = file("alpha"),
        b = file("beta"),
    )
}

impl Pair {
    /// Two nodes with metadata created, up; not yet synced.
    pub fn up(secret_beta: &str) -> Pair {
        Pair::up_sized(secret_beta, SIZE)
    }

    pub fn up_sized(secret_beta: &str, size: u64) -> Pair {
        Pair::up_with(secret_beta, size, "c-max-rate 4G;")
    }

    pub fn up_with(secret_beta: &str, size: u64, disk: &str) -> Pair {
        Pair::up_full(secret_beta, size, disk, "", "")
    }

    /// `net`: more `net` options; `extra`: more sections of the resource
    /// (`handlers { }`).
    pub fn up_full(secret_beta: &str, size: u64, disk: &str, net: &str, extra: &str) -> Pair {
        Pair::up_on(None, secret_beta, size, disk, net, extra)
    }

    /// As `up_full`, with alpha's backing disk at `alpha_disk` (linked as
    /// `alpha.img`), e.g. a file that starts failing on demand.
    pub fn up_on(alpha_disk: Option<&Path>, secret_beta: &str, size: u64, disk: &str, net: &str, extra: &str) -> Pair {
        Pair::build(alpha_disk, secret_beta, size, disk, net, extra, None)
    }

    /// Two resources: r0 as `up_with` makes it, and r1 (minor 1 in the
    /// status file) with its own ports, backing files, metadata and `disk_r1`
    /// options; both up on both nodes, not yet synced.
    pub fn up_two(size: u64, disk: &str, disk_r1: &str) -> Pair {
        Pair::build(None, "s3cret", size, disk, "", "", Some(disk_r1))
    }

    fn build(
        alpha_disk: Option<&Path>,
        secret_beta: &str,
        size: u64,
        disk: &str,
        net: &str,
        extra: &str,
        disk_r1: Option<&str>,
    ) -> Pair {
        let dir = tempfile::Builder::new()
            .prefix("tandem-pair-")
            .tempdir()
            .expect("tempdir");
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let r1 = disk_r1.map(|disk| (disk, [free_port(), free_port(), free_port(), free_port()]));
        let create = |image: &Path| {
            std::fs::File::create(image)
                .and_then(|f| f.set_len(size))
                .expect("image")
        };
        let mk = |name: &'static str, secret: &str| {
            let conf = dir.path().join(format!("{name}.conf"));
            let mut text = resource_conf("r0", dir.path(), secret, ports, disk, net, extra);
            if let Some((disk_r1, ports_r1)) = r1 {
                text.push_str(&resource_conf("r1", dir.path(), secret, ports_r1, disk_r1, net, extra));
                create(&dir.path().join(format!("{name}-r1.img")));
            }
            std::fs::write(&conf, text).expect("config");
            let image = dir.path().join(format!("{name}.img"));
            match alpha_disk {
                Some(target) if name == "alpha" => std::os::unix::fs::symlink(target, &image).expect("link"),
                _ => create(&image),
            }
            Daemon::new(name, conf, dir.path(), image)
        };
        let mut alpha = mk("alpha", "s3cret");
        let mut beta = mk("beta", secret_beta);
        let resources: &[&str] = if r1.is_some() { &["r0", "r1"] } else { &["r0"] };
        for d in [&mut alpha, &mut beta] {
            for r in resources {
                d.adm_ok(&["create-md", r]);
            }
            d.start();
            for r in resources {
                d.adm_ok(&["up", r]);
            }
        }
        Pair {
            dir,
            alpha,
            beta,
            nbd_alpha: ports[0],
            nbd_beta: ports[2],
        }
    }

    /// Up, connected, alpha Primary and both UpToDate.
    pub fn synced() -> Pair {
        Pair::synced_sized(SIZE)
    }

    /// `synced`, on images of `size` bytes.
    pub fn synced_sized(size: u64) -> Pair {
        let p = Pair::up_sized("s3cret", size);
        p.alpha.wait_for("cs:Connected", 20);
        p.alpha.adm_ok(&["primary", "--force", "r0"]);
        p.alpha.wait_for("ds:UpToDate/UpToDate", 60);
        p.beta.wait_for("ds:UpToDate/UpToDate", 10);
        p
    }

    pub fn uri(&self) -> String {
        format!("nbd://127.0.0.1:{}/r0", self.nbd_alpha)
    }

    pub fn assert_identical(&self) {
        self.assert_identical_up_to(None);
    }

    /// The first `data_bytes` of the images identical (or all of them): with
    /// internal metadata, each node's own metadata follows the data.
    pub fn assert_identical_up_to(&self, data_bytes: Option<usize>) {
        let mut a = std::fs::read(&self.alpha.image).expect("alpha image");
        let mut b = std::fs::read(&self.beta.image).expect("beta image");
        assert_eq!(a.len(), b.len());
        if let Some(n) = data_bytes {
            a.truncate(n);
            b.truncate(n);
        }
        if a != b {
            let first = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
            panic!(
                "replicas differ, first at byte {first}\nalpha:\n{}\nbeta:\n{}\nalpha log:\n{}\nbeta log:\n{}",
                self.alpha.status(),
                self.beta.status(),
                self.alpha.log_text(),
                self.beta.log_text()
            );
        }
    }
}

pub fn qemu_io(uri: &str, cmds: &[&str]) {
    let mut args = vec!["-f".to_owned(), "raw".to_owned()];
    for c in cmds {
        args.push("-c".into());
        args.push((*c).to_owned());
    }
    args.push(uri.to_owned());
    let out = run_ok(Command::new("qemu-io").args(&args));
    assert!(!out.contains("Pattern verification failed"), "{out}");
}
