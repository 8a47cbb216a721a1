//! The TCP link to the peer: connect or accept, authenticate, exchange UUIDs,
//! then carry frames both ways until the link fails, and try again.
//!
//! With `tls yes` the link runs inside TLS (rustls, see [`super::tls`]):
//! both sides present certificates, each signed by the configured CA and
//! naming its node; the shared-secret exchange then runs inside it too.
//!
//! Of the two nodes, the one whose name sorts first dials and the other
//! listens, so when both come up at once there is still exactly one
//! connection. A listener that accepts a new authenticated connection while
//! an old one lingers replaces it (the dialer restarted).

use super::buf::{AlignedBuf, SharedBuf, WireBuf};
use super::resource::Resource;
use super::sendv::Writev;
use super::stage::{Recv, Stage};
use super::tls::TlsStream;
use crate::core::{Event, UuidReport};
use crate::wire::handshake::{self, Hello, NONCE_BYTES};
use crate::wire::{self, Header, Message, WireError, HEADER_LEN};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_uring::buf::{BoundedBuf, BoundedBufMut, Slice};
use tokio_uring::net::TcpStream;

/// The link's socket: plain TCP, or TCP under TLS.
enum PeerStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl PeerStream {
    async fn send_bytes(&self, bytes: Vec<u8>) -> io::Result<()> {
        match self {
            PeerStream::Plain(s) => s.write_all(bytes).await.0,
            PeerStream::Tls(s) => s.send_plain(&bytes).await,
        }
    }

    fn shutdown(&self) {
        match self {
            PeerStream::Plain(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            PeerStream::Tls(s) => s.shutdown_now(),
        }
    }
}

impl Recv for PeerStream {
    async fn recv<T: BoundedBufMut>(&self, buf: T) -> tokio_uring::BufResult<usize, T> {
        match self {
            PeerStream::Plain(s) => s.read(buf).await,
            PeerStream::Tls(s) => s.recv(buf).await,
        }
    }
}

impl Writev for PeerStream {
    async fn writev(&self, iov: Vec<Slice<WireBuf>>) -> tokio_uring::BufResult<usize, Vec<Slice<WireBuf>>> {
        match self {
            PeerStream::Plain(s) => s.writev(iov).await,
            PeerStream::Tls(s) => s.writev(iov).await,
        }
    }
    async fn write_all(&self, buf: Slice<WireBuf>) -> tokio_uring::BufResult<(), Slice<WireBuf>> {
        match self {
            PeerStream::Plain(s) => Writev::write_all(s, buf).await,
            PeerStream::Tls(s) => s.write_all(buf).await,
        }
    }
}

/// How long authentication and the UUID exchange may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest non-data payload accepted (bitmap messages are the biggest).
const CONTROL_PAYLOAD_MAX: usize = 1 << 20;
/// Frames gathered into one `writev` at most.
const SEND_BATCH_MAX: usize = 64;
/// The buffer small frames are packed into: 64 acks fit.
const HEADS_BYTES: usize = 4096;
/// The writer's encoding scratch is given back above this size.
const FRAME_SCRATCH_KEEP_BYTES: usize = 64 * 1024;

/// One frame on its way to the peer: its header and body, and for `Data`
/// the block, sent from the buffer it already lives in.
pub struct PeerOut {
    /// Encoded by the writer, into the buffer it sends from.
    msg: Message,
    data: Option<(SharedBuf, usize, usize)>,
}

impl PeerOut {
    pub fn message(msg: Message) -> PeerOut {
        PeerOut { msg, data: None }
    }

    pub fn data(msg: Message, buf: SharedBuf, at: usize, len: usize) -> PeerOut {
        PeerOut {
            msg,
            data: Some((buf, at, len)),
        }
    }
}

fn nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    // SAFETY: getrandom writes at most `n.len()` bytes into `n`.
    let got = unsafe { libc::getrandom(n.as_mut_ptr().cast(), n.len(), 0) };
    if got != NONCE_BYTES as isize {
        // Never expected on Linux; a weaker nonce still differs per attempt.
        let t = super::daemon::random_u64();
        n[..8].copy_from_slice(&t.to_ne_bytes());
    }
    n
}

