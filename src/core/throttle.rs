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
//! While the application is busy, how many resync requests may be in
//! flight follows the application's own latency, the way a delay-based
//! congestion controller (TCP Vegas, LEDBAT) follows a queue it cannot see:
//! the width starts at [`INFLIGHT_UNDER_LOAD`], doubles every slot (100 ms)
//! while the application's mean latency stays within [`LATENCY_SLACK`] of
//! its latency without the resync, grows by one after the first time it
//! did not, and halves whenever it does not. How much a resync request
//! delays the application depends on the disks (a shared virtual disk
//! queues both; an SSD array hardly notices), so the width is found, not
//! fixed. The latency without the resync is measured while none runs, and
//! else by a pause: the resync holds its requests for two slots (the first
//! drains what is in flight) when it has no such figure younger than
//! [`BASE_MAX_AGE_US`].
//!
//! Pure: the node feeds it ticks (with the time elapsed and the latency of
//! the application's requests that finished since the last, from the
//! shell's clock), application requests and the resync's own requests.

/// Resync requests in flight when the application starts being busy, and
/// the width a new resync under load starts from.
pub const INFLIGHT_UNDER_LOAD: usize = 2;

/// The application's mean latency may rise this much (×) over its latency
/// without the resync before the resync narrows: it keeps at least half
/// its throughput at queue depth 1. (1.5× was tried on the benchmark's
/// shared virtual disk: the application's mean went from 1.6× to 1.5×
/// its idle figure and the resync lost a third of its speed.)
pub const LATENCY_SLACK: (u64, u64) = (2, 1);

/// How old the figure of the application's latency without the resync may
/// get before a pause measures it again: a pause of two slots every ten
/// seconds costs the resync 2% of its time.
pub const BASE_MAX_AGE_US: u64 = 10_000_000;

/// Slots of a pause that measures the application alone: one to drain the
/// resync requests in flight, one to measure.
const PROBE_SLOTS: u8 = 2;

/// The most resync requests in flight, idle or under load (a width under
/// load wider than that would take halvings to come down).
pub const INFLIGHT_MAX: usize = 16;

/// The latency of the application's requests that finished during one
/// tick: what the width under load is steered by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppLatency {
    pub sum_us: u64,
    pub count: u32,
}

impl AppLatency {
    pub fn record(&mut self, us: u64) {
        self.sum_us = self.sum_us.saturating_add(us);
        self.count = self.count.saturating_add(1);
    }

    fn add(&mut self, other: AppLatency) {
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.count = self.count.saturating_add(other.count);
    }

