//! Where each metadata region lives on the metadata device (pictures in the
//! module documentation of [`crate::meta`]).
//!
//! Every computation is checked `u64` arithmetic: any input size gives either
//! a layout whose regions fit the device or an error saying why not.

use super::bitmap::bitmap_bytes_for;
use super::{
    align_down, MetaError, AL_RING_BLOCKS_MAX, AL_RING_BLOCKS_MIN, BLOCK_BYTES_U64 as BLOCK, DATA_BYTES_MAX,
    DATA_BYTES_MIN,
};
use serde::Serialize;
use std::fmt;

/// Where the metadata lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LayoutKind {
    /// At the end of the backing disk (`meta-disk internal`).
    Internal,
    /// In its own file or device (`meta-disk /path`).
    External,
}

impl LayoutKind {
    /// The superblock's byte for this kind.
    pub fn code(self) -> u8 {
        match self {
            LayoutKind::Internal => 0,
            LayoutKind::External => 1,
        }
    }

    /// The kind a superblock byte names, if any.
    pub fn from_code(code: u8) -> Option<LayoutKind> {
        match code {
            0 => Some(LayoutKind::Internal),
            1 => Some(LayoutKind::External),
            _ => None,
        }
    }
}

impl fmt::Display for LayoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayoutKind::Internal => "internal",
            LayoutKind::External => "external",
        })
    }
}

/// Byte offsets on the metadata device (the backing disk itself when
/// internal), and the usable data size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub kind: LayoutKind,
    /// The usable, exported size: a multiple of 4096 in
    /// `DATA_BYTES_MIN..=DATA_BYTES_MAX`.
    pub data_bytes: u64,
    /// Start of the metadata area (`data_bytes` when internal, 0 when external).
    pub md_offset: u64,
    /// Slot A and slot B of the superblock.
    pub superblock_offsets: [u64; 2],
    /// First block of the activity-log ring.
    pub al_offset: u64,
    /// Blocks in the activity-log ring.
    pub al_blocks: u32,
    /// First byte of the bitmap area.
    pub bitmap_offset: u64,
    /// Size of the bitmap area: at least `bitmap_bytes_for(data_bytes)`, a multiple of 4096.
    pub bitmap_bytes: u64,
    /// Size of the whole metadata area starting at `md_offset`.
    pub md_bytes: u64,
}

fn check_ring(al_ring_blocks: u32) -> Result<(), MetaError> {
    if (AL_RING_BLOCKS_MIN..=AL_RING_BLOCKS_MAX).contains(&al_ring_blocks) {
        Ok(())
    } else {
        Err(MetaError::Insane {
            field: "activity-log ring blocks",
            detail: format!(
                "{al_ring_blocks}; it must be {AL_RING_BLOCKS_MIN}..={AL_RING_BLOCKS_MAX} (a torn write of the \
                 newest transaction must leave the previous one)"
            ),
        })
    }
}

/// Bytes of the AL ring plus both superblock slots (`al_ring_blocks` <= u32::MAX, so no overflow).
fn fixed_bytes(al_ring_blocks: u32) -> u64 {
    (u64::from(al_ring_blocks) + 2) * BLOCK
}

/// The largest data size (a multiple of 4096) whose data plus bitmap fit in
/// `avail` bytes: the bitmap's size depends on the data's and the data's on
/// the bitmap's, so search for the fixed point. `data + bitmap` grows with
/// `data`, so the feasible sizes are a prefix and binary search finds its end.
fn max_data_for(avail: u64) -> u64 {
    let fits = |blocks: u64| {
        let data = blocks * BLOCK; // blocks <= avail / BLOCK
        data.checked_add(bitmap_bytes_for(data)).is_some_and(|t| t <= avail)
    };
    let (mut lo, mut hi) = (0u64, avail / BLOCK); // fits(lo) holds, answer in lo..=hi
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo * BLOCK
}

