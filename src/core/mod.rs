//! The replication core: one [`Node`] per resource, events in, actions out.
//!
//! Nothing in this module performs I/O, reads a clock or draws a random
//! number (`tests/tidy.rs` holds that line). The shell feeds it what happened —
//! an NBD request arrived, a disk write completed, an operator asked for a
//! role change — and carries out the [`Action`]s it queues. Ordering
//! obligations are expressed by *when* an action appears: the reply to a write
//! is queued only once every completion it depends on has been reported.
//!
//! Data bytes never pass through the core. The shell keeps each request's
//! buffer keyed by [`ReqId`]; the core sees offsets, lengths and flags.
//!
//! ```text
//!  NBD request ──► Node::handle(NbdRequest) ──► Action::Disk(op)  ──► shell runs the I/O
//!                                                                          │
//!  Action::Reply ◄── Node::handle(DiskDone) ◄──────────────────────────────┘
//! ```

pub mod activity_log;
pub mod generation;
pub mod limits;
mod node;
pub mod refusal;
pub mod split_brain;
pub mod state;
pub mod throttle;

pub use generation::UuidReport;
pub use node::{FlushCounts, Node, SplitBrainOutcome, Verdict};
pub use refusal::{Refusal, StateRv};
pub use state::{ConnState, DiskState, Role};

use crate::meta::{Divergence, GenerationUuids, MdFlags};
use crate::wire::Message;
use serde::Serialize;

/// Identifies one in-flight request; chosen by the shell, unique while in flight.
pub type ReqId = u64;

/// NBD errno values the core answers with (NBD's numbering, which is Linux's).
pub mod errno {
    pub const EPERM: u32 = 1;
    pub const EIO: u32 = 5;
    /// A resync block the SyncTarget did not write because an application
    /// write to it was in flight: the source keeps the bit and sends it
    /// again on a later pass.
    pub const EAGAIN: u32 = 11;
    pub const EINVAL: u32 = 22;
    pub const ENOSPC: u32 = 28;
    pub const ESHUTDOWN: u32 = 108;
    /// A local request `disk-timeout` gave up on.
    pub const ETIMEDOUT: u32 = 110;
}

