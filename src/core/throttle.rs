//! The resync controller: how many resync (and online-verify) requests may
//! be in flight, from the configured cap and from the application's load.
//!
//! Two limits apply, as in DRBD:
//! - a cap on the resync's rate (`c-max-rate`, or `resync-rate` with
//!   `c-plan-ahead 0`): a token bucket refilled by the ticks;
//! - `c-min-rate`: while the application is using the disk, the resync
//!   gives way to it as long as its own recent rate is above `c-min-rate`.
//!   0 turns the yielding off. DRBD defaults to 250 KiB/s, which under a
//!   steady load stretches a 100 GiB resync to days; left unset, Tandem only
//!   keeps fewer requests in flight under load and lets the rate be.
//!
//! While the application is busy the resync keeps at most
//! [`INFLIGHT_UNDER_LOAD`] requests in flight, so that a resync request is
//! seldom queued ahead of an application request on the disk.
//!
//! Pure: the node feeds it ticks (with the time elapsed, from the shell's
//! clock), application requests and the resync's own requests.

/// Resync requests in flight while the application is busy.
pub const INFLIGHT_UNDER_LOAD: usize = 2;

/// The application counts as busy until it has left the disk alone this
/// long. A database pauses between transactions; a resync that took the
/// full width in every such pause (16 requests of 256 KiB within one 10 ms
/// tick) would put 4 MiB of disk work ahead of the next transaction.
const APP_QUIET_US: u64 = 100_000;

/// One slot of the window the resync's recent rate is measured over.
const SLOT_US: u64 = 100_000;
/// The window: this many full slots and the current one, so it always
/// covers at least `WINDOW_US` once it has filled.
const WINDOW_SLOTS: usize = 11;
/// The window's length; a shorter history counts as this long, so the
/// first second of a resync may move `c-min-rate` × 1 s at once.
const WINDOW_US: u64 = (WINDOW_SLOTS as u64 - 1) * SLOT_US;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    us: u64,
    kib: u64,
}

#[derive(Debug, Clone)]
pub struct Throttle {
    /// The cap, KiB/s; 0 = none.
    cap_kib_s: u64,
    /// Tokens left under the cap.
    budget_kib: u64,
    /// What the last refills left over below one KiB, in KiB·µs/s: at
    /// 250 KiB/s a 10 ms tick brings 2.5 KiB, and dropping the half would
    /// cost a fifth of the rate.
    refill_rem: u64,
    /// `c-min-rate`, KiB/s: None = not set (no rate limit under load),
    /// Some(0) = the resync never yields.
    min_under_load_kib_s: Option<u64>,
    /// An application request arrived since the last tick.
    app_seen: bool,
    /// How long the application has left the disk alone, µs.
    app_quiet_us: u64,
    /// What the resync issued recently, by slot; `at` is the current one.
    window: [Slot; WINDOW_SLOTS],
    at: usize,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            cap_kib_s: 0,
            budget_kib: 0,
            refill_rem: 0,
            min_under_load_kib_s: None,
            app_seen: false,
            app_quiet_us: APP_QUIET_US,
            window: [Slot::default(); WINDOW_SLOTS],
            at: 0,
        }
    }
}

impl Throttle {
    /// `cap_kib_s`: 0 = no cap. `min_under_load_kib_s`: `c-min-rate`.
    pub fn configure(&mut self, cap_kib_s: u64, min_under_load_kib_s: Option<u64>) {
        self.cap_kib_s = cap_kib_s;
        self.min_under_load_kib_s = min_under_load_kib_s;
    }

