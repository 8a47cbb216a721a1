//! [`Node`]: one resource on this node, as a state machine.
//!
//! ```text
//!  app write ─► [overlap wait] ─► Disk(Write) ────────────► DiskDone ─┐
//!                             └─► SendPeerData(seq) ─► PeerAck(seq) ──┴─► Reply   (protocol C)
//!
//!  peer write ─► [overlap wait] ─► Disk(Write) ─► DiskDone ─► SendPeer(DataAck)
//!
//!  connect: PeerConnected(uuids) ─► generation::compare ─► Connected
//!                                                      ├─► bitmaps exchanged ─► SyncSource / SyncTarget
//!                                                      └─► split brain / unrelated ─► Disconnect, StandAlone
//! ```
//!
//! Writes that overlap a write still in flight wait for it, on both nodes,
//! so that both replicas apply overlapping writes in the same order.

use super::activity_log::{extents_of, ActivityLog};
use super::generation::{self, uuid_flags, Sync, UuidReport};
use super::refusal::{Refusal, StateRv};
use super::split_brain::Policies;
use super::state::{ConnState, DiskState, Role};
use super::throttle::Throttle;
use super::{errno, limits, Action, AttachInfo, Counters, DiskOp, Event, Handler, IoKind, IoRequest, ReqId, Snapshot};
use crate::config::OnIoError;
use crate::meta::al::AlTransaction;
use crate::meta::bitmap::Bitmap;
use crate::meta::{Divergence, GenerationUuids, MdFlags, AL_EXTENT_SHIFT, BM_BLOCK_BYTES};
use crate::wire::{self, Message};
use std::collections::{BTreeMap, HashMap, VecDeque};

mod connect;
mod digests;
mod flushes;
mod remote;
mod resync;
pub use connect::{SplitBrainOutcome, Verdict};
use digests::{DigestFor, Verify};
pub use flushes::FlushCounts;
use flushes::{Cover, Flushes};
use remote::Remote;
use resync::{Resync, RESYNC_CHUNK_BYTES};

