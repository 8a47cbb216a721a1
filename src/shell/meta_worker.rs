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
//! fails the disk like any other hung request and is counted with them
//! (`Event::MetaHung`): no disk is attached until it has come back, since
//! landing later it would overwrite newer metadata. Its thread is left to
//! the kernel and ends when the write does.
//!
//! Without `disk-timeout` the writes stay on the event loop's thread. A
//! hand-off to another thread costs two wake-ups, and an activity-log
//! transaction happens once per cold extent.

use std::sync::mpsc;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

pub struct MetaWorker {
    jobs: mpsc::Sender<Job>,
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
        Ok(MetaWorker { jobs })
    }

    /// Run `f` on the worker; its result arrives on the receiver.
    pub fn start<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A receiver gone: the write was given up on, and its caller
            // learns of its return another way.
            let _ = tx.send(f());
        });
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            // The thread is gone (it cannot be, short of a panic in a
            // write): the write runs here, without a deadline.
            job();
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_given_up_on_returns_when_the_disk_answers_and_the_next_one_runs_after_it() {
        let w = MetaWorker::start_thread("t").expect("thread");
        let (go, stuck) = mpsc::channel::<()>();
        let mut given_up = w.start(move || {
            let _ = stuck.recv();
            7
        });
        assert_eq!(given_up.try_recv(), Err(oneshot::error::TryRecvError::Empty));
        // The disk answers later: the write returns, and the thread goes on.
        go.send(()).expect("release");
        assert_eq!(given_up.blocking_recv(), Ok(7));
        assert_eq!(w.start(|| 8).blocking_recv(), Ok(8));
    }
}
