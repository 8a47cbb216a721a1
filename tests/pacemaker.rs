//! Failover under a real cluster manager: a two-node Pacemaker + Corosync
//! cluster, each node in its own network namespace and private mount
//! namespace (its own /var/lib/pacemaker, /var/lib/corosync,
//! /var/log/pacemaker, /run and /dev/shm), with the OCF agent
//! `dist/ocf/tandem` managing a promotable clone. Pacemaker promotes one
//! node; data is written through its NBD export; every process of that node
//! (corosync, pacemakerd and its subdaemons, tandemd) is killed with
//! SIGKILL; Pacemaker on the survivor promotes it, and the data reads back
//! identically through the survivor's export.

mod common;

use common::netns::Net;
use common::pair::{qemu_io, Daemon};
use common::*;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SIZE: u64 = 16 << 20;
const AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/ocf/tandem");
const NAMES: [&str; 2] = ["alpha", "beta"];

/// One cluster node: a holder process owning a private mount namespace
/// (inside the node's network namespace) with the node's own state
/// directories mounted, and the daemons started inside it. Drop kills every
/// process in that mount namespace, whatever happened; the mounts go with it.
struct ClusterNode {
    name: &'static str,
    dir: PathBuf,
    holder: Child,
    holder_pid: String,
    /// `mnt:[…]` of the node's mount namespace, never the test's own.
    mntns: String,
    children: Vec<Child>,
}

impl ClusterNode {
    fn new(netns: &str, name: &'static str, top: &Path) -> ClusterNode {
        let dir = top.join(format!("ha-{name}"));
        for sub in [
            "pacemaker/cib",
            "pacemaker/pengine",
            "pacemaker/blackbox",
            "pacemaker/cores",
            "corosync",
            "log",
        ] {
            std::fs::create_dir_all(dir.join(sub)).expect("node dirs");
        }
        for sub in [
            "pacemaker/cib",
            "pacemaker/pengine",
            "pacemaker/blackbox",
            "pacemaker/cores",
            "log",
        ] {
            run_ok(Command::new("chown").arg("hacluster:haclient").arg(dir.join(sub)));
        }
        let ready = dir.join("ready");
        let script = format!(
            "set -e
mount --bind {d}/pacemaker /var/lib/pacemaker
mount --bind {d}/corosync /var/lib/corosync
mount --bind {d}/log /var/log/pacemaker
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/crm
chown hacluster:haclient /run/crm
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount --bind {top}/ocf /usr/lib/ocf/resource.d
touch {ready}
exec sleep 100000
",
            d = dir.display(),
            top = top.display(),
            ready = ready.display()
        );
        let out = std::fs::File::create(dir.join("holder.out")).expect("holder log");
        let holder = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("start the node's namespace holder");
        let holder_pid = holder.id().to_string();
        let mut node = ClusterNode {
            name,
            dir,
            holder,
            holder_pid,
            mntns: String::new(),
            children: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            if let Ok(Some(st)) = node.holder.try_wait() {
                panic!("{name}: namespace setup failed ({st}):\n{}", node.file("holder.out"));
            }
            assert!(Instant::now() < deadline, "{name}: namespace setup hangs");
            std::thread::sleep(Duration::from_millis(20));
        }
        let own = std::fs::read_link("/proc/self/ns/mnt").expect("own mntns");
        let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", node.holder_pid)).expect("node mntns");
        assert_ne!(own, ns, "the node must have its own mount namespace");
        node.mntns = ns.to_string_lossy().into_owned();
        node
    }

