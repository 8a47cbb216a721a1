//! Deterministic simulation of two replicating nodes.
//!
//! Two [`Node`] state machines, a simulated network (a FIFO per direction
//! with random latency; links that drop, partition and come back; at a drop
//! each direction's bytes in flight arrive up to a random cut, so the peer
//! may hold writes whose acknowledgements were lost and the reconnect sends
//! them again), simulated disks (random latency; writes in flight at a
//! crash land whole, torn or not at all; a power cut loses unflushed writes;
//! a failing disk answers EIO, a full one ENOSPC, a hung one nothing until
//! it recovers, which the peer's `ko-count` must notice), a workload of writes and
//! verified reads on the Primary, and an operator who fails over, splits
//! the pair, replaces failed disks and recovers it. One seeded
//! random generator and a simulated clock drive everything, so a seed
//! replays exactly. Invariants are checked as the run goes:
//!
//! - every read returns what the last acknowledged write left (or a write
//!   whose outcome the workload never learned);
//! - after a failover the operator could legally perform (promotion without
//!   `--force`), every acknowledged write is on the new Primary;
//! - a SyncTarget is never promoted without `--force`;
//! - once connected and in sync, both disks are identical;
//! - while apart, every block that differs is set in a bitmap;
//! - a split brain is detected on both sides and never merged.
//!
//! Pure, like the core: no clock, no I/O, no OS randomness.

use crate::core::throttle::AppLatency;
use crate::core::{Action, AttachInfo, ConnState, DiskOp, DiskState, Event, IoKind, IoRequest, Node, ReqId, Role};
use crate::meta::{Divergence, GenerationUuids, MdFlags, BM_BLOCK_BYTES};
use crate::wire::Message;
use std::collections::{BTreeMap, BTreeSet};

/// splitmix64: small, fast, and the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub seed: u64,
    pub writes_acked: u64,
    pub reads_verified: u64,
    pub failovers: u64,
    pub crashes: u64,
    pub link_drops: u64,
    pub split_brains: u64,
    pub resyncs_checked: u64,
    /// Messages that reached the peer after the link had dropped for the
    /// sender (their answers lost): what the reconnect duplicates.
    pub delivered_at_drop: u64,
    /// Disks that failed (EIO) or filled up (ENOSPC) for a while.
    pub disk_faults: u64,
    /// Failed disks replaced with blank ones and resynced.
    pub disks_replaced: u64,
    /// Disks a Primary attached while connected, resynced over that link.
    pub attached_in_band: u64,
    /// Secondary disks that stopped answering for a while.
    pub disks_hung: u64,
    /// Links a node dropped because its peer left a request unanswered
    /// for `timeout × ko-count`.
    pub links_reset: u64,
    /// Disks failed by `disk-timeout` (they stopped answering for longer).
    pub disks_timed_out: u64,
    /// Activity-log transactions folded into a newer one queued with them.
    pub al_folded: u64,
    /// Outages in which both nodes lost power at once while the workload
    /// committed (one to four clients, each a write, then a flush).
    pub power_outages: u64,
    /// Flushes the nodes issued ahead of a flush request they predicted,
    /// while the workload committed before an outage.
    pub early_flushes: u64,
    /// Application FLUSHes the Primary answered by the Secondary's word
    /// that its own early flush had made every write stable there, while
    /// the workload committed before an outage.
    pub flushes_peer_ahead: u64,
    /// Application FLUSHes that arrived while a flush not covering them was
    /// on the disk and shared the next one.
    pub flushes_grouped: u64,
}

impl Report {
    /// Add another run's counts (the seed is left alone).
    pub fn add(&mut self, r: &Report) {
        self.writes_acked += r.writes_acked;
        self.reads_verified += r.reads_verified;
        self.failovers += r.failovers;
        self.crashes += r.crashes;
        self.link_drops += r.link_drops;
        self.split_brains += r.split_brains;
        self.resyncs_checked += r.resyncs_checked;
        self.delivered_at_drop += r.delivered_at_drop;
        self.disk_faults += r.disk_faults;
        self.disks_replaced += r.disks_replaced;
        self.attached_in_band += r.attached_in_band;
        self.disks_hung += r.disks_hung;
        self.links_reset += r.links_reset;
        self.disks_timed_out += r.disks_timed_out;
        self.al_folded += r.al_folded;
        self.power_outages += r.power_outages;
        self.early_flushes += r.early_flushes;
        self.flushes_peer_ahead += r.flushes_peer_ahead;
        self.flushes_grouped += r.flushes_grouped;
    }
}

/// Device size: 8 activity-log extents.
const DATA_BYTES: u64 = 32 << 20;
const BLOCKS: u64 = DATA_BYTES / BM_BLOCK_BYTES;
/// Blocks the workload touches: a few per extent, so that overlaps, the
/// activity log and the bitmap all see traffic.
const HOT_BLOCKS: u64 = 96;

fn hot_block(i: u64) -> u64 {
    (i * 997) % BLOCKS
}

#[derive(Debug, Default, Clone)]
struct Persisted {
    created: bool,
    uuids: GenerationUuids,
    flags: MdFlags,
    divergence: Divergence,
    pages: BTreeMap<u64, Vec<u8>>,
    al: Option<(Vec<u32>, u64)>,
}

struct SimNode {
    name: &'static str,
    node: Option<Node>,
    /// Block → value of the write that last landed there (0: never written).
    disk: BTreeMap<u64, u64>,
    /// Blocks written since the disk's volatile cache was last flushed,
    /// with the value each held before: a power cut may undo them.
    volatile: BTreeMap<u64, u64>,
    meta: Persisted,
    /// Block values of requests: app writes, peer writes, reads.
    bufs: BTreeMap<ReqId, Vec<u64>>,
    /// Disk operations in flight: id → (op, what to apply).
    disk_ops: BTreeMap<ReqId, DiskOp>,
    /// Flushes in flight: the volatile blocks when each was issued, with
    /// their values and landings then: all a flush makes stable.
    flush_covers: BTreeMap<ReqId, Vec<(u64, u64, u64)>>,
    /// Block → the landing (a count of writes landed on this disk) that
    /// put its value there.
    landings: BTreeMap<u64, u64>,
    landed: u64,
    next_id: ReqId,
    discard: bool,
    /// The operator wants this node connected (not `disconnect`ed).
    wants_link: bool,
    /// Forwarded reads: seq → request id.
    peer_reads: BTreeMap<u64, ReqId>,
    /// Expected block values of this node's lineage (what its clients were told).
    expected: BTreeMap<u64, u64>,
    /// Values a block may hold besides the expected one: writes of this
    /// lineage whose outcome the client never learned.
    maybe: BTreeMap<u64, Vec<u64>>,
    /// How long this node's application requests took since the last tick.
    latency: AppLatency,
}

#[derive(Debug, Clone)]
enum Pending {
    DiskDone {
        node: usize,
        id: ReqId,
    },
    Deliver {
        to: usize,
        epoch: u64,
        msg: Message,
        data: Vec<u64>,
    },
    Connect {
        epoch: u64,
    },
    Tick,
}

/// An application request the workload has in flight.
#[derive(Debug, Clone)]
struct AppIo {
    first: u64,
    blocks: u64,
    write: Option<u64>,
    /// When it was issued (simulated µs).
    at: u64,
    /// A flush while the workload commits: the acknowledged writes it
    /// must make stable.
    covers: Option<BTreeMap<u64, u64>>,
}

