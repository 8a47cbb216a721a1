//! `verify --wait`: start an online verify and follow it to its end.
//!
//! The node that runs a verify shows it as VerifyS, with its progress in
//! `resync_kib` as a resync's, and keeps what the last verify that ran to
//! its end found in `verify_found_kib` (`None` while one runs and after one
//! was interrupted), so the result printed is this verify's own.

use super::{call, print_response, statuses};
use indicatif::{BinaryBytes, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};
use tandem::control::{exit, Command, Request};
use tandem::meta::BM_BLOCK_BYTES;

/// The daemon counts in KiB; verify compares 4 KiB blocks.
const KIB_PER_BLOCK: u64 = BM_BLOCK_BYTES / 1024;

/// How often the daemon is asked, as `wait-sync` does.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// In a pipe, a progress line at least this often, even without a new tenth.
const LINE_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// Start the verify of `resource` (or of every resource, for `all`) and
/// follow each to its end; the exit status is the first failure's.
pub fn start_and_follow(run_dir: &Path, resource: &str) -> i32 {
    match call(run_dir, &Request::new(Command::Verify, resource)) {
        Ok(resp) if resp.ok => {}
        Ok(resp) => return print_response(&resp),
        Err(code) => return code,
    }
    let names: Vec<String> = match statuses(run_dir, resource) {
        Ok(snaps) => snaps
            .iter()
            .filter_map(|s| s["resource"].as_str().map(str::to_owned))
            .collect(),
        Err(code) => return code,
    };
    let mut code = exit::OK;
    for name in names {
        let followed = follow(run_dir, &name);
        if code == exit::OK {
            code = followed;
        }
    }
    code
}

fn follow(run_dir: &Path, resource: &str) -> i32 {
    let mut progress = Progress::new(resource);
    loop {
        let s = match statuses(run_dir, resource) {
            Ok(mut snaps) => snaps.swap_remove(0),
            Err(code) => {
                progress.finish();
                return code;
            }
        };
        let cstate = s["cstate"].as_str().unwrap_or("");
        if cstate == "VerifyS" {
            if let Some(r) = s["resync_kib"].as_array() {
                let (left, total) = (r[0].as_u64().unwrap_or(0), r[1].as_u64().unwrap_or(0));
                progress.update(
                    cstate,
                    total.saturating_sub(left) / KIB_PER_BLOCK,
                    total / KIB_PER_BLOCK,
                );
            }
            std::thread::sleep(POLL_INTERVAL);
            continue;
        }
        progress.finish();
        return match s["verify_found_kib"].as_u64() {
            Some(kib) => {
                println!("{}", result_line(resource, kib));
                exit::OK
            }
            None => {
                eprintln!(
                    "{resource}: the verify stopped before its end (now {cstate}); 'tandemadm verify {resource}' resumes where it stopped"
                );
                exit::FAILED
            }
        };
    }
}

/// The last line: how many blocks differ, and what repairs them.
fn result_line(resource: &str, found_kib: u64) -> String {
    match found_kib / KIB_PER_BLOCK {
        0 => format!("{resource}: verify done: 0 blocks out of sync"),
        1 => format!(
            "{resource}: verify done: 1 block ({found_kib} KiB) out of sync, marked for resync; 'tandemadm resync-oos {resource}' on the Primary repairs it"
        ),
        n => format!(
            "{resource}: verify done: {n} blocks ({found_kib} KiB) out of sync, marked for resync; 'tandemadm resync-oos {resource}' on the Primary repairs them"
        ),
    }
}

/// A speed in 4 KiB blocks per second, as bytes per second.
fn speed(blocks_per_s: f64) -> String {
    format!("{}/s", BinaryBytes((blocks_per_s * BM_BLOCK_BYTES as f64) as u64))
}

/// How the progress is shown: a bar with speed and ETA when stderr is a
/// terminal; otherwise (a pipe, a log) a plain line at every tenth of the
/// way, and at least once a minute, which stays readable there.
enum Progress {
    /// The bar is made when the verify is first seen, already at the place
    /// the verify has reached (a bar made earlier would show an empty 100%
    /// first).
    Bar {
        resource: String,
        bar: Option<ProgressBar>,
    },
    Lines(Lines),
}

struct Lines {
    resource: String,
    /// When the verify was first seen, and its blocks done then: the speed
    /// is measured from there.
    first: Option<(Instant, u64)>,
    /// The tenth of the way the last line reported.
    last_tenth: Option<u64>,
    last_line: Instant,
}

impl Progress {
    fn new(resource: &str) -> Progress {
        let resource = resource.to_owned();
        if std::io::stderr().is_terminal() {
            Progress::Bar { resource, bar: None }
        } else {
            Progress::Lines(Lines {
                resource,
                first: None,
                last_tenth: None,
                last_line: Instant::now(),
            })
        }
    }

    fn update(&mut self, cstate: &str, done: u64, total: u64) {
        match self {
            Progress::Bar { bar: Some(bar), .. } => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(cstate.to_owned());
            }
            Progress::Bar { resource, bar } => {
                let style = ProgressStyle::with_template(
                    "{prefix}: {msg} [{wide_bar}] {percent:>3}% {pos}/{len} blocks {speed} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key("speed", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&speed(state.per_sec()));
                })
                .progress_chars("=> ");
                let new = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
                    .with_style(style)
                    .with_prefix(resource.clone())
                    .with_message(cstate.to_owned());
                // The blocks done before the bar shows must not count as
                // speed: recorded unseen, then the estimate starts afresh.
                new.set_position(done);
                new.tick();
                new.reset_eta();
                new.set_draw_target(ProgressDrawTarget::stderr());
                new.tick();
                *bar = Some(new);
            }
            Progress::Lines(lines) => lines.update(done, total),
        }
    }

    fn finish(&self) {
        if let Progress::Bar { bar: Some(bar), .. } = self {
            bar.finish_and_clear();
        }
    }
}

impl Lines {
    fn update(&mut self, done: u64, total: u64) {
        let now = Instant::now();
        let (since, done_then) = *self.first.get_or_insert((now, done));
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if self.last_tenth == Some(tenth) && now.duration_since(self.last_line) < LINE_INTERVAL_MAX {
            return;
        }
        self.last_tenth = Some(tenth);
        self.last_line = now;
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        let mut line = format!("{}: verified {done}/{total} blocks ({percent}%)", self.resource);
        let secs = now.duration_since(since).as_secs_f64();
        if secs > 0.0 && done > done_then {
            let per_s = (done - done_then) as f64 / secs;
            let eta_s = (total.saturating_sub(done) as f64 / per_s) as u64;
            line.push_str(&format!(
                ", {}, ETA {}:{:02}:{:02}",
                speed(per_s),
                eta_s / 3600,
                eta_s / 60 % 60,
                eta_s % 60
            ));
        }
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_counts_blocks_and_names_the_repair() {
        assert_eq!(result_line("r0", 0), "r0: verify done: 0 blocks out of sync");
        assert!(result_line("r0", 4).starts_with("r0: verify done: 1 block (4 KiB) out of sync"));
        assert!(result_line("r0", 12).contains("3 blocks (12 KiB) out of sync"));
        assert!(result_line("r0", 12).contains("'tandemadm resync-oos r0' on the Primary"));
    }

    #[test]
    fn speeds_are_bytes_per_second() {
        assert_eq!(speed(256.0), "1.00 MiB/s");
    }
}
