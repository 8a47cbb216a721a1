//! Two nodes in their own network namespaces joined by a veth pair, with
//! the faults a network can have: iptables partitions (both ways or one),
//! and a bandwidth squeeze (tc htb; this kernel has no netem).

use super::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The namespaces and veth pair; removed on drop, whatever happened.
pub struct Net {
    pub ns: [String; 2],
    pub ip: [String; 2],
    veth: [String; 2],
}

impl Net {
    pub fn new() -> Net {
        require_tool("ip", "iproute2");
        require_tool("iptables", "iptables");
        let tag = std::process::id() % 10_000;
        let subnet = 10 + tag % 200;
        let ns = [format!("tnA{tag}"), format!("tnB{tag}")];
        let ip = [format!("10.231.{subnet}.1"), format!("10.231.{subnet}.2")];
        let (va, vb) = (format!("va{tag}"), format!("vb{tag}"));
        let net = Net {
            ns,
            ip,
            veth: [va.clone(), vb.clone()],
        };
        let (a, b) = (&net.ns[0], &net.ns[1]);
        for cmd in [
            format!("ip netns add {a}"),
            format!("ip netns add {b}"),
            format!("ip link add {va} type veth peer name {vb}"),
            format!("ip link set {va} netns {a}"),
            format!("ip link set {vb} netns {b}"),
            format!("ip -n {a} addr add {}/24 dev {va}", net.ip[0]),
            format!("ip -n {b} addr add {}/24 dev {vb}", net.ip[1]),
            format!("ip -n {a} link set lo up"),
            format!("ip -n {b} link set lo up"),
            format!("ip -n {a} link set {va} up"),
            format!("ip -n {b} link set {vb} up"),
        ] {
            run_ok(Command::new("sh").args(["-c", &cmd]));
        }
        net
    }

    pub fn exec(&self, i: usize, cmd: &str) {
        run_ok(Command::new("ip").args(["netns", "exec", &self.ns[i], "sh", "-c", cmd]));
    }

    /// Drop everything between the two nodes, both ways.
    pub fn partition(&self) {
        self.exec(
            0,
            &format!(
                "iptables -A INPUT -s {0} -j DROP; iptables -A OUTPUT -d {0} -j DROP",
                self.ip[1]
            ),
        );
    }

    pub fn heal(&self) {
        self.exec(0, "iptables -F INPUT; iptables -F OUTPUT");
    }

    /// Drop only what node `from` sends to the other node.
    pub fn one_way(&self, from: usize) {
        self.exec(from, &format!("iptables -A OUTPUT -d {} -j DROP", self.ip[1 - from]));
    }

    pub fn heal_all(&self) {
        for i in 0..2 {
            self.exec(i, "iptables -F INPUT; iptables -F OUTPUT");
        }
    }

    /// Squeeze node `i`'s outgoing link to `rate` (tc htb), or lift it.
    pub fn squeeze(&self, i: usize, rate: Option<&str>) {
        let dev = &self.veth[i];
        match rate {
            Some(r) => self.exec(
                i,
                &format!("tc qdisc replace dev {dev} root handle 1: htb default 10 && tc class replace dev {dev} parent 1: classid 1:10 htb rate {r} ceil {r} burst 32k"),
            ),
            None => self.exec(i, &format!("tc qdisc del dev {dev} root 2>/dev/null; true")),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

pub struct NsDaemon {
    pub name: &'static str,
    pub ns: String,
    pub conf: PathBuf,
    pub run_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl NsDaemon {
    pub fn adm_ok(&self, args: &[&str]) -> String {
        run_ok(
            Command::new(TANDEMADM)
                .args(["-c", &self.conf.to_string_lossy(), "--node", self.name, "--run-dir"])
                .arg(&self.run_dir)
                .args(args),
        )
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        self.child = Some(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns,
                    TANDEMD,
                    "-c",
                    &self.conf.to_string_lossy(),
                    "--node",
                    self.name,
                    "--run-dir",
                ])
                .arg(&self.run_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start tandemd"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(self.run_dir.join("tandemd.sock")).is_err() {
            assert!(Instant::now() < deadline, "{} did not start", self.name);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn adm(&self, args: &[&str]) -> std::process::Output {
        run(Command::new(TANDEMADM)
            .args(["-c", &self.conf.to_string_lossy(), "--node", self.name, "--run-dir"])
            .arg(&self.run_dir)
            .args(args))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn status(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("drbd")).unwrap_or_default()
    }

    pub fn wait_for(&self, what: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.status().contains(what) {
            assert!(
                Instant::now() < deadline,
                "{}: status never showed {what:?}:\n{}\nlog:\n{}",
                self.name,
                self.status(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NsDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
