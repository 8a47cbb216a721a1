//! One resource on this node: its [`Node`] and the I/O that carries out the
//! node's actions.
//!
//! Everything here runs on the single io_uring thread, so the node sits in a
//! `RefCell` and is borrowed only between awaits: events are applied and
//! actions drained synchronously, and no borrow is ever held across I/O. That
//! gives crucible's "one owner, one loop" property without a channel hop per
//! request.

use super::buf::{AlignedBuf, SharedBuf};
use super::disk::Disk;
use super::latency::LatencyStats;
use super::meta_store::MetaStore;
use super::meta_worker::MetaWorker;
use super::peer::PeerOut;
use super::task_pool::{Job, TaskPool};
use crate::config;
use crate::core::throttle::AppLatency;
use crate::core::{Action, DiskOp, Event, IoRequest, Node, ReqId};
use crate::wire::Message;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Instant;
use tokio::sync::{mpsc, Notify};

/// What the NBD connection wants back when a request completes.
pub struct Pending {
    pub cookie: u64,
    /// The destination of a read: [`READ_HEADROOM`] bytes in front of the
    /// data leave room for the reply header.
    pub read_buf: Option<AlignedBuf>,
    pub replies: mpsc::UnboundedSender<Outgoing>,
    pub is_read: bool,
    pub structured: bool,
    pub offset: u64,
    pub len: u32,
    /// When the request was read off the socket.
    pub started: Instant,
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
    /// The resource's configuration; `adjust` replaces it.
    pub cfg: RefCell<config::Resource>,
    /// This node's `on` section; `adjust` replaces it while detached.
    pub host: RefCell<config::Host>,
    pub node: RefCell<Node>,
    pub disk: RefCell<Option<Rc<Disk>>>,
    pub meta: RefCell<Option<MetaStore>>,
    /// The thread metadata writes run on while `disk-timeout` is set.
    meta_worker: RefCell<Option<MetaWorker>>,
    /// A metadata write is running on the worker: the node's actions wait
    /// in its queue until it is done, in order.
    meta_busy: std::cell::Cell<bool>,
    pending: RefCell<HashMap<ReqId, Pending>>,
    /// Data blocks by request: app writes, peer writes, resync reads, with
    /// the offset of the data inside the buffer.
    bufs: RefCell<HashMap<ReqId, (SharedBuf, usize)>>,
    next_id: Cell<ReqId>,
    /// NBD clients by connection id, with their address (for refusals).
    pub clients: RefCell<BTreeMap<u64, String>>,
    /// Signalled when the NBD listener of this resource must stop.
    pub stop_listener: Rc<Notify>,
    pub listening: Cell<bool>,
    /// Signalled on every state change (status file, events).
    pub changed: Rc<Notify>,
    /// The live peer link's sender, if any.
    pub peer_tx: RefCell<Option<mpsc::UnboundedSender<PeerOut>>>,
    /// Signalled to drop the peer link (disconnect, split brain).
    pub stop_peer: Rc<Notify>,
    /// The node asks for the current link to be dropped as a failed one
    /// (`Action::ResetLink`); the link loop then reconnects.
    pub reset_link: Rc<Notify>,
    /// The link task is running (connecting or connected).
    pub peer_running: Cell<bool>,
    /// `connect --discard-my-data` was given for the next connection.
    pub discard_my_data: Cell<bool>,
    /// Write latency split (status --verbose / --json).
    pub latency: RefCell<LatencyStats>,
    /// How long the application's requests took since the resync
    /// controller's last tick: the NBD clients' reads and writes on a
    /// Primary, the peer's writes on this disk on a Secondary.
    pub app_latency: Cell<AppLatency>,
    /// Where a split-brain victim's diverged blocks are saved.
    pub save_dir: std::path::PathBuf,
    /// When each disk write started, by request.
    disk_started: RefCell<HashMap<ReqId, Instant>>,
    /// Peer writes: request → the peer's seq, and seq → our disk time.
    peer_seq_of: RefCell<HashMap<ReqId, u64>>,
    peer_disk_us: RefCell<HashMap<u64, u32>>,
    /// Reads forwarded to the peer: seq → the application request.
    peer_reads: RefCell<HashMap<u64, ReqId>>,
    /// Application data sent to the peer: seq → when.
    sent_at: RefCell<HashMap<u64, Instant>>,
    /// The tasks that carry out disk operations.
    disk_jobs: Rc<TaskPool<DiskJob>>,
}