/// Ids the core gives its own disk reads (resync); the shell's ids stay below.
const CORE_ID_BASE: ReqId = 1 << 62;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// An NBD request, answered with `Reply`.
    App,
    /// A write from the peer, answered with `DataAck`.
    Peer { seq: u64, resync: bool },
    /// A resync read of ours, sent to the peer when done.
    ResyncRead,
    /// A flush of the node's own: for a peer barrier, or ahead of one or
    /// of the application's FLUSH (`flushes`).
    Flush,
    /// A read the peer asked for (`ReadRequest`).
    PeerRead { seq: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Inflight {
    id: ReqId,
    io: IoRequest,
    origin: Origin,
    /// Started on the disk (false while waiting behind an overlapping write).
    started: bool,
    /// When it was started, by `Node::clock_us`: what `disk-timeout` measures.
    issued_us: u64,
    local: Option<Result<(), i32>>,
    /// The peer's answer we wait for, if any.
    peer_seq: Option<u64>,
    peer_failed: bool,
    /// A write: the flush tick of its local completion (`Flushes`).
    done_tick: u64,
}

impl Inflight {
    fn is_write(&self) -> bool {
        !matches!(self.io.kind, IoKind::Read | IoKind::Flush)
    }
    fn overlaps(&self, io: &IoRequest) -> bool {
        let (a, b) = (self.io.offset, self.io.offset + u64::from(self.io.len));
        let (c, d) = (io.offset, io.offset + u64::from(io.len));
        a < d && c < b
    }
}

/// An application FLUSH waiting for its barrier's ack, and what of the
/// peer's flushes would answer it sooner.
#[derive(Debug, Clone, Copy)]
struct BarrierWait {
    id: ReqId,
    /// The seq below which every `Data` sent must be stable on the peer.
    needs: u64,
    /// Or: the completion mark a finished flush of the peer's must cover
    /// (`Node::flush_mark`).
    mark: Option<u64>,
}

impl BarrierWait {
    /// Whether the peer's flushes, having made stable every `Data` below
    /// `through` and every write up to completion mark `covers` (each 0
    /// before the peer said anything), answer this FLUSH.
    fn answered_by(&self, through: u64, covers: u64) -> bool {
        through > 0 && through >= self.needs || self.mark.is_some_and(|m| covers >= m)
    }
}

/// One resource's state on this node.
#[derive(Debug)]
pub struct Node {
    resource: String,
    minor: u32,
    node: String,
    peer: Option<String>,
    protocol: char,
    role: Role,
    cstate: ConnState,
    disk: DiskState,
    peer_role: Role,
    peer_disk: DiskState,
    data_bytes: u64,
    uuids: Option<GenerationUuids>,
    flags: MdFlags,
    nbd_clients: u32,
    counters: Counters,
    inflight: Vec<Inflight>,
    /// Requests waiting for an overlapping write to finish, in arrival order.
    waiting: VecDeque<ReqId>,
    /// App flushes waiting for the peer's barrier ack, by epoch.
    barriers: HashMap<u64, BarrierWait>,
    /// One past the highest seq of a `Data` sent to the peer.
    data_seq_end: u64,
    /// This connection's peer said (`Flushed`) that every `Data` below this
    /// seq is on its stable storage; 0 before it said anything.
    peer_flushed_through: u64,
    /// The newest completion mark the peer's `DataAck`s carried on this
    /// connection (0: none yet): a flush of the peer's that covers it
    /// covers every write we have had acknowledged.
    peer_completed: u64,
    /// The completion mark this connection's peer said its finished
    /// flushes cover (`BarrierAck`, `Flushed`); 0 before it said anything.
    peer_flushed_covers: u64,
    /// An application FLUSH went without a barrier (the peer's word
    /// answered it): the next write tells the peer, whose prediction of
    /// the next flush learns from it (`DATA_FLAG_AFTER_FLUSH`).
    data_after_flush: bool,
    /// One past the highest seq of a `Data` received on this connection.
    peer_data_end: u64,
    /// Flushes issued ahead of the peer's barrier on this connection, and
    /// the seq below which each makes every `Data` received stable: the
    /// peer is told (`Flushed`) when one finishes.
    flushes_to_tell: Vec<(ReqId, u64)>,
    /// Peer barriers not yet acknowledged, in arrival order: epoch, and
    /// once every earlier peer write is done, the flush ticks it needs.
    peer_barriers: VecDeque<(u64, Option<u64>)>,
    /// Which writes the node's own flushes have made stable, and when to
    /// flush ahead of a flush request.
    flushes: Flushes,
    /// Application FLUSHes waiting for one of the node's own flushes:
    /// id, and the ticks they need.
    app_flush_waits: Vec<(ReqId, u64)>,
    next_seq: u64,
    next_core_id: ReqId,
    /// Out-of-sync blocks (only when a peer is configured).
    bitmap: Option<Bitmap>,
    /// Connection-time state: bitmaps exchanged before resync starts.
    pending_sync: Option<Sync>,
    peer_bitmap_done: bool,
    resync: Option<Resync>,
    /// Seq of app writes awaiting peer acks → request id.
    peer_pending: BTreeMap<u64, ReqId>,
    /// DRBD's `timeout × ko-count`, µs: how long the peer may take to
    /// complete one request before the link is dropped (0: forever).
    ko_limit_us: u64,
    /// The oldest request the peer has not completed (its seq) and how long
    /// it has been the oldest, µs, by the ticks.
    peer_wait: Option<(u64, u64)>,
    /// DRBD's `disk-timeout`, µs: how long the local disk may take to
    /// complete one request before it is failed and detached (0: forever).
    disk_timeout_us: u64,
    /// Time by [`Event::DiskClock`], µs.
    clock_us: u64,
    /// Local requests `disk-timeout` gave up on, still in the kernel's
    /// hands, and when they were given up on (`clock_us`): their
    /// completions are dropped, and no disk is attached until every one
    /// has come back (it could still land on the old disk).
    abandoned: BTreeMap<ReqId, u64>,
    /// Hot extents (only when a peer is configured).
    al: Option<ActivityLog>,
    al_extents: u32,
    /// `connect --discard-my-data` for the next connection only.
    discard_my_data: bool,
    /// Set by `attach` on a Primary that served through its peer while
    /// diskless: whether its new disk needs every block (else the bitmap's).
    attached_while_primary: Option<bool>,
    /// A Primary resyncing its re-attached disk from its peer, before the
    /// peer's bitmap arrived: the blocks written while it was diskless are
    /// in that bitmap only, so every read goes to the peer until then.
    awaiting_source_bitmap: bool,
    throttle: Throttle,
    /// `after-sb-*` policies.
    policies: Policies,
    /// When this node wrote what the peer has not seen.
    divergence: Divergence,
    /// Unix seconds, as the shell last told ([`Node::set_clock`]).
    now_s: u64,
    /// Both sides' reports from the last connect that found a split brain.
    split_brain_seen: Option<(UuidReport, UuidReport)>,
    /// The last split brain is unresolved (cleared by a good connect).
    split_brain_unresolved: bool,
    /// This node lost a split brain and its diverged blocks are being
    /// saved; the bitmap goes to the peer (letting it overwrite) after.
    saving_diverged: bool,
    verify_alg: Option<crate::digest::DigestAlg>,
    csums_alg: Option<crate::digest::DigestAlg>,
    verify: Option<Verify>,
    /// The peer's verify, while this node is its target (VerifyT): blocks
    /// (left, total), counted down by the digests it sends.
    peer_verify: Option<(u64, u64)>,
    /// The connected peer's hello feature bits.
    peer_features: u64,
    /// Where an interrupted verify stopped (block).
    verify_resume: Option<u64>,
    /// What the last verify that ran to its end found (KiB); `None` while
    /// one runs and after one was interrupted.
    verify_found_kib: Option<u64>,
    /// Digests being computed, by request id.
    digests: HashMap<ReqId, DigestFor>,
    /// `fencing` from the configuration.
    fencing: crate::config::Fencing,
    /// Why application writes are held (fencing), if they are.
    suspended: Option<String>,
    /// Replies to writes completed while suspended, in completion order.
    held_replies: Vec<(ReqId, u32)>,
    /// `on-io-error` from the configuration.
    on_io_error: crate::config::OnIoError,
    /// Application requests only the peer carries out, by seq.
    remote: HashMap<u64, Remote>,
    actions: VecDeque<Action>,
}

/// The `Data` message flags that carry a write of this kind to the peer.
fn data_flags(kind: IoKind) -> u32 {
    let fua = |f: bool| if f { wire::DATA_FLAG_FUA } else { 0 };
    match kind {
        IoKind::Write { fua: f } => fua(f),
        IoKind::Trim { fua: f } => wire::DATA_FLAG_TRIM | fua(f),
        IoKind::WriteZeroes { fua: f, may_trim } => {
            wire::DATA_FLAG_ZERO | if may_trim { wire::DATA_FLAG_MAY_TRIM } else { 0 } | fua(f)
        }
        IoKind::Read | IoKind::Flush => 0,
    }
}

impl Node {
    pub fn new(resource: &str, minor: u32, node: &str, peer: Option<&str>, protocol: char) -> Node {
        Node {
            resource: resource.to_owned(),
            minor,
            node: node.to_owned(),
            peer: peer.map(str::to_owned),
            protocol,
            role: Role::Secondary,
            cstate: ConnState::StandAlone,
            disk: DiskState::Diskless,
            peer_role: Role::Unknown,
            peer_disk: DiskState::DUnknown,
            data_bytes: 0,
            uuids: None,
            flags: MdFlags::default(),
            nbd_clients: 0,
            counters: Counters::default(),
            inflight: Vec::with_capacity(limits::INFLIGHT_REQUESTS_MAX),
            waiting: VecDeque::new(),
            barriers: HashMap::new(),
            data_seq_end: 0,
            peer_flushed_through: 0,
            peer_completed: 0,
            peer_flushed_covers: 0,
            data_after_flush: false,
            peer_data_end: 0,
            flushes_to_tell: Vec::new(),
            peer_barriers: VecDeque::new(),
            flushes: Flushes::new(),
            app_flush_waits: Vec::new(),
            next_seq: 1,
            next_core_id: CORE_ID_BASE,
            bitmap: None,
            pending_sync: None,
            peer_bitmap_done: false,
            resync: None,
            peer_pending: BTreeMap::new(),
            ko_limit_us: crate::config::NetOptions::default().ko_limit_us(),
            peer_wait: None,
            disk_timeout_us: 0,
            clock_us: 0,
            abandoned: BTreeMap::new(),
            al: None,
            al_extents: 1237,
            discard_my_data: false,
            attached_while_primary: None,
            awaiting_source_bitmap: false,
            throttle: Throttle::default(),
            policies: Policies::default(),
            divergence: Divergence::default(),
            now_s: 0,
            split_brain_seen: None,
            split_brain_unresolved: false,
            saving_diverged: false,
            verify_alg: None,
            csums_alg: None,
            verify: None,
            peer_verify: None,
            peer_features: 0,
            verify_resume: None,
            verify_found_kib: None,
            digests: HashMap::new(),
            fencing: crate::config::Fencing::DontCare,
            suspended: None,
            held_replies: Vec::new(),
            on_io_error: crate::config::OnIoError::Detach,
            remote: HashMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// `fencing` from the configuration.
    pub fn set_fencing(&mut self, f: crate::config::Fencing) {
        self.fencing = f;
    }

    /// `resume-io`: release writes held by a fence-peer handler that
    /// failed, on the operator's word that the peer cannot be promoted.
    pub fn resume_io(&mut self) -> Result<(), Refusal> {
        if self.suspended.is_none() {
            return Err(Refusal::new(
                StateRv::InTransientState,
                "I/O is not suspended".to_owned(),
            ));
        }
        self.log(
            true,
            format!("{}: I/O resumed by the operator (resume-io)", self.resource),
        );
        self.release_held();
        Ok(())
    }

    fn release_held(&mut self) {
        self.suspended = None;
        for (id, error) in std::mem::take(&mut self.held_replies) {
            self.act(Action::Reply { id, error });
        }
        self.act(Action::StateChanged);
    }

    /// The `after-sb-*` policies from the configuration.
    pub fn set_split_brain_policies(&mut self, p: Policies) {
        self.policies = p;
    }

    /// The wall clock, in unix seconds. The core never reads a clock; the
    /// shell sets it before handing over events, and the core uses it only
    /// to timestamp divergence for the operator, never to decide.
    pub fn set_clock(&mut self, unix_s: u64) {
        self.now_s = unix_s;
    }

    pub fn divergence(&self) -> Divergence {
        self.divergence
    }

    /// Both sides' reports from the last connect that found a split brain.
    pub fn split_brain_seen(&self) -> Option<&(UuidReport, UuidReport)> {
        self.split_brain_seen.as_ref()
    }

    /// This node's out-of-sync runs (first block, blocks).
    pub fn bitmap_runs(&self) -> Vec<(u64, u64)> {
        self.bitmap
            .as_ref()
            .map(|b| b.iter_set_runs().collect())
            .unwrap_or_default()
    }

    /// Blocks set in this node's bitmap or in `runs` (the peer's): what a
    /// resync after recovery would move.
    pub fn union_weight(&self, runs: &[(u64, u64)]) -> u64 {
        let Some(bm) = self.bitmap.as_ref() else { return 0 };
        let mut extra = 0;
        for &(start, len) in runs {
            let end = start.saturating_add(len).min(bm.len());
            for b in start.min(end)..end {
                if !bm.get(b) {
                    extra += 1;
                }
            }
        }
        bm.weight() + extra
    }

    /// `timeout × ko-count` from the configuration (`NetOptions::ko_limit_us`):
    /// a peer that does not complete one request within it is dropped like
    /// a failed link. 0 waits forever.
    pub fn set_ko_limit_us(&mut self, us: u64) {
        self.ko_limit_us = us;
    }

    /// The shell is about to write activity-log transaction `tr`: the
    /// transactions queued after it, up to the next bitmap write, are
    /// folded into it, and the newest is what to write. Each transaction
    /// holds the whole hot set, and between evictions the set only grows
    /// (an eviction queues its bitmap write first, where folding stops), so
    /// the newest covers every write queued behind the others: one metadata
    /// write for a batch of writes into cold extents, not one each. A
    /// transaction moved earlier, ahead of data or superblock writes, only
    /// names more extents hot sooner, which costs at most resync. Returns
    /// what to write and how many transactions were folded into it.
    pub fn fold_queued_al(&mut self, tr: Vec<AlTransaction>) -> (Vec<AlTransaction>, u64) {
        let stop = self
            .actions
            .iter()
            .position(|a| matches!(a, Action::PersistBitmap | Action::DetachDisk))
            .unwrap_or(self.actions.len());
        let (mut newest, mut folded, mut at) = (tr, 0, 0);
        self.actions.retain_mut(|a| {
            at += 1;
            match a {
                Action::PersistAl(t) if at <= stop => {
                    newest = std::mem::take(t);
                    folded += 1;
                    false
                }
                _ => true,
            }
        });
        self.counters.al = self.counters.al.saturating_sub(folded);
        (newest, folded)
    }

    /// `disk-timeout` from the configuration (`DiskOptions::disk_timeout_us`):
    /// a local disk that does not complete one request within it is failed
    /// and detached. 0 waits forever.
    pub fn set_disk_timeout_us(&mut self, us: u64) {
        self.disk_timeout_us = us;
    }

    /// Local requests given up on by `disk-timeout` that have not come back.
    pub fn abandoned_requests(&self) -> usize {
        self.abandoned.len()
    }

    /// Whether `id` is a local request given up on by `disk-timeout`: the
    /// shell drops what it kept for it when its completion comes.
    pub fn is_abandoned(&self, id: ReqId) -> bool {
        self.abandoned.contains_key(&id)
    }

    /// Why no disk may be attached now, if one may not.
    pub fn attach_refusal(&self) -> Option<Refusal> {
        let n = self.abandoned.len();
        (n > 0).then(|| {
            Refusal::new(
                StateRv::InTransientState,
                format!(
                    "{n} request(s) that disk-timeout gave up on have not come back from the old disk: attached now, \
                     the disk could still take one of them after the resync rewrote its blocks. The log says when the last returns"
                ),
            )
        })
    }

    /// `protocol` from the configuration (`adjust` may change it).
    pub fn set_protocol(&mut self, protocol: char) {
        self.protocol = protocol;
    }

    /// `al-extents` from the configuration: at attach, or from `adjust`
    /// while attached (`ActivityLog::set_capacity`).
    pub fn set_al_extents(&mut self, n: u32) {
        self.al_extents = n;
        if let Some(al) = self.al.as_mut() {
            al.set_capacity(n);
        }
    }

    /// After a crash (the log was not marked clean): every extent the last
    /// transactions list may differ from the peer.
    pub fn apply_activity_log(&mut self, extents: &[u32], last_tr: Option<u64>, crashed: bool) {
        if let Some(al) = self.al.as_mut() {
            al.set_next_tr(last_tr.map_or(0, |t| t + 1));
        }
        if !crashed {
            return;
        }
        let per_extent = (1u64 << AL_EXTENT_SHIFT) / BM_BLOCK_BYTES;
        if let Some(bm) = self.bitmap.as_mut() {
            for &e in extents {
                bm.set_range(u64::from(e) * per_extent, per_extent);
            }
        }
        if !extents.is_empty() {
            self.log(
                true,
                format!(
                    "{}: unclean shutdown: {} activity-log extents ({} MiB) marked out of sync",
                    self.resource,
                    extents.len(),
                    extents.len() * 4
                ),
            );
        }
        self.act(Action::PersistBitmap);
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn disk_state(&self) -> DiskState {
        self.disk
    }
    pub fn cstate(&self) -> ConnState {
        self.cstate
    }
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }
    pub fn uuids(&self) -> Option<GenerationUuids> {
        self.uuids
    }
    pub fn flags(&self) -> MdFlags {
        self.flags
    }
    pub fn is_attached(&self) -> bool {
        self.disk != DiskState::Diskless
    }
    /// How the node's own flushes went (see `flushes`).
    pub fn flush_counts(&self) -> FlushCounts {
        self.flushes.counts
    }

    /// Requests of the peer's being carried out (writes, reads, barriers,
    /// digests): the link stops reading at [`limits::PEER_BACKLOG_MAX`].
    pub fn peer_backlog(&self) -> usize {
        // O(1): checked before every frame the link reads.
        self.counters.ua as usize + self.peer_barriers.len() + self.digests.len()
    }

    /// Configured and running: attached, a Primary whose disk was detached
    /// and which serves through its peer, or a node whose disk failed but
    /// whose link stays (DRBD shows it `Diskless`, not unconfigured).
    pub fn is_up(&self) -> bool {
        self.is_attached() || self.role == Role::Primary || self.cstate != ConnState::StandAlone
    }
    pub fn has_peer(&self) -> bool {
        self.peer.is_some()
    }
    fn connected(&self) -> bool {
        self.cstate >= ConnState::Connected
    }

    /// The next action to carry out, in the order they must be started.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn act(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    fn log(&mut self, warn: bool, message: String) {
        self.act(Action::Log { warn, message });
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut counters = self.counters;
        counters.oos = self.bitmap.as_ref().map_or(0, |b| b.weight() * (BM_BLOCK_BYTES / 1024));
        counters.ep = u64::from(self.connected());
        Snapshot {
            resource: self.resource.clone(),
            minor: self.minor,
            node: self.node.clone(),
            peer: self.peer.clone(),
            role: self.role,
            peer_role: if self.connected() {
                self.peer_role
            } else {
                Role::Unknown
            },
            cstate: self.cstate,
            disk: self.disk,
            peer_disk: if self.connected() {
                self.peer_disk
            } else {
                DiskState::DUnknown
            },
            protocol: self.peer.as_ref().map(|_| self.protocol),
            size_bytes: self.data_bytes,
            nbd_clients: self.nbd_clients,
            counters,
            uuids: self.uuids,
            resync_kib: self.resync_progress().map(|(l, t)| (l * 4, t * 4)),
            verify_found_kib: self.verify_found_kib,
            split_brain: self.split_brain_unresolved,
            suspended: self.suspended.clone(),
            abandoned: self.abandoned.len(),
            flushes: self.flushes.counts,
            resync_yielding_kib_s: if matches!(self.cstate, ConnState::SyncSource | ConnState::VerifyS) {
                self.throttle
                    .yielding_to(RESYNC_CHUNK_BYTES / 1024, self.counters.ap > 0)
            } else {
                None
            },
            resync_under_load: if matches!(self.cstate, ConnState::SyncSource | ConnState::VerifyS) {
                self.throttle.under_load(self.counters.ap > 0)
            } else {
                None
            },
        }
    }

    /// Resync progress: (blocks left, blocks total), while syncing.
    pub fn resync_progress(&self) -> Option<(u64, u64)> {
        match self.cstate {
            ConnState::VerifyS => return self.verify_progress(),
            ConnState::VerifyT => return self.peer_verify,
            _ => {}
        }
        let left = self.bitmap.as_ref()?.weight();
        let total = self.resync.as_ref().map(|r| r.total_blocks).unwrap_or(left);
        matches!(
            self.cstate,
            ConnState::SyncSource | ConnState::SyncTarget | ConnState::PausedSyncS | ConnState::PausedSyncT
        )
        .then_some((left, total.max(left)))
    }

    /// What this node tells the peer on connect.
    pub fn uuid_report(&self, discard_my_data: bool) -> UuidReport {
        let mut flags = 0;
        if self.flags.contains(MdFlags::CRASHED_PRIMARY) {
            flags |= uuid_flags::CRASHED_PRIMARY;
        }
        if self.disk <= DiskState::Inconsistent {
            flags |= uuid_flags::INCONSISTENT;
        }
        if self.disk == DiskState::Diskless {
            flags |= uuid_flags::DISKLESS;
        }
        if discard_my_data {
            flags |= uuid_flags::DISCARD_MY_DATA;
        }
        UuidReport {
            uuids: self.uuids.unwrap_or_default(),
            bitmap_bits: self.bitmap.as_ref().map_or(0, Bitmap::weight),
            flags,
            primary: self.role == Role::Primary,
            divergence: self.divergence,
        }
    }

    /// Bitmap pages changed since the last call, as (page, bytes).
    pub fn take_bitmap_pages(&mut self) -> Vec<(u64, Box<[u8; 4096]>)> {
        let Some(bm) = self.bitmap.as_mut() else {
            return Vec::new();
        };
        let pages = bm.take_dirty_pages();
        self.counters.bm += pages.len() as u64;
        pages.into_iter().map(|p| (p, Box::new(bm.page_bytes(p)))).collect()
    }

    /// Load one on-disk bitmap page at attach.
    pub fn load_bitmap_page(&mut self, page: u64, bytes: &[u8]) {
        if let Some(bm) = self.bitmap.as_mut() {
            bm.load_page(page, bytes);
        }
    }

    /// Pages the on-disk bitmap has, for the shell to load.
    pub fn bitmap_pages(&self) -> u64 {
        self.bitmap.as_ref().map_or(0, Bitmap::pages)
    }

    // ---------------------------------------------------------------- admin

    /// The backing disk was opened and its metadata read and verified.
    pub fn attach(&mut self, info: AttachInfo) -> Result<(), Refusal> {
        if self.is_attached() {
            return Ok(());
        }
        if let Some(refusal) = self.attach_refusal() {
            return Err(refusal);
        }
        // A Primary that lost its disk kept the generation it ran on; the
        // disk it attaches now is overwritten from the peer wherever it
        // differs. That is right for the disk it detached, a blank one, or
        // an older copy of this data; a disk whose generation this lineage
        // never had may hold writes made nowhere else (split brain), and
        // those are never discarded silently.
        let lineage = self.uuids.filter(|_| self.role == Role::Primary && self.peer.is_some());
        if let Some(ours) = lineage {
            let disk = info.uuids.current & !1;
            let known = [ours.current, ours.bitmap, ours.history[0], ours.history[1]]
                .iter()
                .any(|u| *u != 0 && *u & !1 == disk);
            if disk != GenerationUuids::JUST_CREATED && !known {
                return Err(Refusal::new(
                    StateRv::DeviceInUse,
                    format!(
                        "{res} is Primary and this disk holds data of a generation it never had (UUID {disk:016X}, current {:016X}): attaching would overwrite it from {peer}. To discard it, run 'tandemadm create-md --force {res}' first; to keep it, attach it where {res} is not Primary",
                        ours.current & !1,
                        res = self.resource,
                        peer = self.peer.clone().unwrap_or_default(),
                    ),
                ));
            }
        }
        // Whether the disk is the one detached, and of the same size.
        self.attached_while_primary = lineage
            .filter(|_| self.data_bytes == info.data_bytes)
            .map(|ours| ours.current & !1 != info.uuids.current & !1);
        self.data_bytes = info.data_bytes;
        self.uuids = Some(info.uuids);
        self.flags = info.flags;
        self.divergence = info.divergence;
        self.flushes.disk_attached();
        self.disk = if !info.flags.contains(MdFlags::CONSISTENT) || self.role == Role::Primary {
            // A Primary attaching (after its disk failed) missed the writes
            // it served through the peer meanwhile.
            DiskState::Inconsistent
        } else if self.peer.is_none() || info.flags.contains(MdFlags::WAS_UP_TO_DATE) {
            // With no peer configured this disk is the only copy there is.
            DiskState::UpToDate
        } else {
            DiskState::Outdated
        };
        // A Primary attaching a disk served its clients through the peer
        // meanwhile: what it marked then still holds.
        let carried = if self.role == Role::Primary {
            self.bitmap.take()
        } else {
            None
        };
        if self.peer.is_some() {
            let blocks = info.data_bytes.div_ceil(BM_BLOCK_BYTES);
            let mut bm = Bitmap::new(blocks);
            if self.role == Role::Primary && info.uuids.current == GenerationUuids::JUST_CREATED {
                // A blank replacement: nothing on it is in sync (DRBD's
                // "assuming that all blocks are out of sync"), so no read is
                // served from it before the resync has covered the block.
                bm.set_range(0, blocks);
            } else if let Some(old) = carried.filter(|o| o.len() == blocks) {
                for (first, run) in old.iter_set_runs() {
                    bm.set_range(first, run);
                }
            }
            self.bitmap = Some(bm);
            self.al = Some(ActivityLog::new(self.al_extents, 0));
        }
        if self.role == Role::Primary {
            // A running Primary's new disk must say so: after a common
            // power failure, nothing else would tell that this copy was
            // the Primary's (the one with every acknowledged write).
            self.flags.insert(MdFlags::PRIMARY_IND);
            self.act(Action::PersistMeta);
        } else if self.flags.contains(MdFlags::PRIMARY_IND) {
            // A node that died as Primary left PRIMARY_IND set.
            self.flags.insert(MdFlags::CRASHED_PRIMARY);
            self.flags.remove(MdFlags::PRIMARY_IND);
            self.act(Action::PersistMeta);
        }
        self.act(Action::StateChanged);
        Ok(())
    }

    /// After `attach`, with the on-disk bitmap and activity log loaded: a
    /// Primary that served its clients through an UpToDate peer while it was
    /// diskless becomes SyncTarget over the link it has, as DRBD does. A
    /// reconnect instead would leave it, for as long as the link is down,
    /// with neither a good disk nor a peer: every read would fail. The disk
    /// it detached (still of the generation the Primary ran on) gets what
    /// the bitmap says it missed, with the activity log's hot extents (the
    /// writes in flight when it failed may or may not be on it); any other
    /// disk gets every block.
    ///
    /// Returns false where only a fresh connect can decide (a Secondary, a
    /// peer not UpToDate, a disk of another size): the shell reconnects.
    pub fn resync_attached_disk(&mut self) -> bool {
        let Some(full) = self.attached_while_primary.take() else {
            return false;
        };
        // Set only on a Primary; the link must still stand, to a good copy.
        if self.cstate != ConnState::Connected || self.peer_disk != DiskState::UpToDate {
            return false;
        }
        if full {
            self.mark_all_out_of_sync();
        } else {
            // The peer resyncs the union of both bitmaps, as on a connect,
            // and sends it back: what this node wrote while diskless is in
            // the peer's half only.
            self.send_bitmap();
            self.awaiting_source_bitmap = true;
        }
        self.act(Action::SendPeer(Message::StartResync {
            source_is_sender: false,
            full,
        }));
        let peer = self.peer.clone().unwrap_or_default();
        let what = if full {
            "every block (the disk is not the one detached)".to_owned()
        } else {
            format!(
                "the {} KiB it may have missed",
                self.bitmap.as_ref().map_or(0, Bitmap::weight) * BM_BLOCK_BYTES / 1024
            )
        };
        self.log(
            false,
            format!(
                "{}: disk attached while Primary; {peer} sends {what}, the link stays up",
                self.resource
            ),
        );
        self.become_sync_target();
        true
    }

    pub fn detach(&mut self) -> Result<(), Refusal> {
        if !self.is_attached() {
            return Ok(());
        }
        if self.role == Role::Primary {
            return Err(Refusal::new(
                StateRv::DeviceInUse,
                format!(
                    "{} is Primary; demote it first with 'tandemadm secondary {}'",
                    self.resource, self.resource
                ),
            ));
        }
        if !self.inflight.is_empty() {
            return Err(Refusal::new(
                StateRv::InTransientState,
                format!("{} requests still in flight", self.inflight.len()),
            ));
        }
        self.act(Action::PersistBitmap);
        self.disk = DiskState::Diskless;
        self.uuids = None;
        self.act(Action::StateChanged);
        Ok(())
    }

    /// `primary [--force]`. `new_uuid` is a fresh random generation UUID from
    /// the shell, used when promotion starts a new data generation.
    pub fn promote(&mut self, force: bool, new_uuid: u64) -> Result<(), Refusal> {
        if self.role == Role::Primary {
            return Ok(());
        }
        if self.connected() && self.peer_role == Role::Primary {
            return Err(Refusal::new(
                StateRv::MultiplePrimaries,
                format!("peer {} is Primary", self.peer.as_deref().unwrap_or("?")),
            ));
        }
        let peer_up_to_date = self.connected() && self.peer_disk == DiskState::UpToDate;
        let mut forced_full_sync = false;
        match self.disk {
            DiskState::Diskless | DiskState::Attaching | DiskState::Failed => {
                return Err(Refusal::new(
                    StateRv::NoUpToDateDisk,
                    format!(
                        "{} has no local disk ({}); attach it with 'tandemadm attach {}'",
                        self.resource, self.disk, self.resource
                    ),
                ))
            }
            DiskState::UpToDate => {}
            DiskState::Consistent | DiskState::Outdated if peer_up_to_date => {}
            _ if self.cstate == ConnState::SyncTarget && !force => {
                return Err(Refusal::new(
                    StateRv::NoUpToDateDisk,
                    format!("{} is SyncTarget and its data is Inconsistent until the resync ends", self.node),
                ))
            }
            _ if force => {
                // The operator declares this copy authoritative (initial sync).
                self.disk = DiskState::UpToDate;
                self.flags.insert(MdFlags::CONSISTENT);
                self.flags.insert(MdFlags::WAS_UP_TO_DATE);
                forced_full_sync = self.connected() && self.peer_disk < DiskState::UpToDate;
            }
            other => {
                return Err(Refusal::new(
                    StateRv::NoUpToDateDisk,
                    format!(
                        "local disk is {other} and no UpToDate peer is connected; if this copy must become authoritative, run 'tandemadm primary --force {}'",
                        self.resource
                    ),
                ))
            }
        }
        let connected = self.connected();
        if let Some(uuids) = self.uuids.as_mut() {
            if !connected || forced_full_sync {
                generation::new_current(uuids, new_uuid);
            }
            generation::set_role_bit(uuids, true);
        }
        self.role = Role::Primary;
        self.flags.insert(MdFlags::PRIMARY_IND);
        self.flags.remove(MdFlags::CRASHED_PRIMARY);
        self.act(Action::PersistMeta);
        self.send_state();
        if forced_full_sync {
            self.mark_all_out_of_sync();
            self.log(
                false,
                format!(
                    "{}: forced Primary with an Inconsistent peer: full sync to {}",
                    self.resource,
                    self.peer.clone().unwrap_or_default()
                ),
            );
            // A bitmap UUID of its own, distinct from the new current UUID.
            self.start_resync_source(new_uuid.rotate_left(29) | 2);
        }
        self.act(Action::StateChanged);
        Ok(())
    }

    /// `secondary [--force]`: refused while NBD clients hold the export open,
    /// as DRBD refuses while the device is open.
    pub fn demote(&mut self, force: bool, holders: &str) -> Result<(), Refusal> {
        if self.role != Role::Primary {
            return Ok(());
        }
        if self.nbd_clients > 0 && !force {
            return Err(Refusal::new(StateRv::DeviceInUse, holders.to_owned()));
        }
        if self.inflight.iter().any(|i| i.origin == Origin::App) {
            return Err(Refusal::new(
                StateRv::InTransientState,
                "application requests still in flight".to_owned(),
            ));
        }
        self.role = Role::Secondary;
        if let Some(uuids) = self.uuids.as_mut() {
            generation::set_role_bit(uuids, false);
        }
        self.flags.remove(MdFlags::PRIMARY_IND);
        self.act(Action::PersistMeta);
        self.send_state();
        self.act(Action::StateChanged);
        Ok(())
    }

    fn send_state(&mut self) {
        if self.connected() {
            let msg = Message::State {
                primary: self.role == Role::Primary,
                disk: self.disk as u8,
            };
            self.act(Action::SendPeer(msg));
        }
    }

    /// Why this node will not export its disk right now, if it will not.
    pub fn export_refusal(&self) -> Option<String> {
        if self.role != Role::Primary {
            return Some(format!(
                "{} is {} on {}; only the Primary serves NBD",
                self.resource, self.role, self.node
            ));
        }
        if self.disk < DiskState::Inconsistent && !self.peer_serves() {
            return Some(format!(
                "{} on {} has no usable disk ({}) and no UpToDate peer to serve through",
                self.resource, self.node, self.disk
            ));
        }
        None
    }

    pub fn nbd_client_opened(&mut self) {
        self.nbd_clients += 1;
        self.act(Action::StateChanged);
    }

    pub fn nbd_client_closed(&mut self) {
        self.nbd_clients = self.nbd_clients.saturating_sub(1);
        self.act(Action::StateChanged);
    }

    pub fn nbd_clients(&self) -> u32 {
        self.nbd_clients
    }

    /// The shell is trying to reach the peer.
    pub fn connecting(&mut self) {
        if self.cstate == ConnState::StandAlone || self.cstate < ConnState::WFConnection {
            self.cstate = ConnState::WFConnection;
            self.act(Action::StateChanged);
        }
    }

    /// `disconnect`: back to StandAlone.
    pub fn go_standalone(&mut self) {
        self.cstate = ConnState::StandAlone;
        self.act(Action::StateChanged);
    }

    // ---------------------------------------------------------------- events

    pub fn handle(&mut self, event: Event) {
        match event {
            Event::NbdRequest { id, io } => self.on_request(id, io),
            Event::DiskDone { id, result } => match self.abandoned.remove(&id) {
                Some(at) => self.abandoned_came_back(result, at),
                None => self.on_disk_done(id, result),
            },
            Event::PeerConnected {
                peer,
                peer_data_bytes,
                peer_features,
            } => self.on_peer_connected(peer, peer_data_bytes, peer_features),
            Event::PeerDisconnected { fresh_uuid } => self.on_peer_disconnected(fresh_uuid),
            Event::PeerWrite {
                id,
                seq,
                offset,
                len,
                flags,
            } => self.on_peer_write(id, seq, offset, len, flags),
            Event::PeerAck { seq, status, completed } => {
                if let Some(mark) = completed {
                    self.peer_completed = self.peer_completed.max(mark);
                }
                self.on_peer_ack(seq, status)
            }
            Event::PeerBarrier { epoch, needs } => {
                self.flushes.peer.flush_arrived();
                // A mark comes from an ack we sent, so it never exceeds
                // what we have completed; were it to, the barrier would
                // wait for a flush that covers nothing yet written.
                let needs = needs.map(|n| n.min(self.flushes.completed()));
                self.peer_barriers.push_back((epoch, needs));
                self.run_peer_barriers();
            }
            Event::PeerBarrierAck { epoch, covers } => {
                if self.remote_done(epoch, 0) {
                    return;
                }
                if let Some(w) = self.barriers.remove(&epoch) {
                    self.counters.pe = self.counters.pe.saturating_sub(1);
                    self.try_finish(w.id);
                }
                if let Some(covers) = covers {
                    // The flush that answered it may have begun after the
                    // writes of FLUSHes whose own barriers are still out.
                    self.on_peer_flushed(0, covers, false);
                }
            }
            Event::PeerBitmap { runs, last } => self.on_peer_bitmap(runs, last),
            Event::PeerSyncUuid { uuid } => {
                if let Some(u) = self.uuids.as_mut() {
                    u.current = (uuid & !1) | (u.current & 1);
                    u.bitmap = 0;
                }
                self.act(Action::PersistMeta);
            }
            Event::PeerResyncDone { uuids } => self.on_resync_done_target(uuids),
            Event::PeerStartResync { source_is_sender, full } => {
                if full {
                    self.mark_all_out_of_sync();
                }
                if source_is_sender {
                    self.become_sync_target();
                } else {
                    if !full {
                        // A Primary's re-attached disk: the target learns
                        // what moves, ahead of the blocks (its own bitmap
                        // came before this request and is in the union).
                        self.send_bitmap();
                    }
                    let seed = self.uuids.map_or(0, |u| u.current).rotate_left(17) | 2;
                    self.start_resync_source(seed);
                }
            }
            Event::Tick { elapsed_us, latency } => {
                let resyncing = self.resync_active();
                self.throttle.tick(elapsed_us, self.counters.ap > 0, latency, resyncing);
                self.watch_peer(elapsed_us);
                self.pump_resync();
                self.pump_verify();
            }
            Event::MetaHung { id, what } => {
                // Even if a hung data request failed the disk first: the
                // write can still land on it.
                self.abandoned.insert(id, self.clock_us);
                let why = format!(
                    "the {what} write did not finish within disk-timeout ({:.1} s)",
                    self.disk_timeout_us as f64 / 1e6
                );
                self.disk_hung(why);
            }
            Event::DiskClock { elapsed_us } => {
                self.clock_us = self.clock_us.saturating_add(elapsed_us);
                self.watch_disk();
            }
            Event::DivergedSaved { result } => self.on_diverged_saved(result),
            Event::DigestDone { id, result } => self.on_digest_done(id, result),
            Event::PeerDigestCheck {
                seq,
                offset,
                len,
                purpose,
                alg,
                digest,
            } => self.on_peer_digest_check(seq, offset, len, purpose, alg, digest),
            Event::PeerDigestReply { seq, equal } => self.on_peer_digest_reply(seq, equal),
            Event::PeerVerifyState { running, left, total } => self.on_peer_verify_state(running, left, total),
            Event::PeerFlushed { through, covers } => self.on_peer_flushed(through, covers.unwrap_or(0), true),
            Event::HandlerDone { handler, exit } => self.on_handler_done(handler, exit),
            Event::MetaIoError { os_errno } => self.meta_io_error(os_errno),
            Event::PeerReadRequest { seq, offset, len } => self.on_peer_read_request(seq, offset, len),
            Event::PeerReadReply { seq, status } => {
                self.remote_done(seq, status);
            }
            Event::PeerState { primary, disk } => {
                self.peer_role = if primary { Role::Primary } else { Role::Secondary };
                let lost_disk = disk <= DiskState::Failed && self.peer_disk > DiskState::Failed;
                self.peer_disk = disk;
                if lost_disk && self.disk == DiskState::UpToDate {
                    // Writes now land only here: a new generation, so that
                    // the peer's old disk, if it comes back, resyncs.
                    if let Some(u) = self.uuids.as_mut() {
                        let fresh = u.current.rotate_left(19) ^ 0x7a3d_0000_0000_0000;
                        generation::new_current(u, fresh);
                    }
                    self.log(
                        true,
                        format!(
                            "{}: {} lost its disk; this node holds the only copy now",
                            self.resource,
                            self.peer.clone().unwrap_or_default()
                        ),
                    );
                    self.act(Action::PersistMeta);
                }
                self.act(Action::StateChanged);
            }
        }
    }

    // ------------------------------------------------------------- app I/O

    fn on_request(&mut self, id: ReqId, io: IoRequest) {
        if self.role != Role::Primary {
            self.act(Action::Reply {
                id,
                error: errno::EPERM,
            });
            return;
        }
        let end = io.offset.checked_add(u64::from(io.len));
        if end.is_none_or(|end| end > self.data_bytes) {
            self.act(Action::Reply {
                id,
                error: errno::EINVAL,
            });
            return;
        }
        let remote = match io.kind {
            IoKind::Read => self.read_from_peer(&io),
            _ => self.disk <= DiskState::Failed && self.peer_serves(),
        };
        if remote {
            self.counters.ap += 1;
            self.throttle.app_request();
            self.forward(id, io);
            return;
        }
        if self.disk <= DiskState::Failed
            || (io.kind == IoKind::Read && self.local_copy_stale(&io))
            || self.no_good_copy()
        {
            // Neither the local disk nor a peer has a good copy to give.
            self.act(Action::Reply { id, error: errno::EIO });
            return;
        }
        self.counters.ap += 1;
        self.throttle.app_request();
        match io.kind {
            IoKind::Read => {}
            IoKind::Flush => self.flushes.app.flush_arrived(),
            _ => self.flushes.app.write_arrived(),
        }
        self.admit(Inflight {
            id,
            io,
            origin: Origin::App,
            started: false,
            issued_us: 0,
            local: None,
            peer_seq: None,
            peer_failed: false,
            done_tick: 0,
        });
    }

    /// Start a request now, or queue it behind an overlapping write.
    fn admit(&mut self, r: Inflight) {
        // The peer's writes too: a SyncTarget that is Primary writes while
        // this node, its SyncSource, reads blocks to send it.
        if matches!(r.origin, Origin::App | Origin::Peer { resync: false, .. }) && r.is_write() {
            let overlapping: Vec<ReqId> = self
                .inflight
                .iter()
                .filter(|o| o.origin == Origin::ResyncRead && o.overlaps(&r.io))
                .map(|o| o.id)
                .collect();
            if let Some(rs) = self.resync.as_mut() {
                rs.stale.extend(overlapping);
            }
        }
        let blocked =
            r.is_write() && self.inflight.iter().any(|o| o.is_write() && o.overlaps(&r.io)) || self.waits_for_al(&r);
        let id = r.id;
        self.inflight.push(r);
        if blocked {
            self.waiting.push_back(id);
        } else {
            self.start(id);
        }
    }

    fn start(&mut self, id: ReqId) {
        let Some(i) = self.inflight.iter().position(|r| r.id == id) else {
            return;
        };
        let r = self.inflight[i];
        self.inflight[i].started = true;
        self.inflight[i].issued_us = self.clock_us;
        let io = r.io;
        let op = match io.kind {
            IoKind::Read => DiskOp::Read {
                offset: io.offset,
                len: io.len,
            },
            IoKind::Write { fua } => DiskOp::Write {
                offset: io.offset,
                len: io.len,
                fua,
            },
            IoKind::Flush => DiskOp::Flush,
            IoKind::Trim { fua } => DiskOp::Trim {
                offset: io.offset,
                len: io.len,
                fua,
            },
            IoKind::WriteZeroes { fua, may_trim } => DiskOp::Zero {
                offset: io.offset,
                len: io.len,
                may_trim,
                fua,
            },
        };
        // The peer's writes too: a Secondary that crashes (or loses power
        // with writes in its disk's cache) must resync what it was writing.
        // Not resync writes: their bits stay set on disk until a flush has
        // made them stable (the shell flushes before any metadata write),
        // and putting them in the log would make a whole full sync "hot".
        if Node::logged(&r) {
            self.activate_extents(io);
        }
        // The peer's copy leaves first: its round trip (and the peer's disk
        // write) is the longer leg of a replicated write, and a local disk
        // submission ahead of it in the same io_uring batch costs a doorbell.
        if r.origin == Origin::App {
            self.replicate(i, id, io);
            if io.kind == IoKind::Flush {
                self.flushes.counts.app += 1;
                if self.flush_covered(i, id) {
                    return;
                }
                // On the disk itself: it covers other requests as the
                // node's own flushes do.
                self.flushes.issued(id);
            }
        }
        self.counters.lo += 1;
        self.act(Action::Disk { id, op });
    }

    /// An application FLUSH (`inflight[i]`) that a flush of the node's own,
    /// issued after every write completed so far, answers: done, it is
    /// done here; under way, it waits for it (not started on the disk
    /// itself, so that a hung disk abandons only the flush that is).
    fn flush_covered(&mut self, i: usize, id: ReqId) -> bool {
        let need = self.flushes.app_need();
        match self.flushes.cover(need) {
            Cover::Missing if !self.flushes.flushing() => return false,
            Cover::Done => {
                self.flushes.counts.app_covered += 1;
                self.answer_app_flush(id, Ok(()));
                return true;
            }
            Cover::Pending => self.flushes.counts.app_covered += 1,
            // A flush that began before some write this FLUSH needs is on
            // the disk: wait for it, and share the next one with whatever
            // else arrives meanwhile.
            Cover::Missing => self.flushes.counts.app_grouped += 1,
        }
        self.inflight[i].started = false;
        self.app_flush_waits.push((id, need));
        true
    }

    /// The local part of application FLUSH `id`, answered by a flush that
    /// was not its own.
    fn answer_app_flush(&mut self, id: ReqId, result: Result<(), i32>) {
        if let Some(r) = self.inflight.iter_mut().find(|r| r.id == id) {
            r.local = Some(result);
        }
        self.try_finish(id);
    }

    /// Ship application request `inflight[i]` to the peer, or remember
    /// what the peer misses while it cannot be sent.
    fn replicate(&mut self, i: usize, id: ReqId, io: IoRequest) {
        if self.peer.is_none() {
            return;
        }
        let can_send = self.connected() && self.peer_disk >= DiskState::Inconsistent;
        match io.kind {
            IoKind::Read => {}
            IoKind::Flush if can_send => {
                let wait = BarrierWait {
                    id,
                    needs: self.data_seq_end,
                    mark: self.flush_mark(),
                };
                if wait.answered_by(self.peer_flushed_through, self.peer_flushed_covers) {
                    // The peer's own flush made every write this FLUSH
                    // covers stable there: no barrier, no round trip. The
                    // next write tells the peer.
                    self.data_after_flush = true;
                    self.flushes.counts.app_peer_ahead += 1;
                } else {
                    let epoch = self.next_seq;
                    self.next_seq += 1;
                    self.act(Action::SendPeer(Message::Barrier {
                        epoch,
                        needs: wait.mark,
                    }));
                    self.barriers.insert(epoch, wait);
                    self.counters.pe += 1;
                    self.inflight[i].peer_seq = Some(epoch);
                }
            }
            IoKind::Flush => {}
            _ if can_send => {
                let seq = self.data_seq();
                self.ship_write(id, seq, io);
                if self.protocol != 'A' {
                    self.counters.pe += 1;
                    self.peer_pending.insert(seq, id);
                    self.inflight[i].peer_seq = Some(seq);
                }
            }
            _ => {
                // Degraded: remember what the peer is missing.
                self.mark_out_of_sync(io.offset, io.len);
            }
        }
    }

    /// Send application write `id` to the peer as `Data` `seq` (its block,
    /// if the kind has one, travels from the request's buffer).
    fn ship_write(&mut self, id: ReqId, seq: u64, io: IoRequest) {
        let mut flags = data_flags(io.kind);
        if std::mem::take(&mut self.data_after_flush) {
            flags |= wire::DATA_FLAG_AFTER_FLUSH;
        }
        let msg = Message::Data {
            seq,
            offset: io.offset,
            len: io.len,
            flags,
        };
        if wire::data_has_payload(flags) {
            self.counters.ns += u64::from(io.len) / 1024;
            self.act(Action::SendPeerData { id, msg });
        } else {
            self.act(Action::SendPeer(msg));
        }
    }

    /// Whether request `r` writes through the activity log: application
    /// writes, and on a Secondary the peer's (not resync writes, whose bits
    /// stay set until flushed, and which would make a whole sync hot).
    fn logged(r: &Inflight) -> bool {
        matches!(r.origin, Origin::App | Origin::Peer { resync: false, .. }) && r.is_write()
    }

    /// Extents with logged writes on the disk now: never evicted.
    fn busy_extents(&self) -> std::collections::HashSet<u32> {
        self.inflight
            .iter()
            .filter(|r| r.started && Node::logged(r))
            .flat_map(|r| extents_of(r.io.offset, r.io.len))
            .collect()
    }

    /// Whether write `r` must wait before it starts because the activity
    /// log cannot take its extents: every extent in the log busy and the
    /// on-disk ring full. It starts when writes finish (`wake_waiters`).
    fn waits_for_al(&self, r: &Inflight) -> bool {
        if !Node::logged(r) {
            return false;
        }
        let Some(al) = self.al.as_ref() else { return false };
        !al.can_admit(r.io.offset, r.io.len, || self.busy_extents())
    }

    /// Mark a write's extents used (the log is an LRU) and queue the
    /// transaction one into cold extents needs; the shell makes it durable
    /// before the write (queued next) starts.
    fn activate_extents(&mut self, io: IoRequest) {
        // Out of `self` for the call, so that the busy set is read from
        // `self` only when an eviction needs it.
        let Some(mut al) = self.al.take() else { return };
        let update = al.activate(io.offset, io.len, || self.busy_extents());
        self.al = Some(al);
        let Some(update) = update else { return };
        if !update.evicted.is_empty() {
            // The log stops protecting these: their bitmap bits must be on disk.
            self.act(Action::PersistBitmap);
        }
        self.counters.al += 1;
        self.act(Action::PersistAl(update.transaction));
    }

    /// Everything must move (full sync).
    fn mark_all_out_of_sync(&mut self) {
        if let Some(bm) = self.bitmap.as_mut() {
            let n = bm.len();
            bm.set_range(0, n);
        }
    }

    /// An application write the peer does not have.
    fn mark_out_of_sync(&mut self, offset: u64, len: u32) {
        self.divergence.last_write_s = self.now_s;
        if self.divergence.first_write_s == 0 {
            self.divergence.first_write_s = self.now_s;
            // Once per divergence: the start time survives a crash.
            self.act(Action::PersistMeta);
        }
        if let Some(bm) = self.bitmap.as_mut() {
            let first = offset / BM_BLOCK_BYTES;
            let last = (offset + u64::from(len)).div_ceil(BM_BLOCK_BYTES);
            if bm.set_range(first, last - first) > 0 {
                self.act(Action::StateChanged);
            }
        }
    }

    /// Blocks wholly covered by a write both sides now hold are in sync.
    fn mark_in_sync(&mut self, offset: u64, len: u32) {
        if let Some(bm) = self.bitmap.as_mut() {
            let first = offset.div_ceil(BM_BLOCK_BYTES);
            let last = (offset + u64::from(len)) / BM_BLOCK_BYTES;
            if last > first {
                bm.clear_range(first, last - first);
            }
        }
    }

    fn on_disk_done(&mut self, id: ReqId, result: Result<(), i32>) {
        let Some(i) = self.inflight.iter().position(|r| r.id == id) else {
            debug_assert!(false, "disk completion for unknown request {id}");
            return;
        };
        self.counters.lo = self.counters.lo.saturating_sub(1);
        self.inflight[i].local = Some(result);
        let r = self.inflight[i];
        let kib = u64::from(r.io.len) / 1024;
        if result.is_ok() {
            match r.io.kind {
                IoKind::Read => self.counters.dr += kib,
                IoKind::Flush => {}
                _ => self.counters.dw += kib,
            }
        }
        match r.origin {
            Origin::App => {
                if r.is_write() {
                    self.flushes.write_done();
                    self.inflight[i].done_tick = self.flushes.completed();
                }
                self.try_finish(id);
                if r.io.kind == IoKind::Flush {
                    self.flush_finished(id, result);
                }
            }
            Origin::Peer { seq, resync } => {
                self.remove(id);
                self.counters.ua = self.counters.ua.saturating_sub(1);
                self.flushes.write_done();
                let status = match result {
                    Ok(()) => {
                        if resync {
                            self.mark_in_sync(r.io.offset, r.io.len);
                        }
                        0
                    }
                    Err(e) => {
                        if !self.local_io_error(e) {
                            self.mark_out_of_sync(r.io.offset, r.io.len);
                        }
                        errno::EIO
                    }
                };
                if self.protocol == 'C' || resync {
                    let completed = self.mark_for_peer(self.flushes.completed());
                    self.act(Action::SendPeer(Message::DataAck {
                        seq,
                        completed,
                        status,
                        disk_us: 0,
                    }));
                }
                self.act(Action::Release { id });
                self.run_peer_barriers();
                if !resync {
                    self.flush_ahead_of_the_peer();
                }
            }
            Origin::ResyncRead => {
                self.remove(id);
                self.resync_read_done(id, result);
            }
            Origin::Flush => {
                self.remove(id);
                if let Err(e) = result {
                    // The writes it covers may not be stable. The disk's
                    // new state (Diskless or Inconsistent) goes out before
                    // the barriers' acks, so the Primary never counts this
                    // copy as a good one; an application FLUSH it answers
                    // fails.
                    self.local_io_error(e);
                }
                // A barrier already here is answered by its own ack.
                let barrier_waits = !self.peer_barriers.is_empty();
                self.flush_finished(id, result);
                if let Some(k) = self.flushes_to_tell.iter().position(|&(f, _)| f == id) {
                    let (_, through) = self.flushes_to_tell.swap_remove(k);
                    if result.is_ok() && self.connected() && !barrier_waits {
                        let covers = self.mark_for_peer(self.flushes.settled());
                        self.act(Action::SendPeer(Message::Flushed { through, covers }));
                    }
                }
            }
            Origin::PeerRead { seq } => {
                self.remove(id);
                self.counters.ua = self.counters.ua.saturating_sub(1);
                let status = match result {
                    Ok(()) => 0,
                    Err(_) => errno::EIO,
                };
                self.counters.ns += u64::from(r.io.len) / 1024;
                self.act(Action::SendPeerReadReply {
                    id: Some(id),
                    seq,
                    status,
                    len: r.io.len,
                });
                self.act(Action::Release { id });
            }
        }
    }

    /// A flush of the disk finished (the node's own or an application
    /// FLUSH on the disk itself): the requests it covers are answered with
    /// its result, and those that needed more, having arrived while it was
    /// on the disk, get one flush for them all, as a database's group
    /// commit does.
    fn flush_finished(&mut self, id: ReqId, result: Result<(), i32>) {
        if let Some(covers) = self.flushes.finished(id) {
            let (answered, still): (Vec<_>, Vec<_>) =
                self.app_flush_waits.iter().partition(|&&(_, need)| need <= covers);
            self.app_flush_waits = still;
            for (app, _) in answered {
                self.answer_app_flush(app, result);
            }
        }
        self.run_peer_barriers();
        if self.app_flush_waits.is_empty() || self.flushes.flushing() {
            return;
        }
        if self.disk > DiskState::Failed {
            self.flush_own();
            return;
        }
        // The flush they waited for failed the disk: no flush is left to
        // answer them.
        for (app, _) in std::mem::take(&mut self.app_flush_waits) {
            self.answer_app_flush(app, Err(errno::EIO as i32));
        }
    }

    fn remove(&mut self, id: ReqId) {
        if let Some(i) = self.inflight.iter().position(|r| r.id == id) {
            self.inflight.swap_remove(i);
        }
        self.wake_waiters();
    }

    /// Start queued requests no longer blocked by an overlapping write.
    fn wake_waiters(&mut self) {
        let mut still = VecDeque::new();
        while let Some(id) = self.waiting.pop_front() {
            let Some(r) = self.inflight.iter().find(|r| r.id == id).copied() else {
                continue;
            };
            let blocked = self
                .inflight
                .iter()
                .any(|o| o.started && o.is_write() && o.id != id && o.overlaps(&r.io))
                || still
                    .iter()
                    .any(|w: &ReqId| self.inflight.iter().any(|o| o.id == *w && o.overlaps(&r.io)))
                || self.waits_for_al(&r);
            if blocked {
                still.push_back(id);
            } else {
                self.start(id);
            }
        }
        self.waiting = still;
    }

    /// Answer an app request once its local I/O and (protocol B/C) the peer are done.
    fn try_finish(&mut self, id: ReqId) {
        let Some(i) = self.inflight.iter().position(|r| r.id == id) else {
            return;
        };
        let r = self.inflight[i];
        let Some(local) = r.local else { return };
        if let Some(seq) = r.peer_seq {
            if self.peer_pending.contains_key(&seq) || self.barriers.contains_key(&seq) {
                return;
            }
        }
        let peer_has_it = r.peer_seq.is_some() && !r.peer_failed;
        if let (Err(os), IoKind::Read) = (local, r.io.kind) {
            if !matches!(os, 28 | 22) && (self.local_io_error(os) || self.on_io_error == OnIoError::PassOn) {
                // The peer has a good copy: the reader never sees the error.
                self.remove(id);
                if self.peer_serves() {
                    self.forward(id, r.io);
                } else {
                    self.counters.ap = self.counters.ap.saturating_sub(1);
                    self.act(Action::Reply { id, error: errno::EIO });
                }
                return;
            }
        }
        self.counters.ap = self.counters.ap.saturating_sub(1);
        let error = match local {
            Ok(()) => {
                if peer_has_it && r.io.kind != IoKind::Read {
                    self.mark_in_sync(r.io.offset, r.io.len);
                }
                0
            }
            // The write is on the peer's disk: durable, the client is told so.
            Err(os) if peer_has_it && r.io.kind != IoKind::Flush && !matches!(os, 28 | 22) => {
                self.mark_out_of_sync(r.io.offset, r.io.len);
                self.local_io_error(os);
                0
            }
            Err(os) => self.app_io_error(r.io, os),
        };
        self.remove(id);
        if r.is_write() {
            self.flushes.replied(r.done_tick);
        }
        if self.suspended.is_some() && r.is_write() {
            // Fencing: no write completes until the peer is known not to
            // be promotable without it.
            self.held_replies.push((id, error));
        } else {
            self.act(Action::Reply { id, error });
        }
        if r.is_write() {
            // Once replied, not on its local completion: a flush issued
            // while the peer's copy is still being written would slow that
            // write wherever the two copies share a disk.
            self.flush_ahead_of_the_application();
        }
        if self.cstate == ConnState::SyncSource && r.is_write() {
            self.pump_resync();
        }
    }

    fn app_io_error(&mut self, io: IoRequest, os_errno: i32) -> u32 {
        match os_errno {
            // Not a disk failure, but the peer may well have done what this
            // disk refused: the blocks can differ now.
            28 if io.kind != IoKind::Read => {
                self.mark_out_of_sync(io.offset, io.len);
                errno::ENOSPC
            }
            22 if matches!(io.kind, IoKind::Trim { .. }) => {
                self.mark_out_of_sync(io.offset, io.len);
                errno::EINVAL
            }
            28 => errno::ENOSPC,
            e => {
                if io.kind != IoKind::Read && !self.local_io_error(e) {
                    self.mark_out_of_sync(io.offset, io.len);
                }
                errno::EIO
            }
        }
    }

    fn on_peer_ack(&mut self, seq: u64, status: u32) {
        if self.remote_done(seq, status) {
            return;
        }
        if let Some(id) = self.peer_pending.remove(&seq) {
            self.counters.pe = self.counters.pe.saturating_sub(1);
            if status != 0 {
                if let Some(r) = self.inflight.iter_mut().find(|r| r.id == id) {
                    r.peer_failed = true;
                    let (o, l) = (r.io.offset, r.io.len);
                    self.mark_out_of_sync(o, l);
                }
            }
            self.try_finish(id);
            return;
        }
        self.resync_ack(seq, status);
    }

    // ------------------------------------------------------------ peer I/O

    fn on_peer_write(&mut self, id: ReqId, seq: u64, offset: u64, len: u32, flags: u32) {
        self.counters.nr += u64::from(len) / 1024;
        self.peer_data_end = self.peer_data_end.max(seq.saturating_add(1));
        let resync = flags & wire::DATA_FLAG_RESYNC != 0;
        if !resync {
            if flags & wire::DATA_FLAG_AFTER_FLUSH != 0 {
                // A FLUSH our early flush answered came first, unannounced.
                self.flushes.peer.flush_arrived();
            }
            self.flushes.peer.write_arrived();
        }
        let end = offset.checked_add(u64::from(len));
        if self.role == Role::Primary && !resync
            || end.is_none_or(|e| e > self.data_bytes)
            || self.disk <= DiskState::Failed
        {
            self.act(Action::SendPeer(Message::DataAck {
                seq,
                status: errno::EIO,
                disk_us: 0,
                completed: None,
            }));
            self.act(Action::Release { id });
            return;
        }
        let io = IoRequest {
            kind: IoKind::Write { fua: false },
            offset,
            len,
        };
        if resync
            && self
                .inflight
                .iter()
                .any(|r| r.origin == Origin::App && r.is_write() && r.overlaps(&io))
        {
            // A SyncTarget that is Primary (its disk was replaced) writes
            // too. The source read this block before our write reached it,
            // so it is older than what we are writing: not applied, and the
            // source keeps the bit for a later pass.
            self.act(Action::SendPeer(Message::DataAck {
                seq,
                status: errno::EAGAIN,
                disk_us: 0,
                completed: None,
            }));
            self.act(Action::Release { id });
            return;
        }
        let fua = flags & wire::DATA_FLAG_FUA != 0;
        let kind = if flags & wire::DATA_FLAG_TRIM != 0 {
            IoKind::Trim { fua }
        } else if flags & wire::DATA_FLAG_ZERO != 0 {
            IoKind::WriteZeroes {
                fua,
                may_trim: flags & wire::DATA_FLAG_MAY_TRIM != 0,
            }
        } else {
            IoKind::Write { fua }
        };
        if self.protocol == 'B' && !resync {
            self.act(Action::SendPeer(Message::DataAck {
                seq,
                status: 0,
                disk_us: 0,
                completed: None,
            }));
        }
        self.counters.ua += 1;
        if !resync {
            // The peer's application at work: on a SyncSource whose peer
            // is the Primary (its disk was replaced), the resync yields to
            // it as to our own, on our disk and on the peer's.
            self.throttle.app_request();
        }
        if self.peer_disk <= DiskState::Failed {
            // The peer has no disk: it lacks this write.
            self.mark_out_of_sync(offset, len);
        }
        self.admit(Inflight {
            id,
            io: IoRequest { kind, offset, len },
            origin: Origin::Peer { seq, resync },
            started: false,
            issued_us: 0,
            local: None,
            peer_seq: None,
            peer_failed: false,
            done_tick: 0,
        });
    }

    /// A barrier completes once every peer write received before it is on
    /// disk and a flush issued after that has finished (`flushes`); then
    /// it is acknowledged. Barriers complete in order.
    fn run_peer_barriers(&mut self) {
        while let Some(&mut (epoch, ref mut need)) = self.peer_barriers.front_mut() {
            if self.disk == DiskState::Diskless {
                // Nothing to flush: the writes before it were refused.
                self.peer_barriers.pop_front();
                self.act(Action::SendPeer(Message::BarrierAck { epoch, covers: None }));
                continue;
            }
            let need = match *need {
                Some(n) => n,
                None => {
                    let earlier = self
                        .inflight
                        .iter()
                        .any(|r| matches!(r.origin, Origin::Peer { seq, .. } if seq < epoch));
                    if earlier {
                        return;
                    }
                    // Fixed now, so that later writes cannot keep it waiting.
                    let n = self.flushes.completed();
                    *need = Some(n);
                    n
                }
            };
            match self.flushes.cover(need) {
                Cover::Done => {
                    self.peer_barriers.pop_front();
                    let covers = self.mark_for_peer(self.flushes.settled());
                    self.act(Action::SendPeer(Message::BarrierAck { epoch, covers }));
                }
                Cover::Pending => return,
                Cover::Missing => {
                    // With a flush on the disk, the next one waits for it
                    // and serves everything that arrived meanwhile.
                    if !self.flushes.flushing() {
                        self.flushes.counts.peer_on_barrier += 1;
                        self.flush_own();
                    }
                    return;
                }
            }
        }
    }

    /// The peer's application writes went quiet: flush now if the recent
    /// barriers say one is coming (see `flushes`).
    fn flush_ahead_of_the_peer(&mut self) {
        let quiet = self.peer_barriers.is_empty()
            && !self
                .inflight
                .iter()
                .any(|r| matches!(r.origin, Origin::Peer { resync: false, .. }));
        if !(quiet && self.flushes.peer.went_quiet()) {
            return;
        }
        let Some(id) = self.flush_ahead() else {
            return;
        };
        self.flushes.counts.peer_early += 1;
        if self.peer_features & wire::handshake::FEATURE_FLUSHED != 0 {
            // Every write received below the oldest still on the disk
            // completed before this flush: it makes them stable.
            let through = self
                .inflight
                .iter()
                .filter_map(|r| match r.origin {
                    Origin::Peer { seq, .. } => Some(seq),
                    _ => None,
                })
                .fold(self.peer_data_end, u64::min);
            self.flushes_to_tell.push((id, through));
        }
    }

    /// A new link, or none: what the last one's peer was told, and told
    /// us, of flushes ahead no longer describes its seqs.
    fn forget_link_flushes(&mut self) {
        self.flushes_to_tell.clear();
        self.data_after_flush = false;
        self.peer_data_end = 0;
        self.peer_flushed_through = 0;
        self.peer_completed = 0;
        self.peer_flushed_covers = 0;
    }

    /// What a barrier sent now needs of the peer: a flush covering the
    /// newest completion mark its acks carried, which covers every write
    /// our clients have been told is done (protocol C acks a write once
    /// the peer's disk completed it). `None`, the barrier's first meaning
    /// (every write sent before it), where the peer sends no marks, where
    /// an ack does not mean completed (A, B), and before this connection's
    /// first ack: the writes acknowledged on an earlier one are in no mark
    /// we hold.
    fn flush_mark(&self) -> Option<u64> {
        self.mark_for_peer(self.peer_completed)
            .filter(|&mark| self.protocol == 'C' && mark > 0)
    }

    /// A completion mark, for a peer that reads them.
    fn mark_for_peer(&self, mark: u64) -> Option<u64> {
        (self.peer_features & wire::handshake::FEATURE_FLUSH_MARKS != 0).then_some(mark)
    }

    /// The peer's flushes made stable every `Data` below `through` and
    /// every write it completed up to mark `covers`: an application FLUSH
    /// that needs no more is answered without its own barrier's ack.
    /// `ahead`: the word came from a flush the peer issued before it was
    /// asked (`Flushed`), which saved those FLUSHes a round trip, rather
    /// than with another barrier's ack.
    fn on_peer_flushed(&mut self, through: u64, covers: u64, ahead: bool) {
        self.peer_flushed_through = self.peer_flushed_through.max(through);
        self.peer_flushed_covers = self.peer_flushed_covers.max(covers);
        let (through, covers) = (self.peer_flushed_through, self.peer_flushed_covers);
        let mut answered: Vec<(u64, ReqId)> = self
            .barriers
            .iter()
            .filter(|(_, w)| w.answered_by(through, covers))
            .map(|(&epoch, w)| (epoch, w.id))
            .collect();
        answered.sort_unstable();
        for (epoch, id) in answered {
            self.barriers.remove(&epoch);
            self.counters.pe = self.counters.pe.saturating_sub(1);
            if ahead {
                self.flushes.counts.app_peer_ahead += 1;
            }
            self.try_finish(id);
        }
    }

    /// The application's writes went quiet (every one replied): flush now
    /// if its recent FLUSHes say one is coming (see `flushes`).
    fn flush_ahead_of_the_application(&mut self) {
        let quiet = !self
            .inflight
            .iter()
            .any(|r| r.origin == Origin::App && (r.io.kind == IoKind::Flush || r.is_write()));
        if quiet && self.flushes.app.went_quiet() && self.flush_ahead().is_some() {
            self.flushes.counts.app_early += 1;
        }
    }

    /// A flush request is predicted: flush now, if there is a disk and
    /// something completed on it that no flush covers yet.
    fn flush_ahead(&mut self) -> Option<ReqId> {
        let worth = self.disk > DiskState::Failed && self.flushes.worth_one();
        worth.then(|| self.flush_own())
    }

    /// Flush the disk for the writes completed so far.
    fn flush_own(&mut self) -> ReqId {
        let id = self.core_id();
        self.inflight.push(Inflight {
            id,
            io: IoRequest {
                kind: IoKind::Flush,
                offset: 0,
                len: 0,
            },
            origin: Origin::Flush,
            started: false,
            issued_us: 0,
            local: None,
            peer_seq: None,
            peer_failed: false,
            done_tick: 0,
        });
        self.flushes.issued(id);
        self.start(id);
        id
    }

    /// The seq of a `Data` about to be sent (an application write or a
    /// resync block).
    fn data_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.data_seq_end = self.next_seq;
        seq
    }

    fn core_id(&mut self) -> ReqId {
        let id = self.next_core_id;
        self.next_core_id += 1;
        id
    }

    // ------------------------------------------------------------ connect

    /// `outdate`: mark the local data Outdated (what a fence handler does to
    /// the node that must not be promoted).
    pub fn outdate(&mut self) -> Result<(), Refusal> {
        if self.connected() {
            return Err(Refusal::new(StateRv::OutdateWhileConnected, String::new()));
        }
        if self.role == Role::Primary {
            return Err(Refusal::new(
                StateRv::DeviceInUse,
                "a Primary cannot be outdated; demote it first".to_owned(),
            ));
        }
        if self.disk < DiskState::Outdated {
            return Err(Refusal::new(
                StateRv::LowerThanOutdated,
                format!("the disk is {}", self.disk),
            ));
        }
        self.disk = DiskState::Outdated;
        self.flags.remove(MdFlags::WAS_UP_TO_DATE);
        self.act(Action::PersistMeta);
        self.act(Action::StateChanged);
        Ok(())
    }

    /// `new-current-uuid [--clear-bitmap]`. With `clear_bitmap` on a fresh,
    /// connected pair, skip the initial sync: both disks are declared
    /// identical (e.g. both all zeroes) and UpToDate.
    pub fn new_current_uuid(&mut self, fresh: u64, clear_bitmap: bool) -> Result<(), Refusal> {
        if !self.is_attached() {
            return Err(Refusal::new(StateRv::DiskLess, "attach the disk first".to_owned()));
        }
        if !clear_bitmap {
            if let Some(u) = self.uuids.as_mut() {
                generation::new_current(u, fresh);
            }
            self.act(Action::PersistMeta);
            return Ok(());
        }
        let fresh_pair = self
            .uuids
            .is_some_and(|u| u.current & !1 == GenerationUuids::JUST_CREATED);
        if !(self.cstate == ConnState::Connected && fresh_pair) {
            return Err(Refusal::new(
                StateRv::InTransientState,
                "--clear-bitmap skips the initial sync of a freshly created, connected pair only".to_owned(),
            ));
        }
        if let Some(u) = self.uuids.as_mut() {
            u.current = (fresh & !1) | (u.current & 1);
            u.bitmap = 0;
        }
        if let Some(bm) = self.bitmap.as_mut() {
            let n = bm.len();
            bm.clear_range(0, n);
        }
        self.disk = DiskState::UpToDate;
        self.flags.insert(MdFlags::CONSISTENT);
        self.flags.insert(MdFlags::WAS_UP_TO_DATE);
        let u = self.uuids.unwrap_or_default();
        // The peer adopts the same generation, as at the end of a resync.
        self.act(Action::SendPeer(Message::ResyncDone {
            current: u.current,
            bitmap: 0,
            history: u.history,
        }));
        self.peer_disk = DiskState::UpToDate;
        self.send_state();
        self.log(
            false,
            format!(
                "{}: new current UUID, bitmap cleared: initial sync skipped",
                self.resource
            ),
        );
        self.act(Action::PersistMeta);
        self.act(Action::PersistBitmap);
        self.act(Action::StateChanged);
        Ok(())
    }

    /// DRBD's fence-peer exit codes: 3 peer Inconsistent, 4 peer Outdated,
    /// 5 peer unreachable (assumed down), 7 peer STONITHed: writes go on;
    /// 6 peer is Primary and anything else: the writes stay held.
    fn on_handler_done(&mut self, handler: Handler, exit: Option<i32>) {
        if handler != Handler::FencePeer || self.suspended.is_none() {
            return;
        }
        let res = self.resource.clone();
        let peer = self.peer.clone().unwrap_or_default();
        let verdict = match exit {
            Some(3) => Ok(format!("{peer} is Inconsistent")),
            Some(4) => Ok(format!("{peer} is Outdated")),
            Some(5) => Ok(format!("{peer} is unreachable, assumed down")),
            Some(7) => Ok(format!("{peer} was fenced (STONITH)")),
            Some(6) => Err(format!(
                "{peer} is Primary: this node must not go on writing; demote it with 'tandemadm secondary --force {res}'"
            )),
            Some(n) => Err(format!("the fence-peer handler failed (exit code {n})")),
            None => Err("no fence-peer handler ran (configure one in the handlers section)".to_owned()),
        };
        match verdict {
            Ok(why) => {
                self.flags.insert(MdFlags::PEER_OUT_DATED);
                self.peer_disk = DiskState::Outdated;
                self.log(false, format!("{res}: fence-peer: {why}; held writes complete"));
                self.act(Action::PersistMeta);
                self.release_held();
            }
            Err(why) => {
                let held = format!("{why}; writes are held until {peer} reconnects or 'tandemadm resume-io {res}'");
                self.log(true, format!("{res}: {held}"));
                self.suspended = Some(held);
                self.act(Action::StateChanged);
            }
        }
    }

    /// DRBD's ko-count. A peer whose disk hangs still answers pings, so
    /// the link looks alive while the Primary's writes wait for it forever;
    /// once one request has waited `timeout × ko-count` the link is dropped
    /// as a failed one: the waiting writes complete here, their blocks
    /// marked out of sync, and the link reconnects and resyncs them.
    fn watch_peer(&mut self, elapsed_us: u64) {
        let oldest = [
            self.peer_pending.keys().next().copied(),
            self.barriers.keys().min().copied(),
            self.remote.keys().min().copied(),
        ]
        .into_iter()
        .flatten()
        .min();
        self.peer_wait = match (oldest, self.peer_wait) {
            (None, _) => None,
            (Some(seq), Some((waiting, waited))) if seq == waiting => Some((seq, waited.saturating_add(elapsed_us))),
            (Some(seq), _) => Some((seq, 0)),
        };
        let Some((_, waited)) = self.peer_wait else {
            return;
        };
        if self.ko_limit_us == 0 || waited < self.ko_limit_us || !self.connected() {
            return;
        }
        self.peer_wait = None;
        // DRBD's words, which operators grep their logs for.
        let reason = format!(
            "{}: Remote failed to finish a request within ko-count * timeout: {} left one unanswered for {:.1} s; \
             dropping the link (it reconnects)",
            self.resource,
            self.peer.clone().unwrap_or_default(),
            waited as f64 / 1e6
        );
        self.act(Action::ResetLink { reason });
    }

    /// `disk-timeout`: a local request outstanding longer than the limit
    /// fails the disk, as DRBD does, whatever `on-io-error` says: a disk
    /// that does not answer cannot be trusted to answer right later. Every
    /// request still on it is given up on and finishes as a failed one (a
    /// write the peer holds completes; a read goes to the peer).
    fn watch_disk(&mut self) {
        if self.disk_timeout_us == 0 || self.disk == DiskState::Diskless {
            return;
        }
        let now = self.clock_us;
        let on_disk = self.inflight.iter().filter(|r| r.started && r.local.is_none());
        let Some(waited) = on_disk.map(|r| now.saturating_sub(r.issued_us)).max() else {
            return;
        };
        if waited < self.disk_timeout_us {
            return;
        }
        self.disk_hung(format!(
            "local disk left a request unanswered for {:.1} s (disk-timeout {:.1} s)",
            waited as f64 / 1e6,
            self.disk_timeout_us as f64 / 1e6,
        ));
    }

    /// The local disk stopped answering (`why`): failed and detached, and
    /// every request still on it given up on and finished as a failed one.
    fn disk_hung(&mut self, why: String) {
        if self.disk == DiskState::Diskless {
            return;
        }
        let hung: Vec<ReqId> = self
            .inflight
            .iter()
            .filter(|r| r.started && r.local.is_none())
            .map(|r| r.id)
            .collect();
        // What the shell has not started yet (queued behind a metadata write
        // that hung) never reaches the disk; the rest is abandoned to it.
        let mut queued = Vec::new();
        self.actions.retain(|a| match a {
            Action::Disk { id, .. } if hung.contains(id) => {
                queued.push(*id);
                false
            }
            _ => true,
        });
        let now = self.clock_us;
        self.abandoned
            .extend(hung.iter().filter(|id| !queued.contains(id)).map(|id| (*id, now)));
        let what = format!(
            "{why}: disk detached as failed, {} request(s) on it abandoned to the kernel (their completions will be ignored)",
            hung.len() - queued.len()
        );
        // Not the bitmap: a write to the hung disk would hang as well. The
        // activity log on it covers what the abandoned writes touch.
        self.fail_disk(what, false);
        for id in hung {
            self.on_disk_done(id, Err(errno::ETIMEDOUT as i32));
        }
    }

    /// A request given up on by `disk-timeout` came back.
    fn abandoned_came_back(&mut self, result: Result<(), i32>, at_us: u64) {
        let how = match result {
            Ok(()) => "completed".to_owned(),
            Err(e) => format!("failed (errno {e})"),
        };
        let left = match self.abandoned.len() {
            0 => "none is outstanding now: the disk may be attached again".to_owned(),
            n => format!("{n} still outstanding"),
        };
        self.log(
            true,
            format!(
                "{}: a local request abandoned by disk-timeout {how} {:.1} s later (disk-timeout may be too aggressive); {left}",
                self.resource,
                self.clock_us.saturating_sub(at_us) as f64 / 1e6
            ),
        );
    }
}

#[cfg(test)]
mod tests;