pub struct Sim {
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Pending>,
    nodes: [SimNode; 2],
    link_epoch: u64,
    link_up: bool,
    /// A drop is being processed: deliveries it causes must not recurse.
    dropping: bool,
    partitioned: bool,
    /// Per node: the errno its data disk answers with, while it fails.
    failing: [Option<i32>; 2],
    /// Per node: until when (µs) its data disk answers nothing.
    hung_until: [u64; 2],
    /// A node's `disk-timeout` is set: the clock ticks, link or not.
    disk_clock: bool,
    /// Per direction: the last delivery time (TCP keeps order).
    last_delivery: [u64; 2],
    app: BTreeMap<(usize, ReqId), AppIo>,
    busy: BTreeSet<u64>,
    next_value: u64,
    /// The workload commits like a database: each client a write, then a
    /// flush (`committers` of them at once). What acknowledged flushes
    /// made stable, by block.
    committing: Option<BTreeMap<u64, u64>>,
    /// While committing: a flush comes next (one committer).
    flush_next: bool,
    /// While committing: how many clients commit at once, each a write
    /// and then a flush; beyond one, the writes never go quiet and each
    /// FLUSH covers only the writes acknowledged before it.
    committers: usize,
    /// Time stops at the next acknowledged flush (for the outage to fall
    /// right after it, where a barrier answered too early shows).
    halt_at_flush_ack: bool,
    halted: bool,
    report: Report,
    trace: Vec<String>,
    violation: Option<String>,
    /// A block whose every write and acknowledgement goes into the trace.
    pub watch: Option<u64>,
}

impl SimNode {
    fn new(name: &'static str) -> SimNode {
        SimNode {
            name,
            node: None,
            disk: BTreeMap::new(),
            volatile: BTreeMap::new(),
            meta: Persisted::default(),
            bufs: BTreeMap::new(),
            disk_ops: BTreeMap::new(),
            flush_covers: BTreeMap::new(),
            landings: BTreeMap::new(),
            landed: 0,
            next_id: 1,
            discard: false,
            wants_link: true,
            peer_reads: BTreeMap::new(),
            expected: BTreeMap::new(),
            maybe: BTreeMap::new(),
            latency: AppLatency::default(),
        }
    }
}

