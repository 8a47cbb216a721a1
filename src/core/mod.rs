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

pub mod generation;
pub mod limits;
pub mod refusal;
pub mod state;

pub use refusal::{Refusal, StateRv};
pub use state::{ConnState, DiskState, Role};

use crate::meta::{GenerationUuids, MdFlags};
use serde::Serialize;
use std::collections::VecDeque;

/// Identifies one in-flight request; chosen by the shell, unique while in flight.
pub type ReqId = u64;

/// NBD errno values the core answers with (NBD's numbering, which is Linux's).
pub mod errno {
    pub const EPERM: u32 = 1;
    pub const EIO: u32 = 5;
    pub const EINVAL: u32 = 22;
    pub const ENOSPC: u32 = 28;
    pub const ESHUTDOWN: u32 = 108;
}

/// An I/O the application asked for, already validated against the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    Read,
    Write { fua: bool },
    Flush,
    Trim,
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
    },
    Zero {
        offset: u64,
        len: u32,
        may_trim: bool,
        fua: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// The superblock (flags, UUIDs) changed and must be written before the
    /// change is reported to the operator.
    PersistMeta,
    /// Something the status file or the events stream shows changed.
    StateChanged,
}

/// What the shell learned from the backing disk's metadata on attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachInfo {
    pub data_bytes: u64,
    pub uuids: GenerationUuids,
    pub flags: MdFlags,
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
    data_bytes: u64,
    uuids: Option<GenerationUuids>,
    flags: MdFlags,
    nbd_clients: u32,
    counters: Counters,
    /// Requests whose disk op is in flight, and what they were.
    inflight: Vec<(ReqId, IoRequest)>,
    actions: VecDeque<Action>,
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
            data_bytes: 0,
            uuids: None,
            flags: MdFlags::default(),
            nbd_clients: 0,
            counters: Counters::default(),
            inflight: Vec::with_capacity(limits::INFLIGHT_REQUESTS_MAX),
            actions: VecDeque::new(),
        }
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

    /// The next action to carry out, in the order they must be started.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            resource: self.resource.clone(),
            minor: self.minor,
            node: self.node.clone(),
            peer: self.peer.clone(),
            role: self.role,
            peer_role: Role::Unknown,
            cstate: self.cstate,
            disk: self.disk,
            // Until the peer link exists the peer's disk is never known.
            peer_disk: DiskState::DUnknown,
            protocol: self.peer.as_ref().map(|_| self.protocol),
            size_bytes: self.data_bytes,
            nbd_clients: self.nbd_clients,
            counters: self.counters,
            uuids: self.uuids,
        }
    }

    // ---------------------------------------------------------------- admin

    /// The backing disk was opened and its metadata read and verified.
    pub fn attach(&mut self, info: AttachInfo) -> Result<(), Refusal> {
        if self.is_attached() {
            return Ok(());
        }
        self.data_bytes = info.data_bytes;
        self.uuids = Some(info.uuids);
        self.flags = info.flags;
        self.disk = if !info.flags.contains(MdFlags::CONSISTENT) {
            DiskState::Inconsistent
        } else if self.peer.is_none() || info.flags.contains(MdFlags::WAS_UP_TO_DATE) {
            // With no peer configured this disk is the only copy there is,
            // so nothing newer can exist elsewhere.
            DiskState::UpToDate
        } else {
            DiskState::Outdated
        };
        // A node that died as Primary left PRIMARY_IND set: remember it as a
        // crashed primary (the replication layer resyncs its hot extents).
        if self.flags.contains(MdFlags::PRIMARY_IND) {
            self.flags.insert(MdFlags::CRASHED_PRIMARY);
            self.flags.remove(MdFlags::PRIMARY_IND);
            self.actions.push_back(Action::PersistMeta);
        }
        self.actions.push_back(Action::StateChanged);
        Ok(())
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
        self.disk = DiskState::Diskless;
        self.uuids = None;
        self.actions.push_back(Action::StateChanged);
        Ok(())
    }

    /// `primary [--force]`. `new_uuid` is a fresh random generation UUID from
    /// the shell, used when promotion starts a new data generation.
    pub fn promote(&mut self, force: bool, new_uuid: u64) -> Result<(), Refusal> {
        if self.role == Role::Primary {
            return Ok(());
        }
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
            _ if force => {
                // The operator declares this copy authoritative (initial sync).
                self.disk = DiskState::UpToDate;
                self.flags.insert(MdFlags::CONSISTENT);
                self.flags.insert(MdFlags::WAS_UP_TO_DATE);
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
        if let Some(uuids) = self.uuids.as_mut() {
            // Promotion while no peer is connected starts a new data
            // generation (DRBD: bitmap := current, current := new).
            if self.cstate < ConnState::Connected {
                generation::new_current(uuids, new_uuid);
            }
            generation::set_role_bit(uuids, true);
        }
        self.role = Role::Primary;
        self.flags.insert(MdFlags::PRIMARY_IND);
        self.flags.remove(MdFlags::CRASHED_PRIMARY);
        self.actions.push_back(Action::PersistMeta);
        self.actions.push_back(Action::StateChanged);
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
        if !self.inflight.is_empty() {
            return Err(Refusal::new(
                StateRv::InTransientState,
                format!("{} requests still in flight", self.inflight.len()),
            ));
        }
        self.role = Role::Secondary;
        if let Some(uuids) = self.uuids.as_mut() {
            generation::set_role_bit(uuids, false);
        }
        self.flags.remove(MdFlags::PRIMARY_IND);
        self.actions.push_back(Action::PersistMeta);
        self.actions.push_back(Action::StateChanged);
        Ok(())
    }

    /// Why this node will not export its disk right now, if it will not.
    pub fn export_refusal(&self) -> Option<String> {
        if self.role != Role::Primary {
            return Some(format!(
                "{} is {} on {}; only the Primary serves NBD",
                self.resource, self.role, self.node
            ));
        }
        if self.disk < DiskState::Inconsistent {
            return Some(format!(
                "{} on {} has no usable disk ({})",
                self.resource, self.node, self.disk
            ));
        }
        None
    }

    pub fn nbd_client_opened(&mut self) {
        self.nbd_clients += 1;
        self.actions.push_back(Action::StateChanged);
    }

    pub fn nbd_client_closed(&mut self) {
        self.nbd_clients = self.nbd_clients.saturating_sub(1);
        self.actions.push_back(Action::StateChanged);
    }

    pub fn nbd_clients(&self) -> u32 {
        self.nbd_clients
    }

    // ---------------------------------------------------------------- data path

    pub fn handle(&mut self, event: Event) {
        match event {
            Event::NbdRequest { id, io } => self.on_request(id, io),
            Event::DiskDone { id, result } => self.on_disk_done(id, result),
        }
    }

    fn on_request(&mut self, id: ReqId, io: IoRequest) {
        if self.role != Role::Primary {
            // The export was granted while Primary and demotion waits for
            // clients to leave, so this is a client racing a forced demotion.
            self.actions.push_back(Action::Reply {
                id,
                error: errno::EPERM,
            });
            return;
        }
        if self.disk <= DiskState::Failed {
            self.actions.push_back(Action::Reply { id, error: errno::EIO });
            return;
        }
        let end = io.offset.checked_add(u64::from(io.len));
        if end.is_none_or(|end| end > self.data_bytes) {
            // The shell validates against the export size; a request that
            // gets here out of range means the size shrank underneath it.
            self.actions.push_back(Action::Reply {
                id,
                error: errno::EINVAL,
            });
            return;
        }
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
            IoKind::Trim => DiskOp::Trim {
                offset: io.offset,
                len: io.len,
            },
            IoKind::WriteZeroes { fua, may_trim } => DiskOp::Zero {
                offset: io.offset,
                len: io.len,
                may_trim,
                fua,
            },
        };
        self.counters.ap += 1;
        self.counters.lo += 1;
        self.inflight.push((id, io));
        self.actions.push_back(Action::Disk { id, op });
    }

    fn on_disk_done(&mut self, id: ReqId, result: Result<(), i32>) {
        let Some(pos) = self.inflight.iter().position(|(r, _)| *r == id) else {
            // A completion for a request we do not know is a shell bug.
            debug_assert!(false, "disk completion for unknown request {id}");
            return;
        };
        let (_, io) = self.inflight.swap_remove(pos);
        self.counters.lo -= 1;
        self.counters.ap -= 1;
        let kib = u64::from(io.len) / 1024;
        let error = match result {
            Ok(()) => {
                match io.kind {
                    IoKind::Read => self.counters.dr += kib,
                    IoKind::Write { .. } | IoKind::WriteZeroes { .. } | IoKind::Trim => self.counters.dw += kib,
                    IoKind::Flush => {}
                }
                0
            }
            Err(os_errno) => self.on_io_error(io, os_errno),
        };
        self.actions.push_back(Action::Reply { id, error });
    }

    /// A local I/O error. Standalone there is no peer to fall back to, so the
    /// error goes to the application; the disk is marked Failed so that the
    /// operator sees it (`on-io-error detach` semantics without a peer).
    fn on_io_error(&mut self, io: IoRequest, os_errno: i32) -> u32 {
        let mapped = match os_errno {
            libc_errno::ENOSPC => errno::ENOSPC,
            libc_errno::EINVAL if matches!(io.kind, IoKind::Trim) => errno::EINVAL,
            _ => errno::EIO,
        };
        if mapped == errno::EIO && !matches!(io.kind, IoKind::Read) && self.disk != DiskState::Failed {
            self.disk = DiskState::Failed;
            self.actions.push_back(Action::StateChanged);
        }
        mapped
    }
}

