//! The progress of a long operation tandemadm follows by polling the
//! daemon: a resync (`wait-sync`), an online verify (`verify --wait`).
//!
//! On a terminal it is a bar with speed and ETA. The bar is made only when
//! the operation is first seen, already at the place it has reached: a bar
//! made before shows an empty "100% 0/0" first, and counts everything done
//! before it appeared as a burst of speed. Bars are drawn together, one line
//! per resource, because several resources often resync at once (a node's
//! whole set, after it was away).
//!
//! Out of a terminal (a pipe, a log) a bar's redraws are noise, and what
//! suits there differs by command, so each chooses when it makes its
//! [`Progress`]: `wait-sync` prints nothing, because scripts read its stderr
//! for the outcome alone; `verify --wait` prints a plain line at every tenth
//! of the way, and at least once a minute, because a verify can run for
//! hours and its log is then worth having.

use indicatif::{BinaryBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a command that follows an operation asks the daemon.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// In a pipe, a progress line at least this often, even without a new tenth.
const LINE_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// How one command shows its progress.
pub struct Look {
    /// The bar's template on a terminal (indicatif's syntax, plus `{speed}`:
    /// bytes per second, whatever the unit counted).
    pub bar: &'static str,
    /// Bytes in one unit of what is counted, so that `{speed}` and the lines
    /// give bytes per second.
    pub unit_bytes: u64,
    pub in_pipe: InPipe,
}

/// What is printed when stderr is not a terminal.
pub enum InPipe {
    /// Nothing.
    Silent,
    /// `RESOURCE: VERB DONE/TOTAL UNIT (P%), SPEED, ETA H:MM:SS`.
    Lines { verb: &'static str, unit: &'static str },
}

/// One resource's progress, shown as its [`Look`] says.
pub struct Progress {
    resource: String,
    look: &'static Look,
    shown: Shown,
}

enum Shown {
    /// Drawn among `bars` (one line per resource when several show at
    /// once); `bar` is `None` until the operation is first seen.
    Bar {
        bars: MultiProgress,
        bar: Option<ProgressBar>,
    },
    Lines(Lines),
    Silent,
}

struct Lines {
    /// When the operation was first seen, and what was done then: the speed
    /// is measured from there.
    first: Option<(Instant, u64)>,
    /// The tenth of the way the last line reported.
    last_tenth: Option<u64>,
    last_line: Instant,
}

impl Progress {
    pub fn new(resource: &str, look: &'static Look, bars: &MultiProgress) -> Progress {
        let shown = match look.in_pipe {
            _ if std::io::stderr().is_terminal() => Shown::Bar {
                bars: bars.clone(),
                bar: None,
            },
            InPipe::Lines { .. } => Shown::Lines(Lines::new()),
            InPipe::Silent => Shown::Silent,
        };
        Progress {
            resource: resource.to_owned(),
            look,
            shown,
        }
    }

    /// The operation, in state `cstate`, has done `done` of `total` units.
    pub fn update(&mut self, cstate: &str, done: u64, total: u64) {
        // Nothing to count (yet): a bar would show 0/0.
        if total == 0 {
            return;
        }
        match &mut self.shown {
            Shown::Bar { bar: Some(bar), .. } => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(cstate.to_owned());
            }
            Shown::Bar { bars, bar } => {
                let new = bars.add(new_bar(&self.resource, self.look, cstate, done, total));
                new.tick();
                *bar = Some(new);
            }
            Shown::Lines(lines) => {
                if let Some(line) = lines.line(&self.resource, self.look, Instant::now(), done, total) {
                    eprintln!("{line}");
                }
            }
            Shown::Silent => {}
        }
    }

    /// The operation ended: the bar goes away, and one seen after this
    /// starts afresh.
    pub fn finish(&mut self) {
        match &mut self.shown {
            Shown::Bar { bars, bar } => {
                if let Some(bar) = bar.take() {
                    bar.finish_and_clear();
                    bars.remove(&bar);
                }
            }
            Shown::Lines(lines) => *lines = Lines::new(),
            Shown::Silent => {}
        }
    }

    /// Waiting stopped before the end: the bar stays as it was, above the
    /// message that says why.
    pub fn abandon(&self) {
        if let Shown::Bar { bar: Some(bar), .. } = &self.shown {
            bar.abandon();
        }
    }
}

