//! Failover under a real cluster manager, with the seed guide's stack: a
//! two-node Pacemaker + Corosync cluster, each node in its own network
//! namespace and private mount namespace (its own /var/lib/pacemaker,
//! /var/lib/corosync, /var/log/pacemaker, /run, /dev/shm and /dev/tandem),
//! runs `dist/ocf/tandem` as a promotable clone and, grouped, colocated with
//! the promoted instance and ordered after its promotion, `dist/ocf/tandem-nbd`
//! (the Primary's export as /dev/tandem/r0, through nbdfuse and a loop
//! device) and ocf:heartbeat:Filesystem (ext4 at `data/mysql`): README's
//! Pacemaker configuration. Files are written and fsynced through the
//! mounted filesystem on the node Pacemaker promotes, and a writer is still
//! at it when every process of that node (corosync, pacemakerd and its
//! subdaemons, tandemd, nbdfuse, the writer) is killed with SIGKILL.
//! Pacemaker promotes the survivor and mounts the filesystem there; every
//! file whose fsync had returned is there with its content, the survivor
//! takes new writes, and e2fsck finds the filesystem clean.
//!
//! The two nodes share one kernel: its loop devices, and /dev apart from
//! /dev/tandem. The killed node's loop device stays attached to its dead
//! FUSE file until the test detaches it (`ClusterNode::kill_all`, also on
//! drop), as a real host's would vanish with the host.

mod common;

