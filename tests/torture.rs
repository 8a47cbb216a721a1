//! The torture suite with real processes: two `tandemd`s in their own
//! network namespaces, a client writing self-describing blocks (block
//! number, generation, checksummed contents) and logging every write that
//! was acknowledged, and a seeded schedule of faults: kill -9 of either
//! daemon and restart, failover after the Primary dies, symmetric and
//! one-way iptables partitions, the link squeezed with tc htb, a backing
//! disk that fails with EIO (replaced: `create-md --force`, `attach`) and
//! one that runs full (ENOSPC; space freed, then `attach` or `resync-oos`):
//! each node's disk is a sparse image behind nbdkit's error filter and
//! nbdfuse (`common::faulty_disk`). After
//! each fault the operator's steps, then a checker reads every block back
//! from the Primary and compares it with the acknowledged history. At the
//! end both replicas must be identical.
//!
//! `TANDEM_TORTURE_SEED` picks the schedule, `TANDEM_TORTURE_FAULTS` its
//! length (CI: 5). `scripts/torture.sh` runs a long one and writes
//! `RELIABILITY.md`.

mod common;

use common::faulty_disk::FaultyDisk;
use common::netns::Net;
use common::pair::Daemon;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SIZE: u64 = 32 << 20;
/// Blocks the client writes (the first 8 MiB, two activity-log extents).
const BLOCKS: u64 = 2048;
const NO_PRIMARY: usize = usize::MAX;

/// A tiny NBD client over a unix socket: handshake, QD1 read and write.
struct Nbd {
    s: UnixStream,
    cookie: u64,
}

impl Nbd {
    fn connect(path: &Path) -> std::io::Result<Nbd> {
        let mut s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut greet = [0u8; 18];
        s.read_exact(&mut greet)?;
        s.write_all(&3u32.to_be_bytes())?;
        let mut opt = Vec::new();
        opt.extend_from_slice(&0x4948_4156_454F_5054u64.to_be_bytes());
        opt.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
        opt.extend_from_slice(&8u32.to_be_bytes());
        opt.extend_from_slice(&2u32.to_be_bytes());
        opt.extend_from_slice(b"r0");
        opt.extend_from_slice(&0u16.to_be_bytes());
        s.write_all(&opt)?;
        loop {
            let mut hdr = [0u8; 20];
            s.read_exact(&mut hdr)?;
            let kind = u32::from_be_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]);
            let len = u32::from_be_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]) as usize;
            let mut data = vec![0u8; len];
            s.read_exact(&mut data)?;
            match kind {
                1 => return Ok(Nbd { s, cookie: 0 }),
                3 => {}
                _ => return Err(std::io::Error::other(String::from_utf8_lossy(&data).into_owned())),
            }
        }
    }

    fn request(&mut self, cmd: u16, offset: u64, len: u32, payload: &[u8]) -> std::io::Result<u32> {
        self.cookie += 1;
        let mut req = Vec::with_capacity(28 + payload.len());
        req.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        req.extend_from_slice(&0u16.to_be_bytes());
        req.extend_from_slice(&cmd.to_be_bytes());
        req.extend_from_slice(&self.cookie.to_be_bytes());
        req.extend_from_slice(&offset.to_be_bytes());
        req.extend_from_slice(&len.to_be_bytes());
        req.extend_from_slice(payload);
        self.s.write_all(&req)?;
        let mut r = [0u8; 16];
        self.s.read_exact(&mut r)?;
        Ok(u32::from_be_bytes([r[4], r[5], r[6], r[7]]))
    }

    fn write(&mut self, block: u64, data: &[u8]) -> std::io::Result<u32> {
        self.request(NBD_CMD_WRITE, block * 4096, 4096, data)
    }

    fn read(&mut self, block: u64) -> std::io::Result<Vec<u8>> {
        let err = self.request(NBD_CMD_READ, block * 4096, 4096, &[])?;
        if err != 0 {
            return Err(std::io::Error::other(format!("read error {err}")));
        }
        let mut data = vec![0u8; 4096];
        self.s.read_exact(&mut data)?;
        Ok(data)
    }
}

