//! The superblock: format version, generation UUIDs, flags, names, and the
//! layout it was written for (cross-checked against the layout computed from
//! the devices on every attach). Byte table in the documentation of
//! [`crate::meta`].

use super::al::max_al_extents;
use super::layout::{Layout, LayoutKind};
use super::{
    as_block, check_crc, check_zero, get_u32, get_u64, put_u32, put_u64, seal, MetaError, BLOCK_BYTES, BM_BLOCK_BYTES,
    FORMAT_VERSION,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Magic at offset 0 of a superblock.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"TNDMMETA";
/// Longest node or resource name stored, in bytes of UTF-8.
pub const NAME_BYTES_MAX: usize = 64;
/// DRBD's `UUID_JUST_CREATED`: the current UUID of fresh metadata that has
/// never held replicated data.
pub const UUID_JUST_CREATED: u64 = 4;

const NODE_NAME_AT: usize = 156;
const RESOURCE_NAME_AT: usize = 220;
const RESERVED_AT: usize = 284;

/// DRBD's data generation identifiers (`reference/drbd.md` b5).
///
/// **Bit 0 of `current` is the role bit**: 1 while this node is Primary, 0
/// while Secondary. It is masked out of every comparison, so a promotion
/// alone never looks like new data. `0` means empty; [`UUID_JUST_CREATED`]
/// marks fresh `create-md` metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GenerationUuids {
    /// The current data generation.
    pub current: u64,
    /// The generation the bitmap tracks changes from (0 when the bitmap is not in use).
    pub bitmap: u64,
    /// Earlier generations, `[younger, older]`.
    pub history: [u64; 2],
}

impl GenerationUuids {
    /// Same as [`UUID_JUST_CREATED`].
    pub const JUST_CREATED: u64 = UUID_JUST_CREATED;
    /// The role bit of `current`.
    pub const ROLE_BIT: u64 = 1;

    /// The tuple `create-md` writes: current = `UUID_JUST_CREATED`, the rest 0.
    pub fn new_created() -> GenerationUuids {
        GenerationUuids {
            current: UUID_JUST_CREATED,
            ..GenerationUuids::default()
        }
    }

    /// `current` without its role bit, as every comparison uses it.
    pub fn current_masked(&self) -> u64 {
        self.current & !Self::ROLE_BIT
    }

    /// Fresh metadata that has never held replicated data.
    pub fn is_just_created(&self) -> bool {
        self.current_masked() == UUID_JUST_CREATED
    }
}

/// Metadata flags with DRBD's meanings (`MDF_*` in drbd.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MdFlags(pub u32);

impl MdFlags {
    /// The data is consistent (not in the middle of a resync as target).
    pub const CONSISTENT: MdFlags = MdFlags(1 << 0);
    /// This node is (or was, when it stopped) Primary.
    pub const PRIMARY_IND: MdFlags = MdFlags(1 << 1);
    /// This node is (or was) connected to its peer.
    pub const CONNECTED_IND: MdFlags = MdFlags(1 << 2);
    /// Setting every bitmap bit (full sync) was in progress.
    pub const FULL_SYNC: MdFlags = MdFlags(1 << 3);
    /// The data was UpToDate.
    pub const WAS_UP_TO_DATE: MdFlags = MdFlags(1 << 4);
    /// The peer's disk was Outdated or Inconsistent (fencing).
    pub const PEER_OUT_DATED: MdFlags = MdFlags(1 << 5);
    /// PRIMARY_IND was still set at attach: the node died while Primary and
    /// has not seen its peer since.
    pub const CRASHED_PRIMARY: MdFlags = MdFlags(1 << 6);
    /// The activity log needs no replay (clean detach).
    pub const AL_CLEAN: MdFlags = MdFlags(1 << 7);
    /// Every bit this format defines.
    pub const KNOWN_BITS: u32 = 0xff;

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

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Are all of `f`'s bits set?
    pub fn contains(self, f: MdFlags) -> bool {
        self.0 & f.0 == f.0
    }

    pub fn insert(&mut self, f: MdFlags) {
        self.0 |= f.0;
    }

    pub fn remove(&mut self, f: MdFlags) {
        self.0 &= !f.0;
    }

    /// Set or clear `f`.
    pub fn set(&mut self, f: MdFlags, on: bool) {
        if on {
            self.insert(f);
        } else {
            self.remove(f);
        }
    }

