//! Digest comparisons with the peer: online verify (`verify`) and
//! checksum-based resync (`csums-alg`).
//!
//! ```text
//!  VerifyS: Digest(range) ─► DigestDone ─► DigestCheck ──► peer: Digest ─► DigestReply
//!              ▲                                                               │
//!              └── mismatch: re-checked once no write touches it ◄─────────────┘
//!                  still different: marked out of sync, reported
//! ```
//!
//! DRBD's verify reports false positives under live writes: a block read on
//! one side before a write and on the other after it differs for a moment.
//! Tandem checks every mismatch a second time, after the first pass, when
//! no write to it is in flight, and only then declares it.

use super::super::{Action, DiskOp, IoKind, IoRequest, ReqId};
use super::resync::RESYNC_CHUNK_BYTES;
use super::Node;
use crate::core::refusal::{Refusal, StateRv};
use crate::core::state::{ConnState, DiskState};
use crate::digest::DigestAlg;
use crate::meta::BM_BLOCK_BYTES;
use crate::wire::{DigestPurpose, Message};
use std::collections::HashMap;

/// Verify requests in flight at once.
const VERIFY_INFLIGHT_MAX: usize = 8;

/// What a digest the shell computes is for.
#[derive(Debug, Clone)]
pub(super) enum DigestFor {
    /// Our side of a verify check of (first block, blocks).
    Verify { first: u64, blocks: u64 },
    /// Our side of a checksum-based resync of (first block, blocks).
    Csum { first: u64, blocks: u64 },
    /// The peer asked us to compare.
    Peer {
        seq: u64,
        purpose: DigestPurpose,
        theirs: Vec<u8>,
        first: u64,
        blocks: u64,
    },
}

#[derive(Debug, Default)]
pub(super) struct Verify {
    pub(super) alg: Option<DigestAlg>,
    /// Next block of the first pass.
    pub(super) cursor: u64,
    pub(super) total_blocks: u64,
    /// Digests we asked the peer to compare: seq → range.
    pub(super) sent: HashMap<u64, (u64, u64)>,
    /// Local digests being computed.
    pub(super) computing: usize,
    /// Ranges to look at again after the first pass (a mismatch, or busy).
    pub(super) recheck: Vec<(u64, u64)>,
    /// Second pass: ranges still to re-check.
    pub(super) second: Option<Vec<(u64, u64)>>,
    /// Confirmed differences (first block, blocks).
    pub(super) found: Vec<(u64, u64)>,
    pub(super) paused: bool,
}

impl Node {
    /// `verify-alg` and `csums-alg` from the configuration.
    pub fn set_digest_algs(&mut self, verify: Option<DigestAlg>, csums: Option<DigestAlg>) {
        self.verify_alg = verify;
        self.csums_alg = csums;
    }

    /// `verify`: compare every block with the peer. Resumes where a
    /// verify interrupted by a disconnect stopped.
    pub fn start_verify(&mut self) -> Result<(), Refusal> {
        let Some(alg) = self.verify_alg else {
            return Err(Refusal::new(
                StateRv::VerifyAlgNotConfigured,
                format!(
                    "set 'verify-alg' in the net section of {} and run 'tandemadm adjust {}'",
                    self.resource, self.resource
                ),
            ));
        };
        if self.cstate == ConnState::VerifyS {
            return Err(Refusal::new(
                StateRv::ResyncRunning,
                "a verify is already running".to_owned(),
            ));
        }
        if self.cstate != ConnState::Connected {
            return Err(Refusal::new(
                StateRv::NeedConnection,
                format!(
                    "verify needs a Connected peer with no resync running (now {})",
                    self.cstate
                ),
            ));
        }
        if self.disk != DiskState::UpToDate || self.peer_disk != DiskState::UpToDate {
            return Err(Refusal::new(
                StateRv::NoUpToDateDisk,
                format!("both disks must be UpToDate (now {}/{})", self.disk, self.peer_disk),
            ));
        }
        let total = self.data_bytes.div_ceil(BM_BLOCK_BYTES);
        let cursor = self.verify_resume.take().filter(|&c| c < total).unwrap_or(0);
        if cursor > 0 {
            self.log(
                false,
                format!(
                    "{}: online verify resumes at block {cursor} of {total}, where it stopped",
                    self.resource
                ),
            );
        } else {
            self.log(
                false,
                format!(
                    "{}: online verify started ({}, {total} blocks)",
                    self.resource,
                    alg.name()
                ),
            );
        }
        // Cleared until this verify ends, so that whoever follows it (`verify
        // --wait`) can tell its result from an earlier one's.
        self.verify_found_kib = None;
        self.verify = Some(Verify {
            alg: Some(alg),
            cursor,
            total_blocks: total,
            ..Verify::default()
        });
        self.cstate = ConnState::VerifyS;
        self.tell_peer_verify(true, total - cursor, total);
        self.act(Action::StateChanged);
        self.pump_verify();
        Ok(())
    }