struct Link {
    my_addr: Option<SocketAddr>,
    peer_addr: SocketAddr,
    peer_name: String,
    dialer: bool,
    connect_int: Duration,
    ping_int: Duration,
    ping_timeout: Duration,
    secret: Vec<u8>,
    tls: Option<super::tls::LinkTls>,
}

/// The link's settings; `Ok(None)` for a resource without a peer, an error
/// (for the operator) if its TLS files cannot be used.
fn link_config(res: &Resource) -> Result<Option<Link>, String> {
    let me = res.host.borrow().clone();
    let cfg = res.cfg.borrow();
    let Some(peer) = cfg.peer_of(&me.name) else {
        return Ok(None);
    };
    let n = &cfg.net;
    let tls = if n.tls {
        let (Some(certificate), Some(private_key)) = (n.tls_certificate.as_deref(), n.tls_privkey.as_deref()) else {
            return Err(format!(
                "{}: 'tls yes' needs 'tls-certificate', 'tls-privkey' and 'tls-ca' in the net section",
                res.name
            ));
        };
        let files = super::tls::TlsFiles {
            certificate,
            private_key,
            ca: n.tls_ca.as_deref(),
        };
        let tls = super::tls::link_config(&files).map_err(|e| format!("{}: TLS for the link: {e}", res.name))?;
        super::tls::peer_name(&peer.name).map_err(|e| format!("{}: {e}", res.name))?;
        Some(tls)
    } else {
        None
    };
    let Some(peer_addr) = peer.address else {
        return Ok(None);
    };
    Ok(Some(Link {
        my_addr: me.address,
        peer_addr,
        peer_name: peer.name.clone(),
        dialer: me.name < peer.name,
        connect_int: Duration::from_secs(u64::from(n.connect_int_s.max(1))),
        ping_int: Duration::from_secs(u64::from(n.ping_int_s.max(1))),
        ping_timeout: Duration::from_millis(100 * u64::from(n.ping_timeout_ds.max(1))),
        secret: n.shared_secret.clone().unwrap_or_default().into_bytes(),
        tls,
    }))
}

/// The replication listener. Accepting goes through tokio's epoll reactor:
/// a pending io_uring accept is not cancelled when its future is dropped,
/// so it would keep the port bound after `disconnect` (or a dry run) until
/// the peer happened to dial.
fn listen(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(l)
}

/// A link without a shared secret is refused unless the configuration
/// says `allow-insecure yes;`: whoever reaches the port could otherwise
/// read the disk or write into it.
pub fn require_secret(res: &Resource) -> Result<(), String> {
    let cfg = res.cfg.borrow();
    // Mutual TLS authenticates the peer as well as a secret does.
    if cfg.net.shared_secret.as_deref().is_none_or(str::is_empty) && !cfg.net.allow_insecure && !cfg.net.tls {
        return Err(format!(
            "{}: refusing to connect without a shared-secret: anyone who can reach the replication port could read this disk or write into it. Set 'shared-secret \"...\";' in the net section (the same on both nodes), or 'allow-insecure yes;' to run the link unauthenticated",
            res.name
        ));
    }
    Ok(())
}

/// Start the link task of a two-node resource (no-op if it runs already).
pub fn start(res: &Rc<Resource>) -> io::Result<()> {
    if res.peer_running.get() {
        return Ok(());
    }
    let Some(link) = link_config(res).map_err(io::Error::other)? else {
        return Ok(());
    };
    let listener = if link.dialer {
        None
    } else {
        let addr = link
            .my_addr
            .ok_or_else(|| io::Error::other("no address for this node"))?;
        Some(listen(addr)?)
    };
    if res.cfg.borrow().net.shared_secret.as_deref().is_none_or(str::is_empty) && link.tls.is_none() {
        tracing::warn!(resource = %res.name, "allow-insecure: the peer link is not authenticated; anyone who reaches its address can replicate into this disk or read it");
    }
    res.peer_running.set(true);
    let res = Rc::clone(res);
    tokio_uring::spawn(async move {
        link_loop(&res, &link, listener).await;
        res.peer_running.set(false);
        res.node.borrow_mut().go_standalone();
        res.run_actions();
    });
    Ok(())
}