/// An I/O the application asked for, already validated against the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    Read,
    Write { fua: bool },
    Flush,
    Trim { fua: bool },
    WriteZeroes { fua: bool, may_trim: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoRequest {
    pub kind: IoKind,
    pub offset: u64,
    pub len: u32,
}

/// What the shell must do on the local backing disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOp {
    Read {
        offset: u64,
        len: u32,
    },
    /// `fua`: the data must be durable before completion is reported.
    Write {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Zero {
        offset: u64,
        len: u32,
        may_trim: bool,
        fua: bool,
    },
    /// Read the range and digest it; report [`Event::DigestDone`].
    Digest {
        offset: u64,
        len: u32,
        alg: crate::digest::DigestAlg,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    NbdRequest {
        id: ReqId,
        io: IoRequest,
    },
    /// `result` is an errno from the OS on failure.
    DiskDone {
        id: ReqId,
        result: Result<(), i32>,
    },
    /// The link is up and authenticated, and the peer's UUIDs arrived.
    PeerConnected {
        peer: UuidReport,
        peer_data_bytes: u64,
        /// The feature bits of the peer's hello (`wire::handshake::FEATURE_*`).
        peer_features: u64,
    },
    /// The link is gone. `fresh_uuid` starts a new data generation if this
    /// node is Primary (DRBD does so when a Primary loses its peer).
    PeerDisconnected {
        fresh_uuid: u64,
    },
    /// A write from the peer, whose block the shell holds under `id`.
    PeerWrite {
        id: ReqId,
        seq: u64,
        offset: u64,
        len: u32,
        flags: u32,
    },
    /// The peer's `DataAck`; `completed`, its completion mark (see
    /// `Message::DataAck`).
    PeerAck {
        seq: u64,
        status: u32,
        completed: Option<u64>,
    },
    /// `needs`: the completion mark a flush must cover (see
    /// `Message::Barrier`); without it, every write received before.
    PeerBarrier {
        epoch: u64,
        needs: Option<u64>,
    },
    /// `covers`: the completion mark the peer's finished flushes cover.
    PeerBarrierAck {
        epoch: u64,
        covers: Option<u64>,
    },
    PeerBitmap {
        runs: Vec<(u64, u64)>,
        last: bool,
    },
    PeerSyncUuid {
        uuid: u64,
    },
    PeerResyncDone {
        uuids: GenerationUuids,
    },
    PeerState {
        primary: bool,
        disk: DiskState,
    },
    /// The peer asked for a full resync (`invalidate` on one side).
    PeerStartResync {
        source_is_sender: bool,
        /// Every block, or only those of the bitmap the peer just sent.
        full: bool,
    },
    /// Time passed (the shell ticks while connected: every 10 ms while a
    /// resync runs, else every 100 ms): refills the resync rate budget and
    /// steers the resync by the latency of the application's requests that
    /// finished since the last tick.
    Tick {
        elapsed_us: u64,
        latency: throttle::AppLatency,
    },
    /// A metadata write (and the flush before it) did not finish within
    /// `disk-timeout`: the disk is as failed as if a request on it had not,
    /// and the write, `id` from here on, is abandoned like one: its
    /// `DiskDone` comes when the kernel gives it back.
    MetaHung {
        id: ReqId,
        what: &'static str,
    },
    /// Time passed for `disk-timeout` (the shell sends it every 100 ms while
    /// the option is set, connected or not).
    DiskClock {
        elapsed_us: u64,
    },
    /// A [`DiskOp::Digest`] finished: the digest, or the OS errno.
    DigestDone {
        id: ReqId,
        result: Result<Vec<u8>, i32>,
    },
    PeerDigestCheck {
        seq: u64,
        offset: u64,
        len: u32,
        purpose: crate::wire::DigestPurpose,
        alg: u8,
        digest: Vec<u8>,
    },
    PeerDigestReply {
        seq: u64,
        equal: bool,
    },
    /// The peer started (`running`) or ended an online verify.
    PeerVerifyState {
        running: bool,
        left: u64,
        total: u64,
    },
    /// A flush the peer issued ahead of its barrier finished: every write
    /// we sent it below seq `through` is on its stable storage, and
    /// (`covers`) every write it had completed when the flush was issued.
    PeerFlushed {
        through: u64,
        covers: Option<u64>,
    },
    /// The peer reads from our disk (its own is detached or resyncing).
    PeerReadRequest {
        seq: u64,
        offset: u64,
        len: u32,
    },
    /// The peer answered a [`Action::ForwardRead`]; on success the shell
    /// has already put the data in the request's read buffer.
    PeerReadReply {
        seq: u64,
        status: u32,
    },
    /// The shell carried out [`Action::SaveDiverged`]: `Ok` names where the
    /// blocks went, `Err` says why they could not be saved.
    DivergedSaved {
        result: Result<String, String>,
    },
    /// A handler the node waits for ([`Handler::FencePeer`]) exited.
    HandlerDone {
        handler: Handler,
        /// The exit code; `None` if it could not run or was killed.
        exit: Option<i32>,
    },
    /// The metadata (activity log, bitmap, superblock) or the flush that
    /// must precede an activity-log transaction failed: nothing protects
    /// the disk's writes any more.
    MetaIoError {
        os_errno: i32,
    },
}

impl Event {
    /// The event a control message from the peer becomes, for every message
    /// that maps to one directly. `None` for the messages whose handling
    /// needs the caller: the handshake, pings, refusals, and the two that
    /// carry a block (`Data`, `ReadReply`), whose bytes only the caller has;
    /// those come back as `Err`.
    pub fn from_peer(msg: Message) -> Result<Event, Box<Message>> {
        Ok(match msg {
            Message::DataAck {
                seq, status, completed, ..
            } => Event::PeerAck { seq, status, completed },
            Message::Barrier { epoch, needs } => Event::PeerBarrier { epoch, needs },
            Message::BarrierAck { epoch, covers } => Event::PeerBarrierAck { epoch, covers },
            Message::Bitmap { runs, last } => Event::PeerBitmap { runs, last },
            Message::SyncUuid { uuid } => Event::PeerSyncUuid { uuid },
            Message::ResyncDone {
                current,
                bitmap,
                history,
            } => Event::PeerResyncDone {
                uuids: GenerationUuids {
                    current,
                    bitmap,
                    history,
                },
            },
            Message::State { primary, disk } => Event::PeerState {
                primary,
                disk: DiskState::from_wire(disk).unwrap_or(DiskState::DUnknown),
            },
            Message::StartResync { source_is_sender, full } => Event::PeerStartResync { source_is_sender, full },
            Message::DigestCheck {
                seq,
                offset,
                len,
                purpose,
                alg,
                digest,
            } => Event::PeerDigestCheck {
                seq,
                offset,
                len,
                purpose,
                alg,
                digest,
            },
            Message::DigestReply { seq, equal } => Event::PeerDigestReply { seq, equal },
            Message::VerifyState { running, left, total } => Event::PeerVerifyState { running, left, total },
            Message::ReadRequest { seq, offset, len } => Event::PeerReadRequest { seq, offset, len },
            Message::Flushed { through, covers } => Event::PeerFlushed { through, covers },
            other => return Err(Box::new(other)),
        })
    }
}

/// The `handlers` section entries the node runs, with DRBD's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Handler {
    /// Every split brain the UUIDs show, resolved or not.
    InitialSplitBrain,
    /// A split brain no policy resolved: the link stays down.
    SplitBrain,
    /// This node was Primary and lost an automatic split-brain recovery.
    PriLostAfterSb,
    /// The Primary lost its peer (`fencing resource-only`): outdate it.
    FencePeer,
    /// The local disk failed (`on-io-error call-local-io-error`).
    LocalIoError,
}

impl Handler {
    /// The option name in the `handlers` section.
    pub fn name(self) -> &'static str {
        match self {
            Handler::InitialSplitBrain => "initial-split-brain",
            Handler::SplitBrain => "split-brain",
            Handler::PriLostAfterSb => "pri-lost-after-sb",
            Handler::FencePeer => "fence-peer",
            Handler::LocalIoError => "local-io-error",
        }
    }

    /// Whether the node waits for the exit code ([`Event::HandlerDone`]).
    pub fn awaited(self) -> bool {
        matches!(self, Handler::FencePeer)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Disk {
        id: ReqId,
        op: DiskOp,
    },
    /// Answer the NBD request; `error` 0 is success, else an NBD errno.
    Reply {
        id: ReqId,
        error: u32,
    },
    /// Send a control message to the peer.
    SendPeer(Message),
    /// Send a `Data` message whose block is the buffer of request `id`.
    SendPeerData {
        id: ReqId,
        msg: Message,
    },
    /// The buffer of `id` (a resync read, a peer write) is no longer needed.
    Release {
        id: ReqId,
    },
    /// Drop the peer link and stay StandAlone (split brain, unrelated data).
    Disconnect {
        reason: String,
    },
    /// Drop the peer link as if it had failed, and reconnect: the peer did
    /// not complete a request within `timeout × ko-count`.
    ResetLink {
        reason: String,
    },
    /// Something the operator must read in the log.
    Log {
        warn: bool,
        message: String,
    },
    /// The superblock (flags, UUIDs) changed and must be written before the
    /// change is reported to the operator.
    PersistMeta,
    /// Bitmap pages changed; write them (`Node::take_bitmap_pages`).
    /// Carried out synchronously, before any later action starts.
    PersistBitmap,
    /// Write this activity-log transaction (its blocks, in order) durably.
    /// Carried out synchronously, before any later action starts: the writes
    /// queued after it rely on it being on disk.
    PersistAl(Vec<crate::meta::al::AlTransaction>),
    /// Something the status file or the events stream shows changed.
    StateChanged,
    /// Run a handler from the configuration's `handlers` section, if one
    /// is configured; awaited ones report back with [`Event::HandlerDone`].
    RunHandler(Handler),
    /// This node lost a split brain: copy its blocks in `runs` (first
    /// block, blocks) somewhere safe before anything overwrites them, then
    /// report [`Event::DivergedSaved`]. The node sends nothing that lets
    /// the peer overwrite them until then.
    SaveDiverged {
        runs: Vec<(u64, u64)>,
    },
    /// Read for application request `id` from the peer: send a
    /// `ReadRequest` and put the `ReadReply`'s data in `id`'s read buffer.
    ForwardRead {
        id: ReqId,
        seq: u64,
        offset: u64,
        len: u32,
    },
    /// Answer the peer's `ReadRequest` with the block read under `id`
    /// (`None` with an error status: no data).
    SendPeerReadReply {
        id: Option<ReqId>,
        seq: u64,
        status: u32,
        len: u32,
    },
    /// The local disk failed and is detached: close it and its metadata.
    DetachDisk,
}

/// What the shell learned from the backing disk's metadata on attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachInfo {
    pub data_bytes: u64,
    pub uuids: GenerationUuids,
    pub flags: MdFlags,
    pub divergence: Divergence,
}

