//! `tandemadm dump-md`: the metadata as an operator reads it, with DRBD's
//! `show-gi` UUID line (`CURRENT:BITMAP:HIST1:HIST2:c:u:p:n:f:o:x`) so that
//! habits and scripts carry over.

use super::al::AlRecovery;
use super::layout::Layout;
use super::superblock::{MdFlags, Superblock};
use super::{human_bytes, AL_EXTENT_BYTES, BM_BLOCK_BYTES};
use std::fmt::Write;

/// The seven flag digits of the `show-gi` line, in DRBD's order, with what each says.
const GI_FLAGS: [(MdFlags, &str); 7] = [
    (MdFlags::CONSISTENT, "data is consistent"),
    (MdFlags::WAS_UP_TO_DATE, "data was/is up to date"),
    (MdFlags::PRIMARY_IND, "node was/is primary"),
    (MdFlags::CONNECTED_IND, "node was/is connected"),
    (MdFlags::FULL_SYNC, "a full sync was being set up"),
    (MdFlags::PEER_OUT_DATED, "peer's disk was outdated/inconsistent"),
    (MdFlags::CRASHED_PRIMARY, "node crashed while primary"),
];

/// Column of the first flag digit: four 16-digit UUIDs and their colons.
const GI_FLAG_COLUMN: usize = 4 * 17;

/// The one-line form (`get-gi`): 16 upper-case hex digits per UUID, then the flag digits.
pub fn gi_line(sb: &Superblock) -> String {
    let u = &sb.uuids;
    let mut line = format!(
        "{:016X}:{:016X}:{:016X}:{:016X}",
        u.current, u.bitmap, u.history[0], u.history[1]
    );
    for (flag, _) in GI_FLAGS {
        let _ = write!(line, ":{}", u8::from(sb.flags.contains(flag)));
    }
    line
}

/// The `show-gi` picture: what each UUID is, the line, and what each flag digit is.
pub fn gi_legend(sb: &Superblock) -> String {
    let mut o = String::new();
    o.push_str("       +--<  current data generation UUID  >-\n");
    o.push_str("       |               +--<  bitmap's base data generation UUID  >-\n");
    o.push_str("       |               |                 +--<  younger history UUID  >-\n");
    o.push_str("       |               |                 |         +-<  older history  >-\n");
    o.push_str("       V               V                 V         V\n");
    o.push_str(&gi_line(sb));
    o.push('\n');
    let _ = writeln!(
        o,
        "{}{}",
        " ".repeat(GI_FLAG_COLUMN),
        "^ ".repeat(GI_FLAGS.len()).trim_end()
    );
    for (i, (_, what)) in GI_FLAGS.iter().enumerate() {
        let label = format!("-<  {what}  >--+");
        let _ = writeln!(
            o,
            "{label:>width$}{}",
            " |".repeat(GI_FLAGS.len() - 1 - i),
            width = GI_FLAG_COLUMN + 2 * i + 1
        );
    }
    o
}

/// Sorted extent numbers as ranges: `3-7,12,40-41`.
pub fn compact_ranges(sorted: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j].checked_add(1) == Some(sorted[j + 1]) {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if i == j {
            let _ = write!(out, "{}", sorted[i]);
        } else {
            let _ = write!(out, "{}-{}", sorted[i], sorted[j]);
        }
        i = j + 1;
    }
    out
}