async fn link_loop(res: &Rc<Resource>, link: &Link, listener: Option<tokio::net::TcpListener>) {
    let first_retry = Duration::from_millis(250).min(link.connect_int);
    let mut backoff = first_retry;
    loop {
        res.node.borrow_mut().connecting();
        res.run_actions();
        let attempt = establish(res, link, listener.as_ref(), false);
        let outcome = tokio::select! {
            _ = res.stop_peer.notified() => return,
            o = attempt => o,
        };
        match outcome {
            Ok((stream, met)) => {
                tracing::info!(resource = %res.name, peer = %link.peer_name, addr = %link.peer_addr, features = met.features, "peer connected");
                if run_link(res, link, stream, met).await {
                    return;
                }
                backoff = first_retry;
            }
            Err(e) => {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted
                ) {
                    tracing::warn!(resource = %res.name, peer = %link.peer_name, "peer link: {e}");
                }
            }
        }
        tokio::select! {
            _ = res.stop_peer.notified() => return,
            _ = tokio::time::sleep(backoff) => {},
        }
        // Retry quickly after a blip, then back off to connect-int.
        backoff = (backoff * 2).min(link.connect_int);
    }
}

/// Dial or accept one connection and run the handshake on it.
async fn establish(
    res: &Rc<Resource>,
    link: &Link,
    listener: Option<&tokio::net::TcpListener>,
    dry_run: bool,
) -> io::Result<(PeerStream, Met)> {
    let stream = match listener {
        None => TcpStream::connect(link.peer_addr).await?,
        Some(l) => {
            let (s, from) = l.accept().await?;
            if from.ip() != link.peer_addr.ip() {
                return Err(io::Error::other(format!(
                    "connection from {from} refused: {} is configured at {}",
                    link.peer_name, link.peer_addr
                )));
            }
            let std = s.into_std()?;
            std.set_nonblocking(false)?;
            TcpStream::from_std(std)
        }
    };
    stream.set_nodelay(true)?;
    let setup = async {
        let stream = match &link.tls {
            None => PeerStream::Plain(stream),
            Some(tls) => PeerStream::Tls(Box::new(secure(link, tls, stream, listener.is_none()).await?)),
        };
        let report = handshake(res, link, &stream, dry_run).await?;
        Ok::<_, io::Error>((stream, report))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, setup)
        .await
        .map_err(|_| io::Error::other("handshake timed out"))?
}

/// The TLS handshake: the dialer is the client. Either way the other
/// side's certificate must be signed by our CA and name the peer.
async fn secure(
    link: &Link,
    tls: &super::tls::LinkTls,
    stream: TcpStream,
    dialer: bool,
) -> io::Result<TlsStream<TcpStream>> {
    let name = super::tls::peer_name(&link.peer_name).map_err(io::Error::other)?;
    let refused = |e: io::Error| {
        let msg = format!(
            "TLS handshake with {} at {} failed: {e}",
            link.peer_name, link.peer_addr
        );
        tracing::error!("{msg}");
        io::Error::other(msg)
    };
    if dialer {
        return TlsStream::client(stream, Arc::clone(&tls.client), name)
            .await
            .map_err(refused);
    }
    let s = TlsStream::server(stream, Arc::clone(&tls.server))
        .await
        .map_err(refused)?;
    let cert = s
        .peer_certificate()
        .ok_or_else(|| refused(io::Error::other("no client certificate")))?;
    if let Err(e) = super::tls::check_names(&cert, &name) {
        s.shutdown().await;
        return Err(refused(io::Error::other(e)));
    }
    Ok(s)
}

/// What the peer says about itself, fetched without connecting for real.
pub struct Peek {
    pub report: UuidReport,
    pub data_bytes: u64,
    /// The peer's out-of-sync runs, `None` if it sent too many to keep.
    pub runs: Option<Vec<(u64, u64)>>,
}

