//! The activity log: the set of 4 MiB extents that may have writes in flight.
//!
//! Before the first write into a cold extent, a transaction listing the whole
//! hot set must be durable in the on-disk ring; writes into hot extents cost
//! nothing extra. After a Primary crash, every extent of the last transaction
//! is marked out of sync, so anything that may differ from the peer is
//! resynced — instead of the whole device. `al-extents` bounds the set (LRU).

use crate::meta::al::{AlTransaction, EXTENTS_PER_BLOCK};
use crate::meta::AL_EXTENT_SHIFT;

#[derive(Debug)]
pub struct ActivityLog {
    capacity: usize,
    /// (extent, last use), unordered; small enough that a scan beats a heap.
    hot: Vec<(u32, u64)>,
    clock: u64,
    next_tr: u64,
}

/// What must be made durable before the write that caused it may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlUpdate {
    pub transaction: AlTransaction,
    /// Extents that left the set: their bitmap pages must reach the disk
    /// first, since the log no longer protects them.
    pub evicted: Vec<u32>,
}

pub fn extents_of(offset: u64, len: u32) -> std::ops::RangeInclusive<u32> {
    let first = (offset >> AL_EXTENT_SHIFT) as u32;
    let last = ((offset + u64::from(len).max(1) - 1) >> AL_EXTENT_SHIFT) as u32;
    first..=last
}

impl ActivityLog {
    /// `al_extents` as configured; one transaction block bounds it.
    pub fn new(al_extents: u32, next_tr: u64) -> ActivityLog {
        let capacity = (al_extents as usize).clamp(1, EXTENTS_PER_BLOCK);
        ActivityLog {
            capacity,
            hot: Vec::with_capacity(capacity),
            clock: 0,
            next_tr,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn set_next_tr(&mut self, next_tr: u64) {
        self.next_tr = self.next_tr.max(next_tr);
    }

    pub fn is_hot(&self, extent: u32) -> bool {
        self.hot.iter().any(|&(e, _)| e == extent)
    }

    /// Make the extents of a write hot. `busy(e)` says whether extent `e`
    /// has writes in flight (those are never evicted).
    pub fn activate(&mut self, offset: u64, len: u32, busy: impl Fn(u32) -> bool) -> Option<AlUpdate> {
        self.clock += 1;
        let mut added = false;
        for e in extents_of(offset, len) {
            if let Some(h) = self.hot.iter_mut().find(|(x, _)| *x == e) {
                h.1 = self.clock;
            } else {
                self.hot.push((e, self.clock));
                added = true;
            }
        }
        if !added {
            return None;
        }
        let mut evicted = Vec::new();
        while self.hot.len() > self.capacity {
            let victim = self
                .hot
                .iter()
                .enumerate()
                .filter(|(_, (e, used))| *used != self.clock && !busy(*e))
                .min_by_key(|(_, (_, used))| *used)
                .map(|(i, _)| i);
            match victim {
                Some(i) => evicted.push(self.hot.swap_remove(i).0),
                // Every extent is in use: the set grows past its bound for
                // now (still safe: a bigger set only means more resync).
                None => break,
            }
        }
        let mut extents: Vec<u32> = self.hot.iter().map(|&(e, _)| e).collect();
        extents.sort_unstable();
        let tr_number = self.next_tr;
        self.next_tr += 1;
        extents.truncate(EXTENTS_PER_BLOCK);
        Some(AlUpdate {
            transaction: AlTransaction {
                tr_number,
                total: extents.len() as u32,
                context_start: 0,
                extents,
            },
            evicted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: u64 = 1 << AL_EXTENT_SHIFT;

    #[test]
    fn only_cold_extents_cost_a_transaction() {
        let mut al = ActivityLog::new(3, 10);
        let u = al.activate(0, 4096, |_| false).expect("cold extent 0");
        assert_eq!((u.transaction.tr_number, u.transaction.extents.clone()), (10, vec![0]));
        assert_eq!(al.activate(4096, 4096, |_| false), None, "extent 0 is hot");
        let u = al.activate(E - 512, 1024, |_| false).expect("spans into extent 1");
        assert_eq!(u.transaction.extents, vec![0, 1]);
    }

    #[test]
    fn the_least_recently_used_idle_extent_is_evicted() {
        let mut al = ActivityLog::new(2, 0);
        al.activate(0, 1, |_| false);
        al.activate(E, 1, |_| false);
        al.activate(0, 1, |_| false); // 0 used again: 1 is now the LRU
        let u = al.activate(2 * E, 1, |_| false).unwrap();
        assert_eq!(u.evicted, vec![1]);
        assert_eq!(u.transaction.extents, vec![0, 2]);
        // A busy extent is kept even when it is the LRU.
        let u = al.activate(3 * E, 1, |e| e == 0).unwrap();
        assert_eq!(u.evicted, vec![2]);
        assert!(al.is_hot(0) && al.is_hot(3));
    }
}
