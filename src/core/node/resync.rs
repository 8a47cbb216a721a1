//! Resync: the bitmap exchange that decides what moves, the SyncSource's
//! reads and sends (whole blocks, or digests first with `csums-alg`), the
//! SyncTarget's bookkeeping, and how fast it goes (`throttle`). `invalidate`,
//! `pause-sync` and `resume-sync` are the operator's handles on it.

use super::super::generation::{Sync, UUID_NEW_BM_OFFSET};
use super::super::refusal::{Refusal, StateRv};
use super::super::state::{ConnState, DiskState, Role};
use super::super::{Action, DiskOp, IoKind, IoRequest, ReqId};
use super::digests::DigestFor;
use super::{Inflight, Node, Origin};
use crate::meta::bitmap::Bitmap;
use crate::meta::{Divergence, GenerationUuids, MdFlags, BM_BLOCK_BYTES};
use crate::wire::{self, Message};
use std::collections::HashMap;

/// Resync moves at most this much per request.
pub(super) const RESYNC_CHUNK_BYTES: u64 = 256 * 1024;
/// Resync requests in flight at once.
pub(super) const RESYNC_INFLIGHT_MAX: usize = crate::core::throttle::INFLIGHT_MAX;

#[derive(Debug, Default)]
pub(super) struct Resync {
    /// Next block to look at.
    pub(super) cursor: u64,
    /// Reads or sends in flight: id → (first block, blocks).
    pub(super) inflight: HashMap<ReqId, (u64, u64)>,
    /// Sent and awaiting the peer's ack: seq → (first block, blocks).
    pub(super) sent: HashMap<u64, (u64, u64)>,
    /// Reads an application write overlapped after they started: their data
    /// may be older than what the write sends, so they are dropped.
    pub(super) stale: Vec<ReqId>,
    pub(super) total_blocks: u64,
    /// Checksum resync: local digests being computed.
    pub(super) checking: usize,
    /// Checksum resync: digests sent, awaiting the target's verdict.
    pub(super) csum_sent: HashMap<u64, (u64, u64)>,
    /// Checksum resync: ranges whose digests differed; they travel next.
    pub(super) must_send: Vec<(u64, u64)>,
}

impl Node {
    /// The resync controller's settings: `cap_kib_s` (0 = none) from
    /// [`crate::config::DiskOptions::resync_cap_kib_s`], and `c-min-rate`.
    pub fn set_resync_rate(&mut self, cap_kib_s: u64, min_under_load_kib_s: Option<u64>) {
        self.throttle.configure(cap_kib_s, min_under_load_kib_s);
    }

    /// Whether the shell should tick (a resync is moving blocks).
    pub fn resync_active(&self) -> bool {
        matches!(self.cstate, ConnState::SyncSource | ConnState::VerifyS)
    }

    /// `invalidate` (`local` true: this node's data is discarded and fully
    /// resynced from the peer) or `invalidate-remote` (the peer's is).
    pub fn invalidate(&mut self, local: bool, fresh: u64) -> Result<(), Refusal> {
        if self.cstate != ConnState::Connected {
            return Err(Refusal::new(
                StateRv::NoRemoteDisk,
                format!(
                    "invalidate needs a Connected peer with no resync running (now {})",
                    self.cstate
                ),
            ));
        }
        if local && self.role == Role::Primary {
            return Err(Refusal::new(
                StateRv::DeviceInUse,
                "this node is Primary; its data cannot be invalidated".to_owned(),
            ));
        }
        if !local && self.peer_role == Role::Primary {
            return Err(Refusal::new(
                StateRv::DeviceInUse,
                "the peer is Primary; its data cannot be invalidated".to_owned(),
            ));
        }
        self.mark_all_out_of_sync();
        self.act(Action::SendPeer(Message::StartResync {
            source_is_sender: !local,
            full: true,
        }));
        if local {
            self.become_sync_target();
        } else {
            self.start_resync_source(fresh.rotate_left(31) | 2);
        }
        Ok(())
    }

    /// Become SyncTarget now and tell the peer (`invalidate`, a disk
    /// attached while Primary).
    pub(super) fn become_sync_target(&mut self) {
        self.enter_sync_target();
        self.send_state();
        self.act(Action::PersistMeta);
        self.act(Action::StateChanged);
    }

    /// This node's disk is the resync's target, Inconsistent until the
    /// SyncSource says every block has moved; the blocks to come are the
    /// bitmap's.
    fn enter_sync_target(&mut self) {
        self.cstate = ConnState::SyncTarget;
        self.disk = DiskState::Inconsistent;
        self.flags.remove(MdFlags::CONSISTENT);
        let total = self.bitmap.as_ref().map_or(0, Bitmap::weight);
        self.resync = Some(Resync {
            total_blocks: total,
            ..Resync::default()
        });
    }