/// Reach the peer once with the dry-run flag: both sides exchange UUIDs,
/// the peer adds its bitmap, and neither acts on anything.
pub async fn peek(res: &Rc<Resource>) -> Result<Peek, String> {
    require_secret(res)?;
    let Some(link) = link_config(res)? else {
        return Err(format!(
            "{}: no peer configured; the resource runs standalone",
            res.name
        ));
    };
    if res.peer_running.get() {
        return Err(format!(
            "{}: the link is already up or connecting ({}); run 'tandemadm disconnect {}' first to ask the peer directly",
            res.name,
            res.node.borrow().cstate(),
            res.name
        ));
    }
    let listener = if link.dialer {
        None
    } else {
        let addr = link.my_addr.ok_or_else(|| "no address for this node".to_owned())?;
        Some(listen(addr).map_err(|e| format!("{}: cannot listen on {addr}: {e}", res.name))?)
    };
    let wait = link.connect_int * 2 + Duration::from_secs(5);
    let attempt = tokio::time::timeout(wait, establish(res, &link, listener.as_ref(), true)).await;
    let (stream, Met { report, data_bytes, .. }) = match attempt {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return Err(format!("{}: could not reach {}: {e}", res.name, link.peer_name)),
        Err(_) => {
            return Err(format!(
                "{}: {} did not connect within {}s (is its link up? 'tandemadm connect {}' there)",
                res.name,
                link.peer_name,
                wait.as_secs(),
                res.name
            ))
        }
    };
    // Bounded: a hostile or huge bitmap only costs us the union count.
    const RUNS_KEPT_MAX: usize = 1 << 22;
    let mut runs = Some(Vec::new());
    let collect = async {
        loop {
            match read_message(&stream).await? {
                Message::Bitmap { runs: more, last } => {
                    if let Some(r) = runs.as_mut() {
                        r.extend(more);
                        if r.len() > RUNS_KEPT_MAX {
                            runs = None;
                        }
                    }
                    if last {
                        return Ok::<(), io::Error>(());
                    }
                }
                other => return Err(io::Error::other(format!("expected the peer's bitmap, got {other:?}"))),
            }
        }
    };
    let got = tokio::time::timeout(HANDSHAKE_TIMEOUT, collect).await;
    stream.shutdown();
    if !matches!(got, Ok(Ok(()))) {
        runs = None;
    }
    Ok(Peek {
        report,
        data_bytes,
        runs,
    })
}

/// `connect --dry-run`: reach the peer once, compare UUIDs, say what a real
/// connect would decide, and change nothing on either node.
pub async fn dry_run(res: &Rc<Resource>) -> Result<String, String> {
    let peek = peek(res).await?;
    let node = res.node.borrow();
    let verdict = node.decide(&peek.report, peek.data_bytes);
    let mut out = verdict.lines.join("\n");
    out.push('\n');
    match (verdict.refuse, verdict.sync) {
        (Some(why), _) => out.push_str(&format!("would refuse the connection: {why}\n")),
        (None, Some(sync)) => {
            out.push_str(&format!("would connect: {}", describe(sync)));
            match (sync, peek.runs.as_ref()) {
                (crate::core::generation::Sync::None, _) => {}
                (crate::core::generation::Sync::SourceFull | crate::core::generation::Sync::TargetFull, _) => {
                    out.push_str(&format!("; {} KiB would move", node.data_bytes() / 1024))
                }
                (_, Some(runs)) => out.push_str(&format!("; {} KiB would move", node.union_weight(runs) * 4)),
                (_, None) => {}
            }
            out.push('\n');
        }
        (None, None) => {}
    }
    out.push_str("dry run: nothing was changed\n");
    Ok(out)
}

fn describe(sync: crate::core::generation::Sync) -> &'static str {
    use crate::core::generation::Sync::*;
    match sync {
        None => "no resync, Connected",
        SourceBitmap => "this node becomes SyncSource (bitmap-based)",
        SourceFull => "this node becomes SyncSource (full sync)",
        TargetBitmap => "this node becomes SyncTarget (bitmap-based)",
        TargetFull => "this node becomes SyncTarget (full sync)",
        SplitBrain { .. } => "split brain",
        Unrelated => "unrelated data",
    }
}

