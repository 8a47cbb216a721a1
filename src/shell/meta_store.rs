//! Reads and writes the [`crate::meta`] formats on the metadata device.
//!
//! Metadata I/O is rare (attach, role changes, detach, activity-log
//! transactions) and must be durable before the state change it records is
//! reported, so it uses plain positioned syscalls plus fdatasync rather than
//! the data path's ring.

use crate::config::{self, MetaDisk};
use crate::core::AttachInfo;
use crate::meta::{self, Divergence, GenerationUuids, Layout, MdFlags, MetaError, Superblock};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MetaStoreError {
    #[error("cannot access {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Meta { path: PathBuf, source: MetaError },
    #[error("no valid Tandem metadata on {}; create it with 'tandemadm create-md {resource}'", path.display())]
    Missing { path: PathBuf, resource: String },
    #[error("valid metadata already exists on {} ({detail}); refusing to overwrite it without --force", path.display())]
    Exists { path: PathBuf, detail: String },
}

/// The open metadata of an attached resource.
pub struct MetaStore {
    file: File,
    path: PathBuf,
    sb: Superblock,
    layout: Layout,
    sync: bool,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MetaStoreError + '_ {
    move |source| MetaStoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn device_bytes(path: &Path) -> Result<u64, MetaStoreError> {
    let f = File::open(path).map_err(io_err(path))?;
    let is_block = f.metadata().map_err(io_err(path))?.file_type().is_block_device();
    super::disk::device_bytes(&f, is_block).map_err(io_err(path))
}

/// Where the metadata lives and how it is laid out, from the config and the
/// current sizes of the devices.
fn layout_for(res: &config::Resource, host: &config::Host) -> Result<(PathBuf, Layout), MetaStoreError> {
    let mut data_bytes = device_bytes(&host.disk)?;
    if let Some(limit) = res.disk.size_bytes {
        data_bytes = data_bytes.min(limit);
    }
    let ring = meta::AL_RING_BLOCKS_DEFAULT;
    match &host.meta_disk {
        MetaDisk::Internal => {
            let layout = Layout::internal(data_bytes, ring).map_err(|source| MetaStoreError::Meta {
                path: host.disk.clone(),
                source,
            })?;
            Ok((host.disk.clone(), layout))
        }
        MetaDisk::External(path) => {
            let md_bytes = match device_bytes(path) {
                Ok(b) => b,
                Err(MetaStoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(e),
            };
            let layout = Layout::external(
                data_bytes,
                md_bytes.max(Layout::required_external_bytes(data_bytes, ring)),
                ring,
            )
            .map_err(|source| MetaStoreError::Meta {
                path: path.clone(),
                source,
            })?;
            Ok((path.clone(), layout))
        }
    }
}

fn read_block(file: &File, offset: u64) -> io::Result<Vec<u8>> {
    let mut block = vec![0u8; meta::BLOCK_BYTES];
    let mut done = 0;
    while done < block.len() {
        match file.read_at(&mut block[done..], offset + done as u64)? {
            0 => break, // beyond the end of a short file: reads as zeroes
            n => done += n,
        }
    }
    Ok(block)
}

fn read_superblock(file: &File, path: &Path, layout: &Layout) -> Result<Superblock, MetaError> {
    let a = read_block(file, layout.superblock_offsets[0]).map_err(|e| MetaError::Io(e.to_string()))?;
    let b = read_block(file, layout.superblock_offsets[1]).map_err(|e| MetaError::Io(e.to_string()))?;
    let (sb, report) = meta::read_superblock([&a, &b])?;
    if let Some(warning) = report.warning() {
        tracing::warn!(path = %path.display(), "{warning}");
    }
    Ok(sb)
}

/// The superblock, with "none there" told apart from "there but broken".
fn load_superblock(file: &File, path: &Path, layout: &Layout, resource: &str) -> Result<Superblock, MetaStoreError> {
    match read_superblock(file, path, layout) {
        Ok(sb) => Ok(sb),
        Err(MetaError::NoMetadata) => Err(MetaStoreError::Missing {
            path: path.to_owned(),
            resource: resource.to_owned(),
        }),
        Err(source) => Err(MetaStoreError::Meta {
            path: path.to_owned(),
            source,
        }),
    }
}

impl MetaStore {
    /// Read and verify the metadata of `host`, for attach.
    pub fn open(res: &config::Resource, host: &config::Host) -> Result<(MetaStore, AttachInfo), MetaStoreError> {
        let (path, layout) = layout_for(res, host)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let sb = load_superblock(&file, &path, &layout, &res.name)?;
        if let Err(source) = sb.check_layout(&layout) {
            return Err(MetaStoreError::Meta { path, source });
        }
        let info = AttachInfo {
            data_bytes: sb.data_bytes,
            uuids: sb.uuids,
            flags: sb.flags,
            divergence: sb.divergence,
        };
        let mut store = MetaStore {
            file,
            path,
            sb,
            layout,
            sync: res.disk.md_flushes,
        };
        // Attached and not cleanly detached until proven otherwise.
        let mut flags = store.sb.flags;
        flags.remove(MdFlags::AL_CLEAN);
        store
            .update(store.sb.uuids, flags)
            .map_err(io_err(&store.path.clone()))?;
        Ok((store, info))
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Write a new superblock generation into the other slot, durably.
    pub fn update(&mut self, uuids: GenerationUuids, flags: MdFlags) -> io::Result<()> {
        let divergence = self.sb.divergence;
        self.update_with(uuids, flags, divergence)
    }

    /// [`MetaStore::update`], with the divergence times too.
    pub fn update_with(&mut self, uuids: GenerationUuids, flags: MdFlags, divergence: Divergence) -> io::Result<()> {
        self.sb.divergence = divergence;
        self.sb.seq += 1;
        self.sb.uuids = uuids;
        self.sb.flags = flags;
        let block = self.sb.encode();
        let slot = meta::slot_for_seq(self.sb.seq);
        self.file
            .write_all_at(&block[..], self.layout.superblock_offsets[slot])?;
        if self.sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// One 4 KiB page of the on-disk bitmap.
    pub fn read_bitmap_page(&self, page: u64) -> io::Result<Vec<u8>> {
        read_block(&self.file, self.layout.bitmap_offset + page * meta::BLOCK_BYTES as u64)
    }

    /// Write bitmap pages, then make them durable once.
    pub fn write_bitmap_pages(&mut self, pages: &[(u64, Box<[u8; 4096]>)]) -> io::Result<()> {
        for (page, bytes) in pages {
            let offset = self.layout.bitmap_offset + page * meta::BLOCK_BYTES as u64;
            if offset + meta::BLOCK_BYTES as u64 > self.layout.bitmap_offset + self.layout.bitmap_bytes {
                continue;
            }
            self.file.write_all_at(&bytes[..], offset)?;
        }
        if self.sync && !pages.is_empty() {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Make one activity-log transaction durable: each block in its ring
    /// slot, then one flush for them all.
    pub fn write_al(&mut self, blocks: &[meta::al::AlTransaction]) -> io::Result<()> {
        for tr in blocks {
            let slot = tr.tr_number % u64::from(self.layout.al_blocks.max(1));
            self.file.write_all_at(
                &tr.encode()[..],
                self.layout.al_offset + slot * meta::BLOCK_BYTES as u64,
            )?;
        }
        self.file.sync_data()
    }

    /// Read the whole ring back (attach after a crash).
    pub fn read_al(&self) -> io::Result<meta::al::AlRecovery> {
        let mut blocks = Vec::with_capacity(self.layout.al_blocks as usize);
        for i in 0..u64::from(self.layout.al_blocks) {
            blocks.push(read_block(
                &self.file,
                self.layout.al_offset + i * meta::BLOCK_BYTES as u64,
            )?);
        }
        let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
        Ok(meta::al::recover_hot_extents(&refs))
    }

    /// Clean detach: the activity log holds nothing that needs replaying.
    pub fn mark_clean(&mut self) -> io::Result<()> {
        let mut flags = self.sb.flags;
        flags.insert(MdFlags::AL_CLEAN);
        flags.remove(MdFlags::PRIMARY_IND);
        self.update(self.sb.uuids, flags)?;
        self.file.sync_all()
    }
}

/// `tandemadm create-md`: fresh metadata, refusing to overwrite valid metadata
/// unless forced.
pub fn create_md(
    res: &config::Resource,
    host: &config::Host,
    force: bool,
    node: &str,
) -> Result<String, MetaStoreError> {
    let (path, layout) = layout_for(res, host)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(matches!(host.meta_disk, MetaDisk::External(_)))
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    match read_superblock(&file, &path, &layout) {
        Ok(sb) if !force => {
            return Err(MetaStoreError::Exists {
                path,
                detail: format!(
                    "current UUID {:016X}, {} bytes of data",
                    sb.uuids.current, sb.data_bytes
                ),
            })
        }
        _ => {}
    }
    if let MetaDisk::External(_) = host.meta_disk {
        let need = layout.md_offset + layout.md_bytes;
        if file.metadata().map_err(io_err(&path))?.len() < need
            && !file.metadata().map_err(io_err(&path))?.file_type().is_block_device()
        {
            file.set_len(need).map_err(io_err(&path))?;
        }
    }
    // Zero the activity log and the bitmap so nothing stale is trusted.
    zero_range(
        &file,
        layout.al_offset,
        u64::from(layout.al_blocks) * meta::BLOCK_BYTES as u64,
    )
    .map_err(io_err(&path))?;
    zero_range(&file, layout.bitmap_offset, layout.bitmap_bytes).map_err(io_err(&path))?;
    let sb = Superblock::new(
        &layout,
        GenerationUuids::new_created(),
        res.disk.al_extents,
        node,
        &res.name,
    );
    // Write both slots: slot A holds seq 0... the newer one wins on read.
    for (i, offset) in layout.superblock_offsets.iter().enumerate() {
        let mut s = sb.clone();
        s.seq = i as u64;
        file.write_all_at(&s.encode()[..], *offset).map_err(io_err(&path))?;
    }
    file.sync_all().map_err(io_err(&path))?;
    Ok(format!(
        "{}: new metadata written to {} ({}); exported size {} bytes ({} MiB)",
        res.name,
        path.display(),
        match host.meta_disk {
            MetaDisk::Internal => "internal",
            MetaDisk::External(_) => "external",
        },
        layout.data_bytes,
        layout.data_bytes >> 20
    ))
}

fn zero_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// `tandemadm dump-md`.
pub fn dump_md(res: &config::Resource, host: &config::Host) -> Result<String, MetaStoreError> {
    let (path, layout) = layout_for(res, host)?;
    let file = File::open(&path).map_err(io_err(&path))?;
    let sb = load_superblock(&file, &path, &layout, &res.name)?;
    let mut blocks = Vec::with_capacity(layout.al_blocks as usize);
    for i in 0..u64::from(layout.al_blocks) {
        blocks.push(read_block(&file, layout.al_offset + i * meta::BLOCK_BYTES as u64).map_err(io_err(&path))?);
    }
    let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
    let al = meta::al::recover_hot_extents(&refs);
    let mut bitmap_weight = 0u64;
    let mut offset = 0;
    let mut chunk = vec![0u8; 1 << 20];
    while offset < layout.bitmap_bytes {
        let n = (layout.bitmap_bytes - offset).min(chunk.len() as u64) as usize;
        file.read_exact_at(&mut chunk[..n], layout.bitmap_offset + offset)
            .map_err(io_err(&path))?;
        bitmap_weight += chunk[..n].iter().map(|b| u64::from(b.count_ones())).sum::<u64>();
        offset += n as u64;
    }
    Ok(meta::dump::render_dump(&sb, &layout, Some(bitmap_weight), Some(&al)))
}
