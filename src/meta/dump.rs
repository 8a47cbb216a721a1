//! `tandemadm dump-md`: the metadata as an operator reads it, with DRBD's
//! `show-gi` line so that habits carry over.

use super::al::AlRecovery;
use super::layout::{Layout, LayoutKind};
use super::superblock::{MdFlags, Superblock};
use std::fmt::Write;

fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// Ranges like `3-7,12,40-41` from a sorted list.
fn compact(ext: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ext.len() {
        let mut j = i;
        while j + 1 < ext.len() && ext[j + 1] == ext[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if i == j {
            let _ = write!(out, "{}", ext[i]);
        } else {
            let _ = write!(out, "{}-{}", ext[i], ext[j]);
        }
        i = j + 1;
    }
    out
}

pub fn render_dump(
    sb: &Superblock,
    layout: &Layout,
    bitmap_weight_blocks: Option<u64>,
    al: Option<&AlRecovery>,
) -> String {
    let f = |flag| u8::from(sb.flags.contains(flag));
    let u = &sb.uuids;
    let mut o = String::new();
    let _ = writeln!(o, "# Tandem metadata, format version {}", super::FORMAT_VERSION);
    let _ = writeln!(o, "resource {}  node {}", sb.resource_name, sb.node_name);
    let _ = writeln!(o);
    let _ = writeln!(o, "       +--<  Current data generation UUID  >-");
    let _ = writeln!(o, "       |               +--<  Bitmap's base data generation UUID  >-");
    let _ = writeln!(
        o,
        "       |               |                 +--<  younger history UUID  >-"
    );
    let _ = writeln!(
        o,
        "       |               |                 |         +-<  older history  >-"
    );
    let _ = writeln!(o, "       V               V                 V         V");
    let _ = writeln!(
        o,
        "{:016X}:{:016X}:{:016X}:{:016X}:{}:{}:{}:{}:{}:{}:{}",
        u.current,
        u.bitmap,
        u.history[0],
        u.history[1],
        f(MdFlags::CONSISTENT),
        f(MdFlags::WAS_UP_TO_DATE),
        f(MdFlags::PRIMARY_IND),
        f(MdFlags::CONNECTED_IND),
        f(MdFlags::FULL_SYNC),
        f(MdFlags::PEER_OUT_DATED),
        f(MdFlags::CRASHED_PRIMARY),
    );
    let _ = writeln!(
        o,
        "                                                                    ^ ^ ^ ^ ^ ^ ^"
    );
    let _ = writeln!(o, "                           consistent, was up-to-date, primary, connected, full sync, peer outdated, crashed primary");
    let _ = writeln!(o);
    let _ = writeln!(o, "flags: {}", sb.flags);
    let _ = writeln!(
        o,
        "meta-data: {}",
        if sb.flags.contains(MdFlags::AL_CLEAN) {
            "clean"
        } else {
            "need apply-al"
        }
    );
    let _ = writeln!(o, "sequence: {}", sb.seq);
    let _ = writeln!(o, "data size: {} bytes ({})", sb.data_bytes, human(sb.data_bytes));
    let _ = writeln!(
        o,
        "layout: {} (metadata {} bytes at offset {})",
        match layout.kind {
            LayoutKind::Internal => "internal",
            LayoutKind::External => "external",
        },
        layout.md_bytes,
        layout.md_offset
    );
    let _ = writeln!(
        o,
        "  superblock slots at {} and {}",
        layout.superblock_offsets[0], layout.superblock_offsets[1]
    );
    let _ = writeln!(
        o,
        "  activity log at {} ({} blocks), al-extents {}",
        layout.al_offset, layout.al_blocks, sb.al_extents
    );
    let _ = writeln!(
        o,
        "  bitmap at {} ({} bytes, 1 bit per 4 KiB)",
        layout.bitmap_offset, layout.bitmap_bytes
    );
    if let Some(w) = bitmap_weight_blocks {
        let _ = writeln!(o, "out of sync: {} KiB ({} blocks)", w * 4, w);
    }
    if let Some(al) = al {
        let _ = writeln!(
            o,
            "activity log: last transaction {}, {} hot extents{}{}",
            al.last_tr.map_or("none".to_owned(), |t| t.to_string()),
            al.extents.len(),
            if al.extents.is_empty() {
                String::new()
            } else {
                format!(": {}", compact(&al.extents))
            },
            if al.corrupt_blocks > 0 {
                format!(" ({} corrupt blocks ignored)", al.corrupt_blocks)
            } else {
                String::new()
            }
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::GenerationUuids;

    #[test]
    fn dump_shows_the_gi_line() {
        let l = Layout::internal(1 << 30, 16).unwrap();
        let sb = Superblock::new(&l, GenerationUuids::new_created(), 1237, "alpha", "r0");
        let al = AlRecovery {
            extents: vec![1, 2, 3, 9],
            last_tr: Some(4),
            corrupt_blocks: 0,
        };
        let d = render_dump(&sb, &l, Some(3), Some(&al));
        assert!(
            d.contains("0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:0:0:0"),
            "{d}"
        );
        assert!(d.contains("out of sync: 12 KiB"));
        assert!(d.contains("4 hot extents: 1-3,9"));
    }
}
