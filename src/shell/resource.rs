//! One resource on this node: its [`Node`] and the I/O that carries out the
//! node's actions.
//!
//! Everything here runs on the single io_uring thread, so the node sits in a
//! `RefCell` and is borrowed only between awaits: events are applied and
//! actions drained synchronously, and no borrow is ever held across I/O. That
//! gives crucible's "one owner, one loop" property without a channel hop per
//! request.

use super::buf::AlignedBuf;
use super::disk::Disk;
use super::meta_store::MetaStore;
use crate::config;
use crate::core::{Action, DiskOp, Event, IoRequest, Node, ReqId};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use tokio::sync::{mpsc, Notify};

/// What the NBD connection wants back when a request completes.
pub struct Pending {
    pub cookie: u64,
    /// The payload (write) or the destination (read). Read buffers keep
    /// [`READ_HEADROOM`] bytes in front of the data for the reply header.
    pub buf: Option<AlignedBuf>,
    pub replies: mpsc::UnboundedSender<Outgoing>,
    pub is_read: bool,
    pub structured: bool,
    pub offset: u64,
    pub len: u32,
    /// Held until the reply is queued: bounds requests per connection.
    pub _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Bytes reserved in front of read data so that the reply header and the data
/// leave in one send without copying the data.
pub const READ_HEADROOM: usize = 4096;

/// A reply on its way to one NBD connection's writer.
pub enum Outgoing {
    Simple {
        cookie: u64,
        error: u32,
    },
    /// Read data at `buf[READ_HEADROOM..READ_HEADROOM+len]`.
    Data {
        cookie: u64,
        buf: AlignedBuf,
        offset: u64,
        len: u32,
        structured: bool,
    },
    /// An error answered with a structured error chunk (reads, when negotiated).
    StructuredError {
        cookie: u64,
        error: u32,
    },
}

pub struct Resource {
    pub name: String,
    pub cfg: config::Resource,
    pub host: config::Host,
    pub node: RefCell<Node>,
    pub disk: RefCell<Option<Rc<Disk>>>,
    pub meta: RefCell<Option<MetaStore>>,
    pending: RefCell<HashMap<ReqId, Pending>>,
    next_id: Cell<ReqId>,
    /// NBD clients by connection id, with their address (for refusals).
    pub clients: RefCell<BTreeMap<u64, String>>,
    /// Signalled when the NBD listener of this resource must stop.
    pub stop_listener: Rc<Notify>,
    pub listening: Cell<bool>,
    /// Signalled on every state change (status file, events).
    pub changed: Rc<Notify>,
}

impl Resource {
    pub fn new(
        cfg: config::Resource,
        host: config::Host,
        minor: u32,
        node_name: &str,
        changed: Rc<Notify>,
    ) -> Resource {
        let peer = cfg.peer_of(node_name).map(|h| h.name.clone());
        let protocol = cfg.protocol.to_string().chars().next().unwrap_or('C');
        Resource {
            name: cfg.name.clone(),
            node: RefCell::new(Node::new(&cfg.name, minor, node_name, peer.as_deref(), protocol)),
            cfg,
            host,
            disk: RefCell::new(None),
            meta: RefCell::new(None),
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            clients: RefCell::new(BTreeMap::new()),
            stop_listener: Rc::new(Notify::new()),
            listening: Cell::new(false),
            changed,
        }
    }

    /// Hand a validated request to the node and start whatever it decides.
    pub fn submit(self: &Rc<Self>, io: IoRequest, pending: Pending) {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        self.pending.borrow_mut().insert(id, pending);
        self.node.borrow_mut().handle(Event::NbdRequest { id, io });
        self.run_actions();
    }

