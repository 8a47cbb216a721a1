//! TLS over the io_uring sockets, for the replication link and for NBD's
//! STARTTLS: rustls's connection state machine, fed by our own reads and
//! writes, so the framing code above keeps its owned-buffer I/O and only
//! sees a stream that implements [`Recv`] and [`Writev`].
//!
//! Certificates are X.509 in PEM files. On the link both sides present one
//! and check the other's against the configured CA, and each checks that
//! the other's certificate names the peer it expects (its node name as a
//! DNS subject alternative name), so a certificate stolen from one pair
//! does not open another.

use super::buf::WireBuf;
use super::sendv::Writev;
use super::stage::Recv;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use tokio_uring::buf::{BoundedBufMut, Slice};

/// Ciphertext read from the socket at once.
const TLS_READ_BYTES: usize = 64 * 1024;
/// Plaintext handed to rustls before its ciphertext is sent, at most: what
/// a connection holds encrypted and unsent stays bounded.
const TLS_WRITE_CHUNK: usize = 256 * 1024;

/// A socket under TLS: reads into and writes from plain byte vectors.
pub(crate) trait RawSocket: Recv {
    async fn send_vec(&self, buf: Vec<u8>) -> tokio_uring::BufResult<(), Vec<u8>>;
    fn shutdown_both(&self);
}