async fn send(stream: &PeerStream, msg: &Message) -> io::Result<()> {
    stream.send_bytes(msg.encode(&[])).await
}

async fn read_exact(stream: &PeerStream, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    while buf.len() < n {
        let have = buf.len();
        let (res, b) = stream.recv(buf.slice(have..n)).await;
        buf = b.into_inner();
        if res? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed the connection",
            ));
        }
    }
    Ok(buf)
}

/// One whole control frame (handshake only).
async fn read_message(stream: &PeerStream) -> io::Result<Message> {
    let h = read_exact(stream, HEADER_LEN).await?;
    let mut hb = [0u8; HEADER_LEN];
    hb.copy_from_slice(&h);
    let header = Header::decode(&hb).map_err(invalid)?;
    if header.length as usize > CONTROL_PAYLOAD_MAX {
        return Err(invalid(WireError::TooLong(header.length)));
    }
    let payload = read_exact(stream, header.length as usize).await?;
    header.check(&hb, &payload).map_err(invalid)?;
    Ok(Message::decode(header.kind, &payload).map_err(invalid)?.0)
}

fn invalid(e: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Refuse: tell the peer why, and return the same reason as our error.
async fn refuse(stream: &PeerStream, reason: String) -> io::Error {
    let _ = send(stream, &Message::Refuse { reason: reason.clone() }).await;
    io::Error::other(reason)
}

/// What the handshake learnt of the peer.
struct Met {
    report: UuidReport,
    /// The size of the peer's data area in bytes.
    data_bytes: u64,
    /// Its hello's feature bits.
    features: u64,
}

async fn handshake(res: &Rc<Resource>, link: &Link, stream: &PeerStream, dry_run: bool) -> io::Result<Met> {
    let mine = Hello {
        version: wire::ProtocolVersion::current() as u8,
        resource: res.name.clone(),
        node: res.host.borrow().name.clone(),
        peer: link.peer_name.clone(),
        data_bytes: res.node.borrow().data_bytes(),
        features: if dry_run {
            handshake::FEATURE_DRY_RUN
        } else {
            handshake::FEATURES
        },
        nonce: nonce(),
    };
    send(stream, &Message::Hello(mine.clone())).await?;
    let theirs = match read_message(stream).await? {
        Message::Hello(h) => h,
        Message::Refuse { reason } => return Err(io::Error::other(format!("peer refused: {reason}"))),
        other => return Err(io::Error::other(format!("expected hello, got {other:?}"))),
    };
    if let Some(reason) = handshake::check_hello(&mine, &theirs) {
        return Err(refuse(stream, reason).await);
    }
    send(
        stream,
        &Message::Auth {
            mac: handshake::prove(&link.secret, &mine, &theirs),
        },
    )
    .await?;
    match read_message(stream).await? {
        Message::Auth { mac } if handshake::verify(&link.secret, &mine, &theirs, &mac) => {}
        Message::Auth { .. } => {
            let reason = format!(
                "peer {} at {} failed authentication: wrong shared secret",
                theirs.node, link.peer_addr
            );
            tracing::error!(resource = %res.name, "{reason}");
            return Err(refuse(stream, format!("{} refuses: wrong shared secret", mine.node)).await);
        }
        Message::Refuse { reason } => return Err(io::Error::other(format!("peer refused: {reason}"))),
        other => return Err(io::Error::other(format!("expected auth, got {other:?}"))),
    }
    send(stream, &Message::AuthOk).await?;
    match read_message(stream).await? {
        Message::AuthOk => {}
        Message::Refuse { reason } => return Err(io::Error::other(format!("peer refused: {reason}"))),
        other => return Err(io::Error::other(format!("expected auth-ok, got {other:?}"))),
    }
    let me = res.node.borrow().uuid_report(res.discard_my_data.get());
    send(stream, &me.to_message()).await?;
    match read_message(stream).await? {
        msg @ Message::Uuids { .. } => {
            if theirs.features & handshake::FEATURE_DRY_RUN != 0 && !dry_run {
                // The peer only previews a connect: answer with our bitmap
                // too (so it can count what a resync would move), then act
                // on nothing.
                let runs = res.node.borrow().bitmap_runs();
                let mut chunks = runs.chunks(wire::BITMAP_RUNS_PER_MESSAGE).peekable();
                loop {
                    let c = chunks.next().unwrap_or(&[]);
                    let last = chunks.peek().is_none();
                    send(stream, &Message::Bitmap { runs: c.to_vec(), last }).await?;
                    if last {
                        break;
                    }
                }
                tracing::info!(resource = %res.name, peer = %theirs.node, "dry-run connect from the peer answered; nothing changes");
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "dry run"));
            }
            let report = UuidReport::from_message(&msg).ok_or_else(|| io::Error::other("uuids"))?;
            Ok(Met {
                report,
                data_bytes: theirs.data_bytes,
                features: theirs.features,
            })
        }
        Message::Refuse { reason } => Err(io::Error::other(format!("peer refused: {reason}"))),
        other => Err(io::Error::other(format!("expected uuids, got {other:?}"))),
    }
}