    /// Bits no version of this format defines.
    pub fn unknown_bits(self) -> u32 {
        self.0 & !Self::KNOWN_BITS
    }
}

/// The names of the set flags, `"consistent, was-up-to-date"`, or `"none"`.
impl fmt::Display for MdFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<String> = Self::NAMES
            .iter()
            .filter(|(b, _)| self.contains(*b))
            .map(|(_, n)| (*n).to_owned())
            .collect();
        if self.unknown_bits() != 0 {
            names.push(format!("unknown({:#x})", self.unknown_bits()));
        }
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

/// One superblock generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Superblock {
    /// [`FORMAT_VERSION`] for everything this build decodes.
    pub format_version: u32,
    /// Incremented on every write; the slot is `seq % 2` ([`slot_for_seq`]).
    pub seq: u64,
    /// The last agreed size of the replicated device, at most `layout.data_bytes`.
    pub data_bytes: u64,
    pub uuids: GenerationUuids,
    /// Random identity of this node's disk (0 if never set).
    pub device_uuid: u64,
    pub flags: MdFlags,
    /// The configured hot-set size (al-extents), at most
    /// `max_al_extents(layout.al_blocks)`.
    pub al_extents: u32,
    /// Bytes of data per bitmap bit: always [`BM_BLOCK_BYTES`].
    pub bm_block_bytes: u32,
    /// The layout this metadata was written for: kind, offsets, AL ring blocks.
    pub layout: Layout,
    /// The node (`on NAME { }`) that wrote it, at most 64 bytes.
    pub node_name: String,
    /// The resource, at most 64 bytes.
    pub resource_name: String,
}

