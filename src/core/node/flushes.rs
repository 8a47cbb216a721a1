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
//! What follows a quiet spell is predicted from what followed the same
//! recent history before, as a branch predictor does: `fdatasync` on ext4
//! sends a data write, a journal write, a flush, the commit block and a
//! flush, so a quiet spell after the data write is followed by a write and
//! the two after it by flushes, and each is learnt apart. A workload
//! without flushes never pays for one it did not ask for.
//!
//! Which writes a flush covers is counted, not guessed: `completed` ticks
//! once per write the disk has completed, a flush covers the ticks counted
//! when it was issued (the disk makes stable what it completed before the
//! flush began), and a flush request needs the ticks counted when it
//! became due (a barrier: once its earlier writes are all done, or the
//! count it carries, the *completion mark* of the newest `DataAck` its
//! sender held; the application's: on arrival, which is all NBD asks).
//! Marks are these ticks: a peer told them in its acks can ask for
//! exactly the writes its client's FLUSH covers.

use crate::core::ReqId;

/// Quiet spells whose outcomes (a flush request next, or a write) make
/// the history a prediction is looked up by.
const HISTORY_BITS: u32 = 3;
const HISTORIES: usize = 1 << HISTORY_BITS;
/// A history's count of flush requests (saturating at 3, less one per
/// write) from which a flush is predicted: two in a row, at least.
const PREDICT_FROM: u8 = 2;

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
    /// What followed the last quiet spells, the newest in bit 0 (1: a
    /// flush request).
    history: usize,
    /// By history: how often a flush request followed it (0 to 3).
    counts: [u8; HISTORIES],
    /// The writes went quiet and nothing has arrived since.
    quiet: bool,
}

impl Pattern {
    /// A flush request (a barrier, the application's FLUSH) arrived.
    pub fn flush_arrived(&mut self) {
        self.after_quiet(true);
    }

    /// A write arrived.
    pub fn write_arrived(&mut self) {
        self.after_quiet(false);
    }

    fn after_quiet(&mut self, flush: bool) {
        if !std::mem::take(&mut self.quiet) {
            return;
        }
        let count = &mut self.counts[self.history];
        *count = if flush {
            (*count + 1).min(3)
        } else {
            count.saturating_sub(1)
        };
        self.history = ((self.history << 1) | usize::from(flush)) & (HISTORIES - 1);
    }

    /// The stream's writes went quiet (none on the disk). Whether a flush
    /// request is predicted next.
    pub fn went_quiet(&mut self) -> bool {
        self.quiet = true;
        self.counts[self.history] >= PREDICT_FROM
    }

    /// The stream starts over (a new link, a new client's habits).
    pub fn forget(&mut self) {
        *self = Pattern::default();
    }
}

/// How the node's own flushes went, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FlushCounts {
    /// Flushes issued as the peer's writes went quiet, ahead of a barrier.
    pub peer_early: u64,
    /// Flushes a barrier had to wait for from its arrival.
    pub peer_on_barrier: u64,
    /// Application FLUSHes: the clients' commits, however answered.
    pub app: u64,
    /// Flushes issued as the application's writes went quiet.
    pub app_early: u64,
    /// Application FLUSHes answered by an early flush, done or under way.
    pub app_covered: u64,
    /// Application FLUSHes whose writes the peer's own early flush had
    /// made stable there: answered without a barrier's round trip.
    pub app_peer_ahead: u64,
    /// Application FLUSHes that arrived while a flush not covering them
    /// was on the disk: they waited for it and shared the next one.
    pub app_grouped: u64,
}