impl Drop for Resource {
    fn drop(&mut self) {
        self.disk_jobs.close();
    }
}

/// One disk operation of the node's, on a pool task.
struct DiskJob {
    res: Rc<Resource>,
    id: ReqId,
    op: DiskOp,
    disk: Option<Rc<Disk>>,
    read_buf: Option<AlignedBuf>,
    write_buf: Option<(SharedBuf, usize)>,
}

impl Job for DiskJob {
    async fn run(self) {
        let DiskJob {
            res,
            id,
            op,
            disk,
            read_buf,
            write_buf,
        } = self;
        if let DiskOp::Digest { offset, len, alg } = op {
            let result = match disk {
                None => Err(libc::EIO),
                Some(disk) => {
                    let buf = AlignedBuf::with_capacity(len as usize);
                    let (read, buf) = disk.read(buf, 0, offset, len as usize).await;
                    let digest = read.map(|()| alg.digest(&buf.as_slice()[..len as usize]));
                    buf.recycle();
                    digest.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
                }
            };
            res.event(Event::DigestDone { id, result });
            return;
        }
        let Some(disk) = disk else {
            res.complete(id, Err(libc::EIO), None);
            return;
        };
        let (result, buf) = run_disk_op(&disk, op, read_buf, write_buf).await;
        // The job holds the disk only while it runs: detach closes it.
        drop(disk);
        res.complete(id, result.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)), buf);
    }
}

impl Resource {
    pub fn new(
        cfg: config::Resource,
        host: config::Host,
        minor: u32,
        node_name: &str,
        changed: Rc<Notify>,
        save_dir: std::path::PathBuf,
    ) -> Resource {
        let peer = cfg.peer_of(node_name).map(|h| h.name.clone());
        let protocol = cfg.protocol.to_string().chars().next().unwrap_or('C');
        Resource {
            name: cfg.name.clone(),
            node: RefCell::new({
                let mut n = Node::new(&cfg.name, minor, node_name, peer.as_deref(), protocol);
                apply_options(&mut n, &cfg);
                n
            }),
            cfg: RefCell::new(cfg),
            host: RefCell::new(host),
            disk: RefCell::new(None),
            meta: RefCell::new(None),
            meta_worker: RefCell::new(None),
            meta_busy: std::cell::Cell::new(false),
            pending: RefCell::new(HashMap::new()),
            bufs: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            clients: RefCell::new(BTreeMap::new()),
            stop_listener: Rc::new(Notify::new()),
            listening: Cell::new(false),
            changed,
            peer_tx: RefCell::new(None),
            stop_peer: Rc::new(Notify::new()),
            reset_link: Rc::new(Notify::new()),
            peer_running: Cell::new(false),
            discard_my_data: Cell::new(false),
            save_dir,
            peer_reads: RefCell::new(HashMap::new()),
            latency: RefCell::new(LatencyStats::default()),
            app_latency: Cell::new(AppLatency::default()),
            disk_started: RefCell::new(HashMap::new()),
            peer_seq_of: RefCell::new(HashMap::new()),
            peer_disk_us: RefCell::new(HashMap::new()),
            sent_at: RefCell::new(HashMap::new()),
            disk_jobs: TaskPool::new(),
        }
    }

    /// A `DataAck` arrived: split its round trip into network and peer disk.
    pub fn ack_timing(&self, seq: u64, disk_us: u32) {
        if let Some(sent) = self.sent_at.borrow_mut().remove(&seq) {
            let rtt = sent.elapsed().as_micros() as u64;
            let mut l = self.latency.borrow_mut();
            l.network.record(rtt.saturating_sub(u64::from(disk_us)));
            l.peer_disk.record(u64::from(disk_us));
        }
    }

    fn record_app_latency(&self, us: u64) {
        let mut l = self.app_latency.get();
        l.record(us);
        self.app_latency.set(l);
    }

    /// The link went down: nothing sent on it will be acknowledged.
    pub fn forget_link_timings(&self) {
        self.sent_at.borrow_mut().clear();
        self.peer_disk_us.borrow_mut().clear();
    }

    pub fn alloc_id(&self) -> ReqId {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        id
    }