    /// A command run inside the node (its network and mount namespaces).
    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.holder_pid, "-m", "-n", "--", prog]);
        c
    }

    /// The prefix `Daemon::wrap` runs tandemd under, to put it in the node.
    fn wrap(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder_pid, "-m", "-n", "--"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn spawn(&mut self, mut cmd: Command, log: &str) {
        let out = std::fs::File::create(self.dir.join(log)).expect("log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start {cmd:?}: {e}", self.name));
        self.children.push(child);
    }

    fn tool(&self, prog: &str, args: &[&str]) -> Output {
        run(self.cmd(prog).args(args))
    }

    fn tool_ok(&self, prog: &str, args: &[&str]) -> String {
        let out = self.tool(prog, args);
        assert!(
            out.status.success(),
            "{}: {prog} {args:?} failed ({}):\n{}{}\n{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn crm_mon(&self) -> String {
        let out = self.tool("crm_mon", &["-1"]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// The end of the node's cluster logs, for failure messages.
    fn logs(&self) -> String {
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(60)..].join("\n")
        };
        format!(
            "--- {n} corosync.log\n{}\n--- {n} pacemaker.log\n{}\n",
            tail(self.file("corosync.log")),
            tail(self.file("log/pacemaker.log")),
            n = self.name
        )
    }

    fn pids(&self) -> Vec<i32> {
        if self.mntns.is_empty() {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
                    .map(|l| l.to_string_lossy() == self.mntns)
                    .unwrap_or(false)
            })
            .collect()
    }

    /// The node dies: SIGKILL to every process in its mount namespace
    /// (corosync, pacemakerd and its subdaemons, tandemd, the holder).
    fn kill_all(&mut self) {
        for _ in 0..200 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: a plain kill(2) of a process in the node's namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            for c in &mut self.children {
                let _ = c.try_wait();
            }
            let _ = self.holder.try_wait();
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.mntns.clear();
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn corosync_conf(dir: &Path, ips: &[String; 2]) -> String {
    format!(
        "totem {{
    version: 2
    cluster_name: tandemtest
    transport: knet
    crypto_cipher: none
    crypto_hash: none
    token: 1000
    interface {{
        linknumber: 0
        knet_transport: udp
    }}
}}
nodelist {{
    node {{
        ring0_addr: {a}
        name: alpha
        nodeid: 1
    }}
    node {{
        ring0_addr: {b}
        name: beta
        nodeid: 2
    }}
}}
quorum {{
    provider: corosync_votequorum
    two_node: 1
}}
logging {{
    to_logfile: yes
    logfile: {d}/corosync.log
    to_syslog: no
    to_stderr: no
    timestamp: on
}}
",
        a = ips[0],
        b = ips[1],
        d = dir.display()
    )
}

/// The promotable clone, with each node's own `node` and `run_dir` chosen by
/// a rule on the node name (a clone has one set of instance attributes).
fn clone_xml(conf: &Path, run_dirs: [&Path; 2]) -> String {
    let per_node: String = NAMES
        .iter()
        .zip(run_dirs)
        .map(|(n, rd)| {
            format!(
                r#"<instance_attributes id="t-{n}" score="2"><rule id="t-{n}-rule" score="0"><expression id="t-{n}-expr" attribute="{u}" operation="eq" value="{n}"/></rule><nvpair id="t-{n}-node" name="node" value="{n}"/><nvpair id="t-{n}-rd" name="run_dir" value="{rd}"/></instance_attributes>"#,
                u = "#uname",
                rd = rd.display()
            )
        })
        .collect();
    format!(
        r#"<clone id="tandem-clone"><meta_attributes id="tc-meta"><nvpair id="tc-p" name="promotable" value="true"/><nvpair id="tc-cm" name="clone-max" value="2"/><nvpair id="tc-cnm" name="clone-node-max" value="1"/><nvpair id="tc-pm" name="promoted-max" value="1"/><nvpair id="tc-pnm" name="promoted-node-max" value="1"/><nvpair id="tc-n" name="notify" value="true"/></meta_attributes><primitive id="tandem" class="ocf" provider="tandem" type="tandem"><instance_attributes id="t-common" score="1"><nvpair id="t-res" name="resource" value="r0"/><nvpair id="t-conf" name="config" value="{conf}"/><nvpair id="t-adm" name="tandemadm" value="{adm}"/></instance_attributes>{per_node}<operations><op id="t-mon-p" name="monitor" interval="3s" role="Promoted" timeout="20s"/><op id="t-mon-u" name="monitor" interval="4s" role="Unpromoted" timeout="20s"/></operations></primitive></clone>"#,
        conf = conf.display(),
        adm = TANDEMADM
    )
}

