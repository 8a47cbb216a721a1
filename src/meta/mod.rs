//! On-disk metadata formats, pure: bytes in, bytes out, no file I/O.
//!
//! Tandem's own format, modelled on DRBD 8.4's "v08" metadata but
//! little-endian and versioned. Every metadata block is 4096 bytes and ends in
//! a crc32c (Castagnoli) of the block computed with the crc field zeroed, so a
//! torn or rotted block is recognised and never trusted.
//!
//! # Layouts
//!
//! All offsets are bytes on the *metadata device*: the backing disk itself for
//! `meta-disk internal`, the separate file or device otherwise.
//!
//! ```text
//! internal: metadata at the end of the backing disk; the export shrinks by md_bytes
//!
//!   0                               data_bytes = md_offset                        end of disk
//!   |                                        |                                      (rounded
//!   v                                        v                                      down to 4 KiB)
//!   +----------------------------------------+----------+-----------+------+------+ v
//!   | data (exported over NBD)               | bitmap   | AL ring   | SB A | SB B |
//!   +----------------------------------------+----------+-----------+------+------+
//!                                            ^          ^           ^      ^
//!                                  bitmap_offset    al_offset   superblock_offsets[0], [1]
//!
//!   SB B is always the last 4 KiB block of the disk and SB A the one before,
//!   so a reader finds them from the disk size alone. The bitmap is sized for
//!   the largest data area that fits (and may own one spare 4 KiB page).
//!
//! external: metadata in its own file or device, from offset 0; all of the
//! backing disk is data
//!
//!   0      4096   8192                 al_offset + 4096 * al_blocks
//!   +------+------+---------------------+--------------------------+
//!   | SB A | SB B | AL ring             | bitmap                   |   (rest of the device unused)
//!   +------+------+---------------------+--------------------------+
//!   ^ md_offset = 0                      ^ bitmap_offset            ^ md_bytes
//! ```
//!
//! The bitmap has one bit per 4 KiB block of data (`BM_BLOCK_BYTES`): 32 KiB of
//! bitmap per GiB, 512 MiB for 16 TiB. The activity-log ring holds
//! `al_blocks` transaction blocks (default 16, 64 KiB); transaction N lives in
//! ring slot N mod `al_blocks`. See [`al`] and [`bitmap`].
//!
//! # Superblock (two slots)
//!
//! The superblock is written alternately into slot A and slot B with an
//! increasing sequence number (`seq`; slot = `seq % 2`, [`slot_for_seq`]). A
//! reader takes the valid slot with the highest `seq` ([`read_superblock`]);
//! a torn write can damage only the slot being written, so the previous
//! generation survives in the other.
//!
//! Superblock block, format version 1 (all integers little-endian):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 8 | magic `TNDMMETA` |
//! | 8 | 4 | format version (1) |
//! | 12 | 1 | layout kind: 0 internal, 1 external |
//! | 13 | 3 | zero |
//! | 16 | 8 | `seq`: write sequence number |
//! | 24 | 8 | `data_bytes`: last agreed size of the replicated device |
//! | 32 | 8 | current generation UUID (bit 0: role, 1 while Primary) |
//! | 40 | 8 | bitmap UUID |
//! | 48 | 8 | history UUID 0 (younger) |
//! | 56 | 8 | history UUID 1 (older) |
//! | 64 | 8 | device UUID |
//! | 72 | 4 | flags (`MdFlags`, DRBD's `MDF_*` bits 0..=7) |
//! | 76 | 4 | al-extents (configured hot-set size) |
//! | 80 | 4 | AL ring blocks |
//! | 84 | 4 | bitmap bytes per bit (4096) |
//! | 88 | 8 | layout: data capacity in bytes |
//! | 96 | 8 | layout: `md_offset` |
//! | 104 | 8 | layout: `md_bytes` |
//! | 112 | 8 | layout: superblock slot A offset |
//! | 120 | 8 | layout: superblock slot B offset |
//! | 128 | 8 | layout: AL ring offset |
//! | 136 | 8 | layout: bitmap offset |
//! | 144 | 8 | layout: bitmap bytes |
//! | 152 | 1 | node name length (0..=64) |
//! | 153 | 1 | resource name length (0..=64) |
//! | 154 | 2 | zero |
//! | 156 | 64 | node name, UTF-8, zero padded |
//! | 220 | 64 | resource name, UTF-8, zero padded |
//! | 284 | 3808 | zero |
//! | 4092 | 4 | crc32c of bytes 0..4092 followed by four zero bytes |
//!
//! A reader refuses (and never trusts) a block whose crc does not match, whose
//! version it does not know, or whose fields are not sane: unknown flag bits,
//! non-zero reserved bytes, names that are not UTF-8, a layout whose regions
//! overlap or leave the metadata area. Decoding is canonical: a block that
//! decodes re-encodes to the same bytes.
//!
//! # Format history
//!
//! * **1** — first format: the tables above and in [`al`]. Bump
//!   [`FORMAT_VERSION`] on any change of a byte's meaning and add a line here.