/// Run an established link. Returns true if the operator (or a split brain)
/// asked for the link to stay down.
async fn run_link(res: &Rc<Resource>, link: &Link, stream: PeerStream, met: Met) -> bool {
    let stream = Rc::new(stream);
    let (tx, rx) = mpsc::unbounded_channel();
    *res.peer_tx.borrow_mut() = Some(tx.clone());
    res.discard_my_data.set(false);
    let writer = tokio_uring::spawn(write_loop(Rc::clone(&stream), rx));
    let ping_int = link.ping_int;
    let pinger_tx = tx.clone();
    let pinger = tokio_uring::spawn(async move {
        loop {
            tokio::time::sleep(ping_int).await;
            if pinger_tx.send(PeerOut::message(Message::Ping)).is_err() {
                return;
            }
        }
    });
    drop(tx);
    // The resync controller's clock: fine while blocks are moving, coarse
    // otherwise (it then learns the application's latency without them).
    let ticker_res = Rc::clone(res);
    // What the application did while the link was down says nothing about
    // its latency with a peer.
    res.app_latency.take();
    let ticker = tokio_uring::spawn(async move {
        const TICK: Duration = Duration::from_millis(10);
        let mut last = std::time::Instant::now();
        loop {
            let idle = !ticker_res.node.borrow().resync_active();
            tokio::time::sleep(if idle { TICK * 10 } else { TICK }).await;
            let now = std::time::Instant::now();
            let elapsed_us = now.duration_since(last).as_micros() as u64;
            last = now;
            let latency = ticker_res.app_latency.take();
            ticker_res.event(Event::Tick { elapsed_us, latency });
        }
    });
    res.event(Event::PeerConnected {
        peer: met.report,
        peer_data_bytes: met.data_bytes,
        peer_features: met.features,
    });
    let idle = link.ping_int + link.ping_timeout;
    let stopped = tokio::select! {
        _ = res.stop_peer.notified() => true,
        // The node logged why (a peer that completes nothing).
        _ = res.reset_link.notified() => false,
        r = read_loop(res, &stream, idle) => {
            if let Err(e) = r {
                tracing::warn!(resource = %res.name, peer = %link.peer_name, "peer link lost: {e}");
            }
            false
        }
    };
    pinger.abort();
    ticker.abort();
    *res.peer_tx.borrow_mut() = None;
    res.forget_link_timings();
    stream.shutdown();
    let _ = writer.await;
    res.event(Event::PeerDisconnected {
        fresh_uuid: super::daemon::random_u64(),
    });
    stopped
}

const DATA_BODY_LEN: usize = 24;

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    (u64::from(be32(&b[0..4])) << 32) | u64::from(be32(&b[4..8]))
}

