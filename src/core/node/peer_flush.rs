//! Flushes of the peer's writes on the receiving node, and which barriers
//! each one already answers.
//!
//! A barrier from the peer is acknowledged once every write received before
//! it is on stable storage. The plain way is to flush when the barrier
//! arrives, which puts a whole disk flush after a network round trip on the
//! application's `fsync` (DRBD's way). A database commits with a write and
//! a flush, one after the other: the peer's writes complete, the link goes
//! quiet, and the barrier follows a round trip later. When the last few
//! barriers came that way, the node flushes the moment its writes go
//! quiet, and the barrier finds its flush done or under way, so its
//! acknowledgement waits for the round trip alone.
//!
//! Which writes a flush covers is counted, not guessed: `completed` ticks
//! once per peer write the disk has completed, a flush covers the ticks
//! counted when it was issued (the disk makes stable what it completed
//! before the flush began), and a barrier needs the ticks counted when its
//! earlier writes were all done.

use crate::core::ReqId;

/// Barriers that must find the writes quiet in a row before the node
/// flushes ahead of them.
const STREAK_TO_FLUSH_EARLY: u8 = 2;
const STREAK_MAX: u8 = 8;

/// What a barrier that needs `n` ticks can do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cover {
    /// A flush covering it has finished: acknowledge.
    Done,
    /// A flush covering it is on the disk: wait for it.
    Pending,
    /// No flush covers it: one must be issued.
    Missing,
}

#[derive(Debug, Default)]
pub(super) struct PeerFlushes {
    /// Peer writes the disk has completed, since the node was created.
    completed: u64,
    /// Every tick up to here is covered by a flush that has finished
    /// (a failed one included: its error went out as a disk state first).
    settled: u64,
    /// Flushes on the disk, and the ticks each covers.
    inflight: Vec<(ReqId, u64)>,
    /// Barriers in a row that arrived while the writes were quiet.
    streak: u8,
    /// The writes went quiet and nothing has arrived since.
    quiet: bool,
    /// Flushes issued ahead of a barrier.
    pub early: u64,
    /// Flushes issued because a barrier found none.
    pub on_barrier: u64,
}

impl PeerFlushes {
    /// A peer write completed on the disk (well or not: a failed one is
    /// reported by the disk state, and a flush still answers for the rest).
    pub fn write_done(&mut self) {
        self.completed += 1;
    }

    /// What a barrier whose earlier writes are all done needs.
    pub fn need_now(&self) -> u64 {
        self.completed
    }

    pub fn cover(&self, need: u64) -> Cover {
        if self.settled >= need {
            Cover::Done
        } else if self.inflight.iter().any(|&(_, c)| c >= need) {
            Cover::Pending
        } else {
            Cover::Missing
        }
    }

    /// Flush `id` went to the disk now.
    pub fn issued(&mut self, id: ReqId) {
        self.inflight.push((id, self.completed));
    }

    /// Flush `id` finished (an error included). False if it was not ours.
    pub fn finished(&mut self, id: ReqId) -> bool {
        let Some(i) = self.inflight.iter().position(|&(f, _)| f == id) else {
            return false;
        };
        let (_, covers) = self.inflight.swap_remove(i);
        self.settled = self.settled.max(covers);
        true
    }

    /// A barrier arrived from the peer.
    pub fn barrier_arrived(&mut self) {
        if std::mem::take(&mut self.quiet) {
            self.streak = (self.streak + 1).min(STREAK_MAX);
        }
    }

    /// An application write arrived from the peer.
    pub fn write_arrived(&mut self) {
        if std::mem::take(&mut self.quiet) {
            self.streak = 0;
        }
    }

    /// The peer's application writes went quiet (none on the disk, no
    /// barrier waiting). Whether to flush now, ahead of the barrier the
    /// recent ones predict.
    pub fn went_quiet(&mut self) -> bool {
        self.quiet = true;
        self.streak >= STREAK_TO_FLUSH_EARLY && self.cover(self.completed) == Cover::Missing
    }

    /// The link dropped: the next peer's habits are its own.
    pub fn forget_pattern(&mut self) {
        self.streak = 0;
        self.quiet = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_covers_the_writes_completed_before_it_was_issued_and_no_later_one() {
        let mut f = PeerFlushes::default();
        f.write_done();
        f.issued(1);
        f.write_done();
        assert_eq!(f.cover(1), Cover::Pending);
        assert_eq!(
            f.cover(f.need_now()),
            Cover::Missing,
            "the second write completed after the flush began"
        );
        assert!(f.finished(1));
        assert_eq!(f.cover(1), Cover::Done);
        assert_eq!(f.cover(2), Cover::Missing);
        assert!(!f.finished(1), "a flush finishes once");
    }

    #[test]
    fn an_older_flush_finishing_late_does_not_take_back_what_a_newer_one_settled() {
        let mut f = PeerFlushes::default();
        f.write_done();
        f.issued(1);
        f.write_done();
        f.issued(2);
        assert!(f.finished(2));
        assert!(f.finished(1));
        assert_eq!(f.cover(2), Cover::Done);
    }

    #[test]
    fn the_node_flushes_early_only_after_barriers_found_it_quiet_twice_in_a_row() {
        let mut f = PeerFlushes::default();
        for round in 0..3 {
            f.write_arrived();
            f.write_done();
            let early = f.went_quiet();
            assert_eq!(early, round == 2, "round {round}");
            f.barrier_arrived();
        }
    }

    #[test]
    fn a_write_arriving_where_a_barrier_was_expected_ends_the_streak() {
        let mut f = PeerFlushes::default();
        for _ in 0..3 {
            f.write_done();
            f.went_quiet();
            f.barrier_arrived();
        }
        f.write_done();
        assert!(f.went_quiet());
        f.issued(7);
        f.write_arrived();
        f.write_done();
        assert!(!f.went_quiet(), "a quiet spell followed by a write is not a commit");
    }

    #[test]
    fn nothing_new_to_cover_means_no_early_flush() {
        let mut f = PeerFlushes::default();
        for _ in 0..3 {
            f.write_done();
            f.went_quiet();
            f.barrier_arrived();
        }
        f.write_done();
        assert!(f.went_quiet());
        f.issued(1);
        assert!(!f.went_quiet(), "the flush on the disk covers every completed write");
    }
}
