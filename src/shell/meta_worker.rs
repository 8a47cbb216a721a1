//! Metadata writes with a deadline.
//!
//! The superblock, bitmap and activity-log writes are synchronous: nothing
//! may start until they are durable. On the event loop's thread, a disk
//! that hangs under one would hang the whole daemon (its pings too, so the
//! peer drops the link), and `disk-timeout` could never fire. With
//! `disk-timeout` set they run on a thread of their own: the resource holds
//! back every action after the write until it is done (`Resource::run_actions`),
//! while the event loop goes on answering the peer and taking requests, and
//! waits for it at most `disk-timeout`. A write that does not finish in time
//! fails the disk like any other hung request. Its thread is left to the
//! kernel, and the resource refuses to attach a disk until that write has
//! come back: if it landed later, it would overwrite newer metadata.
//!
//! Without `disk-timeout` the writes stay on the event loop's thread. A
//! hand-off to another thread costs two wake-ups, and an activity-log
//! transaction happens once per cold extent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

pub struct MetaWorker {
    jobs: mpsc::Sender<Job>,
    /// Jobs sent and not finished.
    unfinished: Arc<AtomicUsize>,
}

impl MetaWorker {
    /// A thread for `resource`'s metadata writes.
    pub fn start_thread(resource: &str) -> std::io::Result<MetaWorker> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("meta-{resource}"))
            .spawn(move || {
                // Ends when the resource drops the worker and the last job is done.
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        Ok(MetaWorker {
            jobs,
            unfinished: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Run `f` on the worker; its result arrives on the receiver. `what` names the write in the log line left
    /// if it comes back after the receiver was dropped (given up on).
    pub fn start<T: Send + 'static>(
        &self,
        resource: &str,
        what: &'static str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let unfinished = Arc::clone(&self.unfinished);
        let resource = resource.to_owned();
        let sent = Instant::now();
        self.unfinished.fetch_add(1, Ordering::SeqCst);
        let job: Job = Box::new(move || {
            let out = f();
            let late = tx.send(out).is_err();
            unfinished.fetch_sub(1, Ordering::SeqCst);
            if late {
                tracing::warn!(
                    resource = %resource,
                    "the {what} write abandoned by disk-timeout returned {:.1} s later (disk-timeout may be too aggressive)",
                    sent.elapsed().as_secs_f64()
                );
            }
        });
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            // The thread is gone (it cannot be, short of a panic in a
            // write): the write runs here, without a deadline.
            job();
        }
        rx
    }

    /// Writes sent that have not finished (one that timed out counts until
    /// the kernel gives it back).
    pub fn unfinished(&self) -> usize {
        self.unfinished.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_write_given_up_on_counts_as_unfinished_until_it_returns_and_the_next_one_runs() {
        let w = MetaWorker::start_thread("t").expect("thread");
        let (go, stuck) = mpsc::channel::<()>();
        let given_up = w.start("t", "test", move || {
            let _ = stuck.recv();
            7
        });
        assert_eq!(w.unfinished(), 1);
        // The resource stops waiting for it (disk-timeout); the disk
        // answers later.
        drop(given_up);
        go.send(()).expect("release");
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.unfinished() > 0 {
            assert!(Instant::now() < deadline, "the late write never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(w.start("t", "test", || 8).blocking_recv(), Ok(8));
    }
}
