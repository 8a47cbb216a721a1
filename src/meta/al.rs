//! The activity-log ring: 4 KiB transaction blocks, transaction N in slot
//! N mod ring. Each transaction records the hot extent set (4 MiB extents)
//! that must be resynced if the Primary crashes now.
//!
//! Block layout (little-endian): magic `TNDMALTR` (8), transaction number
//! (8), total extents in the set (4), index of the first extent carried (4),
//! extents carried (4), zero (4), then the extents (u32 each), zero padding,
//! crc32c in the last 4 bytes.
//!
//! A set larger than one block is one transaction of several blocks with
//! consecutive numbers, block `i` carrying the sorted set's extents from
//! `i * EXTENTS_PER_BLOCK` (its `context_start`), all written before the
//! write that needed them starts. Recovery trusts the newest transaction
//! whose blocks are all there: a newer one that is incomplete was never
//! durable, so no write it admitted had started. For that, the ring keeps
//! two transactions of the largest size whole, which bounds the hot set to
//! [`EXTENTS_MAX`].

use super::{block_crc, seal, stored_crc, MetaError, AL_RING_BLOCKS_DEFAULT, BLOCK_BYTES};

const MAGIC: &[u8; 8] = b"TNDMALTR";
const HEADER_BYTES: usize = 32;
/// Extents one transaction block carries.
pub const EXTENTS_PER_BLOCK: usize = (BLOCK_BYTES - HEADER_BYTES - 4) / 4;
/// Blocks one transaction may take: half the ring, so that the newest
/// complete transaction survives while the next is being written.
pub const BLOCKS_PER_TRANSACTION_MAX: usize = AL_RING_BLOCKS_DEFAULT as usize / 2;
/// The most extents the log can hold (8 120, 32 GiB of hot data).
pub const EXTENTS_MAX: usize = BLOCKS_PER_TRANSACTION_MAX * EXTENTS_PER_BLOCK;

/// Blocks a transaction of `total` extents takes (one at least: an empty set
/// is written too).
pub fn blocks_for(total: usize) -> usize {
    total.div_ceil(EXTENTS_PER_BLOCK).max(1)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlTransaction {
    pub tr_number: u64,
    /// Size of the whole hot set at this transaction.
    pub total: u32,
    /// Index in the set of the first extent this block carries.
    pub context_start: u32,
    pub extents: Vec<u32>,
}

impl AlTransaction {
    /// The blocks of one transaction carrying the sorted set `extents`,
    /// numbered from `first_tr`.
    pub fn blocks(first_tr: u64, extents: &[u32]) -> Vec<AlTransaction> {
        (0..blocks_for(extents.len()))
            .map(|k| {
                let from = k * EXTENTS_PER_BLOCK;
                AlTransaction {
                    tr_number: first_tr + k as u64,
                    total: extents.len() as u32,
                    context_start: from as u32,
                    extents: extents[from..extents.len().min(from + EXTENTS_PER_BLOCK)].to_vec(),
                }
            })
            .collect()
    }

    pub fn encode(&self) -> Box<[u8; BLOCK_BYTES]> {
        debug_assert!(self.extents.len() <= EXTENTS_PER_BLOCK);
        let carried = self.extents.len().min(EXTENTS_PER_BLOCK);
        let mut b = Box::new([0u8; BLOCK_BYTES]);
        b[0..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.tr_number.to_le_bytes());
        b[16..20].copy_from_slice(&self.total.to_le_bytes());
        b[20..24].copy_from_slice(&self.context_start.to_le_bytes());
        b[24..28].copy_from_slice(&(carried as u32).to_le_bytes());
        for (i, e) in self.extents[..carried].iter().enumerate() {
            let at = HEADER_BYTES + 4 * i;
            b[at..at + 4].copy_from_slice(&e.to_le_bytes());
        }
        seal(&mut b[..]);
        b
    }

    pub fn decode(b: &[u8]) -> Result<AlTransaction, MetaError> {
        if b.len() != BLOCK_BYTES || &b[0..8] != MAGIC {
            return Err(MetaError::NoMetadata);
        }
        let (stored, computed) = (stored_crc(b), block_crc(b));
        if stored != computed {
            return Err(MetaError::Corrupt {
                what: "activity-log block",
                stored,
                computed,
            });
        }
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let carried = u32_at(24) as usize;
        if carried > EXTENTS_PER_BLOCK {
            return Err(MetaError::Insane {
                field: "activity-log extent count",
                detail: format!("{carried} > {EXTENTS_PER_BLOCK}"),
            });
        }
        Ok(AlTransaction {
            tr_number: u64::from(u32_at(8)) | (u64::from(u32_at(12)) << 32),
            total: u32_at(16),
            context_start: u32_at(20),
            extents: (0..carried).map(|i| u32_at(HEADER_BYTES + 4 * i)).collect(),
        })
    }
}

/// What a crashed Primary's activity log says may differ from the peer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlRecovery {
    /// Extents that may have had writes in flight, sorted, without duplicates.
    pub extents: Vec<u32>,
    /// The newest transaction found; the writer continues after it.
    pub last_tr: Option<u64>,
    /// Blocks with a valid magic whose checksum failed (a torn last write).
    pub corrupt_blocks: u32,
}

