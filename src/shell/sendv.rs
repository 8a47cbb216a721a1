//! Gathered sends: many buffers, one `writev`, finishing short writes, and
//! the buffers back to their pool afterwards. Shared by the NBD reply writer
//! and the peer link.

use super::buf::WireBuf;
use std::io;
use tokio_uring::buf::{BoundedBuf, Slice};

/// A socket that can `writev` and `write_all` owned buffers.
pub(crate) trait Writev {
    async fn writev(&self, iov: Vec<Slice<WireBuf>>) -> tokio_uring::BufResult<usize, Vec<Slice<WireBuf>>>;
    async fn write_all(&self, buf: Slice<WireBuf>) -> tokio_uring::BufResult<(), Slice<WireBuf>>;
}

impl Writev for tokio_uring::net::TcpStream {
    async fn writev(&self, iov: Vec<Slice<WireBuf>>) -> tokio_uring::BufResult<usize, Vec<Slice<WireBuf>>> {
        tokio_uring::net::TcpStream::writev(self, iov).await
    }
    async fn write_all(&self, buf: Slice<WireBuf>) -> tokio_uring::BufResult<(), Slice<WireBuf>> {
        tokio_uring::net::TcpStream::write_all(self, buf).await
    }
}

impl Writev for tokio_uring::net::UnixStream {
    async fn writev(&self, iov: Vec<Slice<WireBuf>>) -> tokio_uring::BufResult<usize, Vec<Slice<WireBuf>>> {
        tokio_uring::net::UnixStream::writev(self, iov).await
    }
    async fn write_all(&self, buf: Slice<WireBuf>) -> tokio_uring::BufResult<(), Slice<WireBuf>> {
        tokio_uring::net::UnixStream::write_all(self, buf).await
    }
}

/// Send every slice, in order; a short `writev` is finished slice by slice.
/// The buffers go back to their pool, and the emptied list back to the
/// caller, who reuses it for the next batch.
pub(crate) async fn send_all<S: Writev>(stream: &S, iov: Vec<Slice<WireBuf>>) -> (io::Result<()>, Vec<Slice<WireBuf>>) {
    let total: usize = iov.iter().map(|s| s.bytes_init()).sum();
    let (res, mut iov) = if iov.len() == 1 {
        // One buffer: a plain send, no iovec to build.
        let mut iov = iov;
        let Some(one) = iov.pop() else {
            return (Ok(()), iov);
        };
        let (res, one) = stream.write_all(one).await;
        iov.push(one);
        (res.map(|()| total), iov)
    } else {
        stream.writev(iov).await
    };
    let mut written = match res {
        Ok(n) => n,
        Err(e) => {
            iov.drain(..).for_each(|s| s.into_inner().recycle());
            return (Err(e), iov);
        }
    };
    let mut failed = None;
    for slice in iov.drain(..) {
        let len = slice.bytes_init();
        if written >= len || failed.is_some() {
            written = written.saturating_sub(len);
            slice.into_inner().recycle();
            continue;
        }
        let (begin, end) = (slice.begin() + written, slice.end());
        written = 0;
        let (res, rest) = stream.write_all(slice.into_inner().slice(begin..end)).await;
        rest.into_inner().recycle();
        if let Err(e) = res {
            failed = Some(e);
        }
    }
    (failed.map_or(Ok(()), Err), iov)
}