    /// `pause-sync`: stop moving blocks; the resync resumes where it stopped.
    pub fn pause_sync(&mut self) -> Result<(), Refusal> {
        if self.cstate == ConnState::VerifyS && self.pause_verify(true) {
            self.act(Action::StateChanged);
            return Ok(());
        }
        match self.cstate {
            ConnState::SyncSource => {
                self.cstate = ConnState::PausedSyncS;
                self.act(Action::StateChanged);
                Ok(())
            }
            ConnState::PausedSyncS | ConnState::PausedSyncT => Ok(()),
            ConnState::SyncTarget => Err(Refusal::new(
                StateRv::InTransientState,
                format!(
                    "this node is SyncTarget; run pause-sync on the SyncSource {}",
                    self.peer.clone().unwrap_or_default()
                ),
            )),
            other => Err(Refusal::new(
                StateRv::InTransientState,
                format!("no resync is running ({other})"),
            )),
        }
    }

    /// `resume-sync`.
    pub fn resume_sync(&mut self) -> Result<(), Refusal> {
        if self.cstate == ConnState::VerifyS && self.pause_verify(false) {
            self.act(Action::StateChanged);
            return Ok(());
        }
        if self.cstate == ConnState::PausedSyncS {
            self.cstate = ConnState::SyncSource;
            self.act(Action::StateChanged);
            self.pump_resync();
        }
        Ok(())
    }