/// A bar already at `done`, whose speed and ETA count only what is done
/// from now on; not drawn until added to a `MultiProgress`.
fn new_bar(resource: &str, look: &Look, cstate: &str, done: u64, total: u64) -> ProgressBar {
    let unit_bytes = look.unit_bytes as f64;
    let style = ProgressStyle::with_template(look.bar)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("speed", move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&speed(state.per_sec() * unit_bytes));
        })
        .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
        .with_style(style)
        .with_prefix(resource.to_owned())
        .with_message(cstate.to_owned());
    // What was done before the bar shows must not count as speed: recorded
    // unseen, then the estimate starts afresh.
    bar.set_position(done);
    bar.tick();
    bar.reset_eta();
    bar
}

impl Lines {
    fn new() -> Lines {
        Lines {
            first: None,
            last_tenth: None,
            last_line: Instant::now(),
        }
    }

    /// The line to print at `now`, if one is due.
    fn line(&mut self, resource: &str, look: &Look, now: Instant, done: u64, total: u64) -> Option<String> {
        let InPipe::Lines { verb, unit } = look.in_pipe else {
            return None;
        };
        let (since, done_then) = *self.first.get_or_insert((now, done));
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if self.last_tenth == Some(tenth) && now.duration_since(self.last_line) < LINE_INTERVAL_MAX {
            return None;
        }
        self.last_tenth = Some(tenth);
        self.last_line = now;
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        let mut line = format!("{resource}: {verb} {done}/{total} {unit} ({percent}%)");
        let secs = now.duration_since(since).as_secs_f64();
        if secs > 0.0 && done > done_then {
            let per_s = (done - done_then) as f64 / secs;
            let eta_s = (total.saturating_sub(done) as f64 / per_s) as u64;
            line.push_str(&format!(
                ", {}, ETA {}:{:02}:{:02}",
                speed(per_s * look.unit_bytes as f64),
                eta_s / 3600,
                eta_s / 60 % 60,
                eta_s % 60
            ));
        }
        Some(line)
    }
}

/// A speed in bytes per second, readably.
fn speed(bytes_per_s: f64) -> String {
    format!("{}/s", BinaryBytes(bytes_per_s as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    static BLOCKS: Look = Look {
        bar: "{pos}/{len}",
        unit_bytes: 4096,
        in_pipe: InPipe::Lines {
            verb: "verified",
            unit: "blocks",
        },
    };

    #[test]
    fn speeds_are_bytes_per_second() {
        assert_eq!(speed(1048576.0), "1.00 MiB/s");
    }

    #[test]
    fn lines_come_at_each_tenth_with_the_speed_since_first_seen() {
        let mut lines = Lines::new();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // First seen a quarter of the way: no speed yet, and what was done
        // before does not count in the next one.
        assert_eq!(
            lines.line("r0", &BLOCKS, at(0), 1000, 4000).as_deref(),
            Some("r0: verified 1000/4000 blocks (25%)")
        );
        assert_eq!(lines.line("r0", &BLOCKS, at(1), 1100, 4000), None);
        // 256 blocks a second is 1 MiB/s; 2488 blocks left.
        assert_eq!(
            lines.line("r0", &BLOCKS, at(2), 1512, 4000).as_deref(),
            Some("r0: verified 1512/4000 blocks (37%), 1.00 MiB/s, ETA 0:00:09")
        );
        // A minute without a new tenth still gets a line.
        assert!(lines.line("r0", &BLOCKS, at(63), 1520, 4000).is_some());
    }

    #[test]
    fn a_silent_look_prints_no_lines() {
        static SILENT: Look = Look {
            bar: "{bytes}",
            unit_bytes: 1,
            in_pipe: InPipe::Silent,
        };
        assert_eq!(Lines::new().line("r0", &SILENT, Instant::now(), 1, 2), None);
    }
}
