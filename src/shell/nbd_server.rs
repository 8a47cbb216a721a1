//! The NBD listener and connections of one resource: bytes in, [`nbd`] codec,
//! requests handed to the resource; replies out through one writer per
//! connection.
//!
//! Per connection, one task reads and decodes requests and never waits for a
//! request to finish (pipelining: up to `NBD_CONNECTION_INFLIGHT_MAX` in
//! flight); each request's disk I/O runs on its own task; a writer task
//! serialises the replies, in completion order, coalescing small ones into a
//! single send.

use super::buf::{AlignedBuf, SharedBuf, WireBuf};
use super::resource::{Outgoing, Pending, Resource, READ_HEADROOM};
use super::stage::{Recv, Stage};
use super::tls::TlsStream;
use crate::config::NbdEndpoint;
use crate::core::{limits, IoKind, IoRequest};
use crate::nbd::consts;
use crate::nbd::handshake::{
    parse_client_flags, server_greeting, ExportCatalog, ExportInfo, Negotiation, OptionHeader, Outcome, Refusal,
    OPTION_PAYLOAD_MAX,
};
use crate::nbd::reply;
use crate::nbd::request::{Command, Request, REQUEST_HEADER_LEN};
use crate::nbd::validate::validate;
use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio_uring::buf::BoundedBuf;

/// How long a client may take to finish option haggling.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected NBD client socket, TCP or unix, in the clear or (after
/// NBD_OPT_STARTTLS) under TLS.
enum Stream {
    Tcp(tokio_uring::net::TcpStream),
    Unix(tokio_uring::net::UnixStream),
    TlsTcp(Box<TlsStream<tokio_uring::net::TcpStream>>),
    TlsUnix(Box<TlsStream<tokio_uring::net::UnixStream>>),
}

impl Stream {
    async fn read<T: tokio_uring::buf::BoundedBufMut>(&self, buf: T) -> tokio_uring::BufResult<usize, T> {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Unix(s) => s.read(buf).await,
            Stream::TlsTcp(s) => s.recv(buf).await,
            Stream::TlsUnix(s) => s.recv(buf).await,
        }
    }

    fn shutdown(&self) {
        match self {
            Stream::Tcp(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Stream::Unix(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Stream::TlsTcp(s) => s.shutdown_now(),
            Stream::TlsUnix(s) => s.shutdown_now(),
        }
    }

    /// The TLS handshake, as the server, after STARTTLS was acknowledged.
    async fn into_tls(self, config: Arc<rustls::ServerConfig>) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::TlsTcp(Box::new(TlsStream::server(s, config).await?)),
            Stream::Unix(s) => Stream::TlsUnix(Box::new(TlsStream::server(s, config).await?)),
            tls => tls,
        })
    }

    /// Read exactly `n` bytes (handshake only: small, bounded by the caller).
    async fn read_exact(&self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(n);
        while buf.len() < n {
            let have = buf.len();
            let (res, b) = self.read(buf.slice(have..n)).await;
            buf = b.into_inner();
            if res? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(buf)
    }

    async fn send(&self, bytes: Vec<u8>) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match self {
            Stream::Tcp(s) => s.write_all(bytes).await.0,
            Stream::Unix(s) => s.write_all(bytes).await.0,
            Stream::TlsTcp(s) => s.send_plain(&bytes).await,
            Stream::TlsUnix(s) => s.send_plain(&bytes).await,
        }
    }
}