    /// Time passed: refill the bucket and move the window on.
    /// `app_in_flight`: application requests are in flight now.
    pub fn tick(&mut self, elapsed_us: u64, app_in_flight: bool) {
        if self.cap_kib_s > 0 {
            // Burst at most 100 ms worth, so a long pause does not turn
            // into a flood.
            let cap = (self.cap_kib_s / 10).max(CHUNK_KIB_MIN);
            let refill = self
                .cap_kib_s
                .saturating_mul(elapsed_us)
                .saturating_add(self.refill_rem);
            self.refill_rem = refill % 1_000_000;
            self.budget_kib = self.budget_kib.saturating_add(refill / 1_000_000).min(cap);
        }
        self.app_quiet_us = if self.app_seen || app_in_flight {
            0
        } else {
            self.app_quiet_us.saturating_add(elapsed_us)
        };
        self.app_seen = false;
        let mut left = elapsed_us;
        // A long gap (a stalled loop) empties the window rather than
        // looping over it slot by slot.
        if left >= WINDOW_US {
            self.window = [Slot::default(); WINDOW_SLOTS];
            self.window[self.at].us = SLOT_US;
            return;
        }
        while left > 0 {
            let slot = &mut self.window[self.at];
            let take = left.min(SLOT_US - slot.us.min(SLOT_US));
            slot.us += take;
            left -= take;
            if slot.us >= SLOT_US {
                self.at = (self.at + 1) % WINDOW_SLOTS;
                self.window[self.at] = Slot::default();
            }
        }
    }

    /// An application request arrived.
    pub fn app_request(&mut self) {
        self.app_seen = true;
    }

    /// The resync issued a request moving `kib`.
    pub fn spend(&mut self, kib: u64) {
        if self.cap_kib_s > 0 {
            self.budget_kib = self.budget_kib.saturating_sub(kib);
        }
        let slot = &mut self.window[self.at];
        slot.kib = slot.kib.saturating_add(kib);
    }

    /// `c-min-rate`, while the resync holds back for the application
    /// (what the operator sees when a resync crawls under load).
    pub fn yielding_to(&self, chunk_kib: u64, app_in_flight: bool) -> Option<u64> {
        match self.min_under_load_kib_s {
            Some(min) if min > 0 && self.app_busy(app_in_flight) && self.next_chunk_above(min, chunk_kib) => Some(min),
            _ => None,
        }
    }

    /// Whether the application is using the disk.
    fn app_busy(&self, app_in_flight: bool) -> bool {
        self.app_seen || app_in_flight || self.app_quiet_us < APP_QUIET_US
    }

    /// How many resync requests of `chunk_kib` may be in flight now, of at
    /// most `max`; 0 = hold until the next tick.
    pub fn allowance(&self, max: usize, chunk_kib: u64, app_in_flight: bool) -> usize {
        if self.cap_kib_s > 0 && self.budget_kib < chunk_kib {
            return 0; // the next tick refills the budget
        }
        if self.min_under_load_kib_s == Some(0) || !self.app_busy(app_in_flight) {
            max
        } else if self.yielding_to(chunk_kib, app_in_flight).is_some() {
            0
        } else {
            max.min(INFLIGHT_UNDER_LOAD)
        }
    }

    /// Whether one more `chunk_kib` would take the resync above `kib_s` on
    /// average over the window. One chunk per window always goes, so a
    /// `c-min-rate` below a chunk per second still moves the resync.
    fn next_chunk_above(&self, kib_s: u64, chunk_kib: u64) -> bool {
        let (us, kib) = self
            .window
            .iter()
            .fold((0u64, 0u64), |(us, kib), s| (us + s.us, kib.saturating_add(s.kib)));
        kib > 0 && u128::from(kib + chunk_kib) * 1_000_000 > u128::from(kib_s) * u128::from(us.max(WINDOW_US))
    }
}