use common::netns::Net;
use common::pair::Daemon;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SIZE: u64 = 64 << 20;
const AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/ocf/tandem");
const NBD_AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/ocf/tandem-nbd");
const NAMES: [&str; 2] = ["alpha", "beta"];
/// The source files the writer copies: file N holds source N % SOURCES.
const SOURCES: usize = 32;
/// Written, fsynced, and logged before the background writer starts.
const FILES_BEFORE: usize = 24;
/// Logged by the background writer before the kill, at least.
const FILES_UNDER_LOAD: usize = 3;

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
    /// Device numbers (major:minor) of the node's FUSE mounts, taken just
    /// before it is killed: the loop devices backed by them are the node's.
    fuse_devs: Vec<String>,
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
# The node's own /dev/tandem, where tandem-nbd links /dev/tandem/r0, as a
# host of its own has it (the rest of /dev, loop devices included, stays
# shared; the mount point itself is made in the shared /dev).
mkdir -p /dev/tandem
mount -t tmpfs -o mode=755 tmpfs /dev/tandem
# The test's agents where Pacemaker looks, beside the system's heartbeat
# agents (Filesystem).
mount --bind /usr/lib/ocf/resource.d/heartbeat {top}/ocf/heartbeat
mount --rbind {top}/ocf /usr/lib/ocf/resource.d
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
            fuse_devs: Vec::new(),
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
        let nbd_log = if self.alive() {
            std::fs::read_to_string(self.root().join("run/tandem-nbd/r0.log")).unwrap_or_default()
        } else {
            String::new()
        };
        format!(
            "--- {n} corosync.log\n{}\n--- {n} pacemaker.log\n{}\n--- {n} tandem-nbd's nbdfuse log\n{}\n",
            tail(self.file("corosync.log")),
            tail(self.file("log/pacemaker.log")),
            tail(nbd_log),
            n = self.name
        )
    }

    /// Whether the holder still owns the node's mount namespace (after the
    /// kill its pid may belong to another process).
    fn alive(&self) -> bool {
        !self.mntns.is_empty()
            && std::fs::read_link(format!("/proc/{}/ns/mnt", self.holder_pid))
                .is_ok_and(|l| l.to_string_lossy() == self.mntns)
    }

    /// The node's file system tree as its own processes see it.
    fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder_pid))
    }

    /// Whether ext4 is mounted read-write at `dir` in the node.
    fn mounted_rw(&self, dir: &Path) -> bool {
        if !self.alive() {
            return false;
        }
        let mounts = std::fs::read_to_string(format!("/proc/{}/mounts", self.holder_pid)).unwrap_or_default();
        mounts.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() > 3 && Path::new(f[1]) == dir && f[2] == "ext4" && f[3].split(',').any(|o| o == "rw")
        })
    }

    /// The device numbers of the node's FUSE mounts (nbdfuse's), from
    /// mountinfo: field 3 is major:minor, the type follows the " - ".
    fn fuse_mount_devs(&self) -> Vec<String> {
        if !self.alive() {
            return Vec::new();
        }
        let info = std::fs::read_to_string(format!("/proc/{}/mountinfo", self.holder_pid)).unwrap_or_default();
        info.lines()
            .filter_map(|l| {
                let (head, tail) = l.split_once(" - ")?;
                let dev = head.split(' ').nth(2)?;
                tail.starts_with("fuse").then(|| dev.to_owned())
            })
            .collect()
    }

    /// The loop device /dev/tandem/r0 names in the node, with the device
    /// number of its backing file.
    fn linked_loop(&self) -> (String, String) {
        let dev = std::fs::read_link(self.root().join("dev/tandem/r0"))
            .unwrap_or_else(|e| panic!("{}: no /dev/tandem/r0: {e}", self.name))
            .to_string_lossy()
            .into_owned();
        let back = run_ok(Command::new("losetup").args(["-l", "-n", "-O", "BACK-MAJ:MIN", &dev]));
        (dev, back.trim().to_owned())
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
    /// (corosync, pacemakerd and its subdaemons, tandemd, nbdfuse, the
    /// writer, the holder); then its loop devices are detached.
    fn kill_all(&mut self) {
        let mounted = self.fuse_mount_devs();
        for dev in &mounted {
            if !self.fuse_devs.contains(dev) {
                self.fuse_devs.push(dev.clone());
            }
        }
        for round in 0..200 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: a plain kill(2) of a process in the node's namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if round == 0 {
                abort_fuse_connections(&mounted);
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
        self.detach_loops();
    }

    /// Detach the loop devices on the node's FUSE mounts: a dead node's
    /// outlive it (the kernel is shared) and hold its dead FUSE file. While
    /// the filesystem on one is still being torn down with the namespace,
    /// losetup -d only marks it, and the kernel detaches it when released.
    fn detach_loops(&mut self) {
        let ours = |fuse_devs: &[String]| -> Vec<String> {
            let out = run(Command::new("losetup").args(["-l", "-n", "-O", "NAME,BACK-MAJ:MIN"]));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    let (name, back) = (f.next()?, f.next()?);
                    fuse_devs.iter().any(|d| d == back).then(|| name.to_owned())
                })
                .collect()
        };
        if self.fuse_devs.is_empty() {
            return;
        }
        for dev in ours(&self.fuse_devs) {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = ours(&self.fuse_devs);
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "{}: loop devices still attached to its dead FUSE files: {left:?}",
                    self.name
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A dead host's FUSE connections die with it; here the kernel is shared,
/// and they outlive the node. Worse, the namespace's mounts are torn down
/// by whichever of its processes exits last: when that is nbdfuse, its
/// exit unmounts the ext4 on the loop device, whose final flush goes
/// through the FUSE file nbdfuse no longer serves, and nbdfuse waits for
/// itself forever (with every later `losetup -l` stuck on the file). An
/// aborted connection fails those requests at once, as a vanished host
/// would. Only the connections mounted in the node a moment ago: a number
/// freed since may already be another mount's.
fn abort_fuse_connections(devs: &[String]) {
    if devs.is_empty() {
        return;
    }
    let control = Path::new("/sys/fs/fuse/connections");
    let mounted = std::fs::read_dir(control)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    // fusectl, where the connections are: mounted by systemd on most hosts,
    // not in every container; if the test mounts it, it unmounts it after.
    let ours = !mounted
        && Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(control)
            .status()
            .is_ok_and(|s| s.success());
    for dev in devs {
        if let Some(minor) = dev.split(':').nth(1) {
            let _ = std::fs::write(control.join(minor).join("abort"), "1");
        }
    }
    if ours {
        let _ = Command::new("umount").arg(control).status();
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

/// README's Pacemaker configuration as CIB XML, with its ids, loaded in one
/// step (a group that existed before its colocation could be started on the
/// Secondary, where the client cannot connect): the promotable
/// clone `ms_tandem_r0` of `p_tandem_r0`, and the group `g_mysql` of the NBD
/// client `p_nbd_r0` and the filesystem `p_fs_mysql` (MariaDB left out). A
/// clone has one set of instance attributes, so each node's own `node` and
/// `run_dir` (the test's, beside the defaults a real node would use) are
/// chosen by a rule on the node name. Monitor intervals are a few seconds
/// instead of README's half minute, to keep the test short.
fn configuration_xml(conf: &Path, run_dirs: [&Path; 2], mnt: &Path) -> String {
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
        r#"<configuration><resources><clone id="ms_tandem_r0"><meta_attributes id="tc-meta"><nvpair id="tc-p" name="promotable" value="true"/><nvpair id="tc-cm" name="clone-max" value="2"/><nvpair id="tc-cnm" name="clone-node-max" value="1"/><nvpair id="tc-pm" name="promoted-max" value="1"/><nvpair id="tc-pnm" name="promoted-node-max" value="1"/><nvpair id="tc-n" name="notify" value="true"/></meta_attributes><primitive id="p_tandem_r0" class="ocf" provider="tandem" type="tandem"><instance_attributes id="t-common" score="1"><nvpair id="t-res" name="resource" value="r0"/><nvpair id="t-conf" name="config" value="{conf}"/><nvpair id="t-adm" name="tandemadm" value="{adm}"/></instance_attributes>{per_node}<operations><op id="t-mon-p" name="monitor" interval="3s" role="Promoted" timeout="20s"/><op id="t-mon-u" name="monitor" interval="4s" role="Unpromoted" timeout="20s"/></operations></primitive></clone><group id="g_mysql"><primitive id="p_nbd_r0" class="ocf" provider="tandem" type="tandem-nbd"><instance_attributes id="nbd-ia"><nvpair id="nbd-res" name="resource" value="r0"/></instance_attributes><operations><op id="nbd-mon" name="monitor" interval="5s" timeout="20s"/></operations></primitive><primitive id="p_fs_mysql" class="ocf" provider="heartbeat" type="Filesystem"><instance_attributes id="fs-ia"><nvpair id="fs-dev" name="device" value="/dev/tandem/r0"/><nvpair id="fs-dir" name="directory" value="{mnt}"/><nvpair id="fs-type" name="fstype" value="ext4"/></instance_attributes><operations><op id="fs-mon" name="monitor" interval="5s" timeout="40s"/></operations></primitive></group></resources>{CONSTRAINTS_XML}</configuration>"#,
        conf = conf.display(),
        adm = TANDEMADM,
        mnt = mnt.display()
    )
}

/// README's `colocation c_mysql_on_tandem inf: g_mysql ms_tandem_r0:Master`
/// and `order o_tandem_before_mysql inf: ms_tandem_r0:promote g_mysql:start`.
const CONSTRAINTS_XML: &str = r#"<constraints><rsc_colocation id="c_mysql_on_tandem" score="INFINITY" rsc="g_mysql" with-rsc="ms_tandem_r0" with-rsc-role="Promoted"/><rsc_order id="o_tandem_before_mysql" kind="Mandatory" first="ms_tandem_r0" first-action="promote" then="g_mysql" then-action="start"/></constraints>"#;

/// The writer, run inside a node: `writer.sh MNT SRC LOG FIRST LAST` copies
/// SRC/s(i % SOURCES) to MNT/file(i) for i in FIRST..LAST, fsyncs the file
/// and the directory, and only then appends the name to LOG (outside the
/// node, on the test's disk). So a name in LOG is a file that was durable.
const WRITER: &str = r#"set -e
mnt=$1 src=$2 log=$3 i=$4 last=$5
while [ "$i" -lt "$last" ]; do
  cat "$src/s$((i % SOURCES))" > "$mnt/file$i"
  sync "$mnt/file$i" "$mnt"
  echo "file$i" >> "$log"
  i=$((i + 1))
done
"#;

fn wait_until(secs: u64, what: &str, mut ok: impl FnMut() -> bool, diag: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", diag());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The writer inside `node`, for files `first..last`.
fn writer(node: &ClusterNode, mnt: &Path, src: &Path, log: &Path, first: usize, last: usize) -> Command {
    let mut c = node.cmd("sh");
    c.arg("-c")
        .arg(WRITER)
        .arg("writer")
        .args([mnt, src, log])
        .args([first.to_string(), last.to_string()])
        .env("SOURCES", SOURCES.to_string());
    c
}

/// The names the writer logged: each was fsynced, with its directory.
fn logged(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn pacemaker_fails_over_the_filesystem_on_tandem_when_the_primary_node_dies() {
    for (tool, pkg) in [
        ("corosync", "corosync"),
        ("pacemakerd", "pacemaker"),
        ("crm_mon", "pacemaker-cli-utils"),
        ("cibadmin", "pacemaker-cli-utils"),
        ("crm_resource", "pacemaker-cli-utils"),
        ("nsenter", "util-linux"),
        ("unshare", "util-linux"),
        ("losetup", "util-linux"),
        ("nbdfuse", "libnbd-bin"),
        ("fusermount3", "fuse3"),
        ("mkfs.ext4", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
    ] {
        require_tool(tool, pkg);
    }
    for agent in ["heartbeat/Filesystem", "lib/heartbeat/ocf-shellfuncs"] {
        let path = Path::new("/usr/lib/ocf").join(if agent.starts_with("lib/") {
            agent.to_owned()
        } else {
            format!("resource.d/{agent}")
        });
        assert!(
            path.exists(),
            "{} missing: apt-get install resource-agents",
            path.display()
        );
    }
    let started = Instant::now();
    // Dropped in reverse order: daemons, cluster nodes, the tempdir, the namespaces.
    let net = Net::new();
    let dir = tempfile::Builder::new()
        .prefix("tandem-pacemaker-")
        .tempdir()
        .expect("tempdir");
    let d = dir.path().to_owned();

    // The agents where Pacemaker looks: the test's ocf directory is
    // bind-mounted over /usr/lib/ocf/resource.d in each node, with the
    // system's heartbeat agents (Filesystem) mounted into it.
    std::fs::create_dir_all(d.join("ocf/tandem")).expect("ocf dir");
    std::fs::create_dir_all(d.join("ocf/heartbeat")).expect("ocf dir");
    std::os::unix::fs::symlink(AGENT, d.join("ocf/tandem/tandem")).expect("agent link");
    std::os::unix::fs::symlink(NBD_AGENT, d.join("ocf/tandem/tandem-nbd")).expect("agent link");

    // Each node serves its export where tandem-nbd looks by default,
    // 127.0.0.1:10809, in its own network namespace.
    let conf = d.join("tandem.conf");
    std::fs::write(
        &conf,
        format!(
            r#"resource r0 {{
  net {{ protocol C; shared-secret "pcmk"; connect-int 1; ping-int 1; ping-timeout 10; }}
  disk {{ c-max-rate 4G; }}
  on alpha {{ device nbd://127.0.0.1:10809/r0; disk {d}/alpha.img; address {a}:7789; meta-disk {d}/alpha.md; }}
  on beta  {{ device nbd://127.0.0.1:10809/r0; disk {d}/beta.img; address {b}:7789; meta-disk {d}/beta.md; }}
}}
"#,
            a = net.ip[0],
            b = net.ip[1],
            d = d.display(),
        ),
    )
    .expect("config");
    // The same directory on both nodes, as /data/mysql would be; each node
    // mounts it in its own mount namespace.
    let mnt = d.join("data/mysql");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let src = d.join("src");
    std::fs::create_dir_all(&src).expect("sources");
    let sources: Vec<Vec<u8>> = (0..SOURCES)
        .map(|k| pattern(0x5eed_0000 + k as u64, 4096 * (1 + (k * 7) % 48) + k * 100))
        .collect();
    for (k, data) in sources.iter().enumerate() {
        std::fs::write(src.join(format!("s{k}")), data).expect("source file");
    }
    let log = d.join("written.log");

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

    // The guide's one-time step before the cluster takes over: on one node,
    // promote, connect the client, make the filesystem, and back.
    daemons[0].adm_ok(&["primary", "r0"]);
    let nbd = NBD_AGENT;
    nodes[0].tool_ok(
        "sh",
        &[
            "-c",
            &format!("{nbd} r0 start && mkfs.ext4 -q /dev/tandem/r0 && {nbd} r0 stop"),
        ],
    );
    // nbdfuse has exited; the Primary sees its connections close a moment later.
    wait_until(
        10,
        "alpha to be demoted after mkfs",
        || daemons[0].adm(&["secondary", "r0"]).status.success(),
        || daemons[0].log_text(),
    );

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
    let configuration = configuration_xml(&conf, [&daemons[0].run_dir, &daemons[1].run_dir], &mnt);
    n0.tool_ok("cibadmin", &["-M", "-X", &configuration]);

    // Pacemaker promotes one node (the agent's score: 10000 for each) and
    // starts the group there: the client, then the filesystem.
    let mut primary = usize::MAX;
    wait_until(
        60,
        "Pacemaker to promote a node and mount the filesystem there",
        || {
            let promoted: Vec<usize> = (0..2)
                .filter(|&i| daemons[i].status().contains("ro:Primary/"))
                .collect();
            let mounted: Vec<usize> = (0..2).filter(|&i| nodes[i].mounted_rw(&mnt)).collect();
            if promoted.len() == 1
                && mounted == promoted
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
    let status = nodes[primary].crm_mon();
    assert!(
        !status.contains("Failed Resource Actions"),
        "{status}\n{}",
        all_logs(&nodes)
    );
    daemons[primary].wait_for("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", 20);
    let promoted_after = started.elapsed();
    // The filesystem sits on the node's own client.
    let (loop_dev, back) = nodes[primary].linked_loop();
    assert!(
        nodes[primary].fuse_mount_devs().contains(&back),
        "{}: /dev/tandem/r0 names {loop_dev} on {back}, not on the node's nbdfuse",
        NAMES[primary]
    );

    // Files through the filesystem, each fsynced with its directory.
    let out = run(&mut writer(&nodes[primary], &mnt, &src, &log, 0, FILES_BEFORE));
    assert!(
        out.status.success(),
        "writing through the filesystem failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        all_logs(&nodes)
    );
    // And a writer still at it when the node dies (bounded, well short of
    // a full filesystem).
    let bg = writer(&nodes[primary], &mnt, &src, &log, FILES_BEFORE, FILES_BEFORE + 200);
    nodes[primary].spawn(bg, "writer.out");
    wait_until(
        20,
        "the background writer",
        || logged(&log).len() >= FILES_BEFORE + FILES_UNDER_LOAD,
        || nodes[primary].file("writer.out"),
    );

    // The Primary node dies: every process in it, SIGKILL.
    let killed_at = Instant::now();
    nodes[primary].kill_all();
    daemons[primary].kill9();
    let durable = logged(&log);
    assert!(
        durable.len() < FILES_BEFORE + 200,
        "the writer had finished before the kill"
    );

    // Pacemaker on the survivor promotes it and mounts the filesystem.
    wait_until(
        60,
        "the survivor to be promoted with the filesystem mounted",
        || {
            daemons[survivor].status().contains("ro:Primary/")
                && nodes[survivor].mounted_rw(&mnt)
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
    // No action failed on the way (a client started before the promotion,
    // a promote refused, a mount that needed a retry would show here).
    let status = nodes[survivor].crm_mon();
    assert!(
        !status.contains("Failed Resource Actions"),
        "{status}\n{}",
        all_logs(&nodes[survivor..=survivor])
    );
    let (loop_dev, back) = nodes[survivor].linked_loop();
    assert!(
        nodes[survivor].fuse_mount_devs().contains(&back),
        "{}: /dev/tandem/r0 names {loop_dev} on {back}, not on the node's own nbdfuse",
        NAMES[survivor]
    );

    // What the admin checks: every file whose fsync had returned is there,
    // whole.
    let on_survivor = nodes[survivor].root().join(mnt.strip_prefix("/").expect("absolute"));
    for name in &durable {
        let i: usize = name.trim_start_matches("file").parse().expect("file number");
        let got = std::fs::read(on_survivor.join(name))
            .unwrap_or_else(|e| panic!("{name}, fsynced before the kill, is missing after the failover: {e}"));
        assert!(
            got == sources[i % SOURCES],
            "{name}, fsynced before the kill, has other content after the failover ({} bytes, {} expected)",
            got.len(),
            sources[i % SOURCES].len()
        );
    }
    // The new Primary takes writes through the same stack.
    let first_after = FILES_BEFORE + 1000;
    let out = run(&mut writer(
        &nodes[survivor],
        &mnt,
        &src,
        &log,
        first_after,
        first_after + 4,
    ));
    assert!(
        out.status.success(),
        "the survivor's filesystem does not take writes: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // And the filesystem is clean: stopped by Pacemaker (the client stays),
    // then checked read-only.
    nodes[survivor].tool_ok(
        "crm_resource",
        &[
            "--resource",
            "p_fs_mysql",
            "--meta",
            "--set-parameter",
            "target-role",
            "--parameter-value",
            "Stopped",
        ],
    );
    wait_until(
        30,
        "Pacemaker to unmount the filesystem",
        || !nodes[survivor].mounted_rw(&mnt),
        || all_logs(&nodes[survivor..=survivor]),
    );
    let fsck = nodes[survivor].tool("e2fsck", &["-fn", "/dev/tandem/r0"]);
    assert!(
        fsck.status.success(),
        "e2fsck -fn on the survivor's /dev/tandem/r0 found problems ({}):\n{}{}",
        fsck.status,
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    eprintln!(
        "pacemaker: cluster online after {online_after:?}, {} promoted with the filesystem after {promoted_after:?}, \
         {} files fsynced before the kill, {} promoted with the filesystem mounted {failover:?} after {} was killed; \
         e2fsck clean; total {:?}",
        NAMES[primary],
        durable.len(),
        NAMES[survivor],
        NAMES[primary],
        started.elapsed()
    );
    let _ = std::process::Command::new("cp")
        .args(["-r"])
        .arg(d.join("ha-alpha"))
        .arg(d.join("ha-beta"))
        .arg("/tmp/pcmk-debug/")
        .status();
    drop(daemons);
    drop(nodes);
}

/// README's and the guide's crm configurations, loaded by crmsh into an
/// empty CIB file (with the agents where crmsh looks for their meta-data,
/// in a private mount namespace), pass crm_verify and have the structure
/// the cluster test above runs, which is checked against the same rules.
#[test]
fn readme_and_guide_crm_configurations_load_and_match_the_tested_one() {
    require_tool("crm", "crmsh");
    require_tool("crm_verify", "pacemaker-cli-utils");
    require_tool("xmllint", "libxml2-utils");
    require_tool("unshare", "util-linux");
    let dir = tempfile::Builder::new()
        .prefix("tandem-crm-")
        .tempdir()
        .expect("tempdir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("ocf/tandem")).expect("ocf dir");
    std::fs::create_dir_all(d.join("ocf/heartbeat")).expect("ocf dir");
    std::os::unix::fs::symlink(AGENT, d.join("ocf/tandem/tandem")).expect("agent link");
    std::os::unix::fs::symlink(NBD_AGENT, d.join("ocf/tandem/tandem-nbd")).expect("agent link");

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/guide-mysql-failover.md")).expect("guide");
    // README: the fenced block of its Pacemaker item (indented in the list).
    let readme_crm: String = readme
        .split("- **Pacemaker**")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .expect("README's Pacemaker block")
        .lines()
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    // The guide: the here-document it loads with crm configure load update.
    let guide_crm = guide
        .split("cat > /root/tandem-mysql.crm <<'EOF'\n")
        .nth(1)
        .and_then(|rest| rest.split("\nEOF\n").next())
        .expect("the guide's crm file");

    let group_and_constraints = [
        "//group[@id='g_mysql']/primitive[1][@id='p_nbd_r0' and @class='ocf' and @provider='tandem' and @type='tandem-nbd']",
        "//group[@id='g_mysql']/primitive[1]//nvpair[@name='resource' and @value='r0']",
        "//group[@id='g_mysql']/primitive[2][@id='p_fs_mysql' and @provider='heartbeat' and @type='Filesystem']",
        "//group[@id='g_mysql']/primitive[2]//nvpair[@name='device' and @value='/dev/tandem/r0']",
        "//group[@id='g_mysql']/primitive[2]//nvpair[@name='fstype' and @value='ext4']",
        "(//master|//clone)[@id='ms_tandem_r0']/primitive[@id='p_tandem_r0' and @provider='tandem' and @type='tandem']",
        "(//master|//clone)[@id='ms_tandem_r0']/meta_attributes/nvpair[@name='notify' and @value='true']",
        "(//master|//clone)[@id='ms_tandem_r0']/meta_attributes/nvpair[@name='clone-max' and @value='2']",
        "//rsc_colocation[@id='c_mysql_on_tandem' and @score='INFINITY' and @rsc='g_mysql' and @with-rsc='ms_tandem_r0' \
         and (@with-rsc-role='Master' or @with-rsc-role='Promoted')]",
        "//rsc_order[@id='o_tandem_before_mysql' and @kind='Mandatory' and @first='ms_tandem_r0' \
         and @first-action='promote' and @then='g_mysql' and @then-action='start']",
    ];
    let check = |cib: &Path, rules: &[&str]| {
        for rule in rules {
            let out = run_ok(
                Command::new("xmllint")
                    .args(["--xpath", &format!("boolean({rule})")])
                    .arg(cib),
            );
            assert_eq!(
                out.trim(),
                "true",
                "{} lacks {rule}:\n{}",
                cib.display(),
                std::fs::read_to_string(cib).unwrap_or_default()
            );
        }
    };

    for (name, text) in [("readme", readme_crm.as_str()), ("guide", guide_crm)] {
        let crm = d.join(format!("{name}.crm"));
        // README leaves fencing to the guide, whose first test has
        // stonith-enabled=false; crm_verify refuses a configuration with
        // neither fencing nor that.
        let fencing = if text.contains("stonith-enabled") {
            ""
        } else {
            "property stonith-enabled=false\n"
        };
        std::fs::write(&crm, format!("{fencing}{text}\n")).expect("crm file");
        let cib = d.join(format!("{name}.xml"));
        std::fs::write(&cib, run_ok(Command::new("cibadmin").arg("--empty"))).expect("empty CIB");
        let script = format!(
            "set -e
mount --bind /usr/lib/ocf/resource.d/heartbeat {d}/ocf/heartbeat
mount --rbind {d}/ocf /usr/lib/ocf/resource.d
CIB_file={cib} crm configure load update {crm}
crm_verify -x {cib}
",
            d = d.display(),
            cib = cib.display(),
            crm = crm.display()
        );
        let out = run(Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]));
        assert!(
            out.status.success(),
            "{name}'s configuration does not load or verify:\n{}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        check(&cib, &group_and_constraints);
        check(
            &cib,
            &["//group[@id='g_mysql']/primitive[3][@id='p_mysql' and @provider='heartbeat' and @type='mysql']"],
        );
    }

    // The configuration the cluster test loads follows the same rules.
    let tested = d.join("tested.xml");
    let conf = configuration_xml(Path::new("/etc/tandem/tandem.conf"), [d, d], Path::new("/data/mysql"));
    std::fs::write(&tested, format!("<cib>{conf}</cib>")).expect("tested configuration");
    check(&tested, &group_and_constraints);
}