/// What the shell does at `attach`: the metadata's UUIDs and flags (marked
/// in use; a crash is what left them so), then the on-disk bitmap and the
/// activity log.
fn attach_from(n: &mut Node, m: &mut Persisted) -> Result<(), crate::core::Refusal> {
    let crashed = !m.flags.contains(MdFlags::AL_CLEAN);
    m.flags.remove(MdFlags::AL_CLEAN);
    n.attach(AttachInfo {
        data_bytes: DATA_BYTES,
        uuids: m.uuids,
        flags: m.flags,
        divergence: m.divergence,
    })?;
    for p in 0..n.bitmap_pages() {
        if let Some(bytes) = m.pages.get(&p) {
            n.load_bitmap_page(p, bytes);
        }
    }
    let _ = n.take_bitmap_pages();
    let (extents, last) = m.al.clone().unwrap_or_default();
    n.apply_activity_log(&extents, m.al.as_ref().map(|_| last), crashed);
    Ok(())
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        Sim {
            rng: Rng::new(seed),
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes: [SimNode::new("alpha"), SimNode::new("beta")],
            link_epoch: 0,
            link_up: false,
            dropping: false,
            partitioned: false,
            failing: [None; 2],
            hung_until: [0; 2],
            disk_clock: false,
            last_delivery: [0; 2],
            app: BTreeMap::new(),
            busy: BTreeSet::new(),
            next_value: 1,
            committing: None,
            flush_next: false,
            committers: 1,
            halt_at_flush_ack: false,
            halted: false,
            report: Report {
                seed,
                ..Report::default()
            },
            trace: Vec::new(),
            violation: None,
            watch: None,
        }
    }

    fn note(&mut self, s: String) {
        if self.trace.len() > 400 {
            self.trace.drain(..200);
        }
        self.trace.push(format!("t={}us {s}", self.now));
    }

    fn schedule(&mut self, delay: u64, p: Pending) {
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), p);
    }

    fn node(&mut self, i: usize) -> Option<&mut Node> {
        self.nodes[i].node.as_mut()
    }

    fn fresh(&mut self) -> u64 {
        self.rng.next_u64() | 4
    }

    // ------------------------------------------------------------ lifecycle

    /// Start (or restart after a crash) node `i` from its persisted state.
    fn boot(&mut self, i: usize) {
        let (name, peer) = (self.nodes[i].name, self.nodes[1 - i].name);
        let mut n = Node::new("r0", 0, name, Some(peer), 'C');
        // The resync's yielding to the application, by seed (not drawn, so
        // the rest of a seed's run is the same whichever it gets).
        let c_min_rate = [None, Some(0), Some(256)][(self.report.seed % 3) as usize];
        n.set_resync_rate(0, c_min_rate);
        // A peer request unanswered for 100 ms drops the link (DRBD's
        // timeout 1, ko-count 1): far beyond any answer but a hung disk's.
        n.set_ko_limit_us(100_000);
        // The activity log by seed too: DRBD's default (every extent of
        // the device fits), or few enough that writes evict extents.
        n.set_al_extents([1237, 3, 5][(self.report.seed / 3 % 3) as usize]);
        let m = &mut self.nodes[i].meta;
        if !m.created {
            m.created = true;
            m.uuids = GenerationUuids::new_created();
        }
        if let Err(e) = attach_from(&mut n, m) {
            self.note(format!("{name}: attach refused: {e}"));
        }
        self.nodes[i].node = Some(n);
        self.nodes[i].wants_link = true;
        self.drain_actions(i);
    }

    /// Everything written so far is on stable storage.
    fn flush(&mut self, i: usize) {
        self.nodes[i].volatile.clear();
    }

    /// Flush `id` finished: what had landed when it was issued is stable,
    /// and nothing that landed since.
    fn flush_issued_earlier(&mut self, i: usize, id: ReqId) {
        let covers = self.nodes[i].flush_covers.remove(&id).unwrap_or_default();
        for (b, then, landing) in covers {
            let n = &mut self.nodes[i];
            if n.landings.get(&b).copied().unwrap_or(0) == landing {
                n.volatile.remove(&b);
            } else if let Some(old) = n.volatile.get_mut(&b) {
                // Written again since: a power cut now goes back to `then`.
                *old = then;
            }
        }
    }

    fn land(&mut self, i: usize, b: u64, v: u64, fua: bool) {
        let old = self.read_block(i, b);
        self.nodes[i].disk.insert(b, v);
        self.nodes[i].landed += 1;
        let landed = self.nodes[i].landed;
        self.nodes[i].landings.insert(b, landed);
        if fua {
            self.nodes[i].volatile.remove(&b);
        } else {
            self.nodes[i].volatile.entry(b).or_insert(old);
        }
    }

    /// kill -9: memory gone, writes in flight land whole, torn or not at
    /// all. With `power`, also a power cut: completed writes still in the
    /// disk's volatile cache may be lost.
    fn crash(&mut self, i: usize) {
        let power = self.rng.chance(300);
        self.crash_with(i, power);
    }

    fn crash_with(&mut self, i: usize, power: bool) {
        self.stop_dead(i, power);
        self.drop_link();
    }

    /// [`Sim::crash_with`] but for the link, which the caller drops.
    fn stop_dead(&mut self, i: usize, power: bool) {
        self.report.crashes += 1;
        self.note(format!(
            "{}: crash{}",
            self.nodes[i].name,
            if power { " (power cut)" } else { "" }
        ));
        if power {
            let volatile: Vec<(u64, u64)> = std::mem::take(&mut self.nodes[i].volatile).into_iter().collect();
            for (b, old) in volatile {
                if self.rng.chance(500) {
                    self.nodes[i].disk.insert(b, old);
                }
            }
        }
        // Without a power cut the disk's cache survives the process: what
        // it holds is still unflushed, and the flushes in flight are lost
        // with the process that waited for them.
        self.nodes[i].flush_covers.clear();
        let ops: Vec<(ReqId, DiskOp)> = std::mem::take(&mut self.nodes[i].disk_ops).into_iter().collect();
        for (id, op) in ops {
            if let DiskOp::Write { offset, len, .. } = op {
                let vals = self.nodes[i].bufs.get(&id).cloned().unwrap_or_default();
                let first = offset / BM_BLOCK_BYTES;
                for (k, v) in vals.iter().enumerate().take((u64::from(len) / BM_BLOCK_BYTES) as usize) {
                    if self.rng.chance(500) {
                        if power {
                            self.nodes[i].disk.insert(first + k as u64, *v);
                        } else {
                            self.land(i, first + k as u64, *v, false);
                        }
                    }
                }
            }
        }
        if let Some(n) = self.nodes[i].node.take() {
            self.report.flushes_grouped += n.flush_counts().app_grouped;
        }
        self.nodes[i].bufs.clear();
        self.nodes[i].peer_reads.clear();
        // The client's requests to it end without an answer.
        let lost: Vec<(usize, ReqId)> = self.app.keys().filter(|(n, _)| *n == i).copied().collect();
        for k in lost {
            if let Some(io) = self.app.remove(&k) {
                self.unknown_outcome(i, &io);
            }
        }
    }

    fn unknown_outcome(&mut self, i: usize, io: &AppIo) {
        for b in io.first..io.first + io.blocks {
            self.busy.remove(&b);
            if let Some(v) = io.write {
                self.nodes[i].maybe.entry(b).or_default().push(v);
            }
        }
    }

    /// Node `to` now serves what `from`'s clients were told.
    fn inherit(&mut self, to: usize, from: usize) {
        self.nodes[to].expected = self.nodes[from].expected.clone();
        self.nodes[to].maybe = self.nodes[from].maybe.clone();
    }

    // ----------------------------------------------------------------- link

    fn drop_link(&mut self) {
        if self.dropping {
            return;
        }
        if !self.link_up {
            self.link_epoch += 1;
            return;
        }
        self.report.link_drops += 1;
        self.dropping = true;
        self.deliver_up_to_cut();
        self.dropping = false;
        self.link_up = false;
        self.link_epoch += 1;
        self.note("link down".into());
        for i in 0..2 {
            let fresh = self.fresh();
            if let Some(n) = self.node(i) {
                n.handle(Event::PeerDisconnected { fresh_uuid: fresh });
            }
            self.nodes[i].peer_reads.clear();
            self.drain_actions(i);
        }
    }

    /// A connection breaks with bytes in flight both ways: each direction's
    /// stream arrives up to some point (TCP keeps order), and what that
    /// makes the receiver send back is lost with the connection.
    fn deliver_up_to_cut(&mut self) {
        let epoch = self.link_epoch;
        let in_flight: Vec<(u64, u64)> = self
            .queue
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Deliver { epoch: e, .. } if *e == epoch))
            .map(|(k, _)| *k)
            .collect();
        let mut cut_reached = [false; 2];
        for key in in_flight {
            let Some(Pending::Deliver { to, msg, data, .. }) = self.queue.get(&key).cloned() else {
                continue;
            };
            if cut_reached[to] || self.rng.chance(400) {
                cut_reached[to] = true;
                continue;
            }
            self.queue.remove(&key);
            self.report.delivered_at_drop += 1;
            self.deliver(to, msg, data);
        }
    }

    fn maybe_connect(&mut self) {
        let ready = |s: &SimNode| s.wants_link && s.node.as_ref().is_some_and(|n| n.cstate() != ConnState::StandAlone);
        if self.link_up || self.partitioned || !ready(&self.nodes[0]) || !ready(&self.nodes[1]) {
            return;
        }
        if self.queue.values().any(|p| matches!(p, Pending::Connect { .. })) {
            return;
        }
        let delay = 100 + self.rng.below(2000);
        let epoch = self.link_epoch;
        self.schedule(delay, Pending::Connect { epoch });
    }

    fn connect_now(&mut self) {
        self.link_epoch += 1;
        self.link_up = true;
        self.note("link up".into());
        let reports: Vec<_> = (0..2)
            .map(|i| {
                let d = self.nodes[i].discard;
                self.nodes[i].node.as_ref().map(|n| n.uuid_report(d))
            })
            .collect();
        // Now and then the pair is one of mixed builds: what the older
        // does not know, neither uses.
        use crate::wire::handshake::{FEATURES, FEATURE_FLUSHED, FEATURE_FLUSH_MARKS};
        let features = match self.rng.below(10) {
            0 => FEATURES & !(FEATURE_FLUSHED | FEATURE_FLUSH_MARKS),
            1 | 2 => FEATURES & !FEATURE_FLUSH_MARKS,
            _ => FEATURES,
        };
        for i in 0..2 {
            self.nodes[i].discard = false;
            let Some(peer) = reports[1 - i] else { continue };
            if let Some(n) = self.node(i) {
                n.handle(Event::PeerConnected {
                    peer,
                    peer_data_bytes: DATA_BYTES,
                    peer_features: features,
                });
            }
            self.drain_actions(i);
        }
    }

    fn send(&mut self, from: usize, msg: Message, data: Vec<u64>) {
        if !self.link_up {
            return;
        }
        let at = (self.now + 20 + self.rng.below(300)).max(self.last_delivery[from]);
        self.last_delivery[from] = at;
        let epoch = self.link_epoch;
        self.seq += 1;
        self.queue.insert(
            (at, self.seq),
            Pending::Deliver {
                to: 1 - from,
                epoch,
                msg,
                data,
            },
        );
    }

    fn deliver(&mut self, to: usize, msg: Message, data: Vec<u64>) {
        if self.nodes[to].node.is_none() {
            return;
        }
        let event = match msg {
            Message::Data {
                seq,
                offset,
                len,
                flags,
            } => {
                let id = self.alloc(to);
                self.nodes[to].bufs.insert(id, data);
                Event::PeerWrite {
                    id,
                    seq,
                    offset,
                    len,
                    flags,
                }
            }
            Message::ReadReply { seq, status, .. } => {
                if let Some(id) = self.nodes[to].peer_reads.remove(&seq) {
                    if status == 0 {
                        self.nodes[to].bufs.insert(id, data);
                    }
                }
                Event::PeerReadReply { seq, status }
            }
            other => match Event::from_peer(other) {
                Ok(e) => e,
                Err(_) => return,
            },
        };
        if let Some(n) = self.node(to) {
            n.handle(event);
        }
        self.drain_actions(to);
    }

    fn alloc(&mut self, i: usize) -> ReqId {
        let id = self.nodes[i].next_id;
        self.nodes[i].next_id += 1;
        id
    }

    // -------------------------------------------------------------- actions

    fn drain_actions(&mut self, i: usize) {
        loop {
            let Some(a) = self.nodes[i].node.as_mut().and_then(Node::poll_action) else {
                return;
            };
            self.act(i, a);
        }
    }

    fn act(&mut self, i: usize, a: Action) {
        match a {
            Action::Disk { id, op } => {
                if op == DiskOp::Flush {
                    let n = &self.nodes[i];
                    let covers = n
                        .volatile
                        .keys()
                        .map(|&b| (b, self.read_block(i, b), n.landings.get(&b).copied().unwrap_or(0)))
                        .collect();
                    self.nodes[i].flush_covers.insert(id, covers);
                }
                self.nodes[i].disk_ops.insert(id, op);
                // A flush empties the disk's cache: often the slowest request.
                let slow = if op == DiskOp::Flush { self.rng.below(1200) } else { 0 };
                let delay = 30 + self.rng.below(400) + slow + self.hung_until[i].saturating_sub(self.now);
                self.schedule(delay, Pending::DiskDone { node: i, id });
            }
            Action::Reply { id, error } => self.app_reply(i, id, error),
            Action::SendPeer(msg) => self.send(i, msg, Vec::new()),
            Action::SendPeerData { id, msg } => {
                let data = self.nodes[i].bufs.get(&id).cloned().unwrap_or_default();
                self.send(i, msg, data);
            }
            Action::Release { id } => {
                self.nodes[i].bufs.remove(&id);
            }
            Action::Disconnect { reason } => {
                self.note(format!("{}: disconnect: {reason}", self.nodes[i].name));
                self.nodes[i].wants_link = false;
                self.drop_link();
            }
            Action::ResetLink { reason } => {
                self.note(format!("{}: link reset: {reason}", self.nodes[i].name));
                self.report.links_reset += 1;
                // Only a disk that hangs (or just stopped hanging, its
                // answers still on their way) keeps a request that long.
                if self.now > self.hung_until[1 - i] + 5_000 {
                    self.fail_later(format!("a peer that answers was dropped: {reason}"));
                }
                self.drop_link();
            }
            Action::Log { message, .. } => self.note(format!("{}: {message}", self.nodes[i].name)),
            Action::PersistMeta => {
                // The shell flushes the data disk before any metadata write.
                self.flush(i);
                if let Some(n) = self.nodes[i].node.as_ref() {
                    let (u, f, d) = (n.uuids(), n.flags(), n.divergence());
                    let m = &mut self.nodes[i].meta;
                    if let Some(u) = u {
                        m.uuids = u;
                    }
                    m.flags = f;
                    m.divergence = d;
                }
            }
            Action::PersistBitmap => {
                self.flush(i);
                let pages = self.nodes[i]
                    .node
                    .as_mut()
                    .map(Node::take_bitmap_pages)
                    .unwrap_or_default();
                for (p, bytes) in pages {
                    self.nodes[i].meta.pages.insert(p, bytes.to_vec());
                }
            }
            Action::PersistAl(blocks) => {
                // As the shell: the newest of the transactions queued.
                let blocks = match self.nodes[i].node.as_mut() {
                    Some(n) => {
                        let (newest, folded) = n.fold_queued_al(blocks);
                        self.report.al_folded += folded;
                        newest
                    }
                    None => blocks,
                };
                // The shell flushes the data disk before the transaction.
                self.flush(i);
                if let Some(last) = blocks.last() {
                    let extents = blocks.iter().flat_map(|b| b.extents.iter().copied()).collect();
                    self.nodes[i].meta.al = Some((extents, last.tr_number));
                }
            }
            Action::StateChanged | Action::DetachDisk => {}
            Action::RunHandler(h) => {
                if h.awaited() {
                    if let Some(n) = self.node(i) {
                        n.handle(Event::HandlerDone { handler: h, exit: None });
                    }
                }
            }
            Action::SaveDiverged { .. } => {
                if let Some(n) = self.node(i) {
                    n.handle(Event::DivergedSaved {
                        result: Ok("sim".into()),
                    });
                }
            }
            Action::ForwardRead { id, seq, offset, len } => {
                self.nodes[i].peer_reads.insert(seq, id);
                self.send(i, Message::ReadRequest { seq, offset, len }, Vec::new());
            }
            Action::SendPeerReadReply { id, seq, status, len } => {
                let data = id
                    .and_then(|id| self.nodes[i].bufs.get(&id).cloned())
                    .unwrap_or_default();
                self.send(i, Message::ReadReply { seq, status, len }, data);
            }
        }
    }

    fn disk_done(&mut self, i: usize, id: ReqId) {
        let Some(op) = self.nodes[i].disk_ops.remove(&id) else {
            return;
        };
        let blocks = |offset: u64, len: u32| (offset / BM_BLOCK_BYTES, u64::from(len).div_ceil(BM_BLOCK_BYTES));
        let fails = match (self.failing[i], &op) {
            // A full disk refuses only what needs new space.
            (Some(28), DiskOp::Write { .. } | DiskOp::Zero { .. }) => Some(28),
            (Some(28), _) | (None, _) => None,
            (Some(e), _) => Some(e),
        };
        if let Some(e) = fails {
            self.nodes[i].flush_covers.remove(&id);
            let event = match op {
                DiskOp::Digest { .. } => Event::DigestDone { id, result: Err(e) },
                _ => Event::DiskDone { id, result: Err(e) },
            };
            if let Some(n) = self.node(i) {
                n.handle(event);
            }
            self.drain_actions(i);
            return;
        }
        let mut digest = None;
        match op {
            DiskOp::Write { offset, len, fua } => {
                let (first, n) = blocks(offset, len);
                let vals = self.nodes[i].bufs.get(&id).cloned().unwrap_or_default();
                for k in 0..n {
                    let v = vals.get(k as usize).copied().unwrap_or(0);
                    self.land(i, first + k, v, fua);
                    if self.watch == Some(first + k) {
                        self.note(format!(
                            "{}: disk write block {} := {v} (id {id})",
                            self.nodes[i].name,
                            first + k
                        ));
                    }
                }
            }
            DiskOp::Trim { offset, len, fua } | DiskOp::Zero { offset, len, fua, .. } => {
                let (first, n) = blocks(offset, len);
                for k in 0..n {
                    self.land(i, first + k, 0, fua);
                }
            }
            DiskOp::Read { offset, len } => {
                let (first, n) = blocks(offset, len);
                let vals = (0..n).map(|k| self.read_block(i, first + k)).collect();
                self.nodes[i].bufs.insert(id, vals);
            }
            DiskOp::Digest { offset, len, .. } => {
                let (first, n) = blocks(offset, len);
                let mut h = 0xcbf2_9ce4_8422_2325u64;
                for k in 0..n {
                    h = (h ^ self.read_block(i, first + k)).wrapping_mul(0x100_0000_01b3);
                }
                digest = Some(h.to_be_bytes().to_vec());
            }
            DiskOp::Flush => self.flush_issued_earlier(i, id),
        }
        let event = match digest {
            Some(d) => Event::DigestDone { id, result: Ok(d) },
            None => Event::DiskDone { id, result: Ok(()) },
        };
        if let Some(n) = self.node(i) {
            n.handle(event);
        }
        self.drain_actions(i);
    }

    fn read_block(&self, i: usize, b: u64) -> u64 {
        self.nodes[i].disk.get(&b).copied().unwrap_or(0)
    }

    // ------------------------------------------------------------- workload

    fn primary(&self) -> Option<usize> {
        (0..2).find(|&i| self.nodes[i].node.as_ref().is_some_and(|n| n.role() == Role::Primary))
    }

    /// Hand node `i` one application request; the caller drains its actions.
    fn issue(&mut self, i: usize) {
        let kind = match self.rng.below(10) {
            0..=5 => IoKind::Write {
                fua: self.rng.chance(200),
            },
            6 => IoKind::Flush,
            _ => IoKind::Read,
        };
        self.issue_kind(i, kind);
    }

    fn issue_kind(&mut self, i: usize, kind: IoKind) {
        let first = hot_block(self.rng.below(HOT_BLOCKS));
        let blocks = 1 + self.rng.below(4).min(BLOCKS - first - 1);
        if (first..first + blocks).any(|b| self.busy.contains(&b)) {
            return;
        }
        let id = self.alloc(i);
        let write = match kind {
            IoKind::Write { .. } => {
                let v = self.next_value;
                self.next_value += 1;
                self.nodes[i].bufs.insert(id, vec![v; blocks as usize]);
                Some(v)
            }
            _ => None,
        };
        if kind != IoKind::Flush {
            for b in first..first + blocks {
                self.busy.insert(b);
            }
        }
        let io = IoRequest {
            kind,
            offset: if kind == IoKind::Flush {
                0
            } else {
                first * BM_BLOCK_BYTES
            },
            len: if kind == IoKind::Flush {
                0
            } else {
                (blocks * BM_BLOCK_BYTES) as u32
            },
        };
        let blocks = if kind == IoKind::Flush { 0 } else { blocks };
        let at = self.now;
        let covers = match (kind, &self.committing) {
            (IoKind::Flush, Some(_)) => Some(self.nodes[i].expected.clone()),
            _ => None,
        };
        self.app.insert(
            (i, id),
            AppIo {
                first,
                blocks,
                write,
                at,
                covers,
            },
        );
        if let Some(n) = self.node(i) {
            n.handle(Event::NbdRequest { id, io });
        }
    }

    fn acceptable(&self, i: usize, b: u64, v: u64) -> bool {
        self.nodes[i].expected.get(&b).copied().unwrap_or(0) == v
            || self.nodes[i].maybe.get(&b).is_some_and(|m| m.contains(&v))
    }

    fn app_reply(&mut self, i: usize, id: ReqId, error: u32) {
        let Some(io) = self.app.remove(&(i, id)) else { return };
        self.nodes[i].latency.record(self.now - io.at);
        for b in io.first..io.first + io.blocks {
            self.busy.remove(&b);
        }
        match io.write {
            Some(v) if error == 0 => {
                self.report.writes_acked += 1;
                if self
                    .watch
                    .is_some_and(|w| (io.first..io.first + io.blocks).contains(&w))
                {
                    self.note(format!("{}: ack write {v} (id {id})", self.nodes[i].name));
                }
                for b in io.first..io.first + io.blocks {
                    self.nodes[i].expected.insert(b, v);
                    self.nodes[i].maybe.remove(&b);
                }
            }
            Some(_) => self.unknown_outcome(i, &io),
            None if error == 0 && io.covers.is_some() => {
                if let (Some(stable), Some(covers)) = (self.committing.as_mut(), io.covers) {
                    stable.extend(covers);
                    self.halted |= self.halt_at_flush_ack;
                }
            }
            None if error == 0 && io.blocks > 0 => {
                let vals = self.nodes[i].bufs.get(&id).cloned().unwrap_or_default();
                for k in 0..io.blocks {
                    let b = io.first + k;
                    let got = vals.get(k as usize).copied().unwrap_or(u64::MAX);
                    if !self.acceptable(i, b, got) {
                        self.fail_later(format!(
                            "{}: read of block {b} returned write {got}, expected {}",
                            self.nodes[i].name,
                            self.nodes[i].expected.get(&b).copied().unwrap_or(0)
                        ));
                    }
                }
                self.report.reads_verified += 1;
            }
            None => {}
        }
        self.nodes[i].bufs.remove(&id);
    }

    /// Run one event (or return false when none is due before `until`).
    fn step(&mut self, until: u64) -> bool {
        let Some((&(at, seq), _)) = self.queue.iter().next() else {
            return false;
        };
        if at > until {
            return false;
        }
        let Some(p) = self.queue.remove(&(at, seq)) else {
            return false;
        };
        self.now = self.now.max(at);
        match p {
            Pending::DiskDone { node, id } => self.disk_done(node, id),
            Pending::Deliver { to, epoch, msg, data } => {
                if epoch == self.link_epoch && self.link_up {
                    self.deliver(to, msg, data);
                }
            }
            Pending::Connect { epoch } => {
                if epoch == self.link_epoch && !self.link_up && !self.partitioned {
                    self.connect_now();
                }
            }
            Pending::Tick => {
                for i in 0..2 {
                    let latency = std::mem::take(&mut self.nodes[i].latency);
                    if let Some(n) = self.node(i) {
                        n.handle(Event::Tick {
                            elapsed_us: 1000,
                            latency,
                        });
                        n.handle(Event::DiskClock { elapsed_us: 1000 });
                    }
                    self.drain_actions(i);
                }
            }
        }
        true
    }

    /// Let time pass for `us`, with the workload running on the Primary
    /// (on both, if two are Primary) when `load`.
    fn run_for(&mut self, us: u64, load: bool) {
        let end = self.now + us;
        while self.now < end && self.violation.is_none() && !self.halted {
            self.maybe_connect();
            // Ticks drive the resync's pace and ko-count's clock, as the
            // shell's ticker does while a link is up.
            if (self.link_up
                || self.disk_clock
                || self
                    .nodes
                    .iter()
                    .any(|s| s.node.as_ref().is_some_and(Node::resync_active)))
                && !self.queue.values().any(|p| matches!(p, Pending::Tick))
            {
                self.schedule(1000, Pending::Tick);
            }
            let next_op = self.now + 50 + self.rng.below(200);
            while !self.halted && self.step(next_op.min(end)) {}
            self.now = self.now.max(next_op.min(end));
            if load && self.committing.is_some() {
                if let Some(p) = self.primary().filter(|_| self.app.len() < self.committers) {
                    for _ in self.app.len()..self.committers {
                        let flush = if self.committers == 1 {
                            self.flush_next = !self.flush_next;
                            !self.flush_next
                        } else {
                            self.rng.chance(500)
                        };
                        let kind = if flush {
                            IoKind::Flush
                        } else {
                            IoKind::Write { fua: false }
                        };
                        self.issue_kind(p, kind);
                    }
                    self.drain_actions(p);
                }
            } else if load && self.app.len() < 12 {
                for i in 0..2 {
                    if self.nodes[i].node.as_ref().is_some_and(|n| n.role() == Role::Primary) {
                        // Requests that arrive together are decided
                        // together, as the NBD reader hands them on.
                        for _ in 0..1 + self.rng.below(3) {
                            self.issue(i);
                        }
                        self.drain_actions(i);
                    }
                }
            }
        }
    }

    /// Stop the workload and let everything in flight finish (a resync may
    /// take a while; bounded).
    fn settle(&mut self) {
        for _ in 0..200 {
            self.run_for(20_000, false);
            let syncing = self.nodes.iter().any(|s| {
                s.node.as_ref().is_some_and(|n| {
                    matches!(
                        n.cstate(),
                        ConnState::SyncSource | ConnState::SyncTarget | ConnState::WFBitMapS | ConnState::WFBitMapT
                    )
                })
            });
            if self.app.is_empty() && !syncing && !self.queue.values().any(|p| !matches!(p, Pending::Tick)) {
                return;
            }
        }
    }

    fn up(&self, i: usize) -> bool {
        self.nodes[i].node.is_some()
    }

    fn cstate(&self, i: usize) -> Option<ConnState> {
        self.nodes[i].node.as_ref().map(Node::cstate)
    }

    fn promote(&mut self, i: usize) -> bool {
        let fresh = self.fresh();
        let Some(n) = self.nodes[i].node.as_mut() else {
            return false;
        };
        let was_sync_target = n.cstate() == ConnState::SyncTarget || n.disk_state() == DiskState::Inconsistent;
        let ok = n.promote(false, fresh).is_ok();
        if ok && was_sync_target {
            self.fail_later(format!(
                "{} was promoted without --force while Inconsistent/SyncTarget",
                self.nodes[i].name
            ));
        }
        self.note(format!("{}: promote -> {ok}", self.nodes[i].name));
        self.drain_actions(i);
        ok
    }

    fn demote(&mut self, i: usize) -> bool {
        let Some(n) = self.nodes[i].node.as_mut() else {
            return false;
        };
        let ok = n.demote(false, "").is_ok();
        self.drain_actions(i);
        ok
    }

    /// Every block either node's workload touched.
    fn touched(&self) -> BTreeSet<u64> {
        let mut s: BTreeSet<u64> = (0..HOT_BLOCKS).flat_map(|i| hot_block(i)..hot_block(i) + 4).collect();
        for n in &self.nodes {
            s.extend(n.disk.keys().copied());
        }
        s.retain(|b| *b < BLOCKS);
        s
    }

    /// The invariants that hold whenever nothing is in flight.
    fn check_quiet(&mut self) {
        let (Some(a), Some(b)) = (self.nodes[0].node.as_ref(), self.nodes[1].node.as_ref()) else {
            return;
        };
        let both_have_data = a.disk_state() >= DiskState::Outdated && b.disk_state() >= DiskState::Outdated;
        let in_sync = a.cstate() == ConnState::Connected
            && b.cstate() == ConnState::Connected
            && a.disk_state() == DiskState::UpToDate
            && b.disk_state() == DiskState::UpToDate;
        let marked: BTreeSet<u64> = a
            .bitmap_runs()
            .into_iter()
            .chain(b.bitmap_runs())
            .flat_map(|(f, n)| f..f + n)
            .collect();
        let differ: Vec<u64> = self
            .touched()
            .into_iter()
            .filter(|&blk| self.read_block(0, blk) != self.read_block(1, blk))
            .collect();
        if in_sync && marked.is_empty() {
            self.report.resyncs_checked += 1;
            if let Some(&blk) = differ.first() {
                let (x, y) = (self.read_block(0, blk), self.read_block(1, blk));
                self.fail_later(format!(
                    "connected and UpToDate/UpToDate with empty bitmaps, yet block {blk} differs ({x} vs {y})"
                ));
            }
        }
        if let Some(blk) = differ.iter().find(|blk| !marked.contains(blk)) {
            if both_have_data {
                self.fail_later(format!("block {blk} differs between the nodes but no bitmap marks it"));
            }
        }
    }

    /// Every acknowledged write of `i`'s lineage is on `i`'s disk.
    fn check_lineage_on_disk(&mut self, i: usize, what: &str) {
        let expected: Vec<(u64, u64)> = self.nodes[i].expected.iter().map(|(b, v)| (*b, *v)).collect();
        for (b, v) in expected {
            let got = self.read_block(i, b);
            if got != v && !self.nodes[i].maybe.get(&b).is_some_and(|m| m.contains(&got)) {
                self.fail_later(format!(
                    "{what}: {} block {b} holds write {got}, but write {v} was acknowledged",
                    self.nodes[i].name
                ));
                return;
            }
        }
    }

    // ------------------------------------------------------------ scenarios

    fn setup(&mut self) {
        self.boot(0);
        self.boot(1);
        self.run_for(5_000, false);
        for i in 0..2 {
            if let Some(n) = self.node(i) {
                n.connecting();
            }
        }
        self.settle();
        let fresh = self.fresh();
        if let Some(n) = self.node(0) {
            let _ = n.new_current_uuid(fresh, true);
        }
        self.drain_actions(0);
        self.settle();
        self.promote(0);
    }

    fn crash_and_restart_secondary(&mut self, p: usize) {
        let s = 1 - p;
        self.crash(s);
        let pause = 2_000 + self.rng.below(20_000);
        self.run_for(pause, true);
        self.boot(s);
        if let Some(n) = self.node(s) {
            n.connecting();
        }
        self.run_for(5_000, true);
    }

    fn failover(&mut self, p: usize) {
        let s = 1 - p;
        let was_in_sync = self.nodes[s]
            .node
            .as_ref()
            .is_some_and(|n| n.disk_state() == DiskState::UpToDate)
            && self.link_up;
        self.crash(p);
        self.settle();
        if self.promote(s) {
            self.report.failovers += 1;
            // The new Primary inherits the clients' view.
            self.inherit(s, p);
            self.check_lineage_on_disk(s, "after failover");
        } else if was_in_sync {
            self.fail_later(format!(
                "{} was UpToDate and connected, yet refused promotion",
                self.nodes[s].name
            ));
        }
        let pause = 10_000 + self.rng.below(30_000);
        self.run_for(pause, true);
        self.boot(p);
        if let Some(n) = self.node(p) {
            n.connecting();
        }
        self.run_for(5_000, true);
    }

    fn split_brain(&mut self, p: usize) {
        let s = 1 - p;
        self.settle();
        if !(self.link_up
            && self.nodes[s]
                .node
                .as_ref()
                .is_some_and(|n| n.disk_state() == DiskState::UpToDate))
        {
            return;
        }
        self.partitioned = true;
        self.drop_link();
        self.settle();
        if !self.promote(s) {
            self.partitioned = false;
            return;
        }
        self.nodes[s].expected = self.nodes[p].expected.clone();
        let pause = 5_000 + self.rng.below(20_000);
        self.run_for(pause, true);
        self.settle();
        let wrote_both = self.nodes[0]
            .node
            .as_ref()
            .is_some_and(|n| n.bitmap_runs().iter().any(|r| r.1 > 0))
            && self.nodes[1]
                .node
                .as_ref()
                .is_some_and(|n| n.bitmap_runs().iter().any(|r| r.1 > 0));
        let (disk_p, disk_s) = (self.nodes[p].disk.clone(), self.nodes[s].disk.clone());
        self.partitioned = false;
        self.run_for(10_000, false);
        self.settle();
        let both_standalone = (0..2).all(|i| self.cstate(i) == Some(ConnState::StandAlone));
        if !both_standalone {
            self.fail_later(format!(
                "split brain not detected on both sides: {:?} / {:?}",
                self.cstate(0),
                self.cstate(1)
            ));
            return;
        }
        if self.nodes[p].disk != disk_p || self.nodes[s].disk != disk_s {
            self.fail_later("a split brain was merged: a disk changed while StandAlone".into());
            return;
        }
        self.report.split_brains += u64::from(wrote_both);
        // The operator picks a victim and recovers by hand.
        let victim = if self.rng.chance(500) { p } else { s };
        let survivor = 1 - victim;
        self.demote(victim);
        self.nodes[victim].discard = true;
        if let Some(n) = self.node(victim) {
            n.set_discard_my_data(true);
        }
        self.connect_both();
        self.settle();
        self.inherit(victim, survivor);
        self.check_quiet();
        self.check_lineage_on_disk(victim, "after split-brain recovery");
    }

    /// The Secondary catches up by resync with nothing else going on (no
    /// flush from the workload), then loses power at once: what the resync
    /// wrote may still be in its disk's cache, yet it has just called
    /// itself UpToDate.
    fn resync_then_power_cut(&mut self, p: usize) {
        let s = 1 - p;
        self.drop_link();
        let pause = 1_000 + self.rng.below(10_000);
        self.run_for(pause, true);
        self.settle();
        self.connect_both();
        self.settle();
        if self.nodes[s].node.is_none() {
            return;
        }
        self.crash_with(s, true);
        self.run_for(1_000, false);
        self.boot(s);
        if let Some(n) = self.node(s) {
            n.connecting();
        }
        self.settle();
    }

    /// A database commits (one to four clients, each a write, then a
    /// flush) on a connected pair, and both nodes lose power at once: every write a
    /// flush acknowledged must be on both disks, the Secondary's included
    /// (it is the copy left if the Primary's disk does not come back).
    fn power_outage(&mut self, p: usize) {
        self.settle();
        let s = 1 - p;
        let in_sync = |n: &Option<Node>| n.as_ref().is_some_and(|n| n.disk_state() == DiskState::UpToDate);
        if !self.link_up || !in_sync(&self.nodes[p].node) || !in_sync(&self.nodes[s].node) {
            return;
        }
        let early = |sim: &Sim| -> u64 {
            [p, s]
                .iter()
                .filter_map(|&i| sim.nodes[i].node.as_ref())
                .map(|n| n.flush_counts().peer_early + n.flush_counts().app_early)
                .sum()
        };
        let early_before = early(self);
        let peer_ahead = |sim: &Sim| {
            sim.nodes[p]
                .node
                .as_ref()
                .map_or(0, |n| n.flush_counts().app_peer_ahead)
        };
        let peer_ahead_before = peer_ahead(self);
        self.committing = Some(BTreeMap::new());
        self.flush_next = false;
        self.committers = if self.rng.chance(500) {
            1
        } else {
            2 + self.rng.below(3) as usize
        };
        let spell = 5_000 + self.rng.below(30_000);
        self.run_for(spell, true);
        if self.rng.chance(500) {
            self.halt_at_flush_ack = true;
            self.run_for(10_000, true);
            self.halt_at_flush_ack = false;
            self.halted = false;
        }
        let stable = self.committing.take().unwrap_or_default();
        self.report.power_outages += 1;
        self.report.early_flushes += early(self).saturating_sub(early_before);
        self.report.flushes_peer_ahead += peer_ahead(self).saturating_sub(peer_ahead_before);
        // At the same instant: neither hears of the other's end.
        self.stop_dead(p, true);
        self.stop_dead(s, true);
        self.drop_link();
        for i in [p, s] {
            // Values only grow: an older one is a flushed write lost.
            if let Some((b, v, got)) = stable
                .iter()
                .map(|(&b, &v)| (b, v, self.read_block(i, b)))
                .find(|&(_, v, got)| got < v)
            {
                self.fail_later(format!(
                    "{}: after a power outage block {b} holds write {got}, but write {v} was flushed",
                    self.nodes[i].name
                ));
                return;
            }
        }
        // Writes acknowledged after the last flush may be lost on both
        // disks: the clients' view is now what the Primary's disk holds,
        // the copy the reconnect resyncs its hot extents from.
        let blocks: Vec<u64> = self.nodes[p]
            .expected
            .keys()
            .chain(self.nodes[p].maybe.keys())
            .copied()
            .collect();
        for b in blocks {
            let v = self.read_block(p, b);
            self.nodes[p].expected.insert(b, v);
        }
        self.nodes[p].maybe.clear();
        self.inherit(s, p);
        self.run_for(1_000, false);
        self.boot(p);
        self.boot(s);
        self.connect_both();
        self.settle();
        self.promote(p);
    }

    /// The Secondary's disk stops answering for longer than the Primary's
    /// ko-count allows, under load: the Primary must drop the link, finish
    /// its writes alone, and resync once the disk is back.
    fn hung_disk(&mut self, p: usize) {
        self.settle();
        let s = 1 - p;
        if !self.link_up || !self.up(s) {
            return;
        }
        let hang = 150_000 + self.rng.below(250_000);
        self.note(format!("{}: data disk hangs for {hang} µs", self.nodes[s].name));
        self.report.disks_hung += 1;
        self.hung_until[s] = self.now + hang;
        self.run_for(hang + 20_000, true);
    }

    /// Settle, then pick the node whose disk a fault hits: the Secondary, or
    /// (half the time, while both disks are UpToDate and connected) the
    /// Primary `p`. None when it would be the Primary's only good copy:
    /// losing that is a double fault no replication survives.
    fn faulty_node(&mut self, p: usize) -> Option<usize> {
        self.settle();
        let healthy_pair = self.link_up
            && (0..2).all(|i| {
                self.nodes[i]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.disk_state() == DiskState::UpToDate)
            });
        let x = if healthy_pair && self.rng.chance(500) { p } else { 1 - p };
        (x != p || healthy_pair).then_some(x)
    }

    /// One node's data disk stops answering for longer than its
    /// `disk-timeout`, under load: the node must fail the disk (a Primary
    /// serving on through its peer), drop the late completions, refuse to
    /// attach a disk while any is still out, and, the same disk attached
    /// again once it answers, resync what it missed, the abandoned writes
    /// that landed late included.
    fn timed_out_disk(&mut self, p: usize) {
        let Some(x) = self.faulty_node(p) else { return };
        if !self.up(x) {
            return;
        }
        let limit = 20_000 + self.rng.below(30_000);
        let hang = limit + 20_000 + self.rng.below(200_000);
        let Some(n) = self.node(x) else { return };
        n.set_disk_timeout_us(limit);
        self.note(format!(
            "{}: data disk hangs for {hang} µs (disk-timeout {limit} µs)",
            self.nodes[x].name
        ));
        self.hung_until[x] = self.now + hang;
        self.disk_clock = true;
        let before_answer = limit + 5_000 + self.rng.below(15_000);
        self.run_for(before_answer, true);
        let name = self.nodes[x].name;
        let s = &mut self.nodes[x];
        if let Some(n) = s.node.as_mut() {
            if n.abandoned_requests() > 0 {
                // What the old disk still holds could land after a resync.
                let mut meta = s.meta.clone();
                if attach_from(n, &mut meta).is_ok() {
                    self.fail_later(format!("{name}: a disk was attached with abandoned requests still out"));
                }
            }
        }
        self.run_for(hang - before_answer + 5_000, true);
        self.disk_clock = false;
        if let Some(n) = self.node(x) {
            n.set_disk_timeout_us(0);
        }
        self.settle();
        let Some(n) = self.nodes[x].node.as_ref() else { return };
        if n.disk_state() != DiskState::Diskless {
            // Nothing was on the disk for that long (the load paused).
            return;
        }
        self.report.disks_timed_out += 1;
        if n.abandoned_requests() > 0 {
            let why = format!("{name}: abandoned requests still out after the disk answered again");
            self.fail_later(why);
            return;
        }
        self.repair(x, Some(false));
    }

    /// One node's data disk fails (EIO) or fills up (ENOSPC) for a while
    /// under load, with a random `on-io-error` policy; then the operator
    /// repairs it the documented way: a detached disk is replaced by a blank
    /// one with fresh metadata, or the same one is attached again. A Primary
    /// that served through its peer resyncs it over the link it has; any
    /// other node's link is bounced so the connect decides what moves.
    fn disk_trouble(&mut self, p: usize) {
        let Some(x) = self.faulty_node(p) else { return };
        let errno = if self.rng.chance(300) { 28 } else { 5 };
        let policy = if self.rng.chance(500) {
            crate::config::OnIoError::Detach
        } else {
            crate::config::OnIoError::PassOn
        };
        let Some(n) = self.node(x) else { return };
        n.set_on_io_error(policy);
        self.report.disk_faults += 1;
        self.note(format!(
            "{}: data disk starts failing with errno {errno} (on-io-error {policy:?})",
            self.nodes[x].name
        ));
        self.failing[x] = Some(errno);
        let pause = 2_000 + self.rng.below(20_000);
        self.run_for(pause, true);
        self.failing[x] = None;
        self.settle();
        self.repair(x, None);
    }

    /// The operator's repair of node `x`'s disk: if it was detached, the
    /// same disk (working again) or a blank replacement (`blank`; None: at
    /// random) is attached; a Primary's disk attached while connected
    /// resyncs over the link it has, anything else reconnects and the
    /// connect decides. The application does not wait for the resync,
    /// wherever it runs (a repaired Primary is its own SyncTarget).
    fn repair(&mut self, x: usize, blank: Option<bool>) {
        let mut in_band = false;
        if self.nodes[x]
            .node
            .as_ref()
            .is_some_and(|n| n.disk_state() == DiskState::Diskless)
        {
            let blank = blank.unwrap_or_else(|| self.rng.chance(500));
            in_band = self.attach_again(x, blank);
        }
        if !in_band {
            if self.link_up {
                self.drop_link();
            }
            self.connect_both();
        }
        let pause = 1_000 + self.rng.below(10_000);
        self.run_for(pause, true);
        self.settle();
    }

    /// `attach` of a detached disk: `blank`, a replacement after
    /// `create-md --force`; else the same disk, working again. Returns
    /// whether the node resyncs it over the link it has (no reconnect).
    fn attach_again(&mut self, i: usize, blank: bool) -> bool {
        let name = self.nodes[i].name;
        if blank {
            self.report.disks_replaced += 1;
            self.note(format!("{name}: failed disk replaced by a blank one"));
            let s = &mut self.nodes[i];
            s.disk.clear();
            s.volatile.clear();
            s.flush_covers.clear();
            s.meta = Persisted {
                created: true,
                uuids: GenerationUuids::new_created(),
                ..Persisted::default()
            };
        } else {
            self.note(format!("{name}: the same disk attached again"));
        }
        let s = &mut self.nodes[i];
        let Some(n) = s.node.as_mut() else { return false };
        if let Err(e) = attach_from(n, &mut s.meta) {
            let why = format!("{name}: attach of the disk refused: {e}");
            self.fail_later(why);
            return false;
        }
        let in_band = self.link_up && n.resync_attached_disk();
        if in_band {
            self.report.attached_in_band += 1;
            self.note(format!("{name}: resyncs the attached disk over the link"));
        }
        self.drain_actions(i);
        in_band
    }

    /// `tandemadm connect` on both nodes.
    fn connect_both(&mut self) {
        for i in 0..2 {
            self.nodes[i].wants_link = true;
            if let Some(n) = self.node(i) {
                n.connecting();
            }
            self.drain_actions(i);
        }
    }

    fn fail_later(&mut self, why: String) {
        self.note(format!("VIOLATION: {why}"));
        self.violation.get_or_insert(why);
    }
}