    /// The peer shows VerifyT while our verify runs. A peer whose hello
    /// did not announce the message stays Connected, as before it.
    fn tell_peer_verify(&mut self, running: bool, left: u64, total: u64) {
        if self.peer_features & crate::wire::handshake::FEATURE_VERIFY_STATE != 0 {
            self.act(Action::SendPeer(Message::VerifyState { running, left, total }));
        }
    }

    /// The peer started or ended a verify: this node is its target.
    pub(super) fn on_peer_verify_state(&mut self, running: bool, left: u64, total: u64) {
        let res = self.resource.clone();
        let peer = self.peer.clone().unwrap_or_default();
        if running {
            if self.cstate != ConnState::Connected {
                return;
            }
            self.cstate = ConnState::VerifyT;
            self.peer_verify = Some((left, total));
            self.log(
                false,
                format!("{res}: online verify started by {peer}; this node is its target (VerifyT)"),
            );
        } else {
            if self.cstate != ConnState::VerifyT {
                return;
            }
            self.cstate = ConnState::Connected;
            self.peer_verify = None;
            self.log(false, format!("{res}: online verify by {peer} done"));
            // The source sent the blocks it found just before; keep them
            // across a restart of this node, as the source does.
            self.act(Action::PersistBitmap);
        }
        self.act(Action::StateChanged);
    }

    /// Verify progress as (blocks left, blocks total).
    pub(super) fn verify_progress(&self) -> Option<(u64, u64)> {
        let v = self.verify.as_ref()?;
        Some((v.total_blocks.saturating_sub(v.cursor), v.total_blocks))
    }

    pub(super) fn pause_verify(&mut self, pause: bool) -> bool {
        match self.verify.as_mut() {
            Some(v) => {
                v.paused = pause;
                if !pause {
                    self.pump_verify();
                }
                true
            }
            None => false,
        }
    }

    fn range_busy(&self, first: u64, blocks: u64) -> bool {
        let probe = IoRequest {
            kind: IoKind::Read,
            offset: first * BM_BLOCK_BYTES,
            len: (blocks * BM_BLOCK_BYTES) as u32,
        };
        self.inflight.iter().any(|r| r.is_write() && r.overlaps(&probe))
    }

    pub(super) fn digest_op(&mut self, what: DigestFor, first: u64, blocks: u64, alg: DigestAlg) {
        let offset = first * BM_BLOCK_BYTES;
        let len = (blocks * BM_BLOCK_BYTES).min(self.data_bytes.saturating_sub(offset)) as u32;
        let id = self.core_id();
        self.digests.insert(id, what);
        self.counters.lo += 1;
        self.act(Action::Disk {
            id,
            op: DiskOp::Digest { offset, len, alg },
        });
    }