impl Layout {
    /// Metadata at the end of a backing disk of `backing_bytes`:
    /// `[data | bitmap | AL ring | superblock A | superblock B]`, superblock B
    /// being the disk's last 4 KiB block. `data_bytes` is the largest multiple
    /// of 4096 for which everything fits.
    pub fn internal(backing_bytes: u64, al_ring_blocks: u32) -> Result<Layout, MetaError> {
        check_ring(al_ring_blocks)?;
        let fixed = fixed_bytes(al_ring_blocks);
        let too_small = MetaError::TooSmall {
            what: "backing disk",
            needed: DATA_BYTES_MIN + bitmap_bytes_for(DATA_BYTES_MIN) + fixed,
            available: backing_bytes,
        };
        let end = align_down(backing_bytes);
        let Some(avail) = end.checked_sub(fixed) else {
            return Err(too_small);
        };
        let data_bytes = max_data_for(avail);
        if data_bytes < DATA_BYTES_MIN {
            return Err(too_small);
        }
        if data_bytes > DATA_BYTES_MAX {
            return Err(MetaError::TooLarge {
                what: "backing disk",
                bytes: backing_bytes,
                max: DATA_BYTES_MAX,
            });
        }
        // end >= fixed + data + bitmap_bytes_for(data) >= 2 blocks + ring.
        let sb_b = end - BLOCK;
        let sb_a = sb_b - BLOCK;
        let al_offset = sb_a - u64::from(al_ring_blocks) * BLOCK;
        Ok(Layout {
            kind: LayoutKind::Internal,
            data_bytes,
            md_offset: data_bytes,
            superblock_offsets: [sb_a, sb_b],
            al_offset,
            al_blocks: al_ring_blocks,
            bitmap_offset: data_bytes,
            // Includes the spare page, if any, the fixed point left over.
            bitmap_bytes: al_offset - data_bytes,
            md_bytes: end - data_bytes,
        })
    }

    /// Bytes an external metadata device needs for `data_bytes` of data
    /// (rounded down to 4096): both superblock slots, the AL ring and the
    /// bitmap. Saturates at `u64::MAX`, which no device can provide.
    pub fn required_external_bytes(data_bytes: u64, al_ring_blocks: u32) -> u64 {
        fixed_bytes(al_ring_blocks).saturating_add(bitmap_bytes_for(align_down(data_bytes)))
    }

    /// Metadata in its own file or device, from offset 0:
    /// `[superblock A | superblock B | AL ring | bitmap]`; all of the backing
    /// disk (`data_bytes`, rounded down to 4096) is data.
    pub fn external(data_bytes: u64, md_device_bytes: u64, al_ring_blocks: u32) -> Result<Layout, MetaError> {
        check_ring(al_ring_blocks)?;
        let data = align_down(data_bytes);
        if data < DATA_BYTES_MIN {
            return Err(MetaError::TooSmall {
                what: "backing disk",
                needed: DATA_BYTES_MIN,
                available: data_bytes,
            });
        }
        if data > DATA_BYTES_MAX {
            return Err(MetaError::TooLarge {
                what: "backing disk",
                bytes: data_bytes,
                max: DATA_BYTES_MAX,
            });
        }
        let needed = Layout::required_external_bytes(data, al_ring_blocks);
        if md_device_bytes < needed {
            return Err(MetaError::TooSmall {
                what: "metadata device",
                needed,
                available: md_device_bytes,
            });
        }
        let al_offset = 2 * BLOCK;
        let bitmap_offset = al_offset + u64::from(al_ring_blocks) * BLOCK;
        Ok(Layout {
            kind: LayoutKind::External,
            data_bytes: data,
            md_offset: 0,
            superblock_offsets: [0, BLOCK],
            al_offset,
            al_blocks: al_ring_blocks,
            bitmap_offset,
            bitmap_bytes: needed - bitmap_offset,
            md_bytes: needed,
        })
    }

    /// Bytes of the activity-log ring.
    pub fn al_bytes(&self) -> u64 {
        u64::from(self.al_blocks) * BLOCK
    }

    /// Bits of the bitmap: one per 4 KiB block of data.
    pub fn bitmap_bits(&self) -> u64 {
        self.data_bytes / BLOCK
    }