    fn mean_us(&self) -> Option<u64> {
        (self.count > 0).then(|| self.sum_us / u64::from(self.count))
    }
}

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
    /// Resync requests in flight while the application is busy.
    width: usize,
    /// The width doubles until the first slot in which it was too much.
    slow_start: bool,
    /// The application's mean latency without the resync, µs, and how
    /// long ago that was seen.
    base_us: Option<u64>,
    base_age_us: u64,
    /// Slots left of a pause that measures `base_us`.
    probe_slots: u8,
    /// The application's latency in the current slot.
    slot_latency: AppLatency,
    /// The mean of the last full slot, µs (for the operator).
    last_mean_us: Option<u64>,
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
            width: INFLIGHT_UNDER_LOAD,
            slow_start: true,
            base_us: None,
            base_age_us: 0,
            probe_slots: 0,
            slot_latency: AppLatency::default(),
            last_mean_us: None,
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
    /// `app_in_flight`: application requests are in flight now; `latency`:
    /// of those that finished since the last tick; `resyncing`: this node
    /// is issuing resync (or verify) requests.
    pub fn tick(&mut self, elapsed_us: u64, app_in_flight: bool, latency: AppLatency, resyncing: bool) {
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
        self.slot_latency.add(latency);
        let mut left = elapsed_us;
        // A long gap (a stalled loop) empties the window rather than
        // looping over it slot by slot.
        if left >= WINDOW_US {
            self.window = [Slot::default(); WINDOW_SLOTS];
            self.window[self.at].us = SLOT_US;
            self.end_of_slot(elapsed_us, app_in_flight, resyncing);
            return;
        }
        let mut ended = 0;
        while left > 0 {
            let slot = &mut self.window[self.at];
            let take = left.min(SLOT_US - slot.us.min(SLOT_US));
            slot.us += take;
            left -= take;
            if slot.us >= SLOT_US {
                self.at = (self.at + 1) % WINDOW_SLOTS;
                self.window[self.at] = Slot::default();
                ended += 1;
            }
        }
        if ended > 0 {
            self.end_of_slot(ended * SLOT_US, app_in_flight, resyncing);
        }
    }

    /// A slot ended (`us` of them): steer the width under load by the
    /// application's mean latency over it.
    fn end_of_slot(&mut self, us: u64, app_in_flight: bool, resyncing: bool) {
        let latency = std::mem::take(&mut self.slot_latency);
        let mean = latency.mean_us();
        self.last_mean_us = mean;
        self.base_age_us = self.base_age_us.saturating_add(us);
        if self.probe_slots > 0 {
            self.probe_slots -= 1;
            if self.probe_slots == 0 {
                // Without a sample the old figure stands; either way the
                // next pause is a full age away.
                self.base_us = mean.or(self.base_us);
                self.base_age_us = 0;
            }
            return;
        }
        if !resyncing {
            // With no resync running the application's latency is its own.
            if let Some(m) = mean {
                self.base_us = Some(self.base_us.map_or(m, |b| (3 * b + m) / 4));
                self.base_age_us = 0;
            }
            self.width = INFLIGHT_UNDER_LOAD;
            self.slow_start = true;
            return;
        }
        if !self.app_busy(app_in_flight) {
            return;
        }
        let (num, den) = LATENCY_SLACK;
        match (mean, self.base_us) {
            (Some(_), base) if base.is_none() || self.base_age_us >= BASE_MAX_AGE_US => {
                self.probe_slots = PROBE_SLOTS;
            }
            (Some(m), Some(b)) => {
                if m.saturating_mul(den) <= b.saturating_mul(num) {
                    let grown = if self.slow_start {
                        self.width * 2
                    } else {
                        self.width + 1
                    };
                    self.width = grown.min(INFLIGHT_MAX);
                } else {
                    self.width = (self.width / 2).max(1);
                    self.slow_start = false;
                }
                // A better figure seen under the resync is still the
                // application's own.
                if m < b {
                    self.base_us = Some(m);
                }
            }
            // Requests in flight and none finished in a whole slot: they
            // are waiting, most likely behind the resync.
            (None, _) if app_in_flight => {
                self.width = (self.width / 2).max(1);
                self.slow_start = false;
            }
            _ => {}
        }
    }

    /// How the resync is steered, for the operator; None while the
    /// application is idle.
    pub fn under_load(&self, app_in_flight: bool) -> Option<super::ResyncUnderLoad> {
        self.app_busy(app_in_flight).then_some(super::ResyncUnderLoad {
            width: if self.probe_slots > 0 { 0 } else { self.width },
            app_us: self.last_mean_us,
            alone_us: self.base_us,
        })
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
        } else if self.probe_slots > 0 || self.yielding_to(chunk_kib, app_in_flight).is_some() {
            0
        } else {
            max.min(self.width)
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
    /// returns the KiB moved. The application, when `app`, has a request in
    /// flight throughout and reports no latency.
    fn run(t: &mut Throttle, ms: u64, app: bool, max: usize) -> u64 {
        run_with(t, ms, app, max, |_| None).0
    }

    /// As `run`, the application's mean latency over each tick being
    /// `latency(requests the resync had in flight in it)` (None: nothing
    /// finished). Returns the KiB moved and the width in each tick.
    fn run_with(
        t: &mut Throttle,
        ms: u64,
        app: bool,
        max: usize,
        latency: impl Fn(usize) -> Option<u64>,
    ) -> (u64, Vec<usize>) {
        let (mut moved, mut widths, mut inflight) = (0, Vec::new(), 0);
        for _ in 0..ms / 10 {
            let lat = match latency(inflight) {
                Some(us) if app => AppLatency {
                    sum_us: 10 * us,
                    count: 10,
                },
                _ => AppLatency::default(),
            };
            t.tick(10_000, app, lat, true);
            inflight = 0;
            while inflight < t.allowance(max, CHUNK, app) {
                t.spend(CHUNK);
                inflight += 1;
                moved += CHUNK;
            }
            widths.push(inflight);
        }
        (moved, widths)
    }

    /// The application alone for a second: its latency without the resync.
    fn learn_base(t: &mut Throttle, us: u64) {
        for _ in 0..100 {
            t.tick(10_000, true, AppLatency { sum_us: us, count: 1 }, false);
        }
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
        // An application request stuck for whole slots halves the width.
        let (moved, widths) = run_with(&mut t, 3_000, true, 16, |_| None);
        // (A slot ends with its tenth tick, which applies what it saw.)
        assert_eq!(widths[..9], [INFLIGHT_UNDER_LOAD; 9]);
        assert!(widths[9..].iter().all(|&w| w == 1), "{widths:?}");
        assert_eq!(moved, (9 * INFLIGHT_UNDER_LOAD as u64 + 291) * CHUNK);
    }

    #[test]
    fn a_resync_the_application_does_not_feel_widens_to_the_full_width() {
        let mut t = Throttle::default();
        t.configure(0, None);
        learn_base(&mut t, 400);
        let (_, widths) = run_with(&mut t, 1_000, true, 16, |_| Some(410));
        // Doubling every 100 ms: 2, 4, 8, 16.
        assert_eq!(widths[..9], [2; 9]);
        assert_eq!(widths[9..19], [4; 10]);
        assert_eq!(widths[29..], [16; 71]);
        assert_eq!(
            t.under_load(true),
            Some(super::super::ResyncUnderLoad {
                width: 16,
                app_us: Some(410),
                alone_us: Some(400)
            })
        );
    }

    #[test]
    fn a_resync_that_slows_the_application_finds_the_width_it_tolerates() {
        let mut t = Throttle::default();
        t.configure(0, None);
        learn_base(&mut t, 400);
        // Each request in flight costs the application 100 µs: up to 4
        // keep it within 2× of 400 µs.
        let (_, widths) = run_with(&mut t, 20_000, true, 16, |w| Some(400 + 100 * w as u64));
        // (Past the first 5 s; one pause measures the application alone.)
        let late: Vec<usize> = widths[500..].iter().copied().filter(|&w| w > 0).collect();
        assert_eq!(widths.len() - 500 - late.len(), 20);
        assert!(late.iter().all(|&w| (2..=5).contains(&w)), "{late:?}");
        let mean = late.iter().sum::<usize>() as f64 / late.len() as f64;
        assert!((2.5..=4.5).contains(&mean), "mean width {mean}");
        // A resync that hurts at any width runs one request at a time.
        let mut t = Throttle::default();
        learn_base(&mut t, 400);
        let (_, widths) = run_with(&mut t, 2_000, true, 16, |w| Some(if w > 0 { 2_000 } else { 400 }));
        assert!(widths[20..].iter().all(|&w| w == 1), "{widths:?}");
    }

    #[test]
    fn without_the_applications_own_latency_the_resync_pauses_to_measure_it() {
        let mut t = Throttle::default();
        t.configure(0, None);
        let (_, widths) = run_with(&mut t, 12_000, true, 16, |w| Some(if w > 0 { 500 } else { 400 }));
        // 100 ms at the starting width, then a pause of two slots (the
        // first drains, the second measures 400 µs), then the width grows
        // while the application stays within 2× of that.
        assert_eq!(widths[..9], [INFLIGHT_UNDER_LOAD; 9]);
        assert_eq!(widths[9..29], [0; 20]);
        assert_eq!(widths[29..39], [INFLIGHT_UNDER_LOAD; 10]);
        assert_eq!(widths[99..109], [16; 10]);
        assert_eq!(t.under_load(true).and_then(|u| u.alone_us), Some(400));
        // Ten seconds on, the figure is measured again.
        let pause = widths[39..].iter().position(|&w| w == 0).map(|p| p + 39);
        assert_eq!(pause, Some(1029), "{widths:?}");
        assert_eq!(widths[1029..1049], [0; 20]);
        assert_eq!(widths[1049], 16, "as wide as before the pause");
    }

    #[test]
    fn a_new_resync_starts_narrow_again() {
        let mut t = Throttle::default();
        t.configure(0, None);
        learn_base(&mut t, 400);
        run_with(&mut t, 1_000, true, 16, |_| Some(400));
        assert_eq!(t.allowance(16, CHUNK, true), 16);
        learn_base(&mut t, 400);
        assert_eq!(t.allowance(16, CHUNK, true), INFLIGHT_UNDER_LOAD);
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
        t.tick(100_000, false, AppLatency::default(), true);
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
            t.tick(10_000, false, AppLatency::default(), true);
            assert_eq!(t.allowance(16, CHUNK, false), 0, "a pause between transactions");
        }
        t.tick(10_000, false, AppLatency::default(), true);
        assert_eq!(t.allowance(16, CHUNK, false), 16, "quiet for 100 ms");
    }

    #[test]
    fn an_application_request_between_ticks_counts_as_load() {
        let mut t = Throttle::default();
        t.configure(0, None);
        let idle = AppLatency::default();
        t.tick(10_000, false, idle, true);
        t.app_request();
        assert_eq!(t.allowance(16, CHUNK, false), INFLIGHT_UNDER_LOAD);
        t.tick(10_000, false, idle, true);
        assert_eq!(
            t.allowance(16, CHUNK, false),
            INFLIGHT_UNDER_LOAD,
            "seen during that tick"
        );
        t.tick(100_000, false, idle, true);
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
        t.tick(30_000_000, true, AppLatency::default(), true);
        assert!(t.budget_kib <= 256, "the bucket holds 100 ms worth at most");
        // Nothing finished in all that time: narrower, never stopped.
        assert_eq!(t.allowance(16, CHUNK, true), 1, "the window starts afresh");
    }
}