/// The `/proc/drbd` counters, in the units DRBD keeps them (KiB and counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// KiB sent to the peer.
    pub ns: u64,
    /// KiB received from the peer.
    pub nr: u64,
    /// KiB written to the local disk.
    pub dw: u64,
    /// KiB read from the local disk.
    pub dr: u64,
    /// Activity-log transactions written.
    pub al: u64,
    /// Bitmap pages written.
    pub bm: u64,
    /// Requests open to the local disk.
    pub lo: u64,
    /// Requests sent to the peer awaiting an answer.
    pub pe: u64,
    /// Requests received from the peer not yet acknowledged.
    pub ua: u64,
    /// Application requests accepted but not completed.
    pub ap: u64,
    /// Epochs in flight.
    pub ep: u64,
    /// Out-of-sync KiB.
    pub oos: u64,
    /// KiB a checksum-based resync did not send: the digests matched.
    pub rs_same_kib: u64,
}

/// A consistent picture of one resource, for `status`, the status file and events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub resource: String,
    pub minor: u32,
    pub node: String,
    pub peer: Option<String>,
    pub role: Role,
    pub peer_role: Role,
    pub cstate: ConnState,
    pub disk: DiskState,
    pub peer_disk: DiskState,
    /// `None` when the resource has no peer (standalone): DRBD prints a space.
    pub protocol: Option<char>,
    pub size_bytes: u64,
    pub nbd_clients: u32,
    pub counters: Counters,
    pub uuids: Option<GenerationUuids>,
    /// While resyncing, or verifying on the node that runs the verify
    /// (VerifyS): (KiB left, KiB total).
    pub resync_kib: Option<(u64, u64)>,
    /// KiB the last online verify found out of sync, once it ran to its
    /// end; `None` while one runs, after one was interrupted, and before
    /// the first. Kept on the node that ran it.
    pub verify_found_kib: Option<u64>,
    /// The last connect found a split brain no policy resolved; cleared
    /// by the next successful connect.
    pub split_brain: bool,
    /// Why application writes are held (fencing), if they are.
    pub suspended: Option<String>,
    /// Local requests `disk-timeout` gave up on that the old disk has not
    /// given back (`attach` waits for them).
    pub abandoned: usize,
    /// How the node's own flushes went (`node::flushes`).
    pub flushes: FlushCounts,
    /// While this node's resync or verify holds back for application
    /// I/O: the `c-min-rate` (KiB/s) it yields down to.
    pub resync_yielding_kib_s: Option<u64>,
    /// While this node's resync or verify runs beside application I/O:
    /// how the resync controller steers it.
    pub resync_under_load: Option<ResyncUnderLoad>,
}

/// The resync controller under application load (see [`throttle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResyncUnderLoad {
    /// Resync requests it lets be in flight.
    pub width: usize,
    /// The application's mean latency over the last 100 ms, µs.
    pub app_us: Option<u64>,
    /// The application's mean latency without the resync, µs.
    pub alone_us: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::Handler;

    #[test]
    fn every_handler_the_core_runs_is_one_the_config_accepts_without_a_warning() {
        use Handler::*;
        let all = [InitialSplitBrain, SplitBrain, PriLostAfterSb, FencePeer, LocalIoError];
        let names: Vec<&str> = all.iter().map(|h| h.name()).collect();
        assert_eq!(names, crate::config::parser::HANDLERS_RUN);
    }
}
