//! The activity log: the set of 4 MiB extents that may have writes in flight.
//!
//! Before the first write into a cold extent, a transaction listing the whole
//! hot set must be durable in the on-disk ring; writes into hot extents cost
//! nothing extra. After a Primary crash, every extent of the last transaction
//! is marked out of sync, so anything that may differ from the peer is
//! resynced — instead of the whole device. `al-extents` bounds the set (LRU).
//!
//! Extents with writes in flight are never evicted, so the set may grow past
//! `al-extents` for a while; never past [`EXTENTS_MAX`], what the on-disk
//! ring can hold: a write that would take it there waits until writes
//! finish ([`ActivityLog::can_admit`]), as DRBD's do when "blocked on
//! activity log".

use crate::meta::al::{AlTransaction, EXTENTS_MAX};
use crate::meta::AL_EXTENT_SHIFT;
use std::collections::{HashMap, HashSet};

#[derive(Debug)]
pub struct ActivityLog {
    capacity: usize,
    /// Extent → its last use. Every write looks its extents up here, so a
    /// map; the least recently used is searched for only on an eviction,
    /// which costs a metadata write anyway.
    hot: HashMap<u32, u64>,
    clock: u64,
    next_tr: u64,
}

/// What must be made durable before the write that caused it may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlUpdate {
    /// The blocks of one transaction, in order (one unless the set is
    /// larger than a block holds).
    pub transaction: Vec<AlTransaction>,
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
    /// `al_extents` as configured; the ring bounds it to [`EXTENTS_MAX`]
    /// (the configuration warns about a larger value).
    pub fn new(al_extents: u32, next_tr: u64) -> ActivityLog {
        let capacity = (al_extents as usize).clamp(1, EXTENTS_MAX);
        ActivityLog {
            capacity,
            hot: HashMap::with_capacity(capacity + 16),
            clock: 0,
            next_tr,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `al-extents` changed (`adjust`): a larger set applies at once; a
    /// smaller one as the next write into a cold extent evicts down to it
    /// (with the bitmap write every eviction needs).
    pub fn set_capacity(&mut self, al_extents: u32) {
        self.capacity = (al_extents as usize).clamp(1, EXTENTS_MAX);
    }

    pub fn set_next_tr(&mut self, next_tr: u64) {
        self.next_tr = self.next_tr.max(next_tr);
    }

    pub fn is_hot(&self, extent: u32) -> bool {
        self.hot.contains_key(&extent)
    }

    /// Whether a write's extents fit in the log now: every extent that is
    /// busy (`busy(e)`: writes in flight) or that the write needs must be in
    /// the set at once, and the set may not outgrow the ring.
    /// `busy` is asked only when the set is that large.
    pub fn can_admit(&self, offset: u64, len: u32, busy: impl FnOnce() -> HashSet<u32>) -> bool {
        // Far from full (nearly always): no lookup at all.
        if self.hot.len() + extents_of(offset, len).count() <= EXTENTS_MAX {
            return true;
        }
        let mut cold = 0;
        for e in extents_of(offset, len) {
            if !self.is_hot(e) {
                cold += 1;
            }
        }
        if self.hot.len() + cold <= EXTENTS_MAX {
            return true;
        }
        let (busy, needed) = (busy(), extents_of(offset, len));
        let kept = self
            .hot
            .keys()
            .filter(|e| busy.contains(e) || needed.contains(e))
            .count();
        kept + cold <= EXTENTS_MAX
    }

    /// A write is about to start: its extents become the most recently
    /// used, and those not in the set join it, which needs a transaction.
    /// `busy` gives the extents with writes in flight (never evicted); it is
    /// asked only when something must leave. The caller has made sure the
    /// write fits ([`ActivityLog::can_admit`]).
    pub fn activate(&mut self, offset: u64, len: u32, busy: impl FnOnce() -> HashSet<u32>) -> Option<AlUpdate> {
        self.clock += 1;
        let mut added = false;
        for e in extents_of(offset, len) {
            added |= self.hot.insert(e, self.clock).is_none();
        }
        if !added {
            return None;
        }
        let mut evicted = Vec::new();
        let busy = if self.hot.len() > self.capacity {
            busy()
        } else {
            HashSet::new()
        };
        while self.hot.len() > self.capacity {
            let victim = self
                .hot
                .iter()
                .filter(|&(e, &used)| used != self.clock && !busy.contains(e))
                .min_by_key(|&(_, &used)| used)
                .map(|(&e, _)| e);
            match victim {
                Some(e) => {
                    self.hot.remove(&e);
                    evicted.push(e);
                }
                // Every extent is in use: the set grows past its bound for
                // now (still safe: a bigger set only means more resync).
                None => break,
            }
        }
        debug_assert!(
            self.hot.len() <= EXTENTS_MAX,
            "admitted past the ring: {}",
            self.hot.len()
        );
        let mut extents: Vec<u32> = self.hot.keys().copied().collect();
        extents.sort_unstable();
        let transaction = AlTransaction::blocks(self.next_tr, &extents);
        self.next_tr += transaction.len() as u64;
        Some(AlUpdate { transaction, evicted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: u64 = 1 << AL_EXTENT_SHIFT;

    #[test]
    fn only_cold_extents_cost_a_transaction() {
        let mut al = ActivityLog::new(3, 10);
        let u = al.activate(0, 4096, HashSet::new).expect("cold extent 0");
        assert_eq!(
            (u.transaction[0].tr_number, u.transaction[0].extents.clone()),
            (10, vec![0])
        );
        assert_eq!(al.activate(4096, 4096, HashSet::new), None, "extent 0 is hot");
        let u = al.activate(E - 512, 1024, HashSet::new).expect("spans into extent 1");
        assert_eq!(u.transaction[0].extents, vec![0, 1]);
    }

    #[test]
    fn a_smaller_capacity_evicts_down_to_it_at_the_next_cold_extent() {
        let mut al = ActivityLog::new(4, 0);
        for e in 0..4 {
            al.activate(e * E, 1, HashSet::new);
        }
        al.set_capacity(2);
        assert_eq!(al.activate(0, 1, HashSet::new), None, "a hot extent costs nothing");
        let u = al.activate(4 * E, 1, HashSet::new).expect("extent 4 is cold");
        assert_eq!(u.evicted.len(), 3);
        assert_eq!(u.transaction[0].extents, vec![0, 4], "0 was the most recently used");
        al.set_capacity(3);
        assert_eq!(
            al.activate(5 * E, 1, HashSet::new).expect("cold").evicted,
            Vec::<u32>::new()
        );
    }

    #[test]
    fn the_least_recently_used_idle_extent_is_evicted() {
        let mut al = ActivityLog::new(2, 0);
        al.activate(0, 1, HashSet::new);
        al.activate(E, 1, HashSet::new);
        al.activate(0, 1, HashSet::new); // 0 used again: 1 is now the LRU
        let u = al.activate(2 * E, 1, HashSet::new).unwrap();
        assert_eq!(u.evicted, vec![1]);
        assert_eq!(u.transaction[0].extents, vec![0, 2]);
        // A busy extent is kept even when it is the LRU.
        let u = al.activate(3 * E, 1, || HashSet::from([0])).unwrap();
        assert_eq!(u.evicted, vec![2]);
        assert!(al.is_hot(0) && al.is_hot(3));
    }

    #[test]
    fn a_set_larger_than_a_block_is_one_transaction_of_several() {
        // DRBD's default, 1237, is more than one block holds.
        let mut al = ActivityLog::new(1237, 40);
        assert_eq!(al.capacity(), 1237);
        let mut last = None;
        for e in 0..1237u64 {
            last = al.activate(e * E, 1, HashSet::new);
        }
        let u = last.expect("the last extent was cold");
        assert_eq!(u.transaction.len(), 2);
        let (a, b) = (&u.transaction[0], &u.transaction[1]);
        assert_eq!((a.tr_number + 1, a.total, b.total), (b.tr_number, 1237, 1237));
        assert_eq!(
            (a.context_start, b.context_start as usize),
            (0, crate::meta::al::EXTENTS_PER_BLOCK)
        );
        assert_eq!(a.extents.len() + b.extents.len(), 1237);
        // The next transaction is numbered after both blocks.
        let u = al.activate(5000 * E, 1, HashSet::new).unwrap();
        assert_eq!(u.transaction[0].tr_number, b.tr_number + 1);
    }

    #[test]
    fn busy_extents_may_outgrow_al_extents_but_not_the_ring() {
        let mut al = ActivityLog::new(8, 0);
        let all: HashSet<u32> = (0..EXTENTS_MAX as u32).collect();
        assert!(al.can_admit(0, 1, HashSet::new));
        al.activate(0, 1, HashSet::new);
        // Fill the ring's worth (activating one by one is quadratic).
        al.hot.extend((1..EXTENTS_MAX as u32).map(|e| (e, 0)));
        // Every extent busy and the ring full: the next write waits...
        assert!(!al.can_admit(99_999 * E, 1, || all.clone()));
        // ...unless it writes where the set already is, or writes finished.
        assert!(al.can_admit(3 * E, 1, || all.clone()));
        let mut most = all.clone();
        most.remove(&7);
        assert!(al.can_admit(99_999 * E, 1, || most.clone()));
        let u = al.activate(99_999 * E, 1, || most.clone()).unwrap();
        assert_eq!(u.evicted, vec![7]);
        assert_eq!(u.transaction.len(), crate::meta::al::BLOCKS_PER_TRANSACTION_MAX);
        assert!(!al.is_hot(7) && al.is_hot(99_999));
    }
}