pub mod al;
pub mod bitmap;
pub mod dump;
pub mod layout;
pub mod superblock;

pub use al::{recover_hot_extents, AlRecovery, AlTransaction};
pub use bitmap::{bitmap_bytes_for, Bitmap};
pub use dump::render_dump;
pub use layout::{Layout, LayoutKind};
pub use superblock::{
    read_superblock, slot_for_seq, GenerationUuids, MdFlags, OtherSlot, SlotReport, Superblock, UUID_JUST_CREATED,
};

/// Every metadata block (superblock slot, AL transaction, bitmap page) is one 4 KiB page.
pub const BLOCK_BYTES: usize = 4096;
/// [`BLOCK_BYTES`] as a `u64`, for offset arithmetic.
pub const BLOCK_BYTES_U64: u64 = BLOCK_BYTES as u64;
/// One bitmap bit covers this many bytes of data.
pub const BM_BLOCK_BYTES: u64 = 4096;
/// Activity-log extents are 4 MiB, as in DRBD (`AL_EXTENT_SHIFT` 22).
pub const AL_EXTENT_SHIFT: u32 = 22;
/// Bytes of data in one activity-log extent.
pub const AL_EXTENT_BYTES: u64 = 1 << AL_EXTENT_SHIFT;
/// Default activity-log ring: 16 transaction blocks (64 KiB).
pub const AL_RING_BLOCKS_DEFAULT: u32 = 16;
/// Fewest ring blocks: a torn write of the newest transaction must leave the previous one.
pub const AL_RING_BLOCKS_MIN: u32 = 2;
/// Most ring blocks (4 MiB): far more than the largest al-extents needs.
pub const AL_RING_BLOCKS_MAX: u32 = 1024;
/// The on-disk format this build writes and reads (see "Format history").
pub const FORMAT_VERSION: u32 = 1;
/// Below this much data a device is refused: it is certainly a mistake.
pub const DATA_BYTES_MIN: u64 = 1 << 20;
/// Largest data area: every 4 MiB extent number must fit a `u32` and differ
/// from the activity log's free-slot marker (just under 16 PiB).
pub const DATA_BYTES_MAX: u64 = (u32::MAX as u64) << AL_EXTENT_SHIFT;

const _: () = assert!(
    BLOCK_BYTES_U64 == BM_BLOCK_BYTES,
    "a bitmap page and a data block are both 4 KiB"
);
const _: () = assert!(AL_EXTENT_BYTES % BM_BLOCK_BYTES == 0, "an extent is whole bitmap bits");
const _: () = assert!((DATA_BYTES_MAX - 1) >> AL_EXTENT_SHIFT < al::EXTENT_FREE as u64);
const _: () = assert!(AL_RING_BLOCKS_MIN <= AL_RING_BLOCKS_DEFAULT && AL_RING_BLOCKS_DEFAULT <= AL_RING_BLOCKS_MAX);
const _: () = assert!(usize::BITS >= 64, "bitmaps of large devices are indexed with usize");

/// Why metadata cannot be used. Every message is written for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The block holds no Tandem magic: never written, zeroed, or someone else's data.
    #[error("no Tandem metadata found")]
    NoMetadata,
    /// The crc32c stored in the block does not match its contents (torn write, bit rot).
    #[error(
        "metadata {what} is corrupt: crc32c mismatch (stored {expected_crc:#010x}, computed {found_crc:#010x}); \
         it will not be trusted"
    )]
    Corrupt {
        /// Which kind of block: `"superblock"`, `"activity-log block"`.
        what: &'static str,
        /// The checksum stored in the block when it was written.
        expected_crc: u32,
        /// The checksum of the bytes as read.
        found_crc: u32,
    },
    /// A valid block of a format version this build does not know.
    #[error(
        "metadata format version {found} is not supported (this build reads and writes version {supported}); \
         it was written by a different Tandem release"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    /// The checksum is right but a field makes no sense (a bug, or tampering).
    #[error("metadata field {field} is not sane: {detail}; it will not be trusted")]
    Insane { field: &'static str, detail: String },
    /// A device cannot hold the metadata and at least [`DATA_BYTES_MIN`] of data.
    #[error(
        "{what} is too small: {needed} bytes ({}) needed, {available} bytes ({}) available",
        human_bytes(*.needed),
        human_bytes(*.available)
    )]
    TooSmall {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    /// A device is larger than the format can describe ([`DATA_BYTES_MAX`]).
    #[error("{what} is too large: {bytes} bytes ({}); at most {max} bytes ({}) are supported", human_bytes(*.bytes), human_bytes(*.max))]
    TooLarge { what: &'static str, bytes: u64, max: u64 },
    /// The superblock describes a different layout than the device gives now.
    #[error(
        "metadata {field} does not match the device: the metadata records {recorded}, the device now gives \
         {computed}; the device was resized or the configuration points at other metadata"
    )]
    LayoutMismatch {
        field: &'static str,
        recorded: u64,
        computed: u64,
    },
    /// Reading or writing the metadata device failed (raised by the I/O shell).
    #[error("I/O error on the metadata: {0}")]
    Io(String),
}