    /// Offset of activity-log ring slot `slot`, if the ring has it.
    pub fn al_slot_offset(&self, slot: u32) -> Option<u64> {
        (slot < self.al_blocks).then(|| self.al_offset + u64::from(slot) * BLOCK)
    }

    /// Offset of the ring slot transaction `tr_number` is written to.
    pub fn al_offset_for_tr(&self, tr_number: u64) -> u64 {
        self.al_offset + super::al::slot_for_tr(tr_number, self.al_blocks) * BLOCK
    }

    /// Offset of 4 KiB bitmap page `page`, if the bitmap area has it.
    pub fn bitmap_page_offset(&self, page: u64) -> Option<u64> {
        let at = page.checked_mul(BLOCK)?;
        (at < self.bitmap_bytes).then(|| self.bitmap_offset + at)
    }

    /// The metadata regions as `(name, offset, bytes)`.
    pub fn regions(&self) -> [(&'static str, u64, u64); 4] {
        [
            ("superblock slot A", self.superblock_offsets[0], BLOCK),
            ("superblock slot B", self.superblock_offsets[1], BLOCK),
            ("activity log", self.al_offset, self.al_bytes()),
            ("bitmap", self.bitmap_offset, self.bitmap_bytes),
        ]
    }

    /// Check the rules every layout obeys, for a layout read from disk:
    /// sizes in range, regions 4 KiB aligned, inside the metadata area and
    /// disjoint, the bitmap covering the data, and the superblocks where a
    /// reader looks for them (the last two blocks when internal, the first two
    /// when external).
    pub fn validate(&self) -> Result<(), MetaError> {
        let insane = |field: &'static str, detail: String| Err(MetaError::Insane { field, detail });
        check_ring(self.al_blocks)?;
        if self.data_bytes % BLOCK != 0 || !(DATA_BYTES_MIN..=DATA_BYTES_MAX).contains(&self.data_bytes) {
            return insane(
                "layout data size",
                format!(
                    "{} bytes; it must be a multiple of 4096 in {DATA_BYTES_MIN}..={DATA_BYTES_MAX}",
                    self.data_bytes
                ),
            );
        }
        let Some(md_end) = self.md_offset.checked_add(self.md_bytes) else {
            return insane(
                "layout metadata area",
                format!("offset {} + {} bytes overflows", self.md_offset, self.md_bytes),
            );
        };
        let regions = self.regions();
        for (i, &(name, offset, bytes)) in regions.iter().enumerate() {
            let end = offset.checked_add(bytes);
            if offset % BLOCK != 0 || bytes % BLOCK != 0 || offset < self.md_offset || end.is_none_or(|e| e > md_end) {
                return insane(
                    "layout region",
                    format!(
                        "{name} at {offset} ({bytes} bytes) is not 4 KiB aligned inside the metadata area \
                         {}..{md_end}",
                        self.md_offset
                    ),
                );
            }
            for &(other, o_offset, o_bytes) in &regions[i + 1..] {
                // Both end offsets were checked above (or will be: a region is
                // checked before any later one is compared with it).
                let disjoint = offset.saturating_add(bytes) <= o_offset || o_offset.saturating_add(o_bytes) <= offset;
                if !disjoint {
                    return insane(
                        "layout region",
                        format!("{name} at {offset} overlaps {other} at {o_offset}"),
                    );
                }
            }
        }
        if self.bitmap_bytes < bitmap_bytes_for(self.data_bytes) {
            return insane(
                "layout bitmap size",
                format!(
                    "{} bytes cannot cover {} bytes of data ({} needed)",
                    self.bitmap_bytes,
                    self.data_bytes,
                    bitmap_bytes_for(self.data_bytes)
                ),
            );
        }
        let (expect_md_offset, expect_sb) = match self.kind {
            LayoutKind::Internal => (
                self.data_bytes,
                [md_end.saturating_sub(2 * BLOCK), md_end.saturating_sub(BLOCK)],
            ),
            LayoutKind::External => (0, [0, BLOCK]),
        };
        if self.md_offset != expect_md_offset {
            return insane(
                "layout metadata offset",
                format!(
                    "{} for {} metadata, expected {expect_md_offset}",
                    self.md_offset, self.kind
                ),
            );
        }
        if self.superblock_offsets != expect_sb {
            return insane(
                "layout superblock offsets",
                format!(
                    "{:?} for {} metadata, expected {expect_sb:?}",
                    self.superblock_offsets, self.kind
                ),
            );
        }
        Ok(())
    }

    /// Compare a layout recorded in a superblock (`self`) with the one
    /// computed from the devices now; the first difference is the error.
    pub fn check_against(&self, computed: &Layout) -> Result<(), MetaError> {
        let fields: [(&'static str, u64, u64); 10] = [
            ("layout kind", self.kind.code().into(), computed.kind.code().into()),
            ("data size", self.data_bytes, computed.data_bytes),
            ("metadata offset", self.md_offset, computed.md_offset),
            ("metadata size", self.md_bytes, computed.md_bytes),
            (
                "superblock slot A offset",
                self.superblock_offsets[0],
                computed.superblock_offsets[0],
            ),
            (
                "superblock slot B offset",
                self.superblock_offsets[1],
                computed.superblock_offsets[1],
            ),
            ("activity-log offset", self.al_offset, computed.al_offset),
            ("activity-log blocks", self.al_blocks.into(), computed.al_blocks.into()),
            ("bitmap offset", self.bitmap_offset, computed.bitmap_offset),
            ("bitmap size", self.bitmap_bytes, computed.bitmap_bytes),
        ];
        match fields.iter().find(|(_, r, c)| r != c) {
            None => Ok(()),
            Some(&(field, recorded, computed)) => Err(MetaError::LayoutMismatch {
                field,
                recorded,
                computed,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{AL_RING_BLOCKS_DEFAULT, BM_BLOCK_BYTES};
    use proptest::prelude::*;

    const RING: u32 = AL_RING_BLOCKS_DEFAULT;

    /// Every property a layout must have on a device of `device_end` bytes.
    fn assert_sound(l: &Layout, device_end: u64) {
        l.validate().unwrap_or_else(|e| panic!("{e}: {l:?}"));
        let regions = l.regions();
        for (i, &(name, offset, bytes)) in regions.iter().enumerate() {
            let end = offset.checked_add(bytes).expect("region end fits");
            assert!(end <= device_end, "{name} beyond the device: {l:?}");
            assert_eq!(offset % BLOCK, 0, "{name} unaligned");
            for &(other, o, b) in &regions[i + 1..] {
                assert!(end <= o || o + b <= offset, "{name} overlaps {other}: {l:?}");
            }
            if l.kind == LayoutKind::Internal {
                assert!(offset >= l.data_bytes, "{name} inside the data area: {l:?}");
            }
        }
        assert!(
            u128::from(l.bitmap_bytes) * 8 >= u128::from(l.data_bytes / BM_BLOCK_BYTES),
            "bitmap too small: {l:?}"
        );
        assert_eq!(l.data_bytes % BLOCK, 0);
        assert!(l.md_offset + l.md_bytes <= device_end);
    }

    #[test]
    fn one_gib_internal_is_exact() {
        let l = Layout::internal(1 << 30, RING).unwrap();
        assert_sound(&l, 1 << 30);
        // 18 fixed blocks (16 AL + 2 superblocks) + 8 bitmap pages; the data
        // keeps everything else.
        assert_eq!(l.bitmap_bytes, 32 << 10);
        assert_eq!(l.md_bytes, (32 + 64 + 8) << 10);
        assert_eq!(l.data_bytes, (1 << 30) - l.md_bytes);
        assert_eq!(l.superblock_offsets, [(1 << 30) - 8192, (1 << 30) - 4096]);
        assert_eq!(l.al_offset, (1 << 30) - 8192 - (64 << 10));
        assert_eq!(l.bitmap_offset, l.data_bytes);
    }

    #[test]
    fn sixteen_tib_has_a_512_mib_bitmap() {
        let l = Layout::internal(16 << 40, RING).unwrap();
        assert_sound(&l, 16 << 40);
        // The data is 512 MiB and a bit short of 16 TiB, so its bitmap is 16 KiB short of 512 MiB.
        assert_eq!(l.bitmap_bytes, (512 << 20) - (16 << 10));
        assert_eq!(l.data_bytes, (16 << 40) - l.bitmap_bytes - (18 << 12));
        let e = Layout::external(16 << 40, 1 << 30, RING).unwrap();
        assert_sound(&e, 1 << 30);
        assert_eq!(e.bitmap_bytes, 512 << 20);
        assert_eq!(e.data_bytes, 16 << 40);
    }

    #[test]
    fn one_pib_works_and_beyond_16_pib_is_refused() {
        let l = Layout::internal(1 << 50, RING).unwrap();
        assert_sound(&l, 1 << 50);
        assert!(l.bitmap_bytes <= 32 << 30 && l.bitmap_bytes > (32 << 30) - (2 << 20));
        let e = Layout::external(1 << 50, Layout::required_external_bytes(1 << 50, RING), RING).unwrap();
        assert_eq!(e.md_bytes, (32 << 30) + (18 << 12));
        for big in [u64::MAX, 1 << 60, DATA_BYTES_MAX + (1 << 40)] {
            assert!(
                matches!(Layout::internal(big, RING), Err(MetaError::TooLarge { .. })),
                "{big}"
            );
            assert!(matches!(
                Layout::external(big, u64::MAX, RING),
                Err(MetaError::TooLarge { .. })
            ));
        }
        let e = Layout::external(DATA_BYTES_MAX, u64::MAX, RING).unwrap();
        assert_sound(&e, u64::MAX);
    }

    #[test]
    fn tiny_devices_are_refused_with_the_sizes() {
        let e = Layout::internal(100 << 10, RING).unwrap_err();
        assert_eq!(
            e,
            MetaError::TooSmall {
                what: "backing disk",
                needed: (1 << 20) + 4096 + 18 * 4096,
                available: 100 << 10
            }
        );
        assert!(e
            .to_string()
            .starts_with("backing disk is too small: 1126400 bytes (1.1 MiB) needed"));
        assert!(matches!(Layout::internal(0, RING), Err(MetaError::TooSmall { .. })));
        // Exactly the minimum works; one block less does not.
        let min = (1 << 20) + 4096 + 18 * 4096;
        assert_eq!(Layout::internal(min, RING).unwrap().data_bytes, 1 << 20);
        assert!(Layout::internal(min - 1, RING).is_err());
        assert_eq!(
            Layout::external(1 << 30, 4096, RING).unwrap_err(),
            MetaError::TooSmall {
                what: "metadata device",
                needed: 18 * 4096 + (32 << 10),
                available: 4096
            }
        );
        assert_eq!(
            Layout::external(4095, 1 << 30, RING).unwrap_err(),
            MetaError::TooSmall {
                what: "backing disk",
                needed: 1 << 20,
                available: 4095
            }
        );
    }

    #[test]
    fn the_ring_must_keep_a_previous_transaction() {
        for ring in [0, 1, AL_RING_BLOCKS_MAX + 1, u32::MAX] {
            assert!(matches!(Layout::internal(1 << 30, ring), Err(MetaError::Insane { .. })));
            assert!(matches!(
                Layout::external(1 << 30, 1 << 30, ring),
                Err(MetaError::Insane { .. })
            ));
        }
    }

    #[test]
    fn external_layout_and_required_bytes_agree() {
        let need = Layout::required_external_bytes(64 << 20, RING);
        assert_eq!(need, 18 * 4096 + 4096);
        let l = Layout::external(64 << 20, need, RING).unwrap();
        assert_sound(&l, need);
        assert_eq!(l.superblock_offsets, [0, 4096]);
        assert_eq!(l.al_offset, 8192);
        assert_eq!(l.bitmap_offset, 8192 + 16 * 4096);
        assert_eq!(l.md_bytes, need);
        assert!(Layout::external(64 << 20, need - 1, RING).is_err());
        // A partial last block of data is not exported.
        assert_eq!(
            Layout::external((64 << 20) + 4095, need, RING).unwrap().data_bytes,
            64 << 20
        );
        assert_eq!(
            Layout::required_external_bytes(u64::MAX, u32::MAX),
            (1 << 49) + ((1u64 << 32) + 1) * 4096
        );
    }

    #[test]
    fn helpers_address_the_ring_and_the_bitmap() {
        let l = Layout::internal(1 << 30, RING).unwrap();
        assert_eq!(l.al_slot_offset(0), Some(l.al_offset));
        assert_eq!(l.al_slot_offset(15), Some(l.al_offset + 15 * 4096));
        assert_eq!(l.al_slot_offset(16), None);
        assert_eq!(l.al_offset_for_tr(17), l.al_offset + 4096);
        assert_eq!(l.bitmap_page_offset(7), Some(l.bitmap_offset + 7 * 4096));
        assert_eq!(l.bitmap_page_offset(8), None);
        assert_eq!(l.bitmap_page_offset(u64::MAX), None);
        assert_eq!(l.bitmap_bits(), l.data_bytes / 4096);
    }

    #[test]
    fn a_recorded_layout_is_checked_field_by_field() {
        let l = Layout::internal(1 << 30, RING).unwrap();
        assert_eq!(l.check_against(&l), Ok(()));
        let grown = Layout::internal(2 << 30, RING).unwrap();
        assert!(matches!(
            l.check_against(&grown),
            Err(MetaError::LayoutMismatch { field: "data size", .. })
        ));
        let mut bad = l;
        bad.superblock_offsets[1] -= 4096;
        assert!(bad.validate().is_err());
        let mut bad = l;
        bad.bitmap_bytes = 4096;
        assert!(bad.validate().is_err());
        let mut bad = l;
        bad.md_bytes = u64::MAX;
        assert!(bad.validate().is_err());
    }

    proptest! {
        #[test]
        fn internal_layouts_are_sound_for_any_size(backing: u64, ring in 0u32..40) {
            if let Ok(l) = Layout::internal(backing, ring) {
                assert_sound(&l, backing);
                prop_assert!(l.data_bytes + l.md_bytes <= backing);
                prop_assert_eq!(l.superblock_offsets[1] + BLOCK, align_down(backing));
                // Maximal: one more data block would not fit with its bitmap.
                let more = l.data_bytes + BLOCK;
                prop_assert!(more + bitmap_bytes_for(more) + fixed_bytes(ring) > align_down(backing));
            } else {
                prop_assert!(backing < (2 << 20) || !(2..=1024).contains(&ring) || backing > DATA_BYTES_MAX);
            }
        }

        #[test]
        fn internal_layouts_are_sound_for_realistic_sizes(backing in (1u64 << 20)..(1 << 52), ring in 2u32..64) {
            if let Ok(l) = Layout::internal(backing, ring) {
                assert_sound(&l, backing);
                prop_assert!(l.bitmap_bytes - bitmap_bytes_for(l.data_bytes) <= BLOCK, "at most one spare page");
            } else {
                prop_assert!(backing < (1 << 20) + (100 << 12));
            }
        }

        #[test]
        fn external_layouts_are_sound_for_any_size(data: u64, extra in 0u64..1 << 20, ring in 0u32..40) {
            let need = Layout::required_external_bytes(data, ring);
            let device = need.saturating_add(extra);
            match Layout::external(data, device, ring) {
                Ok(l) => {
                    assert_sound(&l, device);
                    prop_assert_eq!(l.data_bytes, align_down(data));
                    prop_assert_eq!(l.md_bytes, need);
                }
                Err(_) => prop_assert!(
                    data < (1 << 20) || !(2..=1024).contains(&ring) || data > DATA_BYTES_MAX + 4095
                ),
            }
            prop_assert!(Layout::external(data, need.saturating_sub(1), ring).is_err() || need == 0);
        }
    }
}