/// `name` cut to at most [`NAME_BYTES_MAX`] bytes on a character boundary.
pub fn truncate_name(name: &str) -> &str {
    let mut end = name.len().min(NAME_BYTES_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn get_name(b: &[u8; BLOCK_BYTES], len_at: usize, at: usize, field: &'static str) -> Result<String, MetaError> {
    let len = usize::from(b[len_at]);
    if len > NAME_BYTES_MAX {
        return Err(MetaError::Insane {
            field,
            detail: format!("length {len}, at most {NAME_BYTES_MAX}"),
        });
    }
    check_zero(b, at + len..at + NAME_BYTES_MAX, field)?;
    String::from_utf8(b[at..at + len].to_vec()).map_err(|e| MetaError::Insane {
        field,
        detail: format!("not UTF-8 ({e})"),
    })
}

fn put_name(b: &mut [u8; BLOCK_BYTES], len_at: usize, at: usize, name: &str) {
    let name = truncate_name(name); // validated: already at most 64 bytes
    b[len_at] = name.len() as u8;
    b[at..at + name.len()].copy_from_slice(name.as_bytes());
}

impl Superblock {
    /// Fresh metadata for `layout`: sequence 0, no flags, the whole data area
    /// agreed. `al_extents` is capped at what the ring protects
    /// ([`max_al_extents`]) and names at 64 bytes.
    pub fn new(layout: &Layout, uuids: GenerationUuids, al_extents: u32, node: &str, resource: &str) -> Superblock {
        Superblock {
            format_version: FORMAT_VERSION,
            seq: 0,
            data_bytes: layout.data_bytes,
            uuids,
            device_uuid: 0,
            flags: MdFlags::default(),
            al_extents: al_extents.min(max_al_extents(layout.al_blocks)),
            bm_block_bytes: BM_BLOCK_BYTES as u32,
            layout: *layout,
            node_name: truncate_name(node).to_owned(),
            resource_name: truncate_name(resource).to_owned(),
        }
    }

    /// Blocks in the activity-log ring.
    pub fn al_ring_blocks(&self) -> u32 {
        self.layout.al_blocks
    }

    /// Internal or external.
    pub fn kind(&self) -> LayoutKind {
        self.layout.kind
    }

    /// Step to the next generation: increments `seq` and returns the slot
    /// (0 = A, 1 = B) it must be written to.
    pub fn advance_seq(&mut self) -> usize {
        self.seq = self.seq.saturating_add(1);
        slot_for_seq(self.seq)
    }

    /// The superblock's block.
    ///
    /// # Panics
    /// If the superblock breaks [`Superblock::validate`]: writing it would
    /// leave a slot no reader accepts, and readers would silently fall back
    /// to the older generation in the other slot. That is a bug of the
    /// caller, and the node stops rather than lose a metadata update.
    pub fn encode(&self) -> Box<[u8; BLOCK_BYTES]> {
        if let Err(e) = self.validate() {
            panic!("refusing to write an invalid superblock: {e}");
        }
        let l = &self.layout;
        let mut b = Box::new([0u8; BLOCK_BYTES]);
        b[0..8].copy_from_slice(&SUPERBLOCK_MAGIC);
        put_u32(&mut b, 8, self.format_version);
        b[12] = l.kind.code();
        put_u64(&mut b, 16, self.seq);
        put_u64(&mut b, 24, self.data_bytes);
        put_u64(&mut b, 32, self.uuids.current);
        put_u64(&mut b, 40, self.uuids.bitmap);
        put_u64(&mut b, 48, self.uuids.history[0]);
        put_u64(&mut b, 56, self.uuids.history[1]);
        put_u64(&mut b, 64, self.device_uuid);
        put_u32(&mut b, 72, self.flags.0);
        put_u32(&mut b, 76, self.al_extents);
        put_u32(&mut b, 80, l.al_blocks);
        put_u32(&mut b, 84, self.bm_block_bytes);
        put_u64(&mut b, 88, l.data_bytes);
        put_u64(&mut b, 96, l.md_offset);
        put_u64(&mut b, 104, l.md_bytes);
        put_u64(&mut b, 112, l.superblock_offsets[0]);
        put_u64(&mut b, 120, l.superblock_offsets[1]);
        put_u64(&mut b, 128, l.al_offset);
        put_u64(&mut b, 136, l.bitmap_offset);
        put_u64(&mut b, 144, l.bitmap_bytes);
        put_name(&mut b, 152, NODE_NAME_AT, &self.node_name);
        put_name(&mut b, 153, RESOURCE_NAME_AT, &self.resource_name);
        seal(&mut b);
        b
    }

    /// Decode and verify one slot: length, magic (`NoMetadata`), crc
    /// (`Corrupt`), version (`UnsupportedVersion`), then every field
    /// (`Insane`). Never panics; a block that decodes re-encodes identically.
    pub fn decode(block: &[u8]) -> Result<Superblock, MetaError> {
        let b = as_block(block)?;
        if b[0..8] != SUPERBLOCK_MAGIC {
            return Err(MetaError::NoMetadata);
        }
        check_crc(b, "superblock")?;
        let format_version = get_u32(b, 8);
        if format_version != FORMAT_VERSION {
            return Err(MetaError::UnsupportedVersion {
                found: format_version,
                supported: FORMAT_VERSION,
            });
        }
        let insane = |field: &'static str, detail: String| MetaError::Insane { field, detail };
        let kind = LayoutKind::from_code(b[12]).ok_or_else(|| {
            insane(
                "layout kind",
                format!("{}, expected 0 (internal) or 1 (external)", b[12]),
            )
        })?;
        check_zero(b, 13..16, "reserved header")?;
        check_zero(b, 154..156, "reserved header")?;
        check_zero(b, RESERVED_AT..BLOCK_BYTES - 4, "reserved area")?;
        let sb = Superblock {
            format_version,
            seq: get_u64(b, 16),
            data_bytes: get_u64(b, 24),
            uuids: GenerationUuids {
                current: get_u64(b, 32),
                bitmap: get_u64(b, 40),
                history: [get_u64(b, 48), get_u64(b, 56)],
            },
            device_uuid: get_u64(b, 64),
            flags: MdFlags(get_u32(b, 72)),
            al_extents: get_u32(b, 76),
            bm_block_bytes: get_u32(b, 84),
            layout: Layout {
                kind,
                data_bytes: get_u64(b, 88),
                md_offset: get_u64(b, 96),
                md_bytes: get_u64(b, 104),
                superblock_offsets: [get_u64(b, 112), get_u64(b, 120)],
                al_offset: get_u64(b, 128),
                al_blocks: get_u32(b, 80),
                bitmap_offset: get_u64(b, 136),
                bitmap_bytes: get_u64(b, 144),
            },
            node_name: get_name(b, 152, NODE_NAME_AT, "node name")?,
            resource_name: get_name(b, 153, RESOURCE_NAME_AT, "resource name")?,
        };
        sb.validate()?;
        Ok(sb)
    }

    /// The rules every superblock obeys, checked before it is written and
    /// after it is read: known version, flags and bitmap granularity, a sound
    /// layout, an agreed size inside it, al-extents the ring protects, names
    /// of at most 64 bytes.
    pub fn validate(&self) -> Result<(), MetaError> {
        let insane = |field: &'static str, detail: String| Err(MetaError::Insane { field, detail });
        if self.format_version != FORMAT_VERSION {
            return Err(MetaError::UnsupportedVersion {
                found: self.format_version,
                supported: FORMAT_VERSION,
            });
        }
        if u64::from(self.bm_block_bytes) != BM_BLOCK_BYTES {
            return insane(
                "bitmap bytes per bit",
                format!("{}, expected {BM_BLOCK_BYTES}", self.bm_block_bytes),
            );
        }
        if self.flags.unknown_bits() != 0 {
            return insane("flags", format!("unknown bits {:#x}", self.flags.unknown_bits()));
        }
        self.layout.validate()?;
        if self.data_bytes % BM_BLOCK_BYTES != 0 || self.data_bytes > self.layout.data_bytes {
            return insane(
                "data size",
                format!(
                    "{} bytes agreed, but the layout holds {} (and sizes are multiples of 4096)",
                    self.data_bytes, self.layout.data_bytes
                ),
            );
        }
        let al_max = max_al_extents(self.layout.al_blocks);
        if self.al_extents > al_max {
            return insane(
                "al-extents",
                format!(
                    "{}, a ring of {} blocks protects at most {al_max}",
                    self.al_extents, self.layout.al_blocks
                ),
            );
        }
        for (field, name) in [("node name", &self.node_name), ("resource name", &self.resource_name)] {
            if name.len() > NAME_BYTES_MAX {
                return insane(field, format!("{} bytes, at most {NAME_BYTES_MAX}", name.len()));
            }
        }
        Ok(())
    }

    /// Does this superblock describe `layout`, the one computed from the
    /// devices now? A mismatch means the device changed size or the
    /// configuration points at other metadata.
    pub fn check_layout(&self, layout: &Layout) -> Result<(), MetaError> {
        self.layout.check_against(layout)?;
        if self.data_bytes > layout.data_bytes {
            return Err(MetaError::LayoutMismatch {
                field: "agreed data size",
                recorded: self.data_bytes,
                computed: layout.data_bytes,
            });
        }
        Ok(())
    }
}

/// The slot (0 = A, 1 = B) the superblock with sequence `seq` is written to.
pub fn slot_for_seq(seq: u64) -> usize {
    (seq % 2) as usize
}

/// What the slot that was not used holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtherSlot {
    /// A valid, older generation: the normal case.
    Older { seq: u64 },
    /// A valid generation with the same sequence number (slot A was used).
    SameSeq,
    /// No metadata (never written, or zeroed).
    Empty,
    /// Corrupt or insane: reported, not trusted.
    Invalid(MetaError),
}

/// Which slot [`read_superblock`] used, and what the other held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReport {
    /// 0 = slot A, 1 = slot B.
    pub used: usize,
    /// Sequence number of the superblock used.
    pub seq: u64,
    pub other: OtherSlot,
}

