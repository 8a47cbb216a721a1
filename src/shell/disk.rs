//! The backing disk: a file or block device driven through io_uring.
//!
//! Two descriptors on the same inode: one opened with O_DIRECT for aligned
//! I/O (the data path, no page-cache copy) and one buffered for the odd
//! request that is not sector-aligned. Linux keeps the two coherent: a direct
//! read or write first writes back and invalidates cached pages of its range.

use super::buf::AlignedBuf;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::fs::File;

/// Alignment O_DIRECT needs for offsets and lengths on every common device.
const SECTOR: u64 = 512;

pub struct Disk {
    path: PathBuf,
    direct: File,
    /// The direct descriptor again, for flushes on another thread (the
    /// metadata writes under `disk-timeout`, `shell::meta_worker`).
    for_sync: std::sync::Arc<std::fs::File>,
    buffered: File,
    /// False when the filesystem refused O_DIRECT (tmpfs): both fds are buffered.
    has_direct: bool,
    bytes: u64,
    is_block_device: bool,
}

impl Disk {
    /// Open `path` read-write. Runs inside the io_uring runtime.
    pub fn open(path: &Path) -> io::Result<Disk> {
        let meta = std::fs::metadata(path)?;
        let is_block_device = meta.file_type().is_block_device();
        let buffered = OpenOptions::new().read(true).write(true).open(path)?;
        let (direct, has_direct) = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(path = %path.display(), "O_DIRECT is not supported here; using the page cache");
                (buffered.try_clone()?, false)
            }
            Err(e) => return Err(e),
        };
        let bytes = device_bytes(&buffered, is_block_device)?;
        let for_sync = std::sync::Arc::new(direct.try_clone()?);
        Ok(Disk {
            path: path.to_owned(),
            for_sync,
            direct: File::from_std(direct),
            buffered: File::from_std(buffered),
            has_direct,
            bytes,
            is_block_device,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn file_for(&self, offset: u64, len: usize) -> &File {
        if self.has_direct && offset % SECTOR == 0 && len as u64 % SECTOR == 0 {
            &self.direct
        } else {
            &self.buffered
        }
    }

    /// Read `len` bytes at `offset` into `buf[at..at+len]`.
    pub async fn read(&self, buf: AlignedBuf, at: usize, offset: u64, len: usize) -> (io::Result<()>, AlignedBuf) {
        let mut buf = buf;
        if buf.len() < at {
            buf.set_len(at);
        }
        let mut done = 0;
        while done < len {
            let file = self.file_for(offset + done as u64, len - done);
            let slice = buf.slice(at + done..at + len);
            let (res, slice) = file.read_at(slice, offset + done as u64).await;
            buf = slice.into_inner();
            match res {
                // Reading past the end of a file: the tail reads as zeroes.
                Ok(0) => {
                    buf.as_full_mut()[at + done..at + len].fill(0);
                    done = len;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        buf.set_len(at + len);
        (Ok(()), buf)
    }

    /// Write `buf[at..at+len]` at `offset`; with `fua` the data is durable on return.
    pub async fn write<B: tokio_uring::buf::IoBuf>(
        &self,
        buf: B,
        at: usize,
        offset: u64,
        len: usize,
        fua: bool,
    ) -> (io::Result<()>, B) {
        let file = self.file_for(offset, len);
        let (res, slice) = file.write_all_at(buf.slice(at..at + len), offset).await;
        let buf = slice.into_inner();
        if let Err(e) = res {
            return (Err(e), buf);
        }
        if fua {
            return (self.flush().await, buf);
        }
        (Ok(()), buf)
    }

    /// A descriptor of the disk another thread may flush, before a metadata
    /// write (fdatasync covers every descriptor of the inode, and the
    /// device cache is flushed with it).
    pub fn for_sync(&self) -> std::sync::Arc<std::fs::File> {
        std::sync::Arc::clone(&self.for_sync)
    }

    pub async fn flush(&self) -> io::Result<()> {
        self.direct.sync_data().await
    }

    /// Discard a range. TRIM is advisory: where the storage cannot punch holes
    /// the request succeeds and the data simply stays.
    pub async fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        match self
            .direct
            .fallocate(offset, len, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
            .await
        {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            other => other,
        }
    }

    /// Make a range read back as zeroes, punching a hole when allowed.
    pub async fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool, fua: bool) -> io::Result<()> {
        let mode = if may_trim {
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        match self.direct.fallocate(offset, len, mode).await {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) || e.raw_os_error() == Some(libc::EINVAL) => {
                self.write_zero_buffers(offset, len).await?
            }
            Err(e) => return Err(e),
        }
        if fua {
            self.flush().await?;
        }
        Ok(())
    }

    async fn write_zero_buffers(&self, offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let mut buf = AlignedBuf::zeroed(CHUNK as usize);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            let (res, b) = self.write(buf, 0, offset + done, n as usize, false).await;
            buf = b;
            res?;
            done += n;
        }
        buf.recycle();
        Ok(())
    }

    pub fn is_block_device(&self) -> bool {
        self.is_block_device
    }
}

/// The size of a file, or of a block device (whose metadata says 0).
pub fn device_bytes(file: &std::fs::File, is_block_device: bool) -> io::Result<u64> {
    if is_block_device {
        use std::io::{Seek, SeekFrom};
        let mut f = file;
        let end = f.seek(SeekFrom::End(0))?;
        f.seek(SeekFrom::Start(0))?;
        Ok(end)
    } else {
        Ok(file.metadata()?.len())
    }
}