/// Block `b`, generation `g`: its number, its generation, then contents
/// derived from both, so a torn, stale or misplaced block is recognised.
fn block_for(b: u64, g: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(4096);
    v.extend_from_slice(&b.to_le_bytes());
    v.extend_from_slice(&g.to_le_bytes());
    v.extend_from_slice(&pattern(b.wrapping_mul(1_000_003) ^ g, 4096 - 16));
    v
}

/// What a block holds: `None` if it is not a well-formed block of ours.
fn parse(b: u64, data: &[u8]) -> Option<u64> {
    if data.iter().all(|&x| x == 0) {
        return Some(0);
    }
    let got_b = u64::from_le_bytes(data[..8].try_into().ok()?);
    let g = u64::from_le_bytes(data[8..16].try_into().ok()?);
    (got_b == b && data == block_for(b, g).as_slice()).then_some(g)
}

#[derive(Default)]
struct History {
    /// Latest acknowledged generation per block.
    acked: BTreeMap<u64, u64>,
    /// Writes whose outcome the client never learned, per block.
    maybe: BTreeMap<u64, BTreeSet<u64>>,
    writes_acked: u64,
}

struct Workload {
    primary: Arc<AtomicUsize>,
    paused: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Workload {
    fn start(sockets: [PathBuf; 2], seed: u64) -> Workload {
        let primary = Arc::new(AtomicUsize::new(0));
        let paused = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(History::default()));
        let (p, pa, id, st, h) = (
            primary.clone(),
            paused.clone(),
            idle.clone(),
            stop.clone(),
            history.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut x = seed | 1;
            let mut gen = 0u64;
            let mut conn: Option<Nbd> = None;
            while !st.load(Ordering::SeqCst) {
                let who = p.load(Ordering::SeqCst);
                if pa.load(Ordering::SeqCst) || who == NO_PRIMARY {
                    conn = None;
                    id.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                id.store(false, Ordering::SeqCst);
                if conn.is_none() {
                    conn = Nbd::connect(&sockets[who]).ok();
                    if conn.is_none() {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let b = x % BLOCKS;
                gen += 1;
                let Some(c) = conn.as_mut() else { continue };
                let outcome = c.write(b, &block_for(b, gen));
                let mut h = h.lock().expect("history");
                match outcome {
                    Ok(0) => {
                        h.acked.insert(b, gen);
                        h.maybe.remove(&b);
                        h.writes_acked += 1;
                    }
                    _ => {
                        h.maybe.entry(b).or_default().insert(gen);
                        conn = None;
                    }
                }
            }
        });
        Workload {
            primary,
            paused,
            idle,
            stop,
            history,
            thread: Some(thread),
        }
    }

    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.idle.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the workload did not pause");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Cluster {
    // Fields drop in order: the daemons before the disks they use.
    nodes: Vec<Daemon>,
    disks: Vec<FaultyDisk>,
    _net: Net,
    _dir: tempfile::TempDir,
    sockets: [PathBuf; 2],
}

impl Cluster {
    fn new() -> Cluster {
        let net = Net::new();
        let dir = tempfile::Builder::new()
            .prefix("tandem-torture-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().to_owned();
        let disks: Vec<FaultyDisk> = ["alpha", "beta"]
            .into_iter()
            .map(|name| FaultyDisk::start(&d, name, SIZE))
            .collect();
        let conf = d.join("tandem.conf");
        std::fs::write(
            &conf,
            format!(
                r#"resource r0 {{
  net {{ protocol C; shared-secret "torture"; connect-int 1; ping-int 1; ping-timeout 10; }}
  disk {{ c-max-rate 4G; }}
  on alpha {{ device nbd+unix:///r0?socket={d}/alpha.nbd; disk {da}; address {a}:7789; meta-disk {d}/alpha.md; }}
  on beta  {{ device nbd+unix:///r0?socket={d}/beta.nbd; disk {db}; address {b}:7789; meta-disk {d}/beta.md; }}
}}
"#,
                a = net.ip[0],
                b = net.ip[1],
                d = d.display(),
                da = disks[0].file().display(),
                db = disks[1].file().display(),
            ),
        )
        .expect("config");
        let mut nodes = Vec::new();
        for (i, name) in ["alpha", "beta"].into_iter().enumerate() {
            let mut n = Daemon::new(name, conf.clone(), &d, disks[i].image());
            n.ns = Some(net.ns[i].clone());
            n.adm_ok(&["create-md", "r0"]);
            n.start();
            n.adm_ok(&["up", "r0"]);
            nodes.push(n);
        }
        nodes[0].wait_for("cs:Connected", 20);
        nodes[0].adm_ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
        nodes[0].adm_ok(&["primary", "r0"]);
        let sockets = [d.join("alpha.nbd"), d.join("beta.nbd")];
        Cluster {
            nodes,
            disks,
            _net: net,
            _dir: dir,
            sockets,
        }
    }

    fn net(&self) -> &Net {
        &self._net
    }

    fn in_sync(&self, secs: u64) {
        for n in &self.nodes {
            n.wait_for("ds:UpToDate/UpToDate", secs);
        }
    }

    fn restart(&mut self, i: usize) {
        self.nodes[i].start();
        self.nodes[i].adm_ok(&["up", "r0"]);
    }
}

#[derive(Default, Debug)]
struct Tally {
    faults: Vec<String>,
    verified: u64,
    lost: u64,
}

/// Read back every block with acknowledged history from the Primary.
fn check(c: &Cluster, primary: usize, w: &Workload, tally: &mut Tally, when: &str) {
    w.pause();
    let h = w.history.lock().expect("history");
    let mut nbd = Nbd::connect(&c.sockets[primary]).expect("checker connects to the Primary");
    let mut problems = Vec::new();
    for (&b, &g) in &h.acked {
        let data = nbd.read(b).expect("checker read");
        let ok = match parse(b, &data) {
            Some(got) => got == g || (got > g && h.maybe.get(&b).is_some_and(|m| m.contains(&got))),
            None => false,
        };
        tally.verified += 1;
        if !ok {
            tally.lost += 1;
            problems.push(format!("block {b}: acked generation {g}, found {:?}", parse(b, &data)));
        }
    }
    drop(nbd);
    drop(h);
    assert!(
        problems.is_empty(),
        "{when}: {} acknowledged writes lost, e.g. {:?}\nalpha:\n{}\nbeta:\n{}",
        problems.len(),
        &problems[..problems.len().min(5)],
        c.nodes[0].log_text(),
        c.nodes[1].log_text()
    );
    w.resume();
}

#[test]
fn faults_lose_no_acknowledged_write_and_replicas_end_identical() {
    require_tool("tc", "iproute2");
    let seed: u64 = std::env::var("TANDEM_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let faults: u64 = std::env::var("TANDEM_TORTURE_FAULTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut c = Cluster::new();
    let w = Workload::start(c.sockets.clone(), seed);
    let mut primary = 0usize;
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut tally = Tally::default();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    for round in 0..faults {
        // The short CI schedule still covers what matters most: a
        // failover, a failing disk and a full one; then chance decides.
        let kind = match round {
            0 => 1,
            1 => 5,
            2 => 6,
            _ => next(7),
        };
        let s = 1 - primary;
        let pause_ms = 800 + next(1500);
        match kind {
            0 => {
                tally
                    .faults
                    .push(format!("kill -9 {} (Secondary), restart", c.nodes[s].name));
                c.nodes[s].kill9();
                std::thread::sleep(Duration::from_millis(pause_ms));
                c.restart(s);
            }
            1 => {
                tally
                    .faults
                    .push(format!("kill -9 {} (Primary), fail over", c.nodes[primary].name));
                c.nodes[primary].kill9();
                w.primary.store(NO_PRIMARY, Ordering::SeqCst);
                c.nodes[s].wait_for("cs:WFConnection", 30);
                c.nodes[s].adm_ok(&["primary", "r0"]);
                let old = primary;
                primary = s;
                check(&c, primary, &w, &mut tally, "after failover");
                w.primary.store(primary, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(pause_ms));
                c.restart(old);
            }
            2 => {
                tally.faults.push("symmetric partition (iptables DROP), heal".into());
                c.net().partition();
                std::thread::sleep(Duration::from_millis(2500 + pause_ms));
                c.net().heal_all();
            }
            3 => {
                let from = next(2) as usize;
                tally.faults.push(format!(
                    "one-way partition ({} → peer dropped), heal",
                    c.nodes[from].name
                ));
                c.net().one_way(from);
                std::thread::sleep(Duration::from_millis(2500 + pause_ms));
                c.net().heal_all();
            }
            5 => {
                let x = next(2) as usize;
                let role = if x == primary { "Primary" } else { "Secondary" };
                tally.faults.push(format!(
                    "{}'s disk fails with EIO ({role}), replaced: create-md --force, attach",
                    c.nodes[x].name
                ));
                c.disks[x].fail(true);
                // Writes reach either disk within moments (the Secondary's
                // through replication): the failure is noticed and the
                // disk detached while the client carries on.
                c.nodes[x].wait_for("ds:Diskless/", 30);
                std::thread::sleep(Duration::from_millis(pause_ms));
                c.disks[x].fail(false);
                c.nodes[x].adm_ok(&["create-md", "--force", "r0"]);
                c.nodes[x].adm_ok(&["attach", "r0"]);
            }
            6 => {
                let x = next(2) as usize;
                let role = if x == primary { "Primary" } else { "Secondary" };
                tally.faults.push(format!(
                    "{}'s disk runs full (ENOSPC, {role}), space freed, then {}",
                    c.nodes[x].name,
                    if x == primary { "resync-oos" } else { "attach" }
                ));
                c.disks[x].fill(true);
                if x == primary {
                    // The client is refused; the blocks the peer took are marked.
                    std::thread::sleep(Duration::from_millis(pause_ms));
                    c.disks[x].fill(false);
                    if !c.nodes[x].status().contains("oos:0") {
                        c.nodes[x].adm_ok(&["resync-oos", "r0"]);
                    }
                    c.nodes[x].wait_for("oos:0", 90);
                } else {
                    c.nodes[x].wait_for("ds:Diskless/", 30);
                    std::thread::sleep(Duration::from_millis(pause_ms));
                    c.disks[x].fill(false);
                    c.nodes[x].adm_ok(&["attach", "r0"]);
                }
            }
            _ => {
                tally.faults.push(format!(
                    "link squeezed to 2 Mbit/s from {} (tc htb)",
                    c.nodes[primary].name
                ));
                c.net().squeeze(primary, Some("2mbit"));
                std::thread::sleep(Duration::from_millis(pause_ms * 2));
                c.net().squeeze(primary, None);
            }
        }
        c.in_sync(90);
        check(&c, primary, &w, &mut tally, &format!("after fault {round}"));
        std::thread::sleep(Duration::from_millis(300 + next(700)));
    }
    w.pause();
    c.in_sync(90);
    check(&c, primary, &w, &mut tally, "at the end");
    w.pause();
    // Both replicas, byte for byte.
    let a = std::fs::read(c.disks[0].image()).expect("alpha");
    let b = std::fs::read(c.disks[1].image()).expect("beta");
    let divergent = a.chunks(4096).zip(b.chunks(4096)).filter(|(x, y)| x != y).count();
    let acked = w.history.lock().expect("history").writes_acked;
    let line = format!(
        "seed {seed}: {} faults, {acked} writes acknowledged, {} verified, {} lost, {divergent} divergent blocks, {:.0?}",
        tally.faults.len(),
        tally.verified,
        tally.lost,
        t0.elapsed()
    );
    println!("{line}");
    for f in &tally.faults {
        println!("  - {f}");
    }
    if let Ok(path) = std::env::var("TANDEM_TORTURE_REPORT") {
        let mut text = format!("\n### {line}\n\n");
        for f in &tally.faults {
            text.push_str(&format!("- {f}\n"));
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("report");
        f.write_all(text.as_bytes()).expect("report");
    }
    assert_eq!(divergent, 0, "replicas differ in {divergent} blocks");
    assert!(acked > 100, "the workload barely ran: {acked} writes");
}
