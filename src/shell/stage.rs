//! Reading framed protocols off a socket: a staging buffer that gathers
//! headers from few large reads, and blocks read straight into the aligned
//! buffer that goes to the disk. Shared by the NBD server and the peer link.

use super::buf::AlignedBuf;
use std::io;
use std::time::Duration;
use tokio_uring::buf::{BoundedBuf, BoundedBufMut};

/// Bytes read from the socket at once into the staging buffer.
pub const STAGE_BYTES: usize = 256 * 1024;

/// A socket that reads into owned buffers.
pub(crate) trait Recv {
    async fn recv<T: BoundedBufMut>(&self, buf: T) -> tokio_uring::BufResult<usize, T>;
}

impl Recv for tokio_uring::net::TcpStream {
    async fn recv<T: BoundedBufMut>(&self, buf: T) -> tokio_uring::BufResult<usize, T> {
        self.read(buf).await
    }
}

impl Recv for tokio_uring::net::UnixStream {
    async fn recv<T: BoundedBufMut>(&self, buf: T) -> tokio_uring::BufResult<usize, T> {
        self.read(buf).await
    }
}

/// One read, bounded by `idle` if given.
async fn read_within<S: Recv, T: BoundedBufMut>(
    stream: &S,
    buf: T,
    idle: Option<Duration>,
) -> io::Result<(io::Result<usize>, T)> {
    match idle {
        None => Ok(stream.recv(buf).await),
        Some(limit) => tokio::time::timeout(limit, stream.recv(buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the other side went silent")),
    }
}

/// Bytes read from the socket and not yet consumed: `buf[start..]`.
pub struct Stage {
    buf: Vec<u8>,
    start: usize,
}

impl Default for Stage {
    fn default() -> Self {
        Stage {
            buf: Vec::with_capacity(STAGE_BYTES),
            start: 0,
        }
    }
}

impl Stage {
    pub fn available(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The unconsumed bytes.
    pub fn peek(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.buf[self.start..self.start + n];
        self.start += n;
        s
    }

    /// Read until at least `want` bytes are available. `Ok(false)` on a clean
    /// end of stream with nothing pending; an end mid-message is an error.
    pub(crate) async fn fill<S: Recv>(&mut self, stream: &S, want: usize, idle: Option<Duration>) -> io::Result<bool> {
        if want > self.buf.capacity() {
            self.buf.reserve(want - self.buf.len());
        }
        while self.available() < want {
            if self.start > 0 {
                self.buf.copy_within(self.start.., 0);
                self.buf.truncate(self.buf.len() - self.start);
                self.start = 0;
            }
            let end = self.buf.len();
            let buf = std::mem::take(&mut self.buf);
            let cap = buf.capacity();
            let (res, b) = read_within(stream, buf.slice(end..cap), idle).await?;
            self.buf = b.into_inner();
            if res? == 0 {
                if self.available() == 0 {
                    return Ok(false);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-message",
                ));
            }
        }
        Ok(true)
    }

    /// A `len`-byte block into an aligned buffer: what is staged already is
    /// copied, the rest is read from the socket straight into place.
    pub(crate) async fn read_block<S: Recv>(
        &mut self,
        stream: &S,
        len: usize,
        idle: Option<Duration>,
    ) -> io::Result<AlignedBuf> {
        let mut buf = AlignedBuf::with_capacity(len);
        let have = self.available().min(len);
        buf.as_full_mut()[..have].copy_from_slice(self.take(have));
        buf.set_len(have);
        let mut filled = have;
        while filled < len {
            let (res, slice) = read_within(stream, buf.slice(filled..len), idle).await?;
            buf = slice.into_inner();
            match res? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed mid-block",
                    ))
                }
                n => filled += n,
            }
        }
        buf.set_len(len);
        Ok(buf)
    }
}