impl SlotReport {
    /// `"A"` or `"B"`.
    pub fn slot_name(slot: usize) -> &'static str {
        if slot == 0 {
            "A"
        } else {
            "B"
        }
    }

    /// A line for the log when the other slot is damaged or unexpectedly
    /// empty, e.g. `superblock slot B is corrupt (crc32c stored 0x…,
    /// computed 0x…); using slot A seq 7`. `None` in the normal case.
    pub fn warning(&self) -> Option<String> {
        let other = Self::slot_name(1 - self.used.min(1));
        let using = format!("using slot {} seq {}", Self::slot_name(self.used), self.seq);
        match &self.other {
            OtherSlot::Older { .. } => None,
            OtherSlot::SameSeq => Some(format!("both superblock slots hold seq {}; {using}", self.seq)),
            OtherSlot::Empty => Some(format!("superblock slot {other} holds no metadata; {using}")),
            OtherSlot::Invalid(MetaError::Corrupt {
                expected_crc,
                found_crc,
                ..
            }) => Some(format!(
                "superblock slot {other} is corrupt (crc32c stored {expected_crc:#010x}, computed \
                 {found_crc:#010x}); {using}"
            )),
            OtherSlot::Invalid(e) => Some(format!("superblock slot {other} is unusable ({e}); {using}")),
        }
    }
}