/// A frame whose payload is a fixed `B`-byte body and then a block (`Data`,
/// `ReadReply`): the block goes straight into an aligned buffer, and the crc
/// over header, body and block is checked before either is returned, so a
/// corrupted block is never applied. `block_len` says, from the body, how
/// long the block must be; any other length is malformed.
async fn read_block_frame<const B: usize>(
    stage: &mut Stage,
    stream: &PeerStream,
    hb: &[u8; HEADER_LEN],
    header: &Header,
    idle: Duration,
    what: &'static str,
    block_len: impl Fn(&[u8; B]) -> usize,
) -> io::Result<([u8; B], Option<AlignedBuf>)> {
    need(stage, stream, HEADER_LEN + B, idle).await?;
    let mut body = [0u8; B];
    body.copy_from_slice(&stage.take(HEADER_LEN + B)[HEADER_LEN..]);
    let data_len = header.length as usize - B;
    if data_len != block_len(&body) {
        return Err(invalid(WireError::Malformed(what)));
    }
    let block = if data_len > 0 {
        Some(stage.read_block(stream, data_len, Some(idle)).await?)
    } else {
        None
    };
    let mut crc = crc32c::crc32c_append(crc32c::crc32c(&hb[..12]), &body);
    if let Some(b) = &block {
        crc = crc32c::crc32c_append(crc, b.as_slice());
    }
    if crc != header.crc {
        return Err(invalid(WireError::BadCrc {
            stored: header.crc,
            computed: crc,
        }));
    }
    Ok((body, block))
}

/// Fill the stage or fail: on the peer link every end of stream is a loss.
async fn need(stage: &mut Stage, stream: &PeerStream, want: usize, idle: Duration) -> io::Result<()> {
    if stage.fill(stream, want, Some(idle)).await? {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "peer closed the connection",
        ))
    }
}

async fn read_loop(res: &Rc<Resource>, stream: &PeerStream, idle: Duration) -> io::Result<()> {
    let mut stage = Stage::default();
    // Data frames that arrived together are handed to the node together,
    // and what it decided runs once the reader is about to wait (as the NBD
    // reader does): their writes into cold extents share one activity-log
    // write. Every other frame runs the queue with its own event.
    loop {
        // Backpressure: a peer that sends faster than our disk completes
        // waits in its socket buffer, not in our memory.
        while res.node.borrow().peer_backlog() >= crate::core::limits::PEER_BACKLOG_MAX {
            res.run_actions();
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        if stage.available() < HEADER_LEN {
            res.run_actions();
        }
        need(&mut stage, stream, HEADER_LEN, idle).await?;
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&stage.peek()[..HEADER_LEN]);
        let header = Header::decode(&hb).map_err(invalid)?;
        let length = header.length as usize;
        if stage.available() < HEADER_LEN + length {
            res.run_actions();
        }
        if header.kind == wire::kind::DATA && length >= DATA_BODY_LEN {
            let (body, block) =
                read_block_frame::<DATA_BODY_LEN>(&mut stage, stream, &hb, &header, idle, "data", |b| {
                    let (len, flags) = (be32(&b[16..20]), be32(&b[20..24]));
                    if wire::data_has_payload(flags) {
                        len as usize
                    } else {
                        0
                    }
                })
                .await
                .inspect_err(
                    |e| tracing::error!(resource = %res.name, error = %e, "bad data frame; resetting the link"),
                )?;
            let (seq, offset) = (be64(&body[0..8]), be64(&body[8..16]));
            let (len, flags) = (be32(&body[16..20]), be32(&body[20..24]));
            res.peer_write(seq, offset, len, flags, block.map(SharedBuf::new));
            continue;
        }
        if header.kind == wire::kind::READ_REPLY && length >= wire::READ_REPLY_BODY_LEN {
            let (body, block) = read_block_frame::<{ wire::READ_REPLY_BODY_LEN }>(
                &mut stage,
                stream,
                &hb,
                &header,
                idle,
                "read reply",
                |b| {
                    if be32(&b[8..12]) == 0 {
                        be32(&b[12..16]) as usize
                    } else {
                        0
                    }
                },
            )
            .await
            .inspect_err(|e| tracing::error!(resource = %res.name, error = %e, "bad read reply; resetting the link"))?;
            res.peer_read_reply(be64(&body[0..8]), be32(&body[8..12]), be32(&body[12..16]), block);
            continue;
        }
        if length > CONTROL_PAYLOAD_MAX {
            return Err(invalid(WireError::TooLong(header.length)));
        }
        need(&mut stage, stream, HEADER_LEN + length, idle).await?;
        let decoded = wire::decode_frame(stage.take(HEADER_LEN + length)).map_err(invalid)?;
        let Some((msg, _, _)) = decoded else { continue };
        let event = match msg {
            Message::DataAck { seq, disk_us, .. } => {
                res.ack_timing(seq, disk_us);
                Event::from_peer(msg)
            }
            Message::Ping => {
                if let Some(tx) = res.peer_tx.borrow().as_ref() {
                    let _ = tx.send(PeerOut::message(Message::PingAck));
                }
                continue;
            }
            Message::PingAck => continue,
            Message::Refuse { reason } => return Err(io::Error::other(format!("peer dropped the link: {reason}"))),
            other => Event::from_peer(other),
        };
        let event =
            event.map_err(|other| io::Error::other(format!("unexpected message on an established link: {other:?}")))?;
        res.event(event);
    }
}