fn wait_until(secs: u64, what: &str, mut ok: impl FnMut() -> bool, diag: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", diag());
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn pacemaker_fails_over_the_promotable_clone_when_the_primary_node_dies() {
    for (tool, pkg) in [
        ("corosync", "corosync"),
        ("pacemakerd", "pacemaker"),
        ("crm_mon", "pacemaker-cli-utils"),
        ("cibadmin", "pacemaker-cli-utils"),
        ("nsenter", "util-linux"),
        ("unshare", "util-linux"),
        ("qemu-io", "qemu-utils"),
        ("qemu-img", "qemu-utils"),
    ] {
        require_tool(tool, pkg);
    }
    assert!(
        Path::new("/usr/lib/ocf/lib/heartbeat/ocf-shellfuncs").exists(),
        "ocf-shellfuncs missing: apt-get install resource-agents"
    );
    let started = Instant::now();
    // Dropped in reverse order: daemons, cluster nodes, the tempdir, the namespaces.
    let net = Net::new();
    let dir = tempfile::Builder::new()
        .prefix("tandem-pacemaker-")
        .tempdir()
        .expect("tempdir");
    let d = dir.path().to_owned();

    // The agent where Pacemaker looks (bind-mounted over
    // /usr/lib/ocf/resource.d in each node); tandemadm is the agent's
    // `tandemadm` parameter.
    std::fs::create_dir_all(d.join("ocf/tandem")).expect("ocf dir");
    std::os::unix::fs::symlink(AGENT, d.join("ocf/tandem/tandem")).expect("agent link");

    let conf = d.join("tandem.conf");
    std::fs::write(
        &conf,
        format!(
            r#"resource r0 {{
  net {{ protocol C; shared-secret "pcmk"; connect-int 1; ping-int 1; ping-timeout 10; }}
  disk {{ c-max-rate 4G; }}
  on alpha {{ device nbd+unix:///r0?socket={d}/alpha.nbd; disk {d}/alpha.img; address {a}:7789; meta-disk {d}/alpha.md; }}
  on beta  {{ device nbd+unix:///r0?socket={d}/beta.nbd; disk {d}/beta.img; address {b}:7789; meta-disk {d}/beta.md; }}
}}
"#,
            a = net.ip[0],
            b = net.ip[1],
            d = d.display(),
        ),
    )
    .expect("config");

    let mut nodes: Vec<ClusterNode> = (0..2).map(|i| ClusterNode::new(&net.ns[i], NAMES[i], &d)).collect();

    // tandemd inside each node, then an UpToDate pair, both Secondary.
    let mut daemons: Vec<Daemon> = Vec::new();
    for (i, name) in NAMES.into_iter().enumerate() {
        let image = d.join(format!("{name}.img"));
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(SIZE))
            .expect("image");
        let mut t = Daemon::new(name, conf.clone(), &d, image);
        t.wrap = nodes[i].wrap();
        t.adm_ok(&["create-md", "r0"]);
        t.start();
        t.adm_ok(&["up", "r0"]);
        daemons.push(t);
    }
    daemons[0].wait_for("cs:Connected", 20);
    daemons[0].adm_ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
    for t in &daemons {
        t.wait_for("cs:Connected ro:Secondary/Secondary ds:UpToDate/UpToDate", 20);
    }

    // Corosync, then Pacemaker, in each node.
    for node in &mut nodes {
        let cc = node.dir.join("corosync.conf");
        std::fs::write(&cc, corosync_conf(&node.dir, &net.ip)).expect("corosync.conf");
        node.tool_ok("corosync", &["-t", "-c", &cc.to_string_lossy()]);
        let mut c = node.cmd("corosync");
        c.args(["-f", "-c", &cc.to_string_lossy()]);
        node.spawn(c, "corosync.out");
    }
    for node in &nodes {
        wait_until(
            20,
            "corosync to be ready",
            || {
                node.tool("corosync-quorumtool", &["-s"])
                    .status
                    .code()
                    .is_some_and(|c| c == 0)
            },
            || node.logs(),
        );
    }
    for node in &mut nodes {
        let mut c = node.cmd("pacemakerd");
        c.arg("-f")
            .env("PCMK_logfile", "/var/log/pacemaker/pacemaker.log")
            .env("PCMK_logfacility", "none");
        node.spawn(c, "pacemakerd.out");
    }
    let all_logs =
        |nodes: &[ClusterNode]| -> String { nodes.iter().map(|n| format!("{}\n{}", n.crm_mon(), n.logs())).collect() };
    wait_until(
        90,
        "both nodes online with a DC",
        || {
            nodes.iter().all(|n| {
                let m = n.crm_mon();
                m.contains("Online: [ alpha beta ]") && m.contains("partition with quorum")
            })
        },
        || all_logs(&nodes),
    );
    let online_after = started.elapsed();

    let n0 = &nodes[0];
    n0.tool_ok(
        "crm_attribute",
        &["-t", "crm_config", "-n", "stonith-enabled", "-v", "false"],
    );
    n0.tool_ok(
        "crm_attribute",
        &["-t", "crm_config", "-n", "no-quorum-policy", "-v", "ignore"],
    );
    let xml = clone_xml(&conf, [&daemons[0].run_dir, &daemons[1].run_dir]);
    n0.tool_ok("cibadmin", &["-C", "-o", "resources", "-X", &xml]);

    // Pacemaker promotes one of them (the agent's score: 10000 for each).
    let mut primary = usize::MAX;
    wait_until(
        60,
        "Pacemaker to promote a node",
        || {
            let promoted: Vec<usize> = (0..2)
                .filter(|&i| daemons[i].status().contains("ro:Primary/"))
                .collect();
            if promoted.len() == 1
                && nodes[0]
                    .crm_mon()
                    .contains(&format!("Promoted: [ {} ]", NAMES[promoted[0]]))
            {
                primary = promoted[0];
                return true;
            }
            false
        },
        || format!("{}\n{}\n{}", daemons[0].status(), daemons[1].status(), all_logs(&nodes)),
    );
    let survivor = 1 - primary;
    daemons[primary].wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 20);
    let promoted_after = started.elapsed();

    // Data through the Primary's export; the expected image alongside.
    let uri = |i: usize| format!("nbd+unix:///r0?socket={}/{}.nbd", d.display(), NAMES[i]);
    let mut expected = vec![0u8; SIZE as usize];
    let mut cmds = Vec::new();
    for (k, (off, len)) in [
        (0u64, 64 << 10),
        (1 << 20, 1 << 20),
        (9 << 20, 300 << 10),
        (SIZE - 4096, 4096),
    ]
    .into_iter()
    .enumerate()
    {
        let data = pattern(0x7a_0000 + k as u64, len);
        let chunk = d.join(format!("chunk{k}"));
        std::fs::write(&chunk, &data).expect("chunk");
        expected[off as usize..off as usize + len].copy_from_slice(&data);
        cmds.push(format!("write -s {} {off} {len}", chunk.display()));
    }
    cmds.push("flush".into());
    let cmd_refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io(&uri(primary), &cmd_refs);
    let expected_img = d.join("expected.img");
    std::fs::write(&expected_img, &expected).expect("expected image");
    let compare = |i: usize| {
        run(Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(&expected_img)
            .arg(uri(i)))
    };
    let before = compare(primary);
    assert!(
        before.status.success(),
        "the Primary does not hold what was written: {}",
        String::from_utf8_lossy(&before.stdout)
    );

    // The Primary node dies: every process in it, SIGKILL.
    let killed_at = Instant::now();
    nodes[primary].kill_all();
    daemons[primary].kill9();

    // Pacemaker on the survivor promotes it.
    wait_until(
        60,
        "the survivor to be promoted",
        || {
            daemons[survivor].status().contains("ro:Primary/")
                && nodes[survivor]
                    .crm_mon()
                    .contains(&format!("Promoted: [ {} ]", NAMES[survivor]))
        },
        || {
            format!(
                "{}\n{}",
                daemons[survivor].status(),
                all_logs(&nodes[survivor..=survivor])
            )
        },
    );
    let failover = killed_at.elapsed();

    let after = compare(survivor);
    assert!(
        after.status.success(),
        "the survivor's export differs from what was written before the failover: {}{}\n{}",
        String::from_utf8_lossy(&after.stdout),
        String::from_utf8_lossy(&after.stderr),
        daemons[survivor].status()
    );
    // And it serves writes as the new Primary.
    qemu_io(&uri(survivor), &["write -P 0x5c 2M 64k", "read -P 0x5c 2M 64k"]);
    eprintln!(
        "pacemaker: cluster online after {online_after:?}, {} promoted after {promoted_after:?}, \
         {} promoted {failover:?} after {} was killed; total {:?}",
        NAMES[primary],
        NAMES[survivor],
        NAMES[primary],
        started.elapsed()
    );
    drop(daemons);
    drop(nodes);
}