/// Bind the resource's NBD endpoint and serve it until `stop_listener` fires.
pub fn start_listener(res: &Rc<Resource>) -> io::Result<()> {
    if res.listening.get() {
        return Ok(());
    }
    let device = res.host.borrow().device.clone();
    let tls = nbd_tls(res).map_err(io::Error::other)?;
    let listener = match &device {
        NbdEndpoint::Tcp { addr, .. } => {
            let std_listener = std::net::TcpListener::bind(addr)?;
            std_listener.set_nonblocking(true)?;
            Listener::Tcp(tokio::net::TcpListener::from_std(std_listener)?)
        }
        NbdEndpoint::Unix { path, .. } => {
            if path.exists() {
                // A stale socket from an earlier run; nothing else owns this path.
                std::fs::remove_file(path)?;
            }
            let std_listener = std::os::unix::net::UnixListener::bind(path)?;
            std_listener.set_nonblocking(true)?;
            Listener::Unix(tokio::net::UnixListener::from_std(std_listener)?)
        }
    };
    tracing::info!(resource = %res.name, endpoint = %device, "NBD export listening");
    res.listening.set(true);
    let res = Rc::clone(res);
    tokio_uring::spawn(async move {
        let next_conn = Cell::new(1u64);
        loop {
            let accepted = tokio::select! {
                _ = res.stop_listener.notified() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer, ip)) => {
                    let allowed = {
                        let cfg = res.cfg.borrow();
                        let list = &cfg.net.nbd_allow;
                        ip.is_none_or(|ip| list.is_empty() || list.iter().any(|n| n.contains(ip)))
                    };
                    if !allowed {
                        tracing::warn!(resource = %res.name, %peer, "NBD client refused: its address is not in nbd-allow");
                        stream.shutdown();
                        continue;
                    }
                    let id = next_conn.get();
                    next_conn.set(id + 1);
                    let res = Rc::clone(&res);
                    let tls = tls.clone();
                    tokio_uring::spawn(async move { serve(res, stream, peer, id, tls).await });
                }
                Err(e) => {
                    tracing::warn!(resource = %res.name, error = %e, "NBD accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if let NbdEndpoint::Unix { path, .. } = &device {
            let _ = std::fs::remove_file(path);
        }
        res.listening.set(false);
        tracing::info!(resource = %res.name, "NBD export closed");
    });
    Ok(())
}

/// The export's TLS, if `nbd-tls-certificate` is set: then every client
/// must STARTTLS before anything else.
fn nbd_tls(res: &Resource) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    let cfg = res.cfg.borrow();
    let n = &cfg.net;
    let (certificate, private_key) = match (n.nbd_tls_certificate.as_deref(), n.nbd_tls_privkey.as_deref()) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => {
            return Err(format!(
                "{}: NBD TLS needs both 'nbd-tls-certificate' and 'nbd-tls-privkey'",
                res.name
            ))
        }
    };
    let files = super::tls::TlsFiles {
        certificate,
        private_key,
        ca: n.nbd_tls_ca.as_deref(),
    };
    super::tls::nbd_config(&files)
        .map(Some)
        .map_err(|e| format!("{}: TLS for NBD: {e}", res.name))
}

/// Accepting goes through tokio's epoll reactor, not io_uring: a pending
/// io_uring accept is not cancelled when its future is dropped, so it would
/// hold the port open after `down` until the next client came along.
enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// The stream, a printable peer, and its IP address (TCP only).
    async fn accept(&self) -> io::Result<(Stream, String, Option<std::net::IpAddr>)> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept().await?;
                s.set_nodelay(true)?;
                let std = s.into_std()?;
                std.set_nonblocking(false)?;
                Ok((
                    Stream::Tcp(tokio_uring::net::TcpStream::from_std(std)),
                    addr.to_string(),
                    Some(addr.ip()),
                ))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                let std = s.into_std()?;
                std.set_nonblocking(false)?;
                Ok((
                    Stream::Unix(tokio_uring::net::UnixStream::from_std(std)),
                    "unix socket".to_owned(),
                    None,
                ))
            }
        }
    }
}

/// The export as the handshake sees it: refused while this node is Secondary.
struct Catalog<'a> {
    res: &'a Resource,
}

impl Catalog<'_> {
    fn export_name(&self) -> String {
        self.res.host.borrow().device.export_name().to_owned()
    }
}

impl ExportCatalog for Catalog<'_> {
    fn list(&self) -> Vec<(String, String)> {
        vec![(
            self.export_name().to_owned(),
            format!("Tandem resource {}", self.res.name),
        )]
    }

    fn lookup(&self, name: &str) -> Result<ExportInfo, Refusal> {
        if !name.is_empty() && name != self.export_name() {
            return Err(Refusal::Unknown(format!(
                "no export named '{name}' here; this endpoint serves '{}'",
                self.export_name()
            )));
        }
        let node = self.res.node.borrow();
        if let Some(why) = node.export_refusal() {
            return Err(Refusal::Unavailable(why));
        }
        Ok(ExportInfo {
            name: self.export_name().to_owned(),
            description: format!("Tandem resource {}", self.res.name),
            size: node.data_bytes(),
            transmission_flags: consts::NBD_FLAG_HAS_FLAGS
                | consts::NBD_FLAG_SEND_FLUSH
                | consts::NBD_FLAG_SEND_FUA
                | consts::NBD_FLAG_SEND_TRIM
                | consts::NBD_FLAG_SEND_WRITE_ZEROES
                // A FLUSH is an fdatasync of the one backing file, which
                // covers every completed write of every connection.
                | consts::NBD_FLAG_CAN_MULTI_CONN,
            block_size_min: 512,
            block_size_preferred: 4096,
            block_size_max: limits::NBD_PAYLOAD_BYTES_MAX,
        })
    }
}