/// Run one seeded simulation: a few thousand I/Os with faults injected.
pub fn run(seed: u64) -> Result<Report, String> {
    run_watching(seed, None)
}

/// [`run`], tracing every write to and acknowledgement of block `watch`.
pub fn run_watching(seed: u64, watch: Option<u64>) -> Result<Report, String> {
    let mut sim = Sim::new(seed);
    sim.watch = watch;
    sim.setup();
    let rounds = 6 + sim.rng.below(6);
    for _ in 0..rounds {
        let Some(p) = sim.primary() else {
            return Err(sim.failure("no Primary left"));
        };
        let pause = 5_000 + sim.rng.below(30_000);
        sim.run_for(pause, true);
        match sim.rng.below(7) {
            0 => {
                sim.drop_link();
                let pause = 1_000 + sim.rng.below(20_000);
                sim.run_for(pause, true);
            }
            1 => sim.crash_and_restart_secondary(p),
            2 => sim.failover(p),
            3 => sim.split_brain(p),
            4 => match sim.rng.below(10) {
                0..=2 => sim.hung_disk(p),
                3..=5 => sim.timed_out_disk(p),
                _ => sim.disk_trouble(p),
            },
            5 => match sim.rng.below(2) {
                0 => sim.resync_then_power_cut(p),
                _ => sim.power_outage(p),
            },
            _ => {}
        }
        sim.settle();
        sim.check_quiet();
        for i in 0..2 {
            if sim.up(i) && sim.nodes[i].node.as_ref().is_some_and(|n| n.role() == Role::Primary) {
                sim.check_lineage_on_disk(i, "quiet Primary");
            }
        }
        if let Some(why) = sim.violation.clone() {
            return Err(sim.failure(&why));
        }
    }
    for n in sim.nodes.iter().filter_map(|s| s.node.as_ref()) {
        sim.report.flushes_grouped += n.flush_counts().app_grouped;
    }
    Ok(sim.report)
}

impl Sim {
    fn failure(&self, why: &str) -> String {
        let tail: Vec<&String> = self.trace.iter().rev().take(120).collect();
        let mut out = format!(
            "seed {} violated an invariant: {why}\nreproduce: TANDEM_SIM_SEED={} cargo test --release --test simulation\nlast events:\n",
            self.report.seed, self.report.seed
        );
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}