    pub(super) fn send_bitmap(&mut self) {
        let runs: Vec<(u64, u64)> = self
            .bitmap
            .as_ref()
            .map(|b| b.iter_set_runs().collect())
            .unwrap_or_default();
        let mut chunks = runs.chunks(wire::BITMAP_RUNS_PER_MESSAGE).peekable();
        if chunks.peek().is_none() {
            self.act(Action::SendPeer(Message::Bitmap {
                runs: Vec::new(),
                last: true,
            }));
            return;
        }
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            self.act(Action::SendPeer(Message::Bitmap { runs: c.to_vec(), last }));
        }
    }

    pub(super) fn on_peer_bitmap(&mut self, runs: Vec<(u64, u64)>, last: bool) {
        // The union of both bitmaps: every block either side changed moves.
        if let Some(bm) = self.bitmap.as_mut() {
            for (start, len) in runs {
                bm.set_range(start, len);
            }
        }
        if !last {
            return;
        }
        self.peer_bitmap_done = true;
        if std::mem::take(&mut self.awaiting_source_bitmap) {
            let weight = self.bitmap.as_ref().map_or(0, Bitmap::weight);
            if let Some(rs) = self.resync.as_mut() {
                rs.total_blocks = rs.total_blocks.max(weight);
            }
        }
        match self.pending_sync.take() {
            Some(Sync::SourceBitmap | Sync::SourceFull) => {
                // Fresh bitmap UUID for this resync, from the current one.
                let base = self.uuids.map_or(0, |u| u.bitmap);
                let fresh = if base & !1 != 0 && base & !1 != GenerationUuids::JUST_CREATED {
                    base.wrapping_add(UUID_NEW_BM_OFFSET)
                } else {
                    self.uuids.map_or(0, |u| u.current) ^ 0x5a5a_0000_0000_0000
                };
                self.start_resync_source(fresh);
            }
            Some(Sync::TargetBitmap | Sync::TargetFull) => {
                // Both nodes took this direction from the same UUIDs at
                // connect: the source counts this disk Inconsistent
                // already, with no word from here.
                self.enter_sync_target();
                self.act(Action::PersistMeta);
                self.act(Action::StateChanged);
            }
            _ => {}
        }
    }

    /// Become SyncSource: rotate UUIDs (DRBD: the new bitmap UUID pushes the
    /// old one into history), tell the target, start moving blocks.
    pub(super) fn start_resync_source(&mut self, new_bitmap_uuid: u64) {
        if let Some(u) = self.uuids.as_mut() {
            if u.bitmap != 0 {
                u.history[1] = u.history[0];
                u.history[0] = u.bitmap;
            }
            u.bitmap = new_bitmap_uuid & !1;
        }
        let current = self.uuids.map_or(0, |u| u.current);
        self.act(Action::SendPeer(Message::SyncUuid { uuid: current }));
        self.cstate = ConnState::SyncSource;
        self.peer_disk = DiskState::Inconsistent;
        let total = self.bitmap.as_ref().map_or(0, Bitmap::weight);
        self.resync = Some(Resync {
            total_blocks: total,
            ..Resync::default()
        });
        self.log(
            false,
            format!("{}: resync started: {} KiB to send", self.resource, total * 4),
        );
        self.act(Action::PersistMeta);
        self.act(Action::StateChanged);
        self.pump_resync();
    }

    /// Keep up to `RESYNC_INFLIGHT_MAX` resync reads going, in block order.
    pub(super) fn pump_resync(&mut self) {
        if self.cstate != ConnState::SyncSource {
            return;
        }
        let chunk_blocks = RESYNC_CHUNK_BYTES / BM_BLOCK_BYTES;
        let mut wrapped = false;
        loop {
            let Some(rs) = self.resync.as_ref() else { return };
            let limit = self
                .throttle
                .allowance(RESYNC_INFLIGHT_MAX, RESYNC_CHUNK_BYTES / 1024, self.counters.ap > 0);
            if rs.inflight.len() + rs.sent.len() + rs.checking + rs.csum_sent.len() >= limit {
                return;
            }
            // Ranges whose digests differed go first; they skip the check.
            let must = self.resync.as_mut().and_then(|r| r.must_send.pop());
            if let Some((first, len)) = must {
                if self
                    .bitmap
                    .as_ref()
                    .is_some_and(|b| b.find_next_set(first).is_some_and(|f| f < first + len))
                {
                    self.issue_resync_read(first, len);
                }
                continue;
            }
            let Some(rs) = self.resync.as_ref() else { return };
            let cursor = rs.cursor;
            let Some(bm) = self.bitmap.as_ref() else { return };
            let Some(first) = bm.find_next_set(cursor) else {
                // Blocks skipped while busy get one more pass now; later
                // passes start when the writes that made them busy finish.
                if self.maybe_finish_resync() && !wrapped {
                    wrapped = true;
                    if let Some(rs) = self.resync.as_mut() {
                        rs.cursor = 0;
                    }
                    continue;
                }
                return;
            };
            let mut len = 1;
            while len < chunk_blocks && first + len < bm.len() && bm.get(first + len) {
                len += 1;
            }
            let busy = self.inflight.iter().any(|r| {
                r.is_write()
                    && r.overlaps(&IoRequest {
                        kind: IoKind::Read,
                        offset: first * BM_BLOCK_BYTES,
                        len: (len * BM_BLOCK_BYTES) as u32,
                    })
            });
            if let Some(rs) = self.resync.as_mut() {
                rs.cursor = first + len;
            }
            if busy {
                // An application write to these blocks is in flight and will
                // bring the peer up to date itself; revisit on the next pass.
                continue;
            }
            if let Some(alg) = self.csums_alg {
                // Checksum-based resync: compare digests first.
                if let Some(rs) = self.resync.as_mut() {
                    rs.checking += 1;
                }
                self.throttle.spend(len * BM_BLOCK_BYTES / 1024);
                self.digest_op(DigestFor::Csum { first, blocks: len }, first, len, alg);
                continue;
            }
            self.issue_resync_read(first, len);
        }
    }

    /// Read (first block, blocks) to send it to the SyncTarget.
    pub(super) fn issue_resync_read(&mut self, first: u64, len: u64) {
        {
            let offset = first * BM_BLOCK_BYTES;
            let bytes = (len * BM_BLOCK_BYTES).min(self.data_bytes - offset) as u32;
            let id = self.core_id();
            if let Some(rs) = self.resync.as_mut() {
                rs.inflight.insert(id, (first, len));
            }
            self.throttle.spend(u64::from(bytes) / 1024);
            self.inflight.push(Inflight {
                id,
                io: IoRequest {
                    kind: IoKind::Read,
                    offset,
                    len: bytes,
                },
                origin: Origin::ResyncRead,
                started: true,
                issued_us: self.clock_us,
                local: None,
                peer_seq: None,
                peer_failed: false,
                done_tick: 0,
            });
            self.counters.lo += 1;
            self.act(Action::Disk {
                id,
                op: DiskOp::Read { offset, len: bytes },
            });
        }
    }

    pub(super) fn resync_read_done(&mut self, id: ReqId, result: Result<(), i32>) {
        let Some((first, len)) = self.resync.as_mut().and_then(|r| r.inflight.remove(&id)) else {
            self.act(Action::Release { id });
            return;
        };
        let stale = self.resync.as_mut().is_some_and(|r| {
            let was = r.stale.contains(&id);
            r.stale.retain(|s| *s != id);
            was
        });
        if let Err(e) = result {
            // Retrying a failing disk forever would stall the resync; the
            // on-io-error policy decides what becomes of it.
            self.act(Action::Release { id });
            self.local_io_error(e);
            self.pump_resync();
            return;
        }
        if stale || self.cstate != ConnState::SyncSource {
            self.act(Action::Release { id });
            self.pump_resync();
            return;
        }
        let seq = self.data_seq();
        let offset = first * BM_BLOCK_BYTES;
        let bytes = (len * BM_BLOCK_BYTES).min(self.data_bytes - offset) as u32;
        if let Some(rs) = self.resync.as_mut() {
            rs.sent.insert(seq, (first, len));
        }
        self.counters.ns += u64::from(bytes) / 1024;
        self.counters.pe += 1;
        self.act(Action::SendPeerData {
            id,
            msg: Message::Data {
                seq,
                offset,
                len: bytes,
                flags: wire::DATA_FLAG_RESYNC,
            },
        });
        self.act(Action::Release { id });
    }

    pub(super) fn resync_ack(&mut self, seq: u64, status: u32) {
        let Some((first, len)) = self.resync.as_mut().and_then(|r| r.sent.remove(&seq)) else {
            return;
        };
        self.counters.pe = self.counters.pe.saturating_sub(1);
        if status == 0 {
            if let Some(bm) = self.bitmap.as_mut() {
                bm.clear_range(first, len);
            }
        }
        self.pump_resync();
    }

    /// The cursor reached the end: finish if nothing is left, else report
    /// whether another pass from block 0 is worth making.
    pub(super) fn maybe_finish_resync(&mut self) -> bool {
        let Some(rs) = self.resync.as_ref() else { return false };
        if !rs.inflight.is_empty()
            || !rs.sent.is_empty()
            || rs.checking > 0
            || !rs.csum_sent.is_empty()
            || !rs.must_send.is_empty()
        {
            return false;
        }
        if self.bitmap.as_ref().is_some_and(|b| b.weight() > 0) {
            return true;
        }
        self.resync = None;
        self.divergence = Divergence::default();
        self.split_brain_seen = None;
        if let Some(u) = self.uuids.as_mut() {
            u.history[1] = u.history[0];
            u.history[0] = u.bitmap;
            u.bitmap = 0;
        }
        let u = self.uuids.unwrap_or_default();
        self.act(Action::SendPeer(Message::ResyncDone {
            current: u.current,
            bitmap: u.bitmap,
            history: u.history,
        }));
        self.cstate = ConnState::Connected;
        self.peer_disk = DiskState::UpToDate;
        self.forget_crash_once_in_sync();
        self.log(
            false,
            format!(
                "{}: resync finished; {} is UpToDate",
                self.resource,
                self.peer.clone().unwrap_or_default()
            ),
        );
        self.act(Action::PersistMeta);
        self.act(Action::PersistBitmap);
        self.act(Action::StateChanged);
        false
    }

    /// Both copies are UpToDate: a crash while Primary no longer says which
    /// one holds the newest blocks, and a flag kept past this point would
    /// make the next common power failure resync from a stale copy (DRBD
    /// clears it the same way). The callers persist the metadata.
    pub(super) fn forget_crash_once_in_sync(&mut self) {
        if self.connected() && self.disk == DiskState::UpToDate && self.peer_disk == DiskState::UpToDate {
            self.flags.remove(MdFlags::CRASHED_PRIMARY);
        }
    }

    /// The SyncSource says every block has moved: this node takes its
    /// UUIDs (keeping its own role bit) and is UpToDate.
    pub(super) fn on_resync_done_target(&mut self, source: GenerationUuids) {
        // (A source that never sent its bitmap back: an older build.)
        self.awaiting_source_bitmap = false;
        if let Some(u) = self.uuids.as_mut() {
            let role = u.current & 1;
            *u = source;
            u.current = (u.current & !1) | role;
        }
        if let Some(bm) = self.bitmap.as_mut() {
            let n = bm.len();
            bm.clear_range(0, n);
        }
        self.resync = None;
        self.divergence = Divergence::default();
        self.split_brain_seen = None;
        self.disk = DiskState::UpToDate;
        self.flags.insert(MdFlags::CONSISTENT);
        self.flags.insert(MdFlags::WAS_UP_TO_DATE);
        self.cstate = ConnState::Connected;
        self.forget_crash_once_in_sync();
        self.log(
            false,
            format!("{}: resync finished; {} is UpToDate", self.resource, self.node),
        );
        self.send_state();
        self.act(Action::PersistMeta);
        self.act(Action::PersistBitmap);
        self.act(Action::StateChanged);
    }
}
