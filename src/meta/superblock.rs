//! The superblock: format version, generation UUIDs, flags, and the layout it
//! was written for (cross-checked on read). See the table in `meta/mod.rs`.

use super::layout::{Layout, LayoutKind};
use super::{block_crc, seal, stored_crc, MetaError, BLOCK_BYTES, BM_BLOCK_BYTES, FORMAT_VERSION};
use serde::{Deserialize, Serialize};
use std::fmt;

const MAGIC: &[u8; 8] = b"TNDMMETA";
const NAME_BYTES_MAX: usize = 64;

/// DRBD's data generation identifiers. Bit 0 of `current` is the role bit
/// (1 while Primary) and is masked out of every comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GenerationUuids {
    pub current: u64,
    pub bitmap: u64,
    /// `[younger, older]`.
    pub history: [u64; 2],
}

impl GenerationUuids {
    /// DRBD's `UUID_JUST_CREATED`: fresh metadata that has never held data.
    pub const JUST_CREATED: u64 = 4;

    pub fn new_created() -> GenerationUuids {
        GenerationUuids {
            current: Self::JUST_CREATED,
            ..GenerationUuids::default()
        }
    }
}

/// Metadata flags with DRBD's meanings (`MDF_*` in drbd.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MdFlags(pub u32);

impl MdFlags {
    pub const CONSISTENT: MdFlags = MdFlags(1 << 0);
    pub const PRIMARY_IND: MdFlags = MdFlags(1 << 1);
    pub const CONNECTED_IND: MdFlags = MdFlags(1 << 2);
    pub const FULL_SYNC: MdFlags = MdFlags(1 << 3);
    pub const WAS_UP_TO_DATE: MdFlags = MdFlags(1 << 4);
    pub const PEER_OUT_DATED: MdFlags = MdFlags(1 << 5);
    pub const CRASHED_PRIMARY: MdFlags = MdFlags(1 << 6);
    pub const AL_CLEAN: MdFlags = MdFlags(1 << 7);

    const NAMES: [(MdFlags, &'static str); 8] = [
        (Self::CONSISTENT, "consistent"),
        (Self::PRIMARY_IND, "primary"),
        (Self::CONNECTED_IND, "connected"),
        (Self::FULL_SYNC, "full-sync"),
        (Self::WAS_UP_TO_DATE, "was-up-to-date"),
        (Self::PEER_OUT_DATED, "peer-outdated"),
        (Self::CRASHED_PRIMARY, "crashed-primary"),
        (Self::AL_CLEAN, "al-clean"),
    ];

    pub fn contains(self, f: MdFlags) -> bool {
        self.0 & f.0 == f.0
    }
    pub fn insert(&mut self, f: MdFlags) {
        self.0 |= f.0;
    }
    pub fn remove(&mut self, f: MdFlags) {
        self.0 &= !f.0;
    }
    /// Bits no version of this format defines.
    pub fn unknown_bits(self) -> u32 {
        self.0 & !0xff
    }
}

impl fmt::Display for MdFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(b, _)| self.contains(*b))
            .map(|(_, n)| *n)
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub seq: u64,
    pub kind: LayoutKind,
    pub data_bytes: u64,
    pub uuids: GenerationUuids,
    pub device_uuid: u64,
    pub flags: MdFlags,
    pub al_extents: u32,
    pub al_blocks: u32,
    pub al_offset: u64,
    pub bitmap_offset: u64,
    pub bitmap_bytes: u64,
    pub node_name: String,
    pub resource_name: String,
    /// Writes the peer has not seen yet (format 2; zero in format 1).
    pub divergence: Divergence,
}

/// When this node wrote data its peer does not hold: unix seconds of the
/// first and the last such write, 0 when there are none. Kept so that after
/// a split brain the operator sees when each side's diverging writes
/// happened (`split-brain-report`). The last time is persisted with the
/// superblock, so after a crash it can lag the true last write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Divergence {
    pub first_write_s: u64,
    pub last_write_s: u64,
}

