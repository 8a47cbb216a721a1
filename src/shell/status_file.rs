//! `RUN_DIR/drbd`: the `/proc/drbd`-format status file, rewritten atomically
//! (temp file + rename) so a reader never sees half a file.

use super::daemon::Daemon;
use crate::status::{render_proc_drbd, Minor};
use std::io::{self, Write};
use std::rc::Rc;
use std::time::Duration;

/// How often counters are refreshed even when no state changed.
const REFRESH: Duration = Duration::from_secs(1);

pub fn render(daemon: &Daemon) -> String {
    let snaps: Vec<_> = daemon
        .resources
        .iter()
        .map(|r| {
            let node = r.node.borrow();
            node.is_up().then(|| node.snapshot())
        })
        .collect();
    let minors: Vec<Minor<'_>> = daemon
        .resources
        .iter()
        .zip(&snaps)
        .map(|(r, s)| match s {
            Some(s) => Minor::Up(s, daemon.resync_speed(&r.name)),
            None => Minor::Unconfigured {
                minor: r.node.borrow().snapshot().minor,
            },
        })
        .collect();
    render_proc_drbd(&minors)
}

pub fn write(daemon: &Daemon) -> io::Result<()> {
    write_text(daemon, &render(daemon))
}

fn write_text(daemon: &Daemon, text: &str) -> io::Result<()> {
    let path = daemon.opts.run_dir.join("drbd");
    let tmp = daemon.opts.run_dir.join(".drbd.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, &path)
}

/// Rewrite the file on every state change, and once a second while counters move.
pub async fn keep_current(daemon: Rc<Daemon>) {
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = daemon.changed.notified() => {},
            _ = tokio::time::sleep(REFRESH) => {},
        }
        daemon.publish_changes();
        let text = render(&daemon);
        if text != last {
            if let Err(e) = write_text(&daemon, &text) {
                tracing::warn!(error = %e, "cannot write status file");
            }
            last = text;
        }
    }
}