impl fmt::Display for SlotReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.warning() {
            Some(w) => f.write_str(&w),
            None => write!(
                f,
                "using superblock slot {} seq {}",
                Self::slot_name(self.used),
                self.seq
            ),
        }
    }
}

/// How much an error says about a slot, for choosing which to report.
fn informativeness(e: &MetaError) -> u8 {
    match e {
        MetaError::NoMetadata => 0,
        MetaError::Corrupt { .. } => 1,
        _ => 2,
    }
}

/// Read both superblock slots and pick the valid one with the highest
/// sequence. If either slot holds a valid block of another format version,
/// refuse (`UnsupportedVersion`): a newer Tandem has written this metadata and
/// the other slot may be stale. If neither slot is valid, the more
/// informative error wins (insane over corrupt over no metadata).
pub fn read_superblock(slots: [&[u8]; 2]) -> Result<(Superblock, SlotReport), MetaError> {
    let decoded = slots.map(Superblock::decode);
    for r in &decoded {
        if let Err(e @ MetaError::UnsupportedVersion { .. }) = r {
            return Err(e.clone());
        }
    }
    let [a, b] = decoded;
    let (sb, used, other) = match (a, b) {
        (Ok(a), Ok(b)) if b.seq > a.seq => (b, 1, OtherSlot::Older { seq: a.seq }),
        (Ok(a), Ok(b)) if a.seq > b.seq => (a, 0, OtherSlot::Older { seq: b.seq }),
        (Ok(a), Ok(_)) => (a, 0, OtherSlot::SameSeq),
        (Ok(sb), Err(e)) => (sb, 0, other_slot(e)),
        (Err(e), Ok(sb)) => (sb, 1, other_slot(e)),
        (Err(ea), Err(eb)) => {
            return Err(if informativeness(&eb) > informativeness(&ea) {
                eb
            } else {
                ea
            });
        }
    };
    let report = SlotReport {
        used,
        seq: sb.seq,
        other,
    };
    Ok((sb, report))
}