fn put_name(block: &mut [u8], at: usize, name: &str) {
    let mut end = name.len().min(NAME_BYTES_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    block[at..at + end].copy_from_slice(&name.as_bytes()[..end]);
}

fn get_name(block: &[u8], at: usize, field: &'static str) -> Result<String, MetaError> {
    let raw = &block[at..at + NAME_BYTES_MAX];
    let len = raw.iter().position(|&b| b == 0).unwrap_or(NAME_BYTES_MAX);
    if raw[len..].iter().any(|&b| b != 0) {
        return Err(MetaError::Insane {
            field,
            detail: "bytes after the terminating zero".into(),
        });
    }
    String::from_utf8(raw[..len].to_vec()).map_err(|_| MetaError::Insane {
        field,
        detail: "not UTF-8".into(),
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

impl Superblock {
    /// Fresh metadata for `layout`.
    pub fn new(layout: &Layout, uuids: GenerationUuids, al_extents: u32, node: &str, resource: &str) -> Superblock {
        Superblock {
            seq: 0,
            kind: layout.kind,
            data_bytes: layout.data_bytes,
            uuids,
            device_uuid: 0,
            flags: MdFlags::default(),
            al_extents,
            al_blocks: layout.al_blocks,
            al_offset: layout.al_offset,
            bitmap_offset: layout.bitmap_offset,
            bitmap_bytes: layout.bitmap_bytes,
            node_name: node.to_owned(),
            resource_name: resource.to_owned(),
            divergence: Divergence::default(),
        }
    }

    pub fn encode(&self) -> Box<[u8; BLOCK_BYTES]> {
        let mut b = Box::new([0u8; BLOCK_BYTES]);
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let kind: u32 = match self.kind {
            LayoutKind::Internal => 0,
            LayoutKind::External => 1,
        };
        b[12..16].copy_from_slice(&kind.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.data_bytes.to_le_bytes());
        b[32..40].copy_from_slice(&self.uuids.current.to_le_bytes());
        b[40..48].copy_from_slice(&self.uuids.bitmap.to_le_bytes());
        b[48..56].copy_from_slice(&self.uuids.history[0].to_le_bytes());
        b[56..64].copy_from_slice(&self.uuids.history[1].to_le_bytes());
        b[64..72].copy_from_slice(&self.device_uuid.to_le_bytes());
        b[72..76].copy_from_slice(&self.flags.0.to_le_bytes());
        b[76..80].copy_from_slice(&self.al_extents.to_le_bytes());
        b[80..84].copy_from_slice(&self.al_blocks.to_le_bytes());
        b[84..88].copy_from_slice(&(BM_BLOCK_BYTES as u32).to_le_bytes());
        b[88..96].copy_from_slice(&self.al_offset.to_le_bytes());
        b[96..104].copy_from_slice(&self.bitmap_offset.to_le_bytes());
        b[104..112].copy_from_slice(&self.bitmap_bytes.to_le_bytes());
        put_name(&mut b[..], 112, &self.node_name);
        put_name(&mut b[..], 176, &self.resource_name);
        b[240..248].copy_from_slice(&self.divergence.first_write_s.to_le_bytes());
        b[248..256].copy_from_slice(&self.divergence.last_write_s.to_le_bytes());
        seal(&mut b[..]);
        b
    }

    /// Decode and verify one slot. Never trusts a block whose crc fails.
    pub fn decode(b: &[u8]) -> Result<Superblock, MetaError> {
        if b.len() != BLOCK_BYTES {
            return Err(MetaError::Insane {
                field: "block length",
                detail: format!("{} bytes, expected {BLOCK_BYTES}", b.len()),
            });
        }
        if &b[0..8] != MAGIC {
            return Err(MetaError::NoMetadata);
        }
        let (stored, computed) = (stored_crc(b), block_crc(b));
        if stored != computed {
            return Err(MetaError::Corrupt {
                what: "superblock",
                stored,
                computed,
            });
        }
        let version = u32_at(b, 8);
        // Format 1 is format 2 with the divergence times zero.
        if version != FORMAT_VERSION && version != 1 {
            return Err(MetaError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let kind = match u32_at(b, 12) {
            0 => LayoutKind::Internal,
            1 => LayoutKind::External,
            other => {
                return Err(MetaError::Insane {
                    field: "layout kind",
                    detail: format!("{other}"),
                })
            }
        };
        let bm_block = u32_at(b, 84);
        if u64::from(bm_block) != BM_BLOCK_BYTES {
            return Err(MetaError::Insane {
                field: "bitmap bytes per bit",
                detail: format!("{bm_block}, expected {BM_BLOCK_BYTES}"),
            });
        }
        let flags = MdFlags(u32_at(b, 72));
        if flags.unknown_bits() != 0 {
            return Err(MetaError::Insane {
                field: "flags",
                detail: format!("unknown bits {:#x}", flags.unknown_bits()),
            });
        }
        if b[256..BLOCK_BYTES - 4].iter().any(|&x| x != 0) {
            return Err(MetaError::Insane {
                field: "reserved area",
                detail: "not zero".into(),
            });
        }
        Ok(Superblock {
            seq: u64_at(b, 16),
            kind,
            data_bytes: u64_at(b, 24),
            uuids: GenerationUuids {
                current: u64_at(b, 32),
                bitmap: u64_at(b, 40),
                history: [u64_at(b, 48), u64_at(b, 56)],
            },
            device_uuid: u64_at(b, 64),
            flags,
            al_extents: u32_at(b, 76),
            al_blocks: u32_at(b, 80),
            al_offset: u64_at(b, 88),
            bitmap_offset: u64_at(b, 96),
            bitmap_bytes: u64_at(b, 104),
            node_name: get_name(b, 112, "node name")?,
            resource_name: get_name(b, 176, "resource name")?,
            divergence: Divergence {
                first_write_s: u64_at(b, 240),
                last_write_s: u64_at(b, 248),
            },
        })
    }

    /// Does this superblock describe `layout`? A mismatch means the device
    /// changed size or the config points at someone else's metadata.
    pub fn check_layout(&self, layout: &Layout) -> Result<(), MetaError> {
        let mismatch = |field: &'static str, found: u64, want: u64| MetaError::Insane {
            field,
            detail: format!("metadata says {found}, the device now gives {want}"),
        };
        if self.kind != layout.kind {
            return Err(MetaError::Insane {
                field: "layout kind",
                detail: format!("metadata is {:?}, the config says {:?}", self.kind, layout.kind),
            });
        }
        if self.data_bytes != layout.data_bytes {
            return Err(mismatch("data size", self.data_bytes, layout.data_bytes));
        }
        if self.al_offset != layout.al_offset || u64::from(self.al_blocks) != u64::from(layout.al_blocks) {
            return Err(mismatch("activity log offset", self.al_offset, layout.al_offset));
        }
        if self.bitmap_offset != layout.bitmap_offset || self.bitmap_bytes != layout.bitmap_bytes {
            return Err(mismatch("bitmap offset", self.bitmap_offset, layout.bitmap_offset));
        }
        Ok(())
    }
}

/// The slot a superblock with sequence `seq` is written to.
pub fn slot_for_seq(seq: u64) -> usize {
    (seq % 2) as usize
}

/// Which slot a read used, and what was wrong with the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReport {
    pub used: usize,
    pub seq: u64,
    pub other: Option<MetaError>,
}

impl SlotReport {
    /// A line for the log when the other slot was damaged (not merely older).
    pub fn warning(&self) -> Option<String> {
        let name = |s: usize| if s == 0 { "A" } else { "B" };
        self.other.as_ref().map(|e| {
            format!(
                "superblock slot {} is unusable ({e}); using slot {} seq {}",
                name(1 - self.used),
                name(self.used),
                self.seq
            )
        })
    }
}

/// Read both slots and pick the valid one with the highest sequence.
pub fn read_superblock(slots: [&[u8]; 2]) -> Result<(Superblock, SlotReport), MetaError> {
    let a = Superblock::decode(slots[0]);
    let b = Superblock::decode(slots[1]);
    match (a, b) {
        (Ok(a), Ok(b)) => {
            let (used, sb) = if b.seq > a.seq { (1, b) } else { (0, a) };
            Ok((
                sb.clone(),
                SlotReport {
                    used,
                    seq: sb.seq,
                    other: None,
                },
            ))
        }
        (Ok(sb), Err(e)) => Ok((
            sb.clone(),
            SlotReport {
                used: 0,
                seq: sb.seq,
                other: Some(e),
            },
        )),
        (Err(e), Ok(sb)) => Ok((
            sb.clone(),
            SlotReport {
                used: 1,
                seq: sb.seq,
                other: Some(e),
            },
        )),
        // The more informative error wins: corruption over absence.
        (Err(MetaError::NoMetadata), Err(e)) | (Err(e), Err(_)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Superblock {
        let l = Layout::internal(1 << 30, 16).unwrap();
        let mut sb = Superblock::new(&l, GenerationUuids::new_created(), 1237, "alpha", "r0");
        sb.seq = 7;
        sb.flags.insert(MdFlags::CONSISTENT);
        sb
    }

    #[test]
    fn round_trip_and_layout_check() {
        let sb = sample();
        let back = Superblock::decode(&sb.encode()[..]).unwrap();
        assert_eq!(back, sb);
        back.check_layout(&Layout::internal(1 << 30, 16).unwrap()).unwrap();
        assert!(back.check_layout(&Layout::internal(2 << 30, 16).unwrap()).is_err());
    }

    #[test]
    fn zeroes_mean_no_metadata() {
        assert_eq!(Superblock::decode(&[0u8; BLOCK_BYTES]), Err(MetaError::NoMetadata));
    }

    #[test]
    fn torn_write_is_detected() {
        let old = sample().encode();
        let mut newer = sample();
        newer.seq = 8;
        newer.uuids.current = 0x1234_5678_9abc_def0;
        let new = newer.encode();
        let mut torn = [0u8; BLOCK_BYTES];
        torn[..2048].copy_from_slice(&new[..2048]);
        torn[2048..].copy_from_slice(&old[2048..]);
        assert!(matches!(Superblock::decode(&torn), Err(MetaError::Corrupt { .. })));
        // The other slot still holds the previous generation.
        let (sb, report) = read_superblock([&old[..], &torn]).unwrap();
        assert_eq!(sb.seq, 7);
        assert!(report.warning().unwrap().contains("slot B is unusable"));
    }

    #[test]
    fn newest_valid_slot_wins() {
        let mut a = sample();
        a.seq = 10;
        let mut b = sample();
        b.seq = 11;
        let (sb, r) = read_superblock([&a.encode()[..], &b.encode()[..]]).unwrap();
        assert_eq!((sb.seq, r.used, r.other), (11, 1, None));
        let zero = [0u8; BLOCK_BYTES];
        assert_eq!(read_superblock([&zero, &zero]).unwrap_err(), MetaError::NoMetadata);
        let mut bad = *a.encode();
        bad[100] ^= 1;
        assert!(matches!(read_superblock([&bad, &zero]), Err(MetaError::Corrupt { .. })));
    }

    #[test]
    fn format_1_reads_with_zero_divergence_times() {
        let mut sb = sample();
        sb.divergence = Divergence {
            first_write_s: 1_700_000_000,
            last_write_s: 1_700_000_100,
        };
        let b = sb.encode();
        assert_eq!(Superblock::decode(&b[..]).unwrap().divergence, sb.divergence);
        let mut v1 = *sample().encode();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        seal(&mut v1);
        assert_eq!(Superblock::decode(&v1).unwrap().divergence, Divergence::default());
    }

    #[test]
    fn other_versions_are_refused() {
        let mut b = *sample().encode();
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        seal(&mut b);
        assert_eq!(
            Superblock::decode(&b),
            Err(MetaError::UnsupportedVersion { found: 3, supported: 2 })
        );
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_is_caught(bit in 0usize..BLOCK_BYTES * 8) {
            let mut b = *sample().encode();
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Superblock::decode(&b).is_err());
        }

        #[test]
        fn round_trips(seq: u64, data: u64, cur: u64, bm: u64, h0: u64, h1: u64, flags in 0u32..256, ext: u32,
                       node in "[a-z0-9.-]{0,64}", res in "[a-z0-9_]{0,64}") {
            let l = Layout::external(1 << 30, 1 << 30, 16).unwrap();
            let mut sb = Superblock::new(&l, GenerationUuids { current: cur, bitmap: bm, history: [h0, h1] }, ext, &node, &res);
            sb.seq = seq;
            sb.data_bytes = data;
            sb.flags = MdFlags(flags);
            prop_assert_eq!(Superblock::decode(&sb.encode()[..]).unwrap(), sb);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let _ = Superblock::decode(&bytes);
        }
    }
}