#[derive(Debug)]
pub(super) struct Flushes {
    /// Writes the disk has completed, since the node was created.
    completed: u64,
    /// Every tick up to here is covered by a flush that has finished
    /// (a failed one included: its error went out as a disk state first).
    settled: u64,
    /// Every write the clients were told is done had completed by this
    /// tick, and so had the disk's attach: what an application FLUSH
    /// needs. Another client's write that completed here but waits for
    /// the peer is no FLUSH's business yet.
    replied: u64,
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
            replied: 0,
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
        self.replied = self.completed;
    }

    /// A write completed on the disk (well or not: a failed one is
    /// reported on its own, and a flush still answers for the rest).
    pub fn write_done(&mut self) {
        self.completed += 1;
    }

    /// Writes the disk has completed so far: what a flush issued now
    /// covers, what a barrier without a mark needs, and, right after a
    /// write's completion, that write's tick (the peer's completion mark).
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// A client was told that the write completed at `tick` is done.
    pub fn replied(&mut self, tick: u64) {
        self.replied = self.replied.max(tick);
    }

    /// What an application FLUSH arriving now needs: the writes the
    /// clients were told are done, which NBD asks it to cover, and no
    /// other.
    pub fn app_need(&self) -> u64 {
        self.replied
    }

    /// Every tick up to this one is covered by a flush that has finished:
    /// the completion mark told to the peer.
    pub fn settled(&self) -> u64 {
        self.settled
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

    /// Whether a flush is on the disk.
    pub fn flushing(&self) -> bool {
        !self.inflight.is_empty()
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
        let first = f.completed();
        f.issued(1);
        f.write_done();
        assert_eq!(f.cover(first), Cover::Pending);
        assert_eq!(
            f.cover(f.completed()),
            Cover::Missing,
            "the second write completed after the flush began"
        );
        assert_eq!(f.finished(1), Some(first));
        assert_eq!(f.cover(first), Cover::Done);
        assert_eq!(f.cover(f.completed()), Cover::Missing);
        assert_eq!(f.finished(1), None, "a flush finishes once");
    }

    #[test]
    fn a_clients_flush_needs_the_writes_replied_and_no_other() {
        let mut f = Flushes::new();
        f.write_done();
        let replied = f.completed();
        f.issued(1);
        f.write_done(); // another client's, waiting for the peer
        f.replied(replied);
        assert_eq!(f.cover(f.app_need()), Cover::Pending, "the flush on the disk will do");
        f.replied(f.completed());
        assert_eq!(f.cover(f.app_need()), Cover::Missing);
        f.disk_attached();
        assert_eq!(f.app_need(), f.completed(), "a new disk's cache is covered by none");
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
        assert_eq!(f.cover(f.completed()), Cover::Done);
    }

    /// Plays `outcomes` (true: a flush request after the quiet spell)
    /// `cycles` times; what was predicted at each spell of the last cycle.
    fn predicted(p: &mut Pattern, outcomes: &[bool], cycles: usize) -> Vec<bool> {
        let mut last = Vec::new();
        for _ in 0..cycles {
            last.clear();
            for &flush in outcomes {
                last.push(p.went_quiet());
                if flush {
                    p.flush_arrived();
                } else {
                    p.write_arrived();
                }
            }
        }
        last
    }

    #[test]
    fn commits_one_after_the_other_are_predicted_after_a_few() {
        let mut p = Pattern::default();
        let seen: Vec<bool> = (0..7).map(|_| predicted(&mut p, &[true], 1)[0]).collect();
        assert_eq!(seen, [false, false, false, false, false, true, true]);
    }

    #[test]
    fn writes_without_flushes_never_predict_one() {
        let mut p = Pattern::default();
        assert_eq!(predicted(&mut p, &[false], 100), [false]);
    }

    #[test]
    fn an_ext4_fdatasync_is_learnt_spell_by_spell() {
        // Data write, journal write, flush, commit block, flush: the spell
        // after the data write is followed by a write, the next two by
        // flushes.
        let mut p = Pattern::default();
        assert_eq!(predicted(&mut p, &[false, true, true], 10), [false, true, true]);
    }

    #[test]
    fn a_workload_that_stops_flushing_stops_the_predictions_at_once() {
        let mut p = Pattern::default();
        predicted(&mut p, &[true], 10);
        // The first write after commits was predicted a flush: one wasted.
        assert_eq!(predicted(&mut p, &[false, false, false], 1), [true, false, false]);
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