/// `1536 B`, `64.0 MiB`, `16.0 TiB`: binary units, one decimal.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// `x` rounded down to a whole 4 KiB block.
pub(crate) fn align_down(x: u64) -> u64 {
    x - x % BLOCK_BYTES_U64
}

/// The fixed-size view of a block, or `Insane` if it is not exactly 4096 bytes.
pub(crate) fn as_block(bytes: &[u8]) -> Result<&[u8; BLOCK_BYTES], MetaError> {
    bytes.try_into().map_err(|_| MetaError::Insane {
        field: "block length",
        detail: format!("{} bytes, a metadata block is {BLOCK_BYTES}", bytes.len()),
    })
}

/// crc32c of a block computed with its last four bytes (the crc field) as zero.
pub(crate) fn block_crc(block: &[u8; BLOCK_BYTES]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&block[..BLOCK_BYTES - 4]), &[0u8; 4])
}

/// The crc stored in the last four bytes.
pub(crate) fn stored_crc(block: &[u8; BLOCK_BYTES]) -> u32 {
    get_u32(block, BLOCK_BYTES - 4)
}

/// Store the block's crc in its last four bytes.
pub(crate) fn seal(block: &mut [u8; BLOCK_BYTES]) {
    let crc = block_crc(block);
    put_u32(block, BLOCK_BYTES - 4, crc);
}

/// Check the crc; `what` names the block in the error.
pub(crate) fn check_crc(block: &[u8; BLOCK_BYTES], what: &'static str) -> Result<(), MetaError> {
    let (expected_crc, found_crc) = (stored_crc(block), block_crc(block));
    if expected_crc == found_crc {
        Ok(())
    } else {
        Err(MetaError::Corrupt {
            what,
            expected_crc,
            found_crc,
        })
    }
}

// Fixed-offset little-endian field access. Offsets are constants of the
// formats (or bounded by a checked count), always inside the block.

pub(crate) fn get_u32(b: &[u8; BLOCK_BYTES], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn get_u64(b: &[u8; BLOCK_BYTES], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn put_u32(b: &mut [u8; BLOCK_BYTES], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(b: &mut [u8; BLOCK_BYTES], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// `Insane` unless `b[range]` is all zero.
pub(crate) fn check_zero(
    b: &[u8; BLOCK_BYTES],
    range: std::ops::Range<usize>,
    field: &'static str,
) -> Result<(), MetaError> {
    match b[range.clone()].iter().position(|&x| x != 0) {
        None => Ok(()),
        Some(i) => Err(MetaError::Insane {
            field,
            detail: format!(
                "byte {} is {:#04x}, it must be zero",
                range.start + i,
                b[range.start + i]
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_operator_readable() {
        let e = MetaError::Corrupt {
            what: "superblock",
            expected_crc: 0xdead_beef,
            found_crc: 0x1234_5678,
        };
        assert_eq!(
            e.to_string(),
            "metadata superblock is corrupt: crc32c mismatch (stored 0xdeadbeef, computed 0x12345678); \
             it will not be trusted"
        );
        let e = MetaError::TooSmall {
            what: "backing disk",
            needed: 1_126_400,
            available: 65536,
        };
        assert_eq!(
            e.to_string(),
            "backing disk is too small: 1126400 bytes (1.1 MiB) needed, 65536 bytes (64.0 KiB) available"
        );
        assert_eq!(MetaError::NoMetadata.to_string(), "no Tandem metadata found");
        assert!(MetaError::UnsupportedVersion { found: 2, supported: 1 }
            .to_string()
            .contains("version 2 is not supported"));
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(human_bytes(16 << 40), "16.0 TiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn crc_covers_the_block_with_the_crc_field_zeroed() {
        let mut b = [7u8; BLOCK_BYTES];
        seal(&mut b);
        assert!(check_crc(&b, "test").is_ok());
        let mut z = b;
        z[BLOCK_BYTES - 4..].fill(0);
        assert_eq!(stored_crc(&b), crc32c::crc32c(&z));
        b[0] ^= 1;
        assert!(matches!(
            check_crc(&b, "test"),
            Err(MetaError::Corrupt { what: "test", .. })
        ));
    }
}