    /// Hand a validated request to the node; `payload` is the data of a
    /// write. What the node decides waits in its queue until the caller
    /// runs [`Resource::run_actions`], which it must before it waits on
    /// anything: requests that arrived together are decided together.
    pub fn submit_queued(self: &Rc<Self>, io: IoRequest, pending: Pending, payload: Option<SharedBuf>) {
        let id = self.alloc_id();
        self.pending.borrow_mut().insert(id, pending);
        if let Some(p) = payload {
            self.bufs.borrow_mut().insert(id, (p, 0));
        }
        let mut node = self.node.borrow_mut();
        node.set_clock(unix_now());
        node.handle(Event::NbdRequest { id, io });
    }

    /// The peer answered a forwarded read: the data goes into the waiting
    /// request's read buffer, then the node completes it.
    pub fn peer_read_reply(self: &Rc<Self>, seq: u64, status: u32, len: u32, block: Option<AlignedBuf>) {
        let id = self.peer_reads.borrow_mut().remove(&seq);
        let mut status = status;
        if let (Some(id), Some(data)) = (id, block.as_ref()) {
            let mut pending = self.pending.borrow_mut();
            match pending.get_mut(&id) {
                Some(p) if p.len == len && data.len() >= len as usize => {
                    let mut buf = p
                        .read_buf
                        .take()
                        .unwrap_or_else(|| AlignedBuf::with_capacity(READ_HEADROOM + len as usize));
                    if buf.capacity() < READ_HEADROOM + len as usize {
                        buf.recycle();
                        buf = AlignedBuf::with_capacity(READ_HEADROOM + len as usize);
                    }
                    buf.as_full_mut()[READ_HEADROOM..READ_HEADROOM + len as usize]
                        .copy_from_slice(&data.as_slice()[..len as usize]);
                    buf.set_len(READ_HEADROOM + len as usize);
                    p.read_buf = Some(buf);
                }
                _ => status = libc::EIO as u32,
            }
        }
        if let Some(b) = block {
            b.recycle();
        }
        self.event(Event::PeerReadReply { seq, status });
    }

    /// A write arrived from the peer with its block. What the node decides
    /// waits in its queue until the caller runs [`Resource::run_actions`],
    /// which it must before it waits on anything (as `submit_queued`).
    pub fn peer_write(self: &Rc<Self>, seq: u64, offset: u64, len: u32, flags: u32, block: Option<SharedBuf>) {
        let id = self.alloc_id();
        if let Some(b) = block {
            self.bufs.borrow_mut().insert(id, (b, 0));
        }
        self.peer_seq_of.borrow_mut().insert(id, seq);
        let mut node = self.node.borrow_mut();
        node.set_clock(unix_now());
        node.handle(Event::PeerWrite {
            id,
            seq,
            offset,
            len,
            flags,
        });
    }

    pub fn event(self: &Rc<Self>, e: Event) {
        {
            let mut node = self.node.borrow_mut();
            node.set_clock(unix_now());
            node.handle(e);
        }
        self.run_actions();
    }

