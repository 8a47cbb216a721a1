//! Two nodes in their own network namespaces joined by a veth pair, cut apart
//! with iptables DROP: the link's own keepalive must notice (TCP alone does
//! not), the Primary carries on degraded, and healing the network resyncs
//! exactly what was written meanwhile.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SIZE: u64 = 32 << 20;

/// The namespaces and veth pair; removed on drop, whatever happened.
struct Net {
    ns: [String; 2],
    ip: [String; 2],
}

impl Net {
    fn new() -> Net {
        require_tool("ip", "iproute2");
        require_tool("iptables", "iptables");
        let tag = std::process::id() % 10_000;
        let subnet = 10 + tag % 200;
        let ns = [format!("tnA{tag}"), format!("tnB{tag}")];
        let ip = [format!("10.231.{subnet}.1"), format!("10.231.{subnet}.2")];
        let net = Net { ns, ip };
        let (a, b) = (&net.ns[0], &net.ns[1]);
        let (va, vb) = (format!("va{tag}"), format!("vb{tag}"));
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

    fn exec(&self, i: usize, cmd: &str) {
        run_ok(Command::new("ip").args(["netns", "exec", &self.ns[i], "sh", "-c", cmd]));
    }

    /// Drop everything between the two nodes, both ways.
    fn partition(&self) {
        self.exec(
            0,
            &format!(
                "iptables -A INPUT -s {0} -j DROP; iptables -A OUTPUT -d {0} -j DROP",
                self.ip[1]
            ),
        );
    }

    fn heal(&self) {
        self.exec(0, "iptables -F INPUT; iptables -F OUTPUT");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

struct NsDaemon {
    name: &'static str,
    ns: String,
    conf: PathBuf,
    run_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NsDaemon {
    fn adm_ok(&self, args: &[&str]) -> String {
        run_ok(
            Command::new(TANDEMADM)
                .args(["-c", &self.conf.to_string_lossy(), "--node", self.name, "--run-dir"])
                .arg(&self.run_dir)
                .args(args),
        )
    }

    fn start(&mut self) {
        let log = std::fs::File::create(&self.log).expect("log");
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

    fn status(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("drbd")).unwrap_or_default()
    }

    fn wait_for(&self, what: &str, secs: u64) {
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

#[test]
fn an_iptables_partition_is_detected_by_keepalive_and_healed_by_a_bitmap_resync() {
    let net = Net::new();
    let dir = tempfile::Builder::new()
        .prefix("tandem-netns-")
        .tempdir()
        .expect("tempdir");
    let d = dir.path();
    let conf = d.join("tandem.conf");
    std::fs::write(
        &conf,
        format!(
            r#"resource r0 {{
  net {{ shared-secret "part"; connect-int 1; ping-int 1; ping-timeout 10; }}
  on alpha {{ device nbd://{a}:10809/r0; disk {d}/alpha.img; address {a}:7789; meta-disk {d}/alpha.md; }}
  on beta  {{ device nbd://{b}:10809/r0; disk {d}/beta.img; address {b}:7789; meta-disk {d}/beta.md; }}
}}
"#,
            a = net.ip[0],
            b = net.ip[1],
            d = d.display()
        ),
    )
    .expect("config");
    let mut nodes = Vec::new();
    for (i, name) in ["alpha", "beta"].into_iter().enumerate() {
        std::fs::File::create(d.join(format!("{name}.img")))
            .and_then(|f| f.set_len(SIZE))
            .expect("image");
        let mut n = NsDaemon {
            name,
            ns: net.ns[i].clone(),
            conf: conf.clone(),
            run_dir: d.join(name),
            log: d.join(format!("{name}.log")),
            child: None,
        };
        n.adm_ok(&["create-md", "r0"]);
        n.start();
        n.adm_ok(&["up", "r0"]);
        nodes.push(n);
    }
    let (alpha, beta) = (&nodes[0], &nodes[1]);
    alpha.wait_for("cs:Connected", 20);
    alpha.adm_ok(&["primary", "--force", "r0"]);
    alpha.wait_for("ds:UpToDate/UpToDate", 30);

    let uri = format!("nbd://{}:10809/r0", net.ip[0]);
    net.partition();
    // A write during the partition: with no keepalive it would hang forever
    // waiting for the peer's ack; the link is declared dead instead and the
    // write completes degraded.
    let started = Instant::now();
    net.exec(
        0,
        &format!("qemu-io -f raw -c 'write -P 0x5c 1M 256k' {uri} >/dev/null"),
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "write hung {:?} in a partition",
        started.elapsed()
    );
    alpha.wait_for("cs:WFConnection", 15);
    alpha.wait_for("oos:256", 5);

    net.heal();
    alpha.wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 30);
    beta.wait_for("ds:UpToDate/UpToDate", 10);
    alpha.wait_for("oos:0", 5);
    let a = std::fs::read(d.join("alpha.img")).expect("alpha");
    let b = std::fs::read(d.join("beta.img")).expect("beta");
    assert!(a == b, "replicas differ after healing the partition");
    assert!(b[1 << 20..(1 << 20) + (256 << 10)].iter().all(|&x| x == 0x5c));
}
