//! I/O served by the peer's disk: a Primary whose local disk failed and was
//! detached (`on-io-error detach`), or whose disk is being resynced, keeps
//! serving its NBD clients through the peer, as DRBD's diskless Primary
//! does. Reads of blocks the local disk cannot vouch for go to the peer;
//! writes go only to the peer while there is no local disk.

use super::super::{errno, Action, Handler, IoKind, IoRequest, ReqId};
use super::{Inflight, Node, Origin};
use crate::config::OnIoError;
use crate::core::state::{DiskState, Role};
use crate::meta::{MdFlags, BM_BLOCK_BYTES};
use crate::wire::Message;

/// An application request the peer alone carries out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Remote {
    pub(super) id: ReqId,
    pub(super) io: IoRequest,
}

impl Node {
    /// `on-io-error` from the configuration.
    pub fn set_on_io_error(&mut self, policy: OnIoError) {
        self.on_io_error = policy;
    }

    /// The peer can serve this node's I/O.
    pub(super) fn peer_serves(&self) -> bool {
        self.connected() && self.peer_disk == DiskState::UpToDate
    }

    /// Whether a read must come from the peer: no usable local disk, or
    /// (while this node is SyncTarget) blocks not yet resynced.
    pub(super) fn read_from_peer(&self, io: &IoRequest) -> bool {
        if !self.peer_serves() {
            return false;
        }
        if self.disk <= DiskState::Failed {
            return true;
        }
        self.local_copy_stale(io)
    }

    /// An Inconsistent disk's copy of some block of `io` is not known good.
    pub(super) fn local_copy_stale(&self, io: &IoRequest) -> bool {
        if self.disk != DiskState::Inconsistent {
            return false;
        }
        if self.awaiting_source_bitmap {
            return true;
        }
        let Some(bm) = self.bitmap.as_ref() else { return false };
        let first = io.offset / BM_BLOCK_BYTES;
        let end = (io.offset + u64::from(io.len)).div_ceil(BM_BLOCK_BYTES);
        bm.find_next_set(first).is_some_and(|b| b < end)
    }

    /// An Inconsistent disk with no UpToDate peer to sync it from: a
    /// Primary's replaced disk in the moment between `attach` and the
    /// connect it triggers, a `pass_on` disk after an error, a SyncTarget
    /// whose source went away. The next connect makes this node SyncTarget
    /// again, and its resync would overwrite a write landing here now after
    /// the client was told it succeeded: I/O fails instead, as it does on a
    /// Diskless Primary without a peer.
    pub(super) fn no_good_copy(&self) -> bool {
        self.disk == DiskState::Inconsistent && !self.peer_serves()
    }