async fn serve(res: Rc<Resource>, stream: Stream, peer: String, conn_id: u64, tls: Option<Arc<rustls::ServerConfig>>) {
    if res.clients.borrow().len() >= limits::NBD_CONNECTIONS_MAX {
        tracing::warn!(resource = %res.name, %peer, "too many NBD connections; refusing");
        stream.shutdown();
        return;
    }
    // On a timeout the stream is dropped with the handshake, which closes it.
    let negotiated = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&res, stream, tls)).await {
        Ok(Ok(Some(n))) => n,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::info!(resource = %res.name, %peer, error = %e, "NBD handshake ended");
            return;
        }
        Err(_) => {
            tracing::info!(resource = %res.name, %peer, "NBD handshake timed out");
            return;
        }
    };
    let (stream, export, structured) = negotiated;
    if matches!(stream, Stream::TlsTcp(_) | Stream::TlsUnix(_)) {
        tracing::info!(resource = %res.name, %peer, "NBD client secured with TLS");
    }
    // The export may have been refused between INFO and GO only in the
    // catalog; check once more under the same borrow that counts the client.
    {
        let mut node = res.node.borrow_mut();
        if let Some(why) = node.export_refusal() {
            tracing::info!(resource = %res.name, %peer, "{why}");
            stream.shutdown();
            return;
        }
        node.nbd_client_opened();
    }
    res.clients.borrow_mut().insert(conn_id, peer.clone());
    res.run_actions();
    tracing::info!(resource = %res.name, %peer, structured, "NBD client connected");

    let stream = Rc::new(stream);
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio_uring::spawn(write_replies(Rc::clone(&stream), rx));
    let outcome = read_requests(&res, &stream, &export, structured, tx).await;
    // What the last requests queued in the node starts, whatever ended
    // the connection.
    res.run_actions();
    match outcome {
        Ok(()) => tracing::info!(resource = %res.name, %peer, "NBD client disconnected"),
        Err(e) => tracing::info!(resource = %res.name, %peer, error = %e, "NBD connection closed"),
    }
    // Requests still in flight finish (their data reaches the disk) and their
    // replies are sent or dropped before the client stops counting.
    let _ = writer.await;
    stream.shutdown();
    res.clients.borrow_mut().remove(&conn_id);
    res.node.borrow_mut().nbd_client_closed();
    res.run_actions();
}

/// Option haggling; the stream comes back (under TLS after STARTTLS)
/// with the export and whether replies are structured.
async fn handshake(
    res: &Resource,
    mut stream: Stream,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<Option<(Stream, ExportInfo, bool)>> {
    stream.send(server_greeting().to_vec()).await?;
    let raw = stream.read_exact(4).await?;
    let flags = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let flags = parse_client_flags(flags).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let mut negotiation = if tls.is_some() {
        Negotiation::requiring_tls(flags)
    } else {
        Negotiation::new(flags)
    };
    let catalog = Catalog { res };
    loop {
        let raw = stream.read_exact(16).await.map_err(|e| {
            if negotiation.awaiting_tls() {
                io::Error::new(
                    e.kind(),
                    format!("{e} (the client never sent STARTTLS; this export requires TLS)"),
                )
            } else {
                e
            }
        })?;
        let mut hdr = [0u8; 16];
        hdr.copy_from_slice(&raw);
        let header =
            OptionHeader::decode(&hdr).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let step = if header.length > OPTION_PAYLOAD_MAX {
            discard(&stream, u64::from(header.length)).await?;
            negotiation.too_big(header)
        } else {
            let payload = stream.read_exact(header.length as usize).await?;
            negotiation.handle_option(header, &payload, &catalog)
        };
        stream.send(step.reply).await?;
        match step.outcome {
            Outcome::Continue => {}
            Outcome::Close if negotiation.awaiting_tls() => {
                return Err(io::Error::other(
                    "the client gave up without STARTTLS; this export requires TLS",
                ))
            }
            Outcome::Close => return Ok(None),
            Outcome::StartTls => {
                let Some(config) = tls.clone() else {
                    return Ok(None);
                };
                stream = stream
                    .into_tls(config)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
                negotiation.secured();
            }
            Outcome::Transmission {
                export,
                structured_replies,
            } => return Ok(Some((stream, export, structured_replies))),
        }
    }
}

/// Read and drop `n` bytes: the payload of an option or write we refuse, so
/// that the stream stays in step and the connection stays usable.
async fn discard(stream: &Stream, mut n: u64) -> io::Result<()> {
    let mut scratch = Vec::with_capacity(64 * 1024);
    while n > 0 {
        let want = n.min(scratch.capacity() as u64) as usize;
        scratch.clear();
        let (res, b) = stream.read(scratch.slice(0..want)).await;
        scratch = b.into_inner();
        match res? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            got => n -= got as u64,
        }
    }
    Ok(())
}

