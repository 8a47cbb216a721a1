//! `verify --wait`: start an online verify and follow it to its end.
//!
//! The node that runs a verify shows it as VerifyS, with its progress in
//! `resync_kib` as a resync's, and keeps what the last verify that ran to
//! its end found in `verify_found_kib` (`None` while one runs and after one
//! was interrupted), so the result printed is this verify's own.

use super::progress::{InPipe, Look, Progress, POLL_INTERVAL};
use super::{call, print_response, resync_kib, statuses};
use indicatif::MultiProgress;
use std::path::Path;
use tandem::control::{exit, Command, Request};
use tandem::meta::BM_BLOCK_BYTES;

/// The daemon counts in KiB; verify compares 4 KiB blocks.
const KIB_PER_BLOCK: u64 = BM_BLOCK_BYTES / 1024;

/// Blocks, as the verify compares them, with speed and ETA on a terminal;
/// in a pipe, a line per tenth, which stays readable in a log.
static LOOK: Look = Look {
    bar: "{prefix}: {msg} [{wide_bar}] {percent:>3}% {pos}/{len} blocks {speed} ETA {eta}",
    unit_bytes: BM_BLOCK_BYTES,
    in_pipe: InPipe::Lines {
        verb: "verified",
        unit: "blocks",
    },
};

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
    let bars = MultiProgress::new();
    let mut code = exit::OK;
    for name in names {
        let followed = follow(run_dir, &name, &bars);
        if code == exit::OK {
            code = followed;
        }
    }
    code
}

fn follow(run_dir: &Path, resource: &str, bars: &MultiProgress) -> i32 {
    let mut progress = Progress::new(resource, &LOOK, bars);
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
            if let Some((left, total)) = resync_kib(&s) {
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
}