/// Rebuild the possibly-hot extents from every ring block. Errs on the side
/// of more: the newest complete transaction, the one before it (whose set
/// was current while the newest was being written) as far as the ring still
/// holds it, and the blocks of any newer, incomplete one. A ring without any
/// complete transaction gives every valid block's extents.
pub fn recover_hot_extents(blocks: &[&[u8]]) -> AlRecovery {
    let mut valid = Vec::new();
    let mut corrupt_blocks = 0;
    for b in blocks {
        match AlTransaction::decode(b) {
            Ok(t) => valid.push(t),
            Err(MetaError::NoMetadata) => {}
            Err(_) => corrupt_blocks += 1,
        }
    }
    valid.sort_by_key(|t| t.tr_number);
    let Some(newest) = valid.last() else {
        return AlRecovery {
            corrupt_blocks,
            ..AlRecovery::default()
        };
    };
    let last_tr = newest.tr_number;
    // Transactions start where a block carries the set from its beginning.
    let starts: Vec<usize> = (0..valid.len()).filter(|&i| valid[i].context_start == 0).collect();
    let complete = |&i: &usize| {
        let first = &valid[i];
        let n = blocks_for(first.total as usize);
        (0..n).all(|k| {
            valid.get(i + k).is_some_and(|b| {
                b.tr_number == first.tr_number + k as u64
                    && b.total == first.total
                    && b.context_start as usize == k * EXTENTS_PER_BLOCK
            })
        })
    };
    let from = match starts.iter().rposition(complete) {
        Some(at) => starts[at.saturating_sub(1)],
        None => 0,
    };
    let mut extents: Vec<u32> = valid[from..].iter().flat_map(|t| t.extents.iter().copied()).collect();
    extents.sort_unstable();
    extents.dedup();
    AlRecovery {
        extents,
        last_tr: Some(last_tr),
        corrupt_blocks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tr(n: u64, ext: &[u32]) -> Box<[u8; BLOCK_BYTES]> {
        AlTransaction {
            tr_number: n,
            total: ext.len() as u32,
            context_start: 0,
            extents: ext.to_vec(),
        }
        .encode()
    }

    #[test]
    fn recovery_takes_the_newest_sets_across_wraparound() {
        // Ring of 4: transactions 5..=8 occupy slots 1,2,3,0.
        let blocks = [tr(8, &[40, 41]), tr(5, &[1]), tr(6, &[2]), tr(7, &[30, 40])];
        let refs: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
        let r = recover_hot_extents(&refs);
        assert_eq!(r.last_tr, Some(8));
        assert_eq!(r.extents, vec![30, 40, 41]);
        assert_eq!(r.corrupt_blocks, 0);
    }

    #[test]
    fn a_torn_newest_block_is_counted_and_the_previous_set_used() {
        let mut torn = *tr(9, &[99]);
        torn[40] ^= 0xff;
        let blocks = [torn, *tr(8, &[7]), [0u8; BLOCK_BYTES]];
        let refs: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
        let r = recover_hot_extents(&refs);
        assert_eq!((r.extents, r.last_tr, r.corrupt_blocks), (vec![7], Some(8), 1));
    }

    /// The blocks of one transaction of the sorted set `ext`, from `n`.
    fn transaction(n: u64, ext: &[u32]) -> Vec<Box<[u8; BLOCK_BYTES]>> {
        AlTransaction::blocks(n, ext)
            .iter()
            .map(AlTransaction::encode)
            .collect()
    }

    fn recover(blocks: &[Box<[u8; BLOCK_BYTES]>]) -> AlRecovery {
        let refs: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
        recover_hot_extents(&refs)
    }

    #[test]
    fn a_set_of_several_blocks_is_recovered_whole() {
        let big: Vec<u32> = (0..2500).collect();
        let mut ring = transaction(10, &[5000]);
        ring.extend(transaction(11, &big));
        assert_eq!(ring.len(), 4);
        let r = recover(&ring);
        // The newest (three blocks) and the one before it.
        assert_eq!(r.extents.len(), 2501);
        assert_eq!(r.last_tr, Some(13));
    }

    #[test]
    fn an_incomplete_newest_transaction_falls_back_to_the_complete_one() {
        // Transaction 20 (2 blocks) is whole; 22 (3 blocks) got only its
        // first two blocks to the disk before the crash.
        let old: Vec<u32> = (100..1200).collect();
        let new: Vec<u32> = (3000..5500).collect();
        let mut ring = transaction(20, &old);
        let mut newer = transaction(22, &new);
        newer.truncate(2);
        ring.extend(newer);
        let r = recover(&ring);
        // Every extent of the complete transaction is there; the newer
        // blocks add theirs (more to resync, never less).
        assert!(old.iter().all(|e| r.extents.binary_search(e).is_ok()));
        assert!(r.extents.binary_search(&3000).is_ok());
        assert_eq!(r.last_tr, Some(23));
    }

    #[test]
    fn without_a_complete_transaction_every_valid_block_counts() {
        let new: Vec<u32> = (0..3000).collect();
        let mut blocks = transaction(7, &new);
        blocks.remove(0);
        let r = recover(&blocks);
        assert_eq!(r.extents, (EXTENTS_PER_BLOCK as u32..3000).collect::<Vec<_>>());
    }

    #[test]
    fn the_ring_keeps_two_transactions_of_the_largest_size() {
        assert_eq!(BLOCKS_PER_TRANSACTION_MAX * 2, AL_RING_BLOCKS_DEFAULT as usize);
        assert_eq!(blocks_for(EXTENTS_MAX), BLOCKS_PER_TRANSACTION_MAX);
        assert_eq!(blocks_for(0), 1);
    }

    #[test]
    fn an_empty_ring_has_nothing_hot() {
        let z = [0u8; BLOCK_BYTES];
        assert_eq!(recover_hot_extents(&[&z, &z]), AlRecovery::default());
    }

    proptest! {
        #[test]
        fn round_trip(n: u64, total: u32, start: u32, ext in proptest::collection::vec(any::<u32>(), 0..EXTENTS_PER_BLOCK)) {
            let t = AlTransaction { tr_number: n, total, context_start: start, extents: ext };
            prop_assert_eq!(AlTransaction::decode(&t.encode()[..]).unwrap(), t);
        }

        #[test]
        fn bit_flips_are_caught(bit in 64usize..BLOCK_BYTES * 8) {
            let mut b = *tr(3, &[1, 2, 3]);
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(AlTransaction::decode(&b).is_err());
        }
    }
}