    pub(super) fn pump_verify(&mut self) {
        if self.cstate != ConnState::VerifyS {
            return;
        }
        let chunk = RESYNC_CHUNK_BYTES / BM_BLOCK_BYTES;
        loop {
            let Some(v) = self.verify.as_ref() else { return };
            // Online verify reads the disk like a resync and gives way to
            // the application the same way (DRBD throttles both).
            let limit = self
                .throttle
                .allowance(VERIFY_INFLIGHT_MAX, RESYNC_CHUNK_BYTES / 1024, self.counters.ap > 0);
            if v.paused || v.computing + v.sent.len() >= limit {
                return;
            }
            let alg = v.alg.unwrap_or(DigestAlg::Crc32c);
            let next = if v.cursor < v.total_blocks {
                let first = v.cursor;
                let blocks = chunk.min(v.total_blocks - first);
                if let Some(v) = self.verify.as_mut() {
                    v.cursor += blocks;
                }
                if self.range_busy(first, blocks) {
                    if let Some(v) = self.verify.as_mut() {
                        v.recheck.push((first, blocks));
                    }
                    continue;
                }
                (first, blocks)
            } else {
                if v.computing > 0 || !v.sent.is_empty() {
                    return;
                }
                // The first pass is done: look again at what differed.
                let second = match self.verify.as_mut() {
                    Some(v) => v.second.get_or_insert_with(|| std::mem::take(&mut v.recheck)),
                    None => return,
                };
                let Some(pos) = second.iter().position(|_| true) else {
                    self.finish_verify();
                    return;
                };
                let (first, blocks) = second[pos];
                if self.range_busy(first, blocks) {
                    // Still being written: the next completion or tick retries.
                    return;
                }
                if let Some(second) = self.verify.as_mut().and_then(|v| v.second.as_mut()) {
                    second.remove(pos);
                }
                (first, blocks)
            };
            self.throttle.spend(next.1 * BM_BLOCK_BYTES / 1024);
            if let Some(v) = self.verify.as_mut() {
                v.computing += 1;
            }
            self.digest_op(
                DigestFor::Verify {
                    first: next.0,
                    blocks: next.1,
                },
                next.0,
                next.1,
                alg,
            );
        }
    }

    fn finish_verify(&mut self) {
        let Some(v) = self.verify.take() else { return };
        let blocks: u64 = v.found.iter().map(|r| r.1).sum();
        let mut found = v.found.clone();
        found.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (f, n) in found {
            match merged.last_mut() {
                Some(last) if last.0 + last.1 == f => last.1 += n,
                _ => merged.push((f, n)),
            }
        }
        let ranges: Vec<String> = merged
            .iter()
            .take(32)
            .map(|(f, n)| format!("{}+{}", f * BM_BLOCK_BYTES, n * BM_BLOCK_BYTES))
            .collect();
        self.verify_found_kib = Some(blocks * 4);
        self.cstate = ConnState::Connected;
        let total_blocks = v.total_blocks;
        let res = self.resource.clone();
        if blocks == 0 {
            self.log(false, format!("{res}: online verify done: no differences"));
        } else {
            self.log(
                true,
                format!(
                    "{res}: online verify done: {blocks} blocks ({} KiB) out of sync, marked for resync; ranges (byte offset+length): {}{}; run 'tandemadm resync-oos {res}' (or disconnect/connect) to repair",
                    blocks * 4,
                    ranges.join(" "),
                    if merged.len() > 32 { " …" } else { "" }
                ),
            );
            // The peer marks the same blocks, so either side can repair.
            let runs = merged.clone();
            for c in runs.chunks(crate::wire::BITMAP_RUNS_PER_MESSAGE) {
                self.act(Action::SendPeer(Message::Bitmap {
                    runs: c.to_vec(),
                    last: false,
                }));
            }
            self.act(Action::PersistBitmap);
        }
        self.tell_peer_verify(false, 0, total_blocks);
        self.act(Action::StateChanged);
    }