/// Everything queued leaves in one `writev`: headers packed together, blocks
/// from the buffers they live in. Frames are encoded here, into a scratch
/// buffer, and their few dozen bytes of header and body packed into the
/// buffer they leave from; the iovec list and the scratch live as long as
/// the link and the buffers come from the pool, so once warm a frame costs
/// no allocation.
async fn write_loop(stream: Rc<PeerStream>, mut rx: mpsc::UnboundedReceiver<PeerOut>) {
    let mut iov: Vec<tokio_uring::buf::Slice<WireBuf>> = Vec::with_capacity(2 * SEND_BATCH_MAX + 1);
    let mut frame: Vec<u8> = Vec::with_capacity(HEADS_BYTES);
    while let Some(first) = rx.recv().await {
        let mut heads = AlignedBuf::with_capacity(HEADS_BYTES);
        let mut next = Some(first);
        let mut n = 0;
        while let Some(out) = next.take() {
            n += 1;
            frame.clear();
            let block = match &out.data {
                Some((buf, at, len)) => &buf.as_slice()[*at..*at + *len],
                None => &[],
            };
            out.msg.encode_into(block, &mut frame);
            if heads.len() + frame.len() > heads.capacity() {
                let len = heads.len();
                let full = std::mem::replace(&mut heads, AlignedBuf::with_capacity(frame.len().max(HEADS_BYTES)));
                if len > 0 {
                    iov.push(WireBuf::Owned(full).slice(0..len));
                } else {
                    full.recycle();
                }
            }
            let at = heads.len();
            heads.as_full_mut()[at..at + frame.len()].copy_from_slice(&frame);
            heads.set_len(at + frame.len());
            if let Some((buf, start, len)) = out.data {
                let hl = heads.len();
                let full = std::mem::replace(&mut heads, AlignedBuf::with_capacity(HEADS_BYTES));
                iov.push(WireBuf::Owned(full).slice(0..hl));
                iov.push(WireBuf::Shared(buf).slice(start..start + len));
            }
            if n < SEND_BATCH_MAX {
                next = rx.try_recv().ok();
            }
        }
        if frame.capacity() > FRAME_SCRATCH_KEEP_BYTES {
            // A bitmap at connect: not worth keeping for the link's life.
            frame = Vec::with_capacity(HEADS_BYTES);
        }
        if heads.is_empty() {
            heads.recycle();
        } else {
            let len = heads.len();
            iov.push(WireBuf::Owned(heads).slice(0..len));
        }
        let (sent, spare) = super::sendv::send_all(&*stream, std::mem::take(&mut iov)).await;
        iov = spare;
        if sent.is_err() {
            while rx.recv().await.is_some() {}
            return;
        }
    }
}