impl Recv for Stream {
    async fn recv<T: tokio_uring::buf::BoundedBufMut>(&self, buf: T) -> tokio_uring::BufResult<usize, T> {
        self.read(buf).await
    }
}

async fn read_requests(
    res: &Rc<Resource>,
    stream: &Stream,
    export: &ExportInfo,
    structured: bool,
    replies: mpsc::UnboundedSender<Outgoing>,
) -> io::Result<()> {
    let inflight = Arc::new(Semaphore::new(limits::NBD_CONNECTION_INFLIGHT_MAX));
    let mut stage = Stage::default();
    // Requests that arrived together are handed to the node together, and
    // what it decided for them runs once the reader is about to wait: the
    // writes of one batch into cold extents then share one activity-log
    // write (`Node::fold_queued_al`). Nothing waits longer for it: the
    // disk and socket operations leave when the loop next parks anyway.
    loop {
        if stage.available() < REQUEST_HEADER_LEN {
            res.run_actions();
        }
        if !stage.fill(stream, REQUEST_HEADER_LEN, None).await? {
            return Ok(());
        }
        let mut hdr = [0u8; REQUEST_HEADER_LEN];
        hdr.copy_from_slice(stage.take(REQUEST_HEADER_LEN));
        let req = Request::decode(&hdr).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let started = std::time::Instant::now();

        if let Err(error) = validate(&req, export, structured) {
            tracing::debug!(resource = %res.name, ?req, error, "NBD request refused");
            res.run_actions();
            skip_payload(&mut stage, stream, u64::from(req.payload_len())).await?;
            let reply = if structured && req.command == Command::Read {
                Outgoing::StructuredError {
                    cookie: req.cookie,
                    error,
                }
            } else {
                Outgoing::Simple {
                    cookie: req.cookie,
                    error,
                }
            };
            let _ = replies.send(reply);
            continue;
        }
        let fua = req.flags & consts::NBD_CMD_FLAG_FUA != 0;
        let kind = match req.command {
            Command::Disc => return Ok(()),
            Command::Read => IoKind::Read,
            Command::Write => IoKind::Write { fua },
            Command::Flush => IoKind::Flush,
            Command::Trim => IoKind::Trim { fua },
            Command::WriteZeroes => IoKind::WriteZeroes {
                fua,
                may_trim: req.flags & consts::NBD_CMD_FLAG_NO_HOLE == 0,
            },
            _ => {
                // validate() refuses what we do not advertise; stay safe anyway.
                let _ = replies.send(Outgoing::Simple {
                    cookie: req.cookie,
                    error: consts::NBD_EINVAL,
                });
                continue;
            }
        };
        let permit = match Arc::clone(&inflight).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // At the limit: what is queued must run for permits to come back.
                res.run_actions();
                Arc::clone(&inflight)
                    .acquire_owned()
                    .await
                    .map_err(|_| io::Error::other("request limiter closed"))?
            }
        };
        let len = req.length as usize;
        let payload = match kind {
            IoKind::Write { .. } => {
                if stage.available() < len {
                    res.run_actions();
                }
                Some(SharedBuf::new(stage.read_block(stream, len, None).await?))
            }
            _ => None,
        };
        let read_buf = matches!(kind, IoKind::Read).then(|| AlignedBuf::with_capacity(READ_HEADROOM + len));
        let io = IoRequest {
            kind,
            offset: req.offset,
            len: if matches!(kind, IoKind::Flush) { 0 } else { req.length },
        };
        res.submit_queued(
            io,
            Pending {
                cookie: req.cookie,
                read_buf,
                replies: replies.clone(),
                is_read: matches!(kind, IoKind::Read),
                structured,
                offset: req.offset,
                len: req.length,
                started,
                _permit: Some(permit),
            },
            payload,
        );
    }
}