fn other_slot(e: MetaError) -> OtherSlot {
    match e {
        MetaError::NoMetadata => OtherSlot::Empty,
        e => OtherSlot::Invalid(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{AL_RING_BLOCKS_DEFAULT, DATA_BYTES_MAX};
    use proptest::prelude::*;

    fn sample(seq: u64) -> Superblock {
        let l = Layout::internal(1 << 30, AL_RING_BLOCKS_DEFAULT).unwrap();
        let mut sb = Superblock::new(&l, GenerationUuids::new_created(), 1237, "alpha", "r0");
        sb.seq = seq;
        sb.flags.insert(MdFlags::CONSISTENT);
        sb.uuids.current = 0xD2B1_ADF2_E5B4_0C76 ^ seq;
        sb
    }

    #[test]
    fn block_layout_is_as_documented() {
        let mut sb = sample(7);
        sb.device_uuid = 0x1111;
        let b = sb.encode();
        assert_eq!(&b[0..8], b"TNDMMETA");
        assert_eq!(b[8..12], 1u32.to_le_bytes());
        assert_eq!(b[12], 0);
        assert_eq!(b[16..24], 7u64.to_le_bytes());
        assert_eq!(b[24..32], sb.data_bytes.to_le_bytes());
        assert_eq!(b[32..40], sb.uuids.current.to_le_bytes());
        assert_eq!(b[64..72], 0x1111u64.to_le_bytes());
        assert_eq!(b[72..76], 1u32.to_le_bytes());
        assert_eq!(b[76..80], 1237u32.to_le_bytes());
        assert_eq!(b[80..84], 16u32.to_le_bytes());
        assert_eq!(b[84..88], 4096u32.to_le_bytes());
        assert_eq!(b[120..128], ((1u64 << 30) - 4096).to_le_bytes());
        assert_eq!((b[152], b[153]), (5, 2));
        assert_eq!(&b[156..161], b"alpha");
        assert_eq!(&b[220..222], b"r0");
        assert!(b[284..4092].iter().all(|&x| x == 0));
        assert_eq!(
            b[4092..],
            crc32c::crc32c(&{
                let mut z = *b;
                z[4092..].fill(0);
                z
            })
            .to_le_bytes()
        );
    }

    #[test]
    fn round_trip_and_layout_check() {
        let sb = sample(7);
        let back = Superblock::decode(&sb.encode()[..]).unwrap();
        assert_eq!(back, sb);
        assert_eq!(back.al_ring_blocks(), 16);
        assert_eq!(back.kind(), LayoutKind::Internal);
        back.check_layout(&Layout::internal(1 << 30, 16).unwrap()).unwrap();
        assert!(matches!(
            back.check_layout(&Layout::internal(2 << 30, 16).unwrap()),
            Err(MetaError::LayoutMismatch { field: "data size", .. })
        ));
        assert!(back
            .check_layout(&Layout::external(1 << 30, 1 << 30, 16).unwrap())
            .is_err());
    }

    #[test]
    fn zeroes_and_foreign_data_mean_no_metadata() {
        assert_eq!(Superblock::decode(&[0u8; BLOCK_BYTES]), Err(MetaError::NoMetadata));
        assert_eq!(Superblock::decode(&[0x53u8; BLOCK_BYTES]), Err(MetaError::NoMetadata));
        assert!(matches!(
            Superblock::decode(&[0u8; 512]),
            Err(MetaError::Insane {
                field: "block length",
                ..
            })
        ));
        assert!(matches!(Superblock::decode(&[]), Err(MetaError::Insane { .. })));
    }

    #[test]
    fn a_torn_write_is_detected_at_any_sector_boundary() {
        let old = sample(7).encode();
        let new = sample(8).encode();
        for sectors in 1..8 {
            let k = sectors * 512;
            let mut torn = [0u8; BLOCK_BYTES];
            torn[..k].copy_from_slice(&new[..k]);
            torn[k..].copy_from_slice(&old[k..]);
            assert!(
                matches!(Superblock::decode(&torn), Err(MetaError::Corrupt { .. })),
                "{k}"
            );
            torn[..k].copy_from_slice(&old[..k]);
            torn[k..].copy_from_slice(&new[k..]);
            assert!(
                matches!(Superblock::decode(&torn), Err(MetaError::Corrupt { .. })),
                "{k}"
            );
        }
    }

    #[test]
    fn a_torn_slot_leaves_the_previous_generation() {
        // seq 8 goes to slot A (8 % 2); it was torn, slot B still has seq 7.
        let old = sample(7).encode();
        let new = sample(8).encode();
        let mut torn = *new;
        torn[2048..].copy_from_slice(&old[2048..]);
        let (sb, report) = read_superblock([&torn, &old[..]]).unwrap();
        assert_eq!((sb.seq, report.used), (7, 1));
        let w = report.warning().unwrap();
        assert!(w.starts_with("superblock slot A is corrupt (crc32c stored 0x"), "{w}");
        assert!(w.ends_with("; using slot B seq 7"), "{w}");
    }

    #[test]
    fn the_newest_valid_slot_wins() {
        let (a, b) = (sample(10).encode(), sample(11).encode());
        let (sb, r) = read_superblock([&a[..], &b[..]]).unwrap();
        assert_eq!((sb.seq, r.used, &r.other), (11, 1, &OtherSlot::Older { seq: 10 }));
        assert_eq!(r.warning(), None);
        assert_eq!(r.to_string(), "using superblock slot B seq 11");
        let (sb, r) = read_superblock([&sample(12).encode()[..], &b[..]]).unwrap();
        assert_eq!((sb.seq, r.used), (12, 0));
        let (_, r) = read_superblock([&a[..], &a[..]]).unwrap();
        assert_eq!((r.used, &r.other), (0, &OtherSlot::SameSeq));
        let zero = [0u8; BLOCK_BYTES];
        let (sb, r) = read_superblock([&zero, &b[..]]).unwrap();
        assert_eq!((sb.seq, &r.other), (11, &OtherSlot::Empty));
        assert!(r.warning().unwrap().contains("slot A holds no metadata"));
    }

    #[test]
    fn with_both_slots_bad_the_most_informative_error_wins() {
        let zero = [0u8; BLOCK_BYTES];
        assert_eq!(read_superblock([&zero, &zero]).unwrap_err(), MetaError::NoMetadata);
        let mut bad = *sample(3).encode();
        bad[100] ^= 1;
        assert!(matches!(read_superblock([&zero, &bad]), Err(MetaError::Corrupt { .. })));
        assert!(matches!(read_superblock([&bad, &zero]), Err(MetaError::Corrupt { .. })));
        let mut insane = *sample(3).encode();
        insane[12] = 9;
        seal(&mut insane);
        assert!(matches!(
            read_superblock([&bad, &insane]),
            Err(MetaError::Insane {
                field: "layout kind",
                ..
            })
        ));
        let e = read_superblock([&bad, &bad]).unwrap_err().to_string();
        assert!(
            e.starts_with("metadata superblock is corrupt: crc32c mismatch (stored 0x"),
            "{e}"
        );
    }

    #[test]
    fn a_newer_format_in_either_slot_is_refused() {
        let mut v2 = *sample(9).encode();
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        seal(&mut v2);
        let v2_err = MetaError::UnsupportedVersion { found: 2, supported: 1 };
        assert_eq!(Superblock::decode(&v2), Err(v2_err.clone()));
        // Even though slot B holds a valid version-1 generation.
        assert_eq!(read_superblock([&v2, &sample(8).encode()[..]]).unwrap_err(), v2_err);
    }

    #[test]
    fn insane_fields_are_refused() {
        let check = |at: usize, bytes: &[u8], field: &str| {
            let mut b = *sample(1).encode();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            seal(&mut b);
            match Superblock::decode(&b) {
                Err(MetaError::Insane { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        };
        check(12, &[2], "layout kind");
        check(13, &[1], "reserved header");
        check(154, &[1], "reserved header");
        check(3000, &[1], "reserved area");
        check(84, &512u32.to_le_bytes(), "bitmap bytes per bit");
        check(72, &0x100u32.to_le_bytes(), "flags");
        check(24, &(2u64 << 30).to_le_bytes(), "data size");
        check(24, &4097u64.to_le_bytes(), "data size");
        check(76, &100_000u32.to_le_bytes(), "al-extents");
        check(80, &1u32.to_le_bytes(), "activity-log ring blocks");
        check(136, &0u64.to_le_bytes(), "layout region");
        check(144, &(1u64 << 40).to_le_bytes(), "layout region");
        check(120, &0u64.to_le_bytes(), "layout region");
        check(152, &[65], "node name");
        check(152, &[2], "node name"); // "alpha" cut to 2 leaves bytes after the name
        check(156, &[0xff], "node name"); // not UTF-8
        check(153, &[1], "resource name");
    }

    #[test]
    fn new_caps_names_and_al_extents() {
        let l = Layout::internal(1 << 30, 2).unwrap();
        let long = "é".repeat(40); // 80 bytes
        let sb = Superblock::new(&l, GenerationUuids::new_created(), 60_000, &long, "r0");
        assert_eq!(sb.node_name.len(), 64);
        assert_eq!(sb.al_extents, 1013);
        assert_eq!(Superblock::decode(&sb.encode()[..]).unwrap(), sb);
    }

    #[test]
    #[should_panic(expected = "refusing to write an invalid superblock: metadata field al-extents is not sane")]
    fn an_invalid_superblock_is_never_written() {
        let mut sb = sample(1);
        sb.al_extents = 100_000;
        assert!(sb.validate().is_err());
        let _ = sb.encode();
    }

    #[test]
    fn writers_alternate_slots() {
        let mut sb = sample(0);
        assert_eq!(slot_for_seq(0), 0);
        assert_eq!(sb.advance_seq(), 1);
        assert_eq!(sb.advance_seq(), 0);
        assert_eq!(sb.seq, 2);
    }

    #[test]
    fn uuids_and_flags() {
        let u = GenerationUuids::new_created();
        assert_eq!((u.current, u.bitmap, u.history), (4, 0, [0, 0]));
        assert!(GenerationUuids { current: 5, ..u }.is_just_created());
        assert_eq!(GenerationUuids { current: 0xff, ..u }.current_masked(), 0xfe);
        let mut f = MdFlags::default();
        assert_eq!(f.to_string(), "none");
        f.insert(MdFlags::CONSISTENT);
        f.set(MdFlags::WAS_UP_TO_DATE, true);
        f.insert(MdFlags::AL_CLEAN);
        assert!(f.contains(MdFlags::CONSISTENT) && !f.contains(MdFlags::PRIMARY_IND));
        assert_eq!(f.to_string(), "consistent, was-up-to-date, al-clean");
        f.remove(MdFlags::AL_CLEAN);
        f.set(MdFlags::CONSISTENT, false);
        assert_eq!(f, MdFlags::WAS_UP_TO_DATE);
        assert_eq!(MdFlags(0x301).to_string(), "consistent, unknown(0x300)");
    }

    fn layout() -> impl Strategy<Value = Layout> {
        (any::<bool>(), (2u64 << 20)..DATA_BYTES_MAX, 2u32..=64).prop_map(|(internal, size, ring)| {
            if internal {
                Layout::internal(size, ring).expect("in range")
            } else {
                Layout::external(size, u64::MAX, ring).expect("in range")
            }
        })
    }

    fn superblock() -> impl Strategy<Value = Superblock> {
        (
            layout(),
            (any::<u64>(), any::<u64>(), any::<[u64; 5]>(), 0u32..=0xff),
            (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
            ("\\PC{0,40}", "[a-zA-Z0-9_.-]{0,70}"),
        )
            .prop_map(|(l, (seq, data, u, flags), (ext, _), (node, res))| {
                let mut sb = Superblock::new(
                    &l,
                    GenerationUuids {
                        current: u[0],
                        bitmap: u[1],
                        history: [u[2], u[3]],
                    },
                    ext.index(max_al_extents(l.al_blocks) as usize + 1) as u32,
                    &node,
                    &res,
                );
                sb.seq = seq;
                sb.data_bytes = data % (l.data_bytes / 4096 + 1) * 4096;
                sb.device_uuid = u[4];
                sb.flags = MdFlags(flags);
                sb
            })
    }

    proptest! {
        #[test]
        fn round_trips(sb in superblock()) {
            let b = sb.encode();
            let back = Superblock::decode(&b[..]).unwrap();
            prop_assert_eq!(&back, &sb);
            prop_assert_eq!(&back.encode()[..], &b[..]);
        }

        #[test]
        fn any_single_bit_flip_is_caught(sb in superblock(), bit in 0usize..BLOCK_BYTES * 8) {
            let mut b = *sb.encode();
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Superblock::decode(&b).is_err());
        }

        #[test]
        fn a_torn_block_is_caught(a in superblock(), split in 1usize..BLOCK_BYTES) {
            let mut b = a.clone();
            b.seq = a.seq.wrapping_add(1);
            let (old, new) = (a.encode(), b.encode());
            let mut torn = *new;
            torn[split..].copy_from_slice(&old[split..]);
            prop_assume!(torn != *new && torn != *old);
            prop_assert!(Superblock::decode(&torn).is_err());
        }

        #[test]
        fn read_picks_the_highest_valid_seq(a in superblock(), sa: u64, sb_seq: u64, damage in 0u8..3) {
            let (mut x, mut y) = (a.clone(), a);
            x.seq = sa;
            y.seq = sb_seq;
            let (bx, mut by) = (x.encode(), *y.encode());
            match damage {
                0 => {}
                1 => by[200] ^= 0x40,
                _ => by = [0; BLOCK_BYTES],
            }
            let (got, report) = read_superblock([&bx[..], &by]).unwrap();
            let expect = if damage == 0 { sa.max(sb_seq) } else { sa };
            prop_assert_eq!(got.seq, expect);
            prop_assert_eq!(report.seq, expect);
            prop_assert_eq!(report.warning().is_some(), damage != 0 || sa == sb_seq);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000), fix: bool) {
            let _ = Superblock::decode(&bytes);
            if bytes.len() == BLOCK_BYTES {
                // Give the garbage a magic and a right crc to reach the field checks.
                let mut b = [0u8; BLOCK_BYTES];
                b.copy_from_slice(&bytes);
                b[..8].copy_from_slice(&SUPERBLOCK_MAGIC);
                if fix { b[8..12].copy_from_slice(&1u32.to_le_bytes()); }
                seal(&mut b);
                if let Ok(sb) = Superblock::decode(&b) {
                    prop_assert_eq!(&sb.encode()[..], &b[..]);
                }
                let _ = read_superblock([&b, &bytes]);
            }
        }
    }
}
