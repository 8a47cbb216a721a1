//! `dist/ocf/tandem-nbd`, the NBD client step of a cluster (the piece
//! between `tandemdisk`/the promotable clone and `Filesystem`): as a
//! Heartbeat resource script it turns the Primary's export into a block
//! device at /dev/tandem/RESOURCE and back, and what is written through that
//! device is replicated; as an OCF agent it passes ocf-tester; and neither
//! a stale /dev/tandem/r0 (left by a client that was killed) nor a loop
//! device that another mount namespace set up on a file with the agent's
//! own path is taken for ours or torn down.

mod common;

use common::pair::*;
use common::*;
use std::process::Command;

const AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/ocf/tandem-nbd");

/// The agent works on fixed paths (/dev/tandem/r0, /run/tandem-nbd/r0), as
/// it does on a real host: one test at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A synced pair and the agent pointed at the Primary's export, one test at
/// a time; on drop the agent is stopped (unmounts and detaches whatever it
/// left, even if the test failed), then the pair goes.
struct Client {
    uri: String,
    p: Pair,
    _one: std::sync::MutexGuard<'static, ()>,
}

impl Client {
    fn new() -> Client {
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let p = Pair::synced();
        Client {
            uri: format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha),
            p,
            _one: one,
        }
    }

    /// The agent as Heartbeat v1 runs it: `tandem-nbd r0 URI ACTION`.
    fn hb(&self, action: &str) -> std::process::Output {
        run(Command::new(AGENT).args(["r0", &self.uri, action]))
    }

    /// What it printed: Heartbeat reads the words, as with drbddisk
    /// ("running"/"stopped").
    fn said(&self, action: &str) -> String {
        String::from_utf8_lossy(&self.hb(action).stdout).trim().to_owned()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = Command::new(AGENT).args(["r0", &self.uri, "stop"]).status();
    }
}

#[test]
fn as_a_heartbeat_script_it_makes_a_block_device_whose_writes_replicate() {
    require_tool("nbdfuse", "libnbd-bin");
    require_tool("losetup", "util-linux");
    let c = Client::new();
    let p = &c.p;

    assert_eq!(c.said("status"), "stopped");
    let out = c.hb("start");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = c.said("status");
    assert!(status.contains("running"), "{status}");
    let size = run_ok(Command::new("blockdev").args(["--getsize64", "/dev/tandem/r0"]));
    assert_eq!(size.trim().parse::<u64>().ok(), Some(SIZE));

    // Through the block device, as Filesystem and MySQL would write.
    let data = pattern(5, 1 << 20);
    let src = p.dir.path().join("pattern");
    std::fs::write(&src, &data).expect("pattern");
    run_ok(Command::new("dd").arg(format!("if={}", src.display())).args([
        "of=/dev/tandem/r0",
        "bs=64k",
        "seek=16",
        "oflag=direct",
        "conv=fsync",
    ]));

    let out = c.hb("stop");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !std::path::Path::new("/dev/tandem/r0").exists(),
        "the link outlived stop"
    );
    assert_eq!(c.said("status"), "stopped");
    // The client is gone, so the Primary can be demoted (the next step of a
    // switchover), and both replicas hold the bytes.
    p.alpha.adm_ok(&["secondary", "r0"]);
    p.assert_identical();
    let beta = std::fs::read(&p.beta.image).expect("beta image");
    assert_eq!(&beta[1 << 20..2 << 20], &data[..]);
}

#[test]
fn as_an_ocf_agent_it_passes_ocf_tester() {
    require_tool("ocf-tester", "resource-agents");
    require_tool("xmllint", "libxml2-utils");
    let c = Client::new();
    let out = run(Command::new("ocf-tester")
        .args(["-n", "tandem-nbd-r0", "-o", "resource=r0"])
        .arg("-o")
        .arg(format!("uri={}", c.uri))
        .arg(AGENT));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("passed all tests"), "{text}");
}

/// A loop device on a file with the agent's own backing path,
/// /run/tandem-nbd/r0/disk, set up from another mount namespace that stays
/// alive: another cluster node's client on a host the two nodes share (as
/// in tests/pacemaker.rs). Seen from here, its backing file has our path;
/// only its device number differs. The namespace's holder is killed and
/// the loop device detached on drop.
struct ForeignLoop {
    dev: String,
    holder: std::process::Child,
}

impl ForeignLoop {
    fn new() -> ForeignLoop {
        use std::io::BufRead;
        let mut holder = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mkdir -p /run/tandem-nbd/r0 && mount -t tmpfs -o size=2M tmpfs /run/tandem-nbd/r0 \
                 && truncate -s 1M /run/tandem-nbd/r0/disk && losetup --find --show /run/tandem-nbd/r0/disk \
                 && exec sleep 600",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        let stdout = holder.stdout.take().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("loop device");
        let foreign = ForeignLoop {
            dev: line.trim().to_owned(),
            holder,
        };
        assert!(foreign.dev.starts_with("/dev/loop"), "no foreign loop device: {line:?}");
        assert!(foreign.attached(), "the foreign loop device does not show our path");
        foreign
    }

    /// Still attached, to a file that shows the agent's path.
    fn attached(&self) -> bool {
        let out = run(Command::new("losetup").args(["-l", "-n", "-O", "BACK-FILE", &self.dev]));
        String::from_utf8_lossy(&out.stdout).trim() == "/run/tandem-nbd/r0/disk"
    }
}

impl Drop for ForeignLoop {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[test]
fn a_stale_link_and_another_namespaces_loop_device_on_our_path_are_not_taken_for_ours() {
    require_tool("nbdfuse", "libnbd-bin");
    require_tool("unshare", "util-linux");
    let c = Client::new();
    let link = std::path::Path::new("/dev/tandem/r0");

    let foreign = ForeignLoop::new();
    std::fs::create_dir_all("/dev/tandem").expect("/dev/tandem");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&foreign.dev, link).expect("stale link");
    assert_eq!(c.said("status"), "stopped", "a link to another client's device");

    let out = c.hb("start");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours = std::fs::canonicalize(link).expect("link");
    assert_ne!(ours.to_string_lossy(), foreign.dev, "start kept the stale link");
    assert!(c.said("status").contains("running"));
    let size = run_ok(Command::new("blockdev").args(["--getsize64", "/dev/tandem/r0"]));
    assert_eq!(size.trim().parse::<u64>().ok(), Some(SIZE), "the link names our export");

    let out = c.hb("stop");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!link.exists(), "the link outlived stop");
    assert!(foreign.attached(), "stop detached a loop device that is not ours");
    // Ours is gone: the Primary can be demoted.
    c.p.alpha.adm_ok(&["secondary", "r0"]);
}