/// The two OS errno values the core distinguishes (Linux numbering).
mod libc_errno {
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(flags: MdFlags) -> Node {
        let mut n = Node::new("r0", 0, "alpha", None, 'C');
        n.attach(AttachInfo {
            data_bytes: 1 << 20,
            uuids: GenerationUuids::new_created(),
            flags,
        })
        .unwrap();
        while n.poll_action().is_some() {}
        n
    }

    fn drain(n: &mut Node) -> Vec<Action> {
        std::iter::from_fn(|| n.poll_action()).collect()
    }

    #[test]
    fn fresh_metadata_needs_force_to_become_primary() {
        let mut n = attached(MdFlags::default());
        assert_eq!(n.disk_state(), DiskState::Inconsistent);
        let e = n.promote(false, 0xabc0).unwrap_err();
        assert_eq!(e.rv, StateRv::NoUpToDateDisk);
        assert!(e
            .to_string()
            .starts_with("State change failed: (-2) Need access to UpToDate data"));
        n.promote(true, 0xabc0).unwrap();
        assert_eq!((n.role(), n.disk_state()), (Role::Primary, DiskState::UpToDate));
        assert!(n.flags().contains(MdFlags::CONSISTENT) && n.flags().contains(MdFlags::PRIMARY_IND));
        let u = n.uuids().unwrap();
        assert_eq!(u.current, 0xabc1, "new generation, role bit set");
        assert_eq!(drain(&mut n), vec![Action::PersistMeta, Action::StateChanged]);
    }