    pub fn in_flight(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Drain the node's action queue. Disk I/O is started on its own task and
    /// reports back through [`Event::DiskDone`].
    pub fn run_actions(self: &Rc<Self>) {
        loop {
            if self.meta_busy.get() {
                return;
            }
            let Some(action) = self.node.borrow_mut().poll_action() else {
                return;
            };
            match action {
                Action::Disk { id, op } => self.start_disk_op(id, op),
                Action::Reply { id, error } => self.reply(id, error),
                Action::PersistMeta => {
                    let failed = self.persist_meta();
                    self.meta_failed(failed);
                }
                Action::PersistBitmap => {
                    let failed = self.persist_bitmap();
                    self.meta_failed(failed);
                }
                Action::PersistAl(tr) => {
                    let (tr, _) = self.node.borrow_mut().fold_queued_al(tr);
                    let failed = self.persist_al(tr);
                    self.meta_failed(failed);
                }
                Action::StateChanged => self.changed.notify_one(),
                Action::SendPeer(Message::DataAck {
                    seq, status, completed, ..
                }) => {
                    let disk_us = self.peer_disk_us.borrow_mut().remove(&seq).unwrap_or(0);
                    self.send_peer(PeerOut::message(Message::DataAck {
                        seq,
                        status,
                        disk_us,
                        completed,
                    }));
                }
                Action::SendPeer(msg) => {
                    if let Message::Data { seq, .. } = msg {
                        self.sent_at.borrow_mut().insert(seq, Instant::now());
                    }
                    self.send_peer(PeerOut::message(msg))
                }
                Action::SendPeerData { id, msg } => {
                    if let Message::Data { seq, flags, .. } = msg {
                        if flags & crate::wire::DATA_FLAG_RESYNC == 0 {
                            self.sent_at.borrow_mut().insert(seq, Instant::now());
                        }
                    }
                    let block = self.bufs.borrow().get(&id).cloned();
                    match block {
                        Some((buf, at)) => {
                            let len = match msg {
                                Message::Data { len, .. } => len as usize,
                                _ => 0,
                            };
                            self.send_peer(PeerOut::data(msg, buf, at, len));
                        }
                        None => tracing::error!(resource = %self.name, id, "no buffer for a peer data message"),
                    }
                }
                Action::Release { id } => {
                    if let Some((b, _)) = self.bufs.borrow_mut().remove(&id) {
                        b.recycle();
                    }
                }
                Action::Disconnect { reason } => {
                    tracing::error!(resource = %self.name, "{reason}");
                    self.stop_peer.notify_one();
                }
                Action::ResetLink { reason } => {
                    tracing::error!(resource = %self.name, "{reason}");
                    // Only the link running now: no permit is left behind
                    // for the next one.
                    self.reset_link.notify_waiters();
                }
                Action::Log { warn: true, message } => tracing::warn!(resource = %self.name, "{message}"),
                Action::Log { warn: false, message } => tracing::info!(resource = %self.name, "{message}"),
                Action::RunHandler(h) => super::handlers::run(self, h),
                Action::ForwardRead { id, seq, offset, len } => {
                    self.peer_reads.borrow_mut().insert(seq, id);
                    self.send_peer(PeerOut::message(Message::ReadRequest { seq, offset, len }));
                }
                Action::SendPeerReadReply { id, seq, status, len } => {
                    let block = id.and_then(|id| self.bufs.borrow().get(&id).cloned());
                    match (status, block) {
                        (0, Some((buf, at))) if buf.as_slice().len() >= at + len as usize => {
                            let msg = Message::ReadReply { seq, status, len };
                            self.send_peer(PeerOut::data(msg, buf, at, len as usize));
                        }
                        (status, _) => {
                            let status = if status == 0 { libc::EIO as u32 } else { status };
                            self.send_peer(PeerOut::message(Message::ReadReply { seq, status, len }));
                        }
                    }
                }
                Action::DetachDisk => {
                    // Requests in flight hold their own reference; they
                    // finish (or fail) on the old disk.
                    *self.disk.borrow_mut() = None;
                    *self.meta.borrow_mut() = None;
                    tracing::error!(resource = %self.name, "backing disk detached");
                }
                Action::SaveDiverged { runs } => {
                    let result = self.save_diverged(&runs);
                    self.node.borrow_mut().handle(Event::DivergedSaved { result });
                }
            }
        }
    }

    /// Copy this node's diverged blocks aside (split-brain victim).
    fn save_diverged(&self, runs: &[(u64, u64)]) -> Result<String, String> {
        let disk = self
            .disk
            .borrow()
            .clone()
            .ok_or_else(|| "no disk attached".to_owned())?;
        let node = self.node.borrow();
        let uuids = node.uuids().unwrap_or_default();
        let peer = self
            .cfg
            .borrow()
            .peer_of(&self.host.borrow().name)
            .map(|h| h.name.clone());
        let origin = super::diverged::Origin {
            resource: &self.name,
            node: &self.host.borrow().name,
            peer: peer.as_deref().unwrap_or("?"),
            uuids: format!(
                "{:016X}:{:016X}:{:016X}:{:016X}",
                uuids.current, uuids.bitmap, uuids.history[0], uuids.history[1]
            ),
            unix_s: unix_now(),
        };
        let saved = super::diverged::save(disk.path(), node.data_bytes(), runs, &self.save_dir, &origin)?;
        Ok(format!(
            "{} ({} KiB; ranges listed in {})",
            saved.image.display(),
            saved.bytes / 1024,
            saved.ranges.display()
        ))
    }

    fn send_peer(&self, out: PeerOut) {
        if let Some(tx) = self.peer_tx.borrow().as_ref() {
            let _ = tx.send(out);
        }
    }

    fn start_disk_op(self: &Rc<Self>, id: ReqId, op: DiskOp) {
        let disk = self.disk.borrow().clone();
        let read_buf = match op {
            DiskOp::Read { len, .. } => Some(
                self.pending
                    .borrow_mut()
                    .get_mut(&id)
                    .and_then(|p| p.read_buf.take())
                    .unwrap_or_else(|| AlignedBuf::with_capacity(READ_HEADROOM + len as usize)),
            ),
            _ => None,
        };
        let write_buf = self.bufs.borrow().get(&id).cloned();
        if matches!(op, DiskOp::Write { .. } | DiskOp::Trim { .. } | DiskOp::Zero { .. }) {
            self.disk_started.borrow_mut().insert(id, Instant::now());
        }
        self.disk_jobs.submit(DiskJob {
            res: Rc::clone(self),
            id,
            op,
            disk,
            read_buf,
            write_buf,
        });
    }

    fn complete(self: &Rc<Self>, id: ReqId, result: Result<(), i32>, read_buf: Option<AlignedBuf>) {
        if self.node.borrow().is_abandoned(id) {
            // disk-timeout gave up on it and the request was finished
            // without it; only the node's note of it is left.
            self.disk_started.borrow_mut().remove(&id);
            self.peer_seq_of.borrow_mut().remove(&id);
            if let Some(buf) = read_buf {
                buf.recycle();
            }
            self.event(Event::DiskDone { id, result });
            return;
        }
        if let Some(t0) = self.disk_started.borrow_mut().remove(&id) {
            let us = t0.elapsed().as_micros() as u64;
            match self.peer_seq_of.borrow_mut().remove(&id) {
                Some(seq) => {
                    self.record_app_latency(us);
                    self.peer_disk_us
                        .borrow_mut()
                        .insert(seq, us.min(u64::from(u32::MAX)) as u32);
                }
                None => self.latency.borrow_mut().local_disk.record(us),
            }
        } else {
            self.peer_seq_of.borrow_mut().remove(&id);
        }
        if let Some(buf) = read_buf {
            let mut pending = self.pending.borrow_mut();
            match pending.get_mut(&id) {
                Some(p) => p.read_buf = Some(buf),
                // A read of the core's own (resync): keep it for the peer.
                None => {
                    drop(pending);
                    self.bufs.borrow_mut().insert(id, (SharedBuf::new(buf), READ_HEADROOM));
                }
            }
        }
        self.event(Event::DiskDone { id, result });
    }

    fn reply(&self, id: ReqId, error: u32) {
        if let Some((b, _)) = self.bufs.borrow_mut().remove(&id) {
            b.recycle();
        }
        let Some(mut p) = self.pending.borrow_mut().remove(&id) else {
            return;
        };
        // Data requests only: a flush's time is the disk cache's, whatever
        // the resync does.
        if p.len > 0 {
            self.record_app_latency(p.started.elapsed().as_micros() as u64);
        }
        let out = match (p.is_read, error, p.read_buf.take()) {
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

    /// Write the superblock after a flag or UUID change: on role and
    /// connection changes, never per I/O. Nothing queued after it runs
    /// before it is durable (see `write_meta`). Returns the errno if that
    /// failed.
    pub fn persist_meta(self: &Rc<Self>) -> Option<i32> {
        let (uuids, flags, divergence) = {
            let node = self.node.borrow();
            (node.uuids()?, node.flags(), node.divergence())
        };
        self.write_meta("metadata", move |meta| meta.update_with(uuids, flags, divergence))
    }

    /// Write the dirty bitmap pages. Returns the errno if that failed.
    pub fn persist_bitmap(self: &Rc<Self>) -> Option<i32> {
        let pages = self.node.borrow_mut().take_bitmap_pages();
        if pages.is_empty() {
            return None;
        }
        self.write_meta("bitmap", move |meta| meta.write_bitmap_pages(&pages))
    }

    /// One activity-log transaction. Returns the errno if it is not durable.
    fn persist_al(self: &Rc<Self>, tr: Vec<crate::meta::al::AlTransaction>) -> Option<i32> {
        // A transaction may make extents cold: writes in them are no longer
        // replayed after a crash.
        self.write_meta("activity log", move |meta| meta.write_al(&tr))
    }

    /// Flush the data disk, then `write` the metadata; the errno if either
    /// failed, logged. Metadata never claims more than the data disk holds:
    /// the flush makes a resync's writes stable before the node calls
    /// itself UpToDate or clears their bits, and an extent's writes stable
    /// before it goes cold. Under `disk-timeout` both run on the metadata
    /// thread (`shell::meta_worker`) and the actions after them wait.
    fn write_meta<F>(self: &Rc<Self>, what: &'static str, write: F) -> Option<i32>
    where
        F: FnOnce(&mut MetaStore) -> std::io::Result<()> + Send + 'static,
    {
        let mut meta = self.meta.borrow_mut().take()?;
        let disk = self.disk.borrow().clone();
        let for_sync = disk.as_ref().map(|d| d.for_sync());
        let job = move || {
            let flushed = for_sync.as_deref().map_or(Ok(()), std::fs::File::sync_data);
            let result = match flushed {
                Ok(()) => write(&mut meta).map_err(|e| (e, "write")),
                Err(e) => Err((e, "flush the disk before writing")),
            };
            (meta, result)
        };
        let limit_us = self.cfg.borrow().disk.disk_timeout_us();
        let worker = if limit_us == 0 { None } else { self.meta_worker() };
        let Some(worker) = worker else {
            let (meta, result) = job();
            *self.meta.borrow_mut() = Some(meta);
            return self.meta_write_result(what, result);
        };
        let mut done = worker.start(job);
        drop(worker);
        self.meta_busy.set(true);
        let res = Rc::clone(self);
        tokio_uring::spawn(async move {
            let limit = std::time::Duration::from_micros(limit_us);
            let outcome = tokio::time::timeout(limit, &mut done).await;
            res.meta_busy.set(false);
            match outcome {
                Ok(Ok((meta, result))) => {
                    // Unless the disk was detached (or replaced) meanwhile.
                    let same_disk = match (&disk, res.disk.borrow().as_ref()) {
                        (Some(a), Some(b)) => Rc::ptr_eq(a, b),
                        _ => false,
                    };
                    if same_disk {
                        *res.meta.borrow_mut() = Some(meta);
                    }
                    let failed = res.meta_write_result(what, result);
                    res.meta_failed(failed);
                    res.run_actions();
                }
                // The job panicked: the metadata went with it.
                Ok(Err(_)) => {
                    res.meta_failed(Some(libc::EIO));
                    res.run_actions();
                }
                Err(_) => {
                    tracing::error!(resource = %res.name, "the {what} write did not finish within disk-timeout");
                    // Its thread is the kernel's now and ends with the
                    // write; the next write gets a new one.
                    res.meta_worker.borrow_mut().take();
                    // Counted with the disk's other abandoned requests,
                    // and counted back when it returns.
                    let id = res.alloc_id();
                    res.node.borrow_mut().handle(Event::MetaHung { id, what });
                    res.run_actions();
                    let result = match done.await {
                        Ok((_, Ok(()))) => Ok(()),
                        Ok((_, Err((e, _)))) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
                        Err(_) => Err(libc::EIO),
                    };
                    res.event(Event::DiskDone { id, result });
                }
            }
        });
        None
    }

    fn meta_write_result(&self, what: &str, result: Result<(), (std::io::Error, &str)>) -> Option<i32> {
        let (e, step) = result.err()?;
        tracing::error!(resource = %self.name, error = %e, "cannot {step} the {what}");
        Some(e.raw_os_error().unwrap_or(libc::EIO))
    }

    /// The metadata thread, started now if there is none; None if none can
    /// be (the write then runs on this thread, unguarded).
    fn meta_worker(&self) -> Option<std::cell::Ref<'_, MetaWorker>> {
        if self.meta_worker.borrow().is_none() {
            match MetaWorker::start_thread(&self.name) {
                Ok(w) => *self.meta_worker.borrow_mut() = Some(w),
                Err(e) => {
                    tracing::warn!(resource = %self.name, error = %e, "cannot start the metadata thread; writing without disk-timeout");
                    return None;
                }
            }
        }
        std::cell::Ref::filter_map(self.meta_worker.borrow(), Option::as_ref).ok()
    }

    /// Not durable means not protected: the node treats the disk as failed.
    fn meta_failed(&self, failed: Option<i32>) {
        if let Some(os_errno) = failed {
            self.node.borrow_mut().handle(Event::MetaIoError { os_errno });
        }
    }

    /// Read the on-disk bitmap into the node (attach of a replicated resource).
    pub fn load_bitmap(&self) -> std::io::Result<()> {
        let pages = self.node.borrow().bitmap_pages();
        let meta = self.meta.borrow();
        let Some(meta) = meta.as_ref() else { return Ok(()) };
        for p in 0..pages {
            let bytes = meta.read_bitmap_page(p)?;
            self.node.borrow_mut().load_bitmap_page(p, &bytes);
        }
        // Loading marked nothing dirty worth writing back.
        let _ = self.node.borrow_mut().take_bitmap_pages();
        Ok(())
    }

    /// Replay the activity log after a crash (`crashed`: it was not marked clean).
    pub fn apply_activity_log(self: &Rc<Self>, crashed: bool) -> std::io::Result<()> {
        let recovery = match self.meta.borrow().as_ref() {
            Some(meta) => meta.read_al()?,
            None => return Ok(()),
        };
        if recovery.corrupt_blocks > 0 {
            tracing::warn!(resource = %self.name, blocks = recovery.corrupt_blocks, "activity-log blocks with bad checksums ignored (a torn last write)");
        }
        self.node
            .borrow_mut()
            .apply_activity_log(&recovery.extents, recovery.last_tr, crashed);
        self.run_actions();
        Ok(())
    }
}

async fn run_disk_op(
    disk: &Disk,
    op: DiskOp,
    read_buf: Option<AlignedBuf>,
    write_buf: Option<(SharedBuf, usize)>,
) -> (std::io::Result<()>, Option<AlignedBuf>) {
    match (op, read_buf, write_buf) {
        (DiskOp::Read { offset, len }, Some(buf), _) => {
            let (res, buf) = disk.read(buf, READ_HEADROOM, offset, len as usize).await;
            (res, Some(buf))
        }
        (DiskOp::Write { offset, len, fua }, _, Some((buf, at))) => {
            let (res, _buf) = disk.write(buf, at, offset, len as usize, fua).await;
            (res, None)
        }
        (DiskOp::Flush, ..) => (disk.flush().await, None),
        (DiskOp::Trim { offset, len, fua }, ..) => {
            let mut res = disk.trim(offset, u64::from(len)).await;
            if res.is_ok() && fua {
                res = disk.flush().await;
            }
            (res, None)
        }
        (
            DiskOp::Zero {
                offset,
                len,
                may_trim,
                fua,
            },
            ..,
        ) => (disk.write_zeroes(offset, u64::from(len), may_trim, fua).await, None),
        (DiskOp::Read { .. } | DiskOp::Write { .. } | DiskOp::Digest { .. }, ..) => {
            debug_assert!(false, "read or write without a buffer, or a digest here");
            (Err(std::io::Error::from_raw_os_error(libc::EIO)), None)
        }
    }
}

/// Unix seconds now (for the divergence times the operator sees).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The options of a resource's configuration that the node acts on: at
/// start and after `adjust` (which sets the protocol itself).
pub fn apply_options(n: &mut Node, cfg: &config::Resource) {
    use crate::digest::DigestAlg;
    n.set_al_extents(cfg.disk.al_extents);
    n.set_resync_rate(cfg.disk.resync_cap_kib_s(), cfg.disk.c_min_rate_kib_s);
    n.set_split_brain_policies(crate::core::split_brain::Policies {
        zero: cfg.net.after_sb_0pri.clone(),
        one: cfg.net.after_sb_1pri.clone(),
        two: cfg.net.after_sb_2pri.clone(),
    });
    n.set_fencing(cfg.net.fencing);
    n.set_ko_limit_us(cfg.net.ko_limit_us());
    n.set_disk_timeout_us(cfg.disk.disk_timeout_us());
    n.set_on_io_error(cfg.disk.on_io_error);
    n.set_digest_algs(
        cfg.net.verify_alg.as_deref().map(DigestAlg::from_config),
        cfg.net.csums_alg.as_deref().map(DigestAlg::from_config),
    );
}