async fn skip_payload(stage: &mut Stage, stream: &Stream, n: u64) -> io::Result<()> {
    let have = (stage.available() as u64).min(n);
    stage.take(have as usize);
    discard(stream, n - have).await
}

/// Replies gathered into one `writev` at most.
const REPLY_BATCH_MAX: usize = 64;

/// Serialise replies onto the socket. Everything already queued when the
/// writer wakes leaves in one `writev`: small replies are packed into one
/// buffer, read data is sent from the buffer the disk filled (its header sits
/// in the headroom just before the data), so nothing is copied.
async fn write_replies(stream: Rc<Stream>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    // Lives as long as the connection: a batch allocates nothing once warm.
    let mut iov: Vec<tokio_uring::buf::Slice<WireBuf>> = Vec::with_capacity(REPLY_BATCH_MAX + 1);
    while let Some(first) = rx.recv().await {
        let mut small = AlignedBuf::with_capacity(4096);
        let mut next = Some(first);
        let mut gathered = 0;
        while let Some(out) = next.take() {
            gathered += 1;
            match out {
                Outgoing::Simple { cookie, error } => append(&mut small, &reply::simple_reply(cookie, error)),
                Outgoing::StructuredError { cookie, error } => {
                    append(&mut small, &reply::structured_error(cookie, error, "", true))
                }
                Outgoing::Data {
                    cookie,
                    mut buf,
                    offset,
                    len,
                    structured,
                } => {
                    // Keep reply order: small replies gathered so far go first.
                    if !small.is_empty() {
                        let len = small.len();
                        iov.push(
                            WireBuf::Owned(std::mem::replace(&mut small, AlignedBuf::with_capacity(4096)))
                                .slice(0..len),
                        );
                    }
                    let start = if structured {
                        let h = reply::structured_offset_data_header(cookie, offset, len, true);
                        buf.as_full_mut()[READ_HEADROOM - h.len()..READ_HEADROOM].copy_from_slice(&h);
                        READ_HEADROOM - h.len()
                    } else {
                        let h = reply::simple_reply(cookie, 0);
                        buf.as_full_mut()[READ_HEADROOM - h.len()..READ_HEADROOM].copy_from_slice(&h);
                        READ_HEADROOM - h.len()
                    };
                    iov.push(WireBuf::Owned(buf).slice(start..READ_HEADROOM + len as usize));
                }
            }
            if gathered < REPLY_BATCH_MAX && small.len() + 64 < small.capacity() {
                next = rx.try_recv().ok();
            }
        }
        if !small.is_empty() {
            let len = small.len();
            iov.push(WireBuf::Owned(small).slice(0..len));
        } else {
            small.recycle();
        }
        let (sent, spare) = send_all(&stream, std::mem::take(&mut iov)).await;
        iov = spare;
        if sent.is_err() {
            return drain(rx);
        }
    }
}

fn append(buf: &mut AlignedBuf, bytes: &[u8]) {
    let at = buf.len();
    buf.as_full_mut()[at..at + bytes.len()].copy_from_slice(bytes);
    buf.set_len(at + bytes.len());
}

/// `writev` the slices, finishing any short write, then recycle the buffers;
/// the emptied list comes back for the next batch.
async fn send_all(
    stream: &Stream,
    iov: Vec<tokio_uring::buf::Slice<WireBuf>>,
) -> (io::Result<()>, Vec<tokio_uring::buf::Slice<WireBuf>>) {
    match stream {
        Stream::Tcp(s) => super::sendv::send_all(s, iov).await,
        Stream::Unix(s) => super::sendv::send_all(s, iov).await,
        Stream::TlsTcp(s) => super::sendv::send_all(&**s, iov).await,
        Stream::TlsUnix(s) => super::sendv::send_all(&**s, iov).await,
    }
}

/// The client is gone: keep receiving so that in-flight requests can finish
/// (their writes still reach the disk), and drop their replies.
fn drain(mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    tokio_uring::spawn(async move { while rx.recv().await.is_some() {} });
}