/// The whole `dump-md` text. `bitmap_weight_blocks` is the number of set
/// bitmap bits (if the bitmap was read), `al` what the activity log holds (if
/// it was read).
pub fn render_dump(
    sb: &Superblock,
    layout: &Layout,
    bitmap_weight_blocks: Option<u64>,
    al: Option<&AlRecovery>,
) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Tandem metadata of resource {:?} written by node {:?}",
        sb.resource_name, sb.node_name
    );
    let _ = writeln!(o, "format version: {}", sb.format_version);
    let _ = writeln!(o, "superblock sequence: {}", sb.seq);
    o.push('\n');
    o.push_str(&gi_legend(sb));
    o.push('\n');
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
    let _ = writeln!(o, "device uuid: {:016X}", sb.device_uuid);
    let _ = writeln!(
        o,
        "data size: {} bytes ({}) agreed; capacity {} bytes ({})",
        sb.data_bytes,
        human_bytes(sb.data_bytes),
        layout.data_bytes,
        human_bytes(layout.data_bytes)
    );
    if sb.layout != *layout {
        let _ = writeln!(
            o,
            "WARNING: the superblock records a different layout than the device gives now: {}",
            sb.layout
                .check_against(layout)
                .err()
                .map_or_else(String::new, |e| e.to_string())
        );
    }
    let _ = writeln!(
        o,
        "layout: {}, metadata area {} bytes ({}) at offset {}",
        layout.kind,
        layout.md_bytes,
        human_bytes(layout.md_bytes),
        layout.md_offset
    );
    let _ = writeln!(
        o,
        "  superblock slots: A at {}, B at {}",
        layout.superblock_offsets[0], layout.superblock_offsets[1]
    );
    let al_worst = u64::from(sb.al_extents).saturating_mul(AL_EXTENT_BYTES);
    let _ = writeln!(
        o,
        "  activity log: at {}, {} blocks ({}); al-extents {} (at most {} to resync after a primary crash)",
        layout.al_offset,
        layout.al_blocks,
        human_bytes(layout.al_bytes()),
        sb.al_extents,
        human_bytes(al_worst)
    );
    let _ = writeln!(
        o,
        "  bitmap: at {}, {} bytes ({}), 1 bit per {} KiB, {} bits",
        layout.bitmap_offset,
        layout.bitmap_bytes,
        human_bytes(layout.bitmap_bytes),
        BM_BLOCK_BYTES / 1024,
        layout.bitmap_bits()
    );
    match bitmap_weight_blocks {
        Some(w) => {
            let bytes = w.saturating_mul(BM_BLOCK_BYTES);
            let _ = writeln!(
                o,
                "out of sync: {} KiB ({}, {w} blocks of 4 KiB, {:.1}% of the device)",
                bytes / 1024,
                human_bytes(bytes),
                percent(w, layout.bitmap_bits())
            );
        }
        None => o.push_str("out of sync: unknown (bitmap not read)\n"),
    }
    match al {
        Some(al) => {
            let last = al.last_tr.map_or_else(|| "none".to_owned(), |t| t.to_string());
            let _ = writeln!(
                o,
                "activity log: last transaction {last}, {} hot extents of 4 MiB{}",
                al.extents.len(),
                if al.extents.is_empty() {
                    String::new()
                } else {
                    format!(": {}", compact_ranges(&al.extents))
                }
            );
            if al.corrupt_blocks > 0 || al.misplaced_blocks > 0 {
                let _ = writeln!(
                    o,
                    "  {} corrupt and {} misplaced ring blocks ignored",
                    al.corrupt_blocks, al.misplaced_blocks
                );
            }
            if !al.complete {
                o.push_str(
                    "  INCOMPLETE: the ring no longer describes the whole hot set; recovering from a primary crash \
                     would resync the whole device\n",
                );
            }
        }
        None => o.push_str("activity log: not read\n"),
    }
    o
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{GenerationUuids, AL_RING_BLOCKS_DEFAULT};

    fn sample() -> (Superblock, Layout) {
        let l = Layout::internal(1 << 30, AL_RING_BLOCKS_DEFAULT).unwrap();
        (
            Superblock::new(&l, GenerationUuids::new_created(), 1237, "alpha", "r0"),
            l,
        )
    }

    #[test]
    fn dump_shows_the_gi_line_sizes_and_hot_extents() {
        let (mut sb, l) = sample();
        sb.flags.insert(MdFlags::CONSISTENT);
        sb.flags.insert(MdFlags::CRASHED_PRIMARY);
        let al = AlRecovery {
            extents: vec![1, 2, 3, 9],
            last_tr: Some(4),
            complete: true,
            ..AlRecovery::default()
        };
        let d = render_dump(&sb, &l, Some(3), Some(&al));
        assert!(
            d.contains("\n0000000000000004:0000000000000000:0000000000000000:0000000000000000:1:0:0:0:0:0:1\n"),
            "{d}"
        );
        assert!(d.contains("flags: consistent, crashed-primary\n"), "{d}");
        assert!(d.contains("meta-data: need apply-al\n"), "{d}");
        assert!(d.contains("out of sync: 12 KiB (12.0 KiB, 3 blocks of 4 KiB"), "{d}");
        assert!(d.contains("4 hot extents of 4 MiB: 1-3,9\n"), "{d}");
        assert!(d.contains("al-extents 1237 (at most 4.8 GiB to resync"), "{d}");
        assert!(d.contains("layout: internal"), "{d}");
        assert!(!d.contains("INCOMPLETE") && !d.contains("WARNING"), "{d}");
    }

    #[test]
    fn the_legend_points_at_each_flag_digit() {
        let (sb, _) = sample();
        let legend = gi_legend(&sb);
        let lines: Vec<&str> = legend.lines().collect();
        let gi = lines[5];
        let carets = lines[6];
        assert_eq!(gi.len(), GI_FLAG_COLUMN + 13);
        for i in 0..7 {
            let col = GI_FLAG_COLUMN + 2 * i;
            assert!(gi.as_bytes()[col].is_ascii_digit());
            assert_eq!(carets.as_bytes()[col], b'^');
            // Legend line i ends its arrow ("+") under digit i, and carries "|" under the later ones.
            let l = lines[7 + i].as_bytes();
            assert_eq!(l[col], b'+', "{}", lines[7 + i]);
            for later in i + 1..7 {
                assert_eq!(l[GI_FLAG_COLUMN + 2 * later], b'|');
            }
        }
    }

    #[test]
    fn unknowns_and_trouble_are_said_plainly() {
        let (sb, l) = sample();
        let al = AlRecovery {
            corrupt_blocks: 2,
            complete: false,
            ..AlRecovery::default()
        };
        let other = Layout::internal(2 << 30, AL_RING_BLOCKS_DEFAULT).unwrap();
        let d = render_dump(&sb, &other, None, Some(&al));
        assert!(d.contains("out of sync: unknown (bitmap not read)"), "{d}");
        assert!(d.contains("last transaction none, 0 hot extents of 4 MiB\n"), "{d}");
        assert!(d.contains("2 corrupt and 0 misplaced ring blocks ignored"), "{d}");
        assert!(d.contains("INCOMPLETE"), "{d}");
        assert!(d.contains("WARNING: the superblock records a different layout"), "{d}");
        assert!(render_dump(&sb, &l, Some(0), None).contains("activity log: not read"));
    }

    #[test]
    fn ranges_are_compact() {
        assert_eq!(compact_ranges(&[]), "");
        assert_eq!(compact_ranges(&[5]), "5");
        assert_eq!(compact_ranges(&[3, 4, 5, 6, 7, 12, 40, 41]), "3-7,12,40-41");
        assert_eq!(
            compact_ranges(&[u32::MAX - 1, u32::MAX]),
            format!("{}-{}", u32::MAX - 1, u32::MAX)
        );
    }
}
