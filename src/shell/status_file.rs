//! `RUN_DIR/drbd`: the `/proc/drbd`-format status file, rewritten atomically
//! (temp file + rename) so a reader never sees half a file.
//!
//! The rewrite runs on a thread of its own: creating and renaming a file
//! waits on the filesystem's journal, which takes milliseconds when the disk
//! is busy (a resync), and the io_uring thread must not stall every request
//! in flight for that. Renders stay on the io_uring thread (they read the
//! nodes); only the text crosses over, and a burst of renders is written
//! once, the newest.

use super::daemon::Daemon;
use crate::status::{render_proc_drbd, Minor};
use std::io::{self, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

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

/// One text to write, and who waits for it to be on disk.
struct Job {
    text: String,
    done: Option<oneshot::Sender<io::Result<()>>>,
}

/// The thread that rewrites the status file.
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Start the thread. The daemon's first write waits for its result, so
    /// a run directory it cannot write to still fails the start-up.
    pub fn start(run_dir: &Path) -> io::Result<Writer> {
        let path = run_dir.join("drbd");
        let tmp = run_dir.join(".drbd.tmp");
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("status-file".into())
            .spawn(move || write_loop(&rx, &path, &tmp))?;
        Ok(Writer { tx })
    }

    /// Queue a rewrite and go on.
    pub fn publish(&self, text: String) {
        let _ = self.tx.send(Job { text, done: None });
    }

    /// Queue a rewrite and wait (without blocking the io_uring thread) until
    /// the file says it: after a command, the operator reads the file.
    pub async fn publish_and_wait(&self, text: String) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job { text, done: Some(done) })
            .map_err(|_| io::Error::other("the status-file thread has stopped"))?;
        wait.await
            .unwrap_or_else(|_| Err(io::Error::other("the status-file thread has stopped")))
    }
}

fn write_loop(rx: &mpsc::Receiver<Job>, path: &Path, tmp: &Path) {
    while let Ok(first) = rx.recv() {
        // Only the newest text of a burst matters; everyone waiting in it
        // is answered by that one write.
        let mut text = first.text;
        let mut waiting: Vec<_> = first.done.into_iter().collect();
        while let Ok(next) = rx.try_recv() {
            text = next.text;
            waiting.extend(next.done);
        }
        let result = write_text(path, tmp, &text);
        if let Err(e) = &result {
            tracing::warn!(error = %e, path = %path.display(), "cannot write status file");
        }
        for w in waiting {
            let _ = w.send(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| io::Error::new(e.kind(), e.to_string())),
            );
        }
    }
}

fn write_text(path: &Path, tmp: &Path, text: &str) -> io::Result<()> {
    let mut f = std::fs::File::create(tmp)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(tmp, path)
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
            daemon.status_file.publish(text.clone());
            last = text;
        }
    }
}

/// Rewrite the file now and wait until it is written.
pub async fn write(daemon: &Daemon) -> io::Result<()> {
    daemon.status_file.publish_and_wait(render(daemon)).await
}