    #[test]
    fn demotion_is_refused_while_a_client_holds_the_export() {
        let mut n = attached(MdFlags::CONSISTENT);
        n.promote(false, 2).unwrap();
        n.nbd_client_opened();
        let e = n.demote(false, "NBD client 10.0.0.5:51234").unwrap_err();
        assert_eq!(
            format!("r0: {e}"),
            "r0: State change failed: (-12) Device is held open by someone (NBD client 10.0.0.5:51234)"
        );
        n.nbd_client_closed();
        n.demote(false, "").unwrap();
        assert_eq!(n.role(), Role::Secondary);
        assert!(!n.flags().contains(MdFlags::PRIMARY_IND));
        assert!(n.export_refusal().unwrap().contains("r0 is Secondary on alpha"));
    }

    #[test]
    fn a_write_is_answered_only_after_its_disk_write_completes() {
        let mut n = attached(MdFlags::CONSISTENT);
        n.promote(false, 2).unwrap();
        drain(&mut n);
        let io = IoRequest {
            kind: IoKind::Write { fua: true },
            offset: 4096,
            len: 8192,
        };
        n.handle(Event::NbdRequest { id: 7, io });
        assert_eq!(
            drain(&mut n),
            vec![Action::Disk {
                id: 7,
                op: DiskOp::Write {
                    offset: 4096,
                    len: 8192,
                    fua: true
                }
            }]
        );
        assert_eq!(n.snapshot().counters.lo, 1);
        n.handle(Event::DiskDone { id: 7, result: Ok(()) });
        assert_eq!(drain(&mut n), vec![Action::Reply { id: 7, error: 0 }]);
        let c = n.snapshot().counters;
        assert_eq!((c.dw, c.lo, c.ap), (8, 0, 0));
    }

    #[test]
    fn a_write_error_fails_the_disk_and_reaches_the_client() {
        let mut n = attached(MdFlags::CONSISTENT);
        n.promote(false, 2).unwrap();
        drain(&mut n);
        n.handle(Event::NbdRequest {
            id: 1,
            io: IoRequest {
                kind: IoKind::Write { fua: false },
                offset: 0,
                len: 4096,
            },
        });
        drain(&mut n);
        n.handle(Event::DiskDone { id: 1, result: Err(5) });
        assert_eq!(
            drain(&mut n),
            vec![
                Action::StateChanged,
                Action::Reply {
                    id: 1,
                    error: errno::EIO
                }
            ]
        );
        assert_eq!(n.disk_state(), DiskState::Failed);
        n.handle(Event::NbdRequest {
            id: 2,
            io: IoRequest {
                kind: IoKind::Read,
                offset: 0,
                len: 4096,
            },
        });
        assert_eq!(
            drain(&mut n),
            vec![Action::Reply {
                id: 2,
                error: errno::EIO
            }]
        );
    }

    #[test]
    fn a_crashed_primary_is_remembered_on_attach() {
        let n = attached(MdFlags(MdFlags::CONSISTENT.0 | MdFlags::PRIMARY_IND.0));
        assert!(n.flags().contains(MdFlags::CRASHED_PRIMARY));
        assert!(!n.flags().contains(MdFlags::PRIMARY_IND));
    }
}