/// The bucket always holds at least one resync chunk's worth, or a low cap
/// could never let a chunk through.
const CHUNK_KIB_MIN: u64 = 256;

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 256;

    /// Every 10 ms for `ms`, issues chunks while allowed (asking again
    /// after each, as the node does), each finishing before the next tick;
    /// returns the KiB moved.
    fn run(t: &mut Throttle, ms: u64, app: bool, max: usize) -> u64 {
        let mut moved = 0;
        for _ in 0..ms / 10 {
            t.tick(10_000, app);
            let mut inflight = 0;
            while inflight < t.allowance(max, CHUNK, app) {
                t.spend(CHUNK);
                inflight += 1;
                moved += CHUNK;
            }
        }
        moved
    }

    #[test]
    fn an_idle_application_leaves_the_resync_every_request() {
        let mut t = Throttle::default();
        t.configure(0, Some(1024));
        assert_eq!(t.allowance(16, CHUNK, false), 16);
    }

    #[test]
    fn unset_the_resync_only_keeps_fewer_requests_in_flight_under_load() {
        let mut t = Throttle::default();
        t.configure(0, None);
        let moved = run(&mut t, 3_000, true, 16);
        assert_eq!(moved, 300 * INFLIGHT_UNDER_LOAD as u64 * CHUNK);
    }

    #[test]
    fn a_c_min_rate_below_a_chunk_per_second_still_moves_a_chunk_per_second() {
        let mut t = Throttle::default();
        t.configure(0, Some(16));
        let moved = run(&mut t, 10_000, true, 16);
        assert!((9 * CHUNK..=11 * CHUNK).contains(&moved), "moved {moved} KiB");
    }

    #[test]
    fn zero_turns_the_yielding_off() {
        let mut t = Throttle::default();
        t.configure(0, Some(0));
        t.app_request();
        assert_eq!(t.allowance(16, CHUNK, true), 16);
    }

    #[test]
    fn under_load_the_resync_runs_at_c_min_rate() {
        let mut t = Throttle::default();
        t.configure(0, Some(2048));
        let moved = run(&mut t, 10_000, true, 16);
        // 2 MiB/s for 10 s, to a chunk.
        let want = 2048 * 10;
        assert!(moved >= want - CHUNK && moved <= want + CHUNK, "moved {moved} KiB");
    }

    #[test]
    fn it_says_when_it_holds_the_resync_back() {
        let mut t = Throttle::default();
        t.configure(0, Some(1024));
        assert_eq!(t.yielding_to(CHUNK, true), None, "below c-min-rate");
        run(&mut t, 1_000, true, 16);
        assert_eq!(t.yielding_to(CHUNK, true), Some(1024));
        t.tick(100_000, false);
        assert_eq!(t.yielding_to(CHUNK, false), None, "the load stopped");
        t.configure(0, None);
        run(&mut t, 1_000, true, 16);
        assert_eq!(t.yielding_to(CHUNK, true), None, "unset: only narrower");
    }

    #[test]
    fn the_resync_speeds_up_again_once_the_load_stops() {
        let mut t = Throttle::default();
        t.configure(0, Some(256));
        run(&mut t, 2_000, true, 16);
        assert_eq!(t.allowance(16, CHUNK, false), 0, "the last tick saw the load");
        for _ in 0..9 {
            t.tick(10_000, false);
            assert_eq!(t.allowance(16, CHUNK, false), 0, "a pause between transactions");
        }
        t.tick(10_000, false);
        assert_eq!(t.allowance(16, CHUNK, false), 16, "quiet for 100 ms");
    }

    #[test]
    fn an_application_request_between_ticks_counts_as_load() {
        let mut t = Throttle::default();
        t.configure(0, None);
        t.tick(10_000, false);
        t.app_request();
        assert_eq!(t.allowance(16, CHUNK, false), INFLIGHT_UNDER_LOAD);
        t.tick(10_000, false);
        assert_eq!(
            t.allowance(16, CHUNK, false),
            INFLIGHT_UNDER_LOAD,
            "seen during that tick"
        );
        t.tick(100_000, false);
        assert_eq!(t.allowance(16, CHUNK, false), 16, "quiet for 100 ms");
    }

    #[test]
    fn the_cap_holds_whatever_the_load() {
        let mut t = Throttle::default();
        t.configure(10 * 1024, Some(0));
        let moved = run(&mut t, 10_000, false, 16);
        // 10 MiB/s for 10 s (the bucket starts empty).
        let want = 10 * 1024 * 10;
        assert!(
            moved >= want - CHUNK && moved <= want + 1024 + CHUNK,
            "moved {moved} KiB"
        );
    }

    #[test]
    fn a_low_cap_keeps_its_fractions_of_a_kib() {
        let mut t = Throttle::default();
        t.configure(250, None);
        let moved = run(&mut t, 60_000, false, 16);
        assert!((59 * 250 - CHUNK..=60 * 250).contains(&moved), "moved {moved} KiB");
    }

    #[test]
    fn a_long_stall_neither_floods_nor_stops_the_resync() {
        let mut t = Throttle::default();
        t.configure(1024, Some(512));
        t.tick(30_000_000, true);
        assert!(t.budget_kib <= 256, "the bucket holds 100 ms worth at most");
        assert_eq!(
            t.allowance(16, CHUNK, true),
            INFLIGHT_UNDER_LOAD,
            "the window starts afresh"
        );
    }
}
