//! Long-lived tasks for short jobs.
//!
//! The data path starts one disk operation per request, and a spawned task
//! is a heap allocation (tokio aligns its task cells, so it is even a
//! `posix_memalign`). A pool keeps the tasks instead: it grows to the most
//! jobs ever running at once, and after that a job costs a queue slot and,
//! when a task is parked, one wake-up.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use tokio::sync::Notify;

/// Work a pool task carries out.
pub trait Job: 'static {
    // Not `async fn`: a trait's async fn cannot say what its future is not
    // (here it is never `Send`: everything runs on the io_uring thread).
    fn run(self) -> impl std::future::Future<Output = ()>;
}

pub struct TaskPool<J> {
    queue: RefCell<VecDeque<J>>,
    /// Tasks parked on `wake` that no `submit` has claimed yet.
    idle: Cell<usize>,
    wake: Notify,
    closed: Cell<bool>,
    /// Tasks started so far (for the tests and the curious).
    tasks: Cell<usize>,
}

impl<J: Job> TaskPool<J> {
    pub fn new() -> Rc<TaskPool<J>> {
        Rc::new(TaskPool {
            queue: RefCell::new(VecDeque::new()),
            idle: Cell::new(0),
            wake: Notify::new(),
            closed: Cell::new(false),
            tasks: Cell::new(0),
        })
    }

    /// Run `job` on a parked task, or on a new one when every task is busy.
    /// Jobs start in the order they were submitted.
    pub fn submit(self: &Rc<Self>, job: J) {
        self.queue.borrow_mut().push_back(job);
        // Each job claims a parked task or starts one, so a queued job is
        // never left with every task asleep.
        match self.idle.get() {
            0 => {
                self.tasks.set(self.tasks.get() + 1);
                tokio_uring::spawn(Rc::clone(self).work());
            }
            n => {
                self.idle.set(n - 1);
                self.wake.notify_one();
            }
        }
    }

    /// Let the parked tasks end (their owner is going away); a task busy
    /// with a job ends after the queue is empty.
    pub fn close(&self) {
        self.closed.set(true);
        self.idle.set(0);
        self.wake.notify_waiters();
    }

    pub fn tasks(&self) -> usize {
        self.tasks.get()
    }

    async fn work(self: Rc<Self>) {
        loop {
            let job = self.queue.borrow_mut().pop_front();
            match job {
                Some(job) => job.run().await,
                None if self.closed.get() => return,
                None => {
                    self.idle.set(self.idle.get() + 1);
                    self.wake.notified().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Record {
        log: Rc<RefCell<Vec<u32>>>,
        n: u32,
        pause: bool,
    }

    impl Job for Record {
        async fn run(self) {
            self.log.borrow_mut().push(self.n);
            if self.pause {
                tokio::task::yield_now().await;
            }
        }
    }

    #[test]
    fn tasks_are_reused_and_grow_only_to_the_jobs_at_once() {
        tokio_uring::start(async {
            let pool = TaskPool::new();
            let log = Rc::new(RefCell::new(Vec::new()));
            let job = |n, pause| Record {
                log: Rc::clone(&log),
                n,
                pause,
            };
            // Three at once: three tasks, the jobs started in submission order.
            for n in 0..3 {
                pool.submit(job(n, true));
            }
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            assert_eq!(*log.borrow(), vec![0, 1, 2]);
            assert_eq!(pool.tasks(), 3);
            // One at a time, many times over: no new task.
            for n in 3..100 {
                pool.submit(job(n, false));
                tokio::task::yield_now().await;
            }
            assert_eq!(log.borrow().len(), 100);
            assert_eq!(pool.tasks(), 3);
            // Closed: parked tasks end, so the pool's last owner is this one.
            pool.close();
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            assert_eq!(Rc::strong_count(&pool), 1);
        });
    }
}
