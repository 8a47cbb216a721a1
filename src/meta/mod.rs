//! On-disk metadata formats, pure: bytes in, bytes out, no file I/O.
//!
//! Format version 1, little-endian, every block 4096 bytes and protected by
//! crc32c (Castagnoli) in its last four bytes.
//!
//! ```text
//! internal (at the end of the backing disk; the export shrinks by md_bytes):
//!
//!   0                                        data_bytes                         backing end
//!   | data ..................................| bitmap | AL ring | SB A | SB B |
//!
//! external (a separate file or device, from offset 0; all of the disk is data):
//!
//!   0      4096   8192
//!   | SB A | SB B | AL ring | bitmap |
//! ```
//!
//! The superblock is written alternately into slot A and slot B with an
//! increasing sequence number. A reader takes the valid slot with the highest
//! sequence; a torn write can only damage the slot being written, so the
//! previous generation survives in the other. A block whose crc does not
//! match is reported and never trusted.
//!
//! Superblock layout (offsets in bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `TNDMMETA` |
//! | 8 | 4 | format version (2; 1 is read as 2 with zero divergence times) |
//! | 12 | 4 | layout kind (0 internal, 1 external) |
//! | 16 | 8 | sequence number |
//! | 24 | 8 | data bytes (last agreed size) |
//! | 32 | 8 | current UUID (bit 0: role) |
//! | 40 | 8 | bitmap UUID |
//! | 48 | 16 | history UUIDs [2] |
//! | 64 | 8 | device UUID |
//! | 72 | 4 | flags (`MdFlags`) |
//! | 76 | 4 | al-extents |
//! | 80 | 4 | AL ring blocks |
//! | 84 | 4 | bitmap bytes per bit (4096) |
//! | 88 | 8 | AL offset on the metadata device |
//! | 96 | 8 | bitmap offset |
//! | 104 | 8 | bitmap bytes |
//! | 112 | 64 | node name (UTF-8, zero padded) |
//! | 176 | 64 | resource name (UTF-8, zero padded) |
//! | 240 | 8 | first write the peer has not seen (unix s, 0 none) |
//! | 248 | 8 | last such write (unix s) |
//! | 256 | 3836 | zero |
//! | 4092 | 4 | crc32c of the block with this field zero |

pub mod al;
pub mod bitmap;
pub mod dump;
pub mod layout;
pub mod superblock;

pub use layout::{Layout, LayoutKind};
pub use superblock::{read_superblock, slot_for_seq, Divergence, GenerationUuids, MdFlags, SlotReport, Superblock};

/// Every metadata block is one page.
pub const BLOCK_BYTES: usize = 4096;
/// One bitmap bit covers this many bytes of data.
pub const BM_BLOCK_BYTES: u64 = 4096;
/// Activity-log extents are 4 MiB, as in DRBD (`AL_EXTENT_SHIFT` 22).
pub const AL_EXTENT_SHIFT: u32 = 22;
/// Default activity-log ring: 16 transaction blocks (64 KiB).
pub const AL_RING_BLOCKS_DEFAULT: u32 = 16;
/// The on-disk format this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;

/// Why metadata cannot be used; every message is meant for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("no Tandem metadata found")]
    NoMetadata,
    #[error("metadata {what} is corrupt: crc32c mismatch (stored {stored:#010x}, computed {computed:#010x}); it will not be trusted")]
    Corrupt {
        what: &'static str,
        stored: u32,
        computed: u32,
    },
    #[error("metadata format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("metadata field {field} is not sane: {detail}; it will not be trusted")]
    Insane { field: &'static str, detail: String },
    #[error("device too small: metadata and data need {needed} bytes, {available} available")]
    TooSmall { needed: u64, available: u64 },
    #[error("I/O error reading metadata: {0}")]
    Io(String),
}

/// crc32c of a 4 KiB block, computed with its last four bytes taken as zero.
pub(crate) fn block_crc(block: &[u8]) -> u32 {
    let body = &block[..BLOCK_BYTES - 4];
    crc32c::crc32c_append(crc32c::crc32c(body), &[0u8; 4])
}

pub(crate) fn stored_crc(block: &[u8]) -> u32 {
    u32::from_le_bytes([
        block[BLOCK_BYTES - 4],
        block[BLOCK_BYTES - 3],
        block[BLOCK_BYTES - 2],
        block[BLOCK_BYTES - 1],
    ])
}

pub(crate) fn seal(block: &mut [u8]) {
    let crc = block_crc(block);
    block[BLOCK_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
}
