//! Saving a split-brain victim's diverged blocks before the resync
//! overwrites them: a sparse image the size of the device holding only those
//! blocks at their own offsets, and a text file listing the ranges. A DBA
//! can loop-mount a copy of the old filesystem with them, or pick pages out
//! with `dd`, to recover transactions that lived only on the losing side.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What was saved.
pub struct Saved {
    pub image: PathBuf,
    pub ranges: PathBuf,
    pub bytes: u64,
}

/// Everything the ranges file says about where the blocks came from.
pub struct Origin<'a> {
    pub resource: &'a str,
    pub node: &'a str,
    pub peer: &'a str,
    pub uuids: String,
    pub unix_s: u64,
}

/// Copy `runs` (first 4 KiB block, blocks) of `disk` (`data_bytes` long)
/// into `dir`. Runs synchronously: nothing may overwrite these blocks
/// until the copy is durable, and the peer is told it may only afterwards.
pub fn save(
    disk: &Path,
    data_bytes: u64,
    runs: &[(u64, u64)],
    dir: &Path,
    origin: &Origin<'_>,
) -> Result<Saved, String> {
    const BLOCK: u64 = crate::meta::BM_BLOCK_BYTES;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let stem = format!("{}-{}-split-brain-{}", origin.resource, origin.node, origin.unix_s);
    let image = dir.join(format!("{stem}.img"));
    let ranges = dir.join(format!("{stem}.ranges"));
    let src = File::open(disk).map_err(|e| format!("cannot read {}: {e}", disk.display()))?;
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&image)
        .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
    dst.set_len(data_bytes)
        .map_err(|e| format!("cannot size {}: {e}", image.display()))?;
    let mut list = format!(
        "# Tandem split-brain victim data: resource {}, node {}, discarded in favour of {}\n\
         # generation UUIDs at the time: {}\n\
         # saved at unix time {}; image {} holds these ranges at their own offsets\n\
         # offset_bytes length_bytes\n",
        origin.resource,
        origin.node,
        origin.peer,
        origin.uuids,
        origin.unix_s,
        image.display()
    );
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    for &(first, blocks) in runs {
        let start = first * BLOCK;
        let end = ((first + blocks) * BLOCK).min(data_bytes);
        if start >= end {
            continue;
        }
        list.push_str(&format!("{start} {}\n", end - start));
        let mut at = start;
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..n], at)
                .map_err(|e| format!("reading {} at {at}: {e}", disk.display()))?;
            dst.write_all_at(&buf[..n], at)
                .map_err(|e| format!("writing {} at {at}: {e}", image.display()))?;
            at += n as u64;
            total += n as u64;
        }
    }
    dst.sync_all()
        .map_err(|e| format!("cannot sync {}: {e}", image.display()))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&ranges)
        .map_err(|e| format!("cannot create {}: {e}", ranges.display()))?;
    f.write_all(list.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", ranges.display()))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(Saved {
        image,
        ranges,
        bytes: total,
    })
}