    /// A digest the shell computed.
    pub(super) fn on_digest_done(&mut self, id: ReqId, result: Result<Vec<u8>, i32>) {
        self.counters.lo = self.counters.lo.saturating_sub(1);
        let Some(what) = self.digests.remove(&id) else { return };
        match what {
            DigestFor::Verify { first, blocks } => {
                let Some(v) = self.verify.as_mut() else { return };
                v.computing = v.computing.saturating_sub(1);
                let alg = v.alg.unwrap_or(DigestAlg::Crc32c);
                let Ok(digest) = result else {
                    // A local read error: that range cannot be vouched for.
                    v.found.push((first, blocks));
                    self.pump_verify();
                    return;
                };
                self.counters.dr += blocks * 4;
                let seq = self.next_seq;
                self.next_seq += 1;
                if let Some(v) = self.verify.as_mut() {
                    v.sent.insert(seq, (first, blocks));
                }
                self.send_digest_check(seq, first, blocks, DigestPurpose::Verify, alg, digest);
            }
            DigestFor::Csum { first, blocks } => {
                let alg = self.csums_alg.unwrap_or(DigestAlg::Crc32c);
                let Some(rs) = self.resync.as_mut() else { return };
                rs.checking = rs.checking.saturating_sub(1);
                if result.is_err() || self.cstate != ConnState::SyncSource {
                    self.pump_resync();
                    return;
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                rs.csum_sent.insert(seq, (first, blocks));
                self.counters.dr += blocks * 4;
                self.send_digest_check(
                    seq,
                    first,
                    blocks,
                    DigestPurpose::Resync,
                    alg,
                    result.unwrap_or_default(),
                );
            }
            DigestFor::Peer {
                seq,
                purpose,
                theirs,
                first,
                blocks,
            } => {
                let equal = matches!(&result, Ok(mine) if *mine == theirs);
                if result.is_ok() {
                    self.counters.dr += blocks * 4;
                }
                // Checksum resync: our copy already matches the source's. (A
                // verify mismatch may be a write in flight; the VerifyS side
                // confirms it and then tells us with a Bitmap.)
                if purpose == DigestPurpose::Resync && equal {
                    if let Some(bm) = self.bitmap.as_mut() {
                        bm.clear_range(first, blocks);
                    }
                    self.counters.rs_same_kib += blocks * 4;
                }
                self.act(Action::SendPeer(Message::DigestReply { seq, equal }));
            }
        }
    }

    fn send_digest_check(
        &mut self,
        seq: u64,
        first: u64,
        blocks: u64,
        purpose: DigestPurpose,
        alg: DigestAlg,
        digest: Vec<u8>,
    ) {
        let offset = first * BM_BLOCK_BYTES;
        let len = (blocks * BM_BLOCK_BYTES).min(self.data_bytes.saturating_sub(offset)) as u32;
        self.act(Action::SendPeer(Message::DigestCheck {
            seq,
            offset,
            len,
            purpose,
            alg: alg as u8,
            digest,
        }));
    }

    /// The peer asks us to compare a range with its digest.
    pub(super) fn on_peer_digest_check(
        &mut self,
        seq: u64,
        offset: u64,
        len: u32,
        purpose: DigestPurpose,
        alg: u8,
        digest: Vec<u8>,
    ) {
        let end = offset.checked_add(u64::from(len));
        let aligned = offset % BM_BLOCK_BYTES == 0 && u64::from(len) <= RESYNC_CHUNK_BYTES && len > 0;
        let (Some(alg), Some(end), true) = (DigestAlg::from_wire(alg), end, aligned) else {
            self.refuse_link(format!(
                "{}: the peer sent a malformed digest check (offset {offset}, length {len}, algorithm {alg})",
                self.resource
            ));
            return;
        };
        if end > self.data_bytes || !self.is_attached() {
            self.act(Action::SendPeer(Message::DigestReply { seq, equal: false }));
            return;
        }
        let first = offset / BM_BLOCK_BYTES;
        let blocks = u64::from(len).div_ceil(BM_BLOCK_BYTES);
        if purpose == DigestPurpose::Verify {
            // Progress as the source's first pass moves; its re-checks of
            // differing ranges come after and find nothing left to count.
            if let Some((left, _)) = self.peer_verify.as_mut() {
                *left = left.saturating_sub(blocks);
            }
        }
        self.digest_op(
            DigestFor::Peer {
                seq,
                purpose,
                theirs: digest,
                first,
                blocks,
            },
            first,
            blocks,
            alg,
        );
    }

    pub(super) fn on_peer_digest_reply(&mut self, seq: u64, equal: bool) {
        if let Some((first, blocks)) = self.verify.as_mut().and_then(|v| v.sent.remove(&seq)) {
            let second_pass = self.verify.as_ref().is_some_and(|v| v.second.is_some());
            if !equal && second_pass && blocks > 1 {
                // Still different: narrow it down to the 4 KiB blocks that are.
                if let Some(second) = self.verify.as_mut().and_then(|v| v.second.as_mut()) {
                    second.extend((first..first + blocks).map(|b| (b, 1)));
                }
            } else if !equal {
                if second_pass {
                    if let Some(bm) = self.bitmap.as_mut() {
                        bm.set_range(first, blocks);
                    }
                    if let Some(v) = self.verify.as_mut() {
                        v.found.push((first, blocks));
                    }
                    self.act(Action::StateChanged);
                } else if let Some(v) = self.verify.as_mut() {
                    v.recheck.push((first, blocks));
                }
            }
            self.pump_verify();
            return;
        }
        let Some((first, blocks)) = self.resync.as_mut().and_then(|r| r.csum_sent.remove(&seq)) else {
            return;
        };
        if equal {
            if let Some(bm) = self.bitmap.as_mut() {
                bm.clear_range(first, blocks);
            }
            self.counters.rs_same_kib += blocks * 4;
        } else if let Some(rs) = self.resync.as_mut() {
            // Different: the block travels after all.
            rs.must_send.push((first, blocks));
        }
        self.pump_resync();
    }

    /// The link went down: a running verify stops and remembers where.
    pub(super) fn interrupt_verify(&mut self) {
        if let Some(v) = self.verify.take() {
            let resume = v
                .sent
                .values()
                .chain(v.recheck.iter())
                .map(|r| r.0)
                .min()
                .unwrap_or(v.cursor);
            self.verify_resume = Some(resume.min(v.cursor));
            self.log(
                true,
                format!(
                    "{}: online verify interrupted at block {}; 'tandemadm verify {}' resumes there",
                    self.resource,
                    resume.min(v.cursor),
                    self.resource
                ),
            );
        }
        self.digests.clear();
    }

    /// `resync-oos`: resync the blocks verify marked, without a reconnect.
    pub fn resync_out_of_sync(&mut self) -> Result<(), Refusal> {
        if self.cstate != ConnState::Connected {
            return Err(Refusal::new(
                StateRv::NeedConnection,
                format!(
                    "resync-oos needs a Connected peer with nothing running (now {})",
                    self.cstate
                ),
            ));
        }
        let blocks = self.bitmap.as_ref().map_or(0, |b| b.weight());
        if blocks == 0 {
            return Err(Refusal::new(
                StateRv::InTransientState,
                "no block is marked out of sync; nothing to resync".to_owned(),
            ));
        }
        if self.disk != DiskState::UpToDate {
            return Err(Refusal::new(
                StateRv::NoUpToDateDisk,
                format!("this node's disk is {}; run resync-oos on the UpToDate side", self.disk),
            ));
        }
        if self.peer_role == crate::core::state::Role::Primary {
            // The Primary's data is what the application sees: it is the source.
            return Err(Refusal::new(
                StateRv::InTransientState,
                format!(
                    "the peer {} is Primary; run resync-oos there so that its data wins",
                    self.peer.clone().unwrap_or_default()
                ),
            ));
        }
        self.send_bitmap();
        self.act(Action::SendPeer(Message::StartResync {
            source_is_sender: true,
            full: false,
        }));
        let fresh = self.uuids.map_or(0, |u| u.current).rotate_left(23) | 2;
        self.start_resync_source(fresh);
        Ok(())
    }
}