impl RawSocket for tokio_uring::net::TcpStream {
    async fn send_vec(&self, buf: Vec<u8>) -> tokio_uring::BufResult<(), Vec<u8>> {
        self.write_all(buf).await
    }
    fn shutdown_both(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

impl RawSocket for tokio_uring::net::UnixStream {
    async fn send_vec(&self, buf: Vec<u8>) -> tokio_uring::BufResult<(), Vec<u8>> {
        self.write_all(buf).await
    }
    fn shutdown_both(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

pub(crate) struct TlsStream<S> {
    inner: S,
    conn: RefCell<rustls::Connection>,
    /// Plaintext rustls has decrypted, copied out from here.
    scratch: RefCell<Vec<u8>>,
    /// Ciphertext read from the socket, and how much of it rustls took:
    /// it is fed only as fast as the plaintext is drained, because rustls
    /// refuses more once its plaintext buffer is full.
    cipher: RefCell<(Vec<u8>, usize)>,
    /// One writer at a time: ciphertext must leave in the order rustls
    /// made it (the read side may have to answer a key update while the
    /// write loop sends).
    write_lock: tokio::sync::Mutex<()>,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

impl<S: RawSocket> TlsStream<S> {
    /// Connect as the client and complete the handshake.
    pub async fn client(inner: S, config: Arc<rustls::ClientConfig>, name: ServerName<'static>) -> io::Result<Self> {
        let conn = rustls::ClientConnection::new(config, name).map_err(tls_error)?;
        Self::handshake(inner, conn.into()).await
    }

    /// Accept as the server and complete the handshake.
    pub async fn server(inner: S, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let conn = rustls::ServerConnection::new(config).map_err(tls_error)?;
        Self::handshake(inner, conn.into()).await
    }

    async fn handshake(inner: S, mut conn: rustls::Connection) -> io::Result<Self> {
        // Encrypted and unsent data is bounded by TLS_WRITE_CHUNK instead.
        conn.set_buffer_limit(None);
        let s = TlsStream {
            inner,
            conn: RefCell::new(conn),
            scratch: RefCell::new(vec![0u8; TLS_READ_BYTES]),
            cipher: RefCell::new((Vec::new(), 0)),
            write_lock: tokio::sync::Mutex::new(()),
        };
        loop {
            let (handshaking, wants_write) = {
                let c = s.conn.borrow();
                (c.is_handshaking(), c.wants_write())
            };
            if wants_write {
                s.flush().await?;
                continue;
            }
            if !handshaking {
                return Ok(s);
            }
            if !s.read_tls().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the other side closed the connection during the TLS handshake",
                ));
            }
        }
    }

    /// The certificate the other side presented, if any.
    pub fn peer_certificate(&self) -> Option<CertificateDer<'static>> {
        self.conn
            .borrow()
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
    }

    /// Send whatever ciphertext rustls has ready.
    async fn flush(&self) -> io::Result<()> {
        let _one_writer = self.write_lock.lock().await;
        loop {
            let mut out = Vec::new();
            {
                let mut c = self.conn.borrow_mut();
                while c.wants_write() {
                    c.write_tls(&mut out)?;
                }
            }
            if out.is_empty() {
                return Ok(());
            }
            self.inner.send_vec(out).await.0?;
        }
    }

    /// Decrypt some ciphertext: what is pending, or else what one read from
    /// the socket brings. `Ok(false)` at end of stream.
    async fn read_tls(&self) -> io::Result<bool> {
        let pending = {
            let c = self.cipher.borrow();
            c.0.len() > c.1
        };
        if !pending {
            let (res, buf) = self.inner.recv(Vec::with_capacity(TLS_READ_BYTES)).await;
            if res? == 0 {
                return Ok(false);
            }
            *self.cipher.borrow_mut() = (buf, 0);
        }
        let fed = {
            let mut conn = self.conn.borrow_mut();
            let mut cipher = self.cipher.borrow_mut();
            let (buf, at) = &mut *cipher;
            let mut rest = &buf[*at..];
            let before = rest.len();
            let r = conn
                .read_tls(&mut rest)
                .and_then(|_| conn.process_new_packets().map(|_| ()).map_err(tls_error));
            *at += before - rest.len();
            r
        };
        if let Err(e) = fed {
            // Tell the other side why (an alert), if the socket still works.
            let _ = self.flush().await;
            return Err(e);
        }
        if self.conn.borrow().wants_write() {
            self.flush().await?;
        }
        Ok(true)
    }

    /// Encrypt and send `bytes`.
    pub async fn send_plain(&self, bytes: &[u8]) -> io::Result<()> {
        for chunk in bytes.chunks(TLS_WRITE_CHUNK) {
            self.conn.borrow_mut().writer().write_all(chunk)?;
            self.flush().await?;
        }
        Ok(())
    }

    /// Say goodbye (close_notify) and shut the socket.
    pub async fn shutdown(&self) {
        self.conn.borrow_mut().send_close_notify();
        let _ = self.flush().await;
        self.inner.shutdown_both();
    }

    /// Shut the socket at once (another task may be reading or writing).
    pub fn shutdown_now(&self) {
        self.inner.shutdown_both();
    }
}

impl<S: RawSocket> Recv for TlsStream<S> {
    async fn recv<T: BoundedBufMut>(&self, mut buf: T) -> tokio_uring::BufResult<usize, T> {
        loop {
            let got = {
                let mut c = self.conn.borrow_mut();
                let mut scratch = self.scratch.borrow_mut();
                let want = buf.bytes_total().min(scratch.len());
                match c.reader().read(&mut scratch[..want]) {
                    Ok(n) => {
                        buf.put_slice(&scratch[..n]);
                        Some(Ok(n))
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(e) => Some(Err(e)),
                }
            };
            if let Some(r) = got {
                return (r, buf);
            }
            match self.read_tls().await {
                Ok(true) => {}
                Ok(false) => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
        }
    }
}

impl<S: RawSocket> Writev for TlsStream<S> {
    async fn writev(&self, iov: Vec<Slice<WireBuf>>) -> tokio_uring::BufResult<usize, Vec<Slice<WireBuf>>> {
        let mut total = 0;
        let mut pending = 0;
        for s in &iov {
            let bytes: &[u8] = s;
            if let Err(e) = self.conn.borrow_mut().writer().write_all(bytes) {
                return (Err(e), iov);
            }
            total += bytes.len();
            pending += bytes.len();
            if pending >= TLS_WRITE_CHUNK {
                pending = 0;
                if let Err(e) = self.flush().await {
                    return (Err(e), iov);
                }
            }
        }
        (self.flush().await.map(|()| total), iov)
    }

    async fn write_all(&self, buf: Slice<WireBuf>) -> tokio_uring::BufResult<(), Slice<WireBuf>> {
        let r = self.send_plain(&buf).await;
        (r, buf)
    }
}

// ------------------------------------------------------------ configuration

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

fn roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut store = rustls::RootCertStore::empty();
    for c in certificates(path)? {
        store
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(Arc::new(store))
}

/// Certificate, key and CA of one side.
#[derive(Debug, Clone)]
pub struct TlsFiles<'a> {
    pub certificate: &'a Path,
    pub private_key: &'a Path,
    /// Whose certificates to accept from the other side; `None`: none asked.
    pub ca: Option<&'a Path>,
}

/// Both halves of a link's TLS: the dialer is the client, the listener the
/// server, and each demands the other's certificate.
#[derive(Clone)]
pub struct LinkTls {
    pub client: Arc<rustls::ClientConfig>,
    pub server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkTls")
    }
}

pub fn link_config(files: &TlsFiles<'_>) -> Result<LinkTls, String> {
    let ca = files
        .ca
        .ok_or_else(|| "tls yes needs tls-ca (the CA that signed the peer's certificate)".to_owned())?;
    let roots = roots(ca)?;
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(Arc::clone(&roots))
        .with_client_auth_cert(certificates(files.certificate)?, private_key(files.private_key)?)
        .map_err(|e| format!("{}: {e}", files.certificate.display()))?;
    let server = server_config(files, Some(roots))?;
    Ok(LinkTls {
        client: Arc::new(client),
        server,
    })
}

/// A server's configuration; with `client_roots`, clients must present a
/// certificate signed by one of them.
fn server_config(
    files: &TlsFiles<'_>,
    client_roots: Option<Arc<rustls::RootCertStore>>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_roots {
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("client certificate verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certificates(files.certificate)?, private_key(files.private_key)?)
        .map_err(|e| format!("{}: {e}", files.certificate.display()))?;
    Ok(Arc::new(config))
}

/// NBD's server side: client certificates are demanded only with a CA.
pub fn nbd_config(files: &TlsFiles<'_>) -> Result<Arc<rustls::ServerConfig>, String> {
    let client_roots = files.ca.map(roots).transpose()?;
    server_config(files, client_roots)
}

/// The name the peer's certificate must carry.
pub fn peer_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| format!("node name '{name}' cannot be matched against a certificate (not a DNS name)"))
}

/// The client's certificate must name the peer we expect (the server's is
/// checked by rustls against the name we dialled).
pub fn check_names(cert: &CertificateDer<'_>, name: &ServerName<'_>) -> Result<(), String> {
    let parsed =
        rustls::server::ParsedCertificate::try_from(cert).map_err(|e| format!("unreadable certificate: {e}"))?;
    rustls::client::verify_server_name(&parsed, name)
        .map_err(|e| format!("its certificate is not issued to {}: {e}", name.to_str()))
}