    pub fn in_flight(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Drain the node's action queue. Disk I/O is started on its own task and
    /// reports back through [`Event::DiskDone`].
    pub fn run_actions(self: &Rc<Self>) {
        loop {
            let Some(action) = self.node.borrow_mut().poll_action() else {
                return;
            };
            match action {
                Action::Disk { id, op } => self.start_disk_op(id, op),
                Action::Reply { id, error } => self.reply(id, error),
                Action::PersistMeta => self.persist_meta(),
                Action::StateChanged => self.changed.notify_one(),
            }
        }
    }

    fn start_disk_op(self: &Rc<Self>, id: ReqId, op: DiskOp) {
        let disk = self.disk.borrow().clone();
        let buf = self.pending.borrow_mut().get_mut(&id).and_then(|p| p.buf.take());
        let this = Rc::clone(self);
        tokio_uring::spawn(async move {
            let Some(disk) = disk else {
                this.complete(id, Err(libc::EIO), None);
                return;
            };
            let (result, buf) = run_disk_op(&disk, op, buf).await;
            this.complete(id, result.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)), buf);
        });
    }

    fn complete(self: &Rc<Self>, id: ReqId, result: Result<(), i32>, buf: Option<AlignedBuf>) {
        if let Some(p) = self.pending.borrow_mut().get_mut(&id) {
            p.buf = buf;
        }
        self.node.borrow_mut().handle(Event::DiskDone { id, result });
        self.run_actions();
    }

    fn reply(&self, id: ReqId, error: u32) {
        let Some(mut p) = self.pending.borrow_mut().remove(&id) else {
            return;
        };
        let out = match (p.is_read, error, p.buf.take()) {
            (true, 0, Some(buf)) => Outgoing::Data {
                cookie: p.cookie,
                buf,
                offset: p.offset,
                len: p.len,
                structured: p.structured,
            },
            (_, error, buf) => {
                if let Some(b) = buf {
                    b.recycle();
                }
                if p.is_read && p.structured && error != 0 {
                    Outgoing::StructuredError {
                        cookie: p.cookie,
                        error,
                    }
                } else {
                    Outgoing::Simple {
                        cookie: p.cookie,
                        error,
                    }
                }
            }
        };
        // A closed receiver means the client went away; the data is on disk
        // (or not) regardless, and nobody is left to tell.
        let _ = p.replies.send(out);
    }

    /// Write the superblock after a flag or UUID change. Runs synchronously:
    /// it happens on role changes and attach, never per I/O, and the change
    /// must be durable before the operator is told it happened.
    pub fn persist_meta(&self) {
        let node = self.node.borrow();
        let (Some(uuids), flags) = (node.uuids(), node.flags()) else {
            return;
        };
        if let Some(meta) = self.meta.borrow_mut().as_mut() {
            if let Err(e) = meta.update(uuids, flags) {
                tracing::error!(resource = %self.name, error = %e, "failed to write metadata");
            }
        }
    }
}

async fn run_disk_op(disk: &Disk, op: DiskOp, buf: Option<AlignedBuf>) -> (std::io::Result<()>, Option<AlignedBuf>) {
    match (op, buf) {
        (DiskOp::Read { offset, len }, Some(buf)) => {
            let (res, buf) = disk.read(buf, READ_HEADROOM, offset, len as usize).await;
            (res, Some(buf))
        }
        (DiskOp::Write { offset, len, fua }, Some(buf)) => {
            let (res, buf) = disk.write(buf, 0, offset, len as usize, fua).await;
            (res, Some(buf))
        }
        (DiskOp::Flush, buf) => (disk.flush().await, buf),
        (DiskOp::Trim { offset, len }, buf) => (disk.trim(offset, u64::from(len)).await, buf),
        (
            DiskOp::Zero {
                offset,
                len,
                may_trim,
                fua,
            },
            buf,
        ) => (disk.write_zeroes(offset, u64::from(len), may_trim, fua).await, buf),
        (DiskOp::Read { .. } | DiskOp::Write { .. }, None) => {
            debug_assert!(false, "read or write without a buffer");
            (Err(std::io::Error::from_raw_os_error(libc::EIO)), None)
        }
    }
}