    /// Send an application request to the peer alone.
    pub(super) fn forward(&mut self, id: ReqId, io: IoRequest) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.counters.pe += 1;
        self.remote.insert(seq, Remote { id, io });
        match io.kind {
            IoKind::Read => self.act(Action::ForwardRead {
                id,
                seq,
                offset: io.offset,
                len: io.len,
            }),
            IoKind::Flush => self.act(Action::SendPeer(Message::Barrier {
                epoch: seq,
                needs: None,
            })),
            _ => self.ship_write(id, seq, io),
        }
    }

    /// The peer answered a forwarded request (`DataAck`, `BarrierAck` or
    /// `ReadReply`). Returns false if `seq` was not a forwarded request.
    pub(super) fn remote_done(&mut self, seq: u64, status: u32) -> bool {
        let Some(r) = self.remote.remove(&seq) else {
            return false;
        };
        self.counters.pe = self.counters.pe.saturating_sub(1);
        self.counters.ap = self.counters.ap.saturating_sub(1);
        if r.io.kind == IoKind::Read && status == 0 {
            self.counters.nr += u64::from(r.io.len) / 1024;
        }
        let error = if status == 0 { 0 } else { errno::EIO };
        if r.io.kind != IoKind::Read && self.suspended.is_some() {
            self.held_replies.push((r.id, error));
        } else {
            self.act(Action::Reply { id: r.id, error });
        }
        true
    }

    /// The link dropped: forwarded requests cannot complete anywhere.
    pub(super) fn fail_remote(&mut self) {
        let remote: Vec<Remote> = self.remote.drain().map(|(_, r)| r).collect();
        for r in remote {
            self.counters.ap = self.counters.ap.saturating_sub(1);
            self.act(Action::Reply {
                id: r.id,
                error: errno::EIO,
            });
        }
    }

    /// The peer wants to read from our disk.
    pub(super) fn on_peer_read_request(&mut self, seq: u64, offset: u64, len: u32) {
        let end = offset.checked_add(u64::from(len));
        let valid =
            len > 0 && len <= crate::core::limits::NBD_PAYLOAD_BYTES_MAX && end.is_some_and(|e| e <= self.data_bytes);
        if !valid || self.disk != DiskState::UpToDate {
            self.act(Action::SendPeerReadReply {
                id: None,
                seq,
                status: errno::EIO,
                len,
            });
            return;
        }
        let id = self.core_id();
        self.counters.ua += 1;
        // A read the peer's application could not serve itself.
        self.throttle.app_request();
        self.admit(Inflight {
            id,
            io: IoRequest {
                kind: IoKind::Read,
                offset,
                len,
            },
            origin: Origin::PeerRead { seq },
            started: false,
            issued_us: 0,
            local: None,
            peer_seq: None,
            peer_failed: false,
            done_tick: 0,
        });
    }

    /// A local I/O error, by `on-io-error`. Returns true if the disk is
    /// gone (detached) and the request should be served by the peer.
    pub(super) fn local_io_error(&mut self, os_errno: i32) -> bool {
        match self.on_io_error {
            OnIoError::PassOn => {
                // As DRBD: the disk stays, but its copy can no longer be
                // trusted. Inconsistent, it becomes the SyncTarget on the
                // next connect; until then its reads of the blocks it
                // missed come from the peer.
                if self.disk > DiskState::Inconsistent {
                    self.disk = DiskState::Inconsistent;
                    self.flags.remove(MdFlags::CONSISTENT);
                    self.log(
                        true,
                        format!(
                            "{}: local disk I/O error (errno {os_errno}); on-io-error pass_on: the disk stays attached but is Inconsistent until resynced",
                            self.resource
                        ),
                    );
                    self.send_state();
                    self.act(Action::PersistMeta);
                    self.act(Action::StateChanged);
                }
                false
            }
            OnIoError::CallLocalIoError | OnIoError::Detach => {
                self.detach_failed_disk(os_errno);
                true
            }
        }
    }

    /// Whatever `on-io-error` says (as DRBD): an activity log or bitmap
    /// that cannot be written no longer guards the data, so the disk goes.
    pub(super) fn meta_io_error(&mut self, os_errno: i32) {
        if self.disk == DiskState::Diskless {
            return;
        }
        self.log(
            true,
            format!(
                "{}: metadata I/O error (errno {os_errno}): the activity log and bitmap can no longer protect the disk",
                self.resource
            ),
        );
        self.detach_failed_disk(os_errno);
    }

    /// `on-io-error detach`: stop using the local disk. A Primary with an
    /// UpToDate peer goes on serving through it.
    fn detach_failed_disk(&mut self, os_errno: i32) {
        let policy = match self.on_io_error {
            OnIoError::CallLocalIoError => "call-local-io-error",
            _ => "detach",
        };
        self.fail_disk(
            format!("local disk I/O error (errno {os_errno}): disk detached (on-io-error {policy})"),
            true,
        );
    }

    /// Stop using a failed local disk, saying `what` happened. The bitmap is
    /// written first when the disk can still take it (`bitmap_writable`).
    pub(super) fn fail_disk(&mut self, what: String, bitmap_writable: bool) {
        if self.disk == DiskState::Diskless {
            return;
        }
        // Best effort, while the metadata is still open: the bitmap as it
        // stands, so re-attaching the same disk (it was only full, say)
        // moves what it missed, not everything.
        if bitmap_writable {
            self.act(Action::PersistBitmap);
        }
        self.disk = DiskState::Diskless;
        self.flags.remove(MdFlags::CONSISTENT);
        if self.on_io_error == OnIoError::CallLocalIoError {
            self.act(Action::RunHandler(Handler::LocalIoError));
        }
        let through_peer = if self.role == Role::Primary && self.peer_serves() {
            format!("; I/O continues through {}", self.peer.clone().unwrap_or_default())
        } else {
            String::new()
        };
        self.log(
            true,
            format!(
                "{res}: {what}{through_peer}; replace it, then 'tandemadm create-md {res}' and 'tandemadm attach {res}' \
                 (or attach the same disk once it works again: it resyncs what it missed)",
                res = self.resource,
            ),
        );
        self.act(Action::DetachDisk);
        self.send_state();
        self.act(Action::StateChanged);
    }
}
