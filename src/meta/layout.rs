//! Where each metadata region lives on the metadata device.

use super::{MetaError, BLOCK_BYTES, BM_BLOCK_BYTES};

const BLOCK: u64 = BLOCK_BYTES as u64;
/// Below this much data a device is refused: it is certainly a mistake.
const DATA_BYTES_MIN: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum LayoutKind {
    Internal,
    External,
}

/// Byte offsets on the metadata device (the backing disk itself when internal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    pub kind: LayoutKind,
    /// The usable, exported size: a multiple of 4096.
    pub data_bytes: u64,
    /// Start of the metadata area.
    pub md_offset: u64,
    pub superblock_offsets: [u64; 2],
    pub al_offset: u64,
    pub al_blocks: u32,
    pub bitmap_offset: u64,
    pub bitmap_bytes: u64,
    /// Size of the whole metadata area.
    pub md_bytes: u64,
}

/// Bitmap bytes for `data_bytes` of data: one bit per 4 KiB, whole blocks.
pub fn bitmap_bytes_for(data_bytes: u64) -> u64 {
    let bits = data_bytes.div_ceil(BM_BLOCK_BYTES);
    bits.div_ceil(8).div_ceil(BLOCK) * BLOCK
}

impl Layout {
    /// Metadata at the end of a backing disk of `backing_bytes`.
    pub fn internal(backing_bytes: u64, al_blocks: u32) -> Result<Layout, MetaError> {
        let end = backing_bytes / BLOCK * BLOCK;
        // Sized for the whole disk: a little more bitmap than the data needs,
        // which keeps the computation one step and always sufficient.
        let bitmap_bytes = bitmap_bytes_for(end);
        let al_bytes = u64::from(al_blocks) * BLOCK;
        let md_bytes = bitmap_bytes + al_bytes + 2 * BLOCK;
        let too_small = || MetaError::TooSmall {
            needed: md_bytes + DATA_BYTES_MIN,
            available: backing_bytes,
        };
        let md_offset = end.checked_sub(md_bytes).ok_or_else(too_small)?;
        if md_offset < DATA_BYTES_MIN || al_blocks == 0 {
            return Err(too_small());
        }
        Ok(Layout {
            kind: LayoutKind::Internal,
            data_bytes: md_offset,
            md_offset,
            superblock_offsets: [end - 2 * BLOCK, end - BLOCK],
            al_offset: md_offset + bitmap_bytes,
            al_blocks,
            bitmap_offset: md_offset,
            bitmap_bytes,
            md_bytes,
        })
    }

    /// Bytes an external metadata device needs for `data_bytes` of data.
    pub fn required_external_bytes(data_bytes: u64, al_blocks: u32) -> u64 {
        2 * BLOCK + u64::from(al_blocks) * BLOCK + bitmap_bytes_for(data_bytes / BLOCK * BLOCK)
    }

    /// Metadata in its own file or device; all of the backing disk is data.
    pub fn external(backing_bytes: u64, md_device_bytes: u64, al_blocks: u32) -> Result<Layout, MetaError> {
        let data_bytes = backing_bytes / BLOCK * BLOCK;
        let md_bytes = Layout::required_external_bytes(data_bytes, al_blocks);
        if md_device_bytes < md_bytes || data_bytes < DATA_BYTES_MIN || al_blocks == 0 {
            return Err(MetaError::TooSmall {
                needed: md_bytes.max(DATA_BYTES_MIN),
                available: if data_bytes < DATA_BYTES_MIN {
                    backing_bytes
                } else {
                    md_device_bytes
                },
            });
        }
        let al_offset = 2 * BLOCK;
        Ok(Layout {
            kind: LayoutKind::External,
            data_bytes,
            md_offset: 0,
            superblock_offsets: [0, BLOCK],
            al_offset,
            al_blocks,
            bitmap_offset: al_offset + u64::from(al_blocks) * BLOCK,
            bitmap_bytes: md_bytes - al_offset - u64::from(al_blocks) * BLOCK,
            md_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(l: &Layout, device_end: u64) {
        let regions = [
            (l.superblock_offsets[0], BLOCK),
            (l.superblock_offsets[1], BLOCK),
            (l.al_offset, u64::from(l.al_blocks) * BLOCK),
            (l.bitmap_offset, l.bitmap_bytes),
        ];
        for (i, a) in regions.iter().enumerate() {
            assert!(a.0 + a.1 <= device_end, "region {i} beyond the device");
            assert_eq!(a.0 % BLOCK, 0);
            for b in &regions[i + 1..] {
                assert!(a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0, "regions overlap: {l:?}");
            }
            if l.kind == LayoutKind::Internal {
                assert!(a.0 >= l.data_bytes, "metadata inside the data area");
            }
        }
        assert!(
            u128::from(l.bitmap_bytes) * 8 * u128::from(BM_BLOCK_BYTES) >= u128::from(l.data_bytes),
            "bitmap too small"
        );
        assert_eq!(l.data_bytes % BLOCK, 0);
    }

    #[test]
    fn sixteen_tib_and_beyond() {
        let l = Layout::internal(16 << 40, 16).unwrap();
        assert_eq!(l.bitmap_bytes, 512 << 20);
        check(&l, 16 << 40);
        let l = Layout::internal(1 << 50, 16).unwrap();
        check(&l, 1 << 50);
        let l = Layout::internal(u64::MAX, 16).unwrap();
        check(&l, u64::MAX);
    }

    #[test]
    fn one_gib_internal() {
        let l = Layout::internal(1 << 30, 16).unwrap();
        assert_eq!(l.bitmap_bytes, 32 << 10);
        assert_eq!(l.md_bytes, (32 + 64 + 8) << 10);
        assert_eq!(l.data_bytes, (1 << 30) - l.md_bytes);
    }

    #[test]
    fn tiny_devices_are_refused() {
        assert!(matches!(
            Layout::internal(100 << 10, 16),
            Err(MetaError::TooSmall { .. })
        ));
        assert!(matches!(Layout::internal(0, 16), Err(MetaError::TooSmall { .. })));
        assert!(matches!(
            Layout::external(1 << 30, 4096, 16),
            Err(MetaError::TooSmall { .. })
        ));
    }

    proptest! {
        #[test]
        fn layouts_are_sound(backing in 0u64..u64::MAX, ring in 1u32..64) {
            if let Ok(l) = Layout::internal(backing, ring) {
                check(&l, backing);
                prop_assert!(l.data_bytes + l.md_bytes <= backing);
            }
            let need = Layout::required_external_bytes(backing, ring);
            if let Ok(l) = Layout::external(backing, need, ring) {
                check(&l, need);
                prop_assert_eq!(l.data_bytes, backing / BLOCK * BLOCK);
            }
        }
    }
}
