//! Flushes the node issues itself, which writes each one makes stable, and
//! when to issue one before it is asked for.
//!
//! Two requests wait on a flush of this node's disk: a barrier from the
//! peer (answered once every write received before it is stable) and the
//! application's FLUSH. The plain way is to flush when they arrive. A
//! database commits with a write and a flush, one after the other: the
//! writes complete, go quiet, and the flush (on the Secondary, the barrier
//! a round trip later) follows. When the last few did, the node flushes
//! the moment its writes go quiet, and the flush request finds that flush
//! done or under way: on the Secondary the peer's whole flush leaves the
//! `fsync`'s path, on the Primary it overlaps the client's turnaround.
//! A write arriving where a flush was expected ends the streak, so a
//! workload without flushes never pays for one it did not ask for.
//!
//! Which writes a flush covers is counted, not guessed: `completed` ticks
//! once per write the disk has completed, a flush covers the ticks counted
//! when it was issued (the disk makes stable what it completed before the
//! flush began), and a flush request needs the ticks counted when it
//! became due (a barrier: once its earlier writes are all done; the
//! application's: on arrival, which is all NBD asks).

use crate::core::ReqId;

/// Flush requests that must find the writes quiet in a row before the
/// node flushes ahead of them.
const STREAK_TO_FLUSH_EARLY: u8 = 2;
const STREAK_MAX: u8 = 8;

/// What a flush request that needs `n` ticks can do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cover {
    /// A flush covering it has finished: it is answered.
    Done,
    /// A flush covering it is on the disk: it waits for that one.
    Pending,
    /// No flush covers it: one must be issued.
    Missing,
}

/// One stream of writes and flush requests (the peer's, the
/// application's): whether a flush request follows each quiet spell.
#[derive(Debug, Default)]
pub(super) struct Pattern {
    /// Flush requests in a row that arrived while the writes were quiet.
    streak: u8,
    /// The writes went quiet and nothing has arrived since.
    quiet: bool,
}

impl Pattern {
    /// A flush request (a barrier, the application's FLUSH) arrived.
    pub fn flush_arrived(&mut self) {
        if std::mem::take(&mut self.quiet) {
            self.streak = (self.streak + 1).min(STREAK_MAX);
        }
    }

    /// A write arrived.
    pub fn write_arrived(&mut self) {
        if std::mem::take(&mut self.quiet) {
            self.streak = 0;
        }
    }

    /// The stream's writes went quiet (none on the disk). Whether a flush
    /// request is predicted next.
    pub fn went_quiet(&mut self) -> bool {
        self.quiet = true;
        self.streak >= STREAK_TO_FLUSH_EARLY
    }

    /// The stream starts over (a new link, a new client's habits).
    pub fn forget(&mut self) {
        self.streak = 0;
        self.quiet = false;
    }
}

/// How the node's own flushes went, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FlushCounts {
    /// Flushes issued as the peer's writes went quiet, ahead of a barrier.
    pub peer_early: u64,
    /// Flushes a barrier had to wait for from its arrival.
    pub peer_on_barrier: u64,
    /// Flushes issued as the application's writes went quiet.
    pub app_early: u64,
    /// Application FLUSHes answered by an early flush, done or under way.
    pub app_covered: u64,
}

#[derive(Debug)]
pub(super) struct Flushes {
    /// Writes the disk has completed, since the node was created.
    completed: u64,
    /// Every tick up to here is covered by a flush that has finished
    /// (a failed one included: its error went out as a disk state first).
    settled: u64,
    /// The node's own flushes on the disk, and the ticks each covers.
    inflight: Vec<(ReqId, u64)>,
    pub peer: Pattern,
    pub app: Pattern,
    pub counts: FlushCounts,
}

impl Flushes {
    pub fn new() -> Flushes {
        let mut f = Flushes {
            completed: 0,
            settled: 0,
            inflight: Vec::new(),
            peer: Pattern::default(),
            app: Pattern::default(),
            counts: FlushCounts::default(),
        };
        f.disk_attached();
        f
    }

    /// A disk was attached: what it holds may sit in its cache, written
    /// before this process (a daemon killed, not the machine) or by
    /// another; no flush of ours covers that yet.
    pub fn disk_attached(&mut self) {
        self.completed += 1;
    }

    /// A write completed on the disk (well or not: a failed one is
    /// reported on its own, and a flush still answers for the rest).
    pub fn write_done(&mut self) {
        self.completed += 1;
    }

    /// What a flush request due now needs.
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

    /// Whether a flush issued now would make anything more stable.
    pub fn worth_one(&self) -> bool {
        self.cover(self.completed) == Cover::Missing
    }

    /// Flush `id` went to the disk now.
    pub fn issued(&mut self, id: ReqId) {
        self.inflight.push((id, self.completed));
    }

    /// Flush `id` finished (an error included): the ticks it covered, or
    /// `None` if it was not one of these.
    pub fn finished(&mut self, id: ReqId) -> Option<u64> {
        let i = self.inflight.iter().position(|&(f, _)| f == id)?;
        let (_, covers) = self.inflight.swap_remove(i);
        self.settled = self.settled.max(covers);
        Some(covers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_covers_the_writes_completed_before_it_was_issued_and_no_later_one() {
        let mut f = Flushes::new();
        f.write_done();
        let first = f.need_now();
        f.issued(1);
        f.write_done();
        assert_eq!(f.cover(first), Cover::Pending);
        assert_eq!(
            f.cover(f.need_now()),
            Cover::Missing,
            "the second write completed after the flush began"
        );
        assert_eq!(f.finished(1), Some(first));
        assert_eq!(f.cover(first), Cover::Done);
        assert_eq!(f.cover(f.need_now()), Cover::Missing);
        assert_eq!(f.finished(1), None, "a flush finishes once");
    }

    #[test]
    fn an_older_flush_finishing_late_does_not_take_back_what_a_newer_one_settled() {
        let mut f = Flushes::new();
        f.write_done();
        f.issued(1);
        f.write_done();
        f.issued(2);
        f.finished(2);
        f.finished(1);
        assert_eq!(f.cover(f.need_now()), Cover::Done);
    }

    #[test]
    fn a_flush_is_predicted_only_after_flush_requests_found_the_writes_quiet_twice_in_a_row() {
        let mut p = Pattern::default();
        for round in 0..3 {
            p.write_arrived();
            assert_eq!(p.went_quiet(), round == 2, "round {round}");
            p.flush_arrived();
        }
    }

    #[test]
    fn a_write_arriving_where_a_flush_request_was_expected_ends_the_streak() {
        let mut p = Pattern::default();
        for _ in 0..3 {
            p.went_quiet();
            p.flush_arrived();
        }
        assert!(p.went_quiet());
        p.write_arrived();
        assert!(!p.went_quiet(), "a quiet spell followed by a write is not a commit");
    }

    #[test]
    fn nothing_new_to_cover_means_no_flush_is_worth_issuing() {
        let mut f = Flushes::new();
        assert!(
            f.worth_one(),
            "the disk's cache may hold what was written before this process"
        );
        f.issued(1);
        assert!(!f.worth_one(), "the flush on the disk covers every completed write");
        f.finished(1);
        assert!(!f.worth_one());
        f.disk_attached();
        assert!(f.worth_one(), "another disk's past is not covered");
    }
}
