//! The I/O shell: sockets, disks, the control socket and the status file.
//!
//! It stays thin: it turns what happens into events for [`crate::core`] and
//! carries out the actions the core returns. Policy lives in the core.

pub mod buf;
pub mod daemon;
pub mod disk;
pub mod diverged;
pub mod handlers;
pub mod latency;
pub mod meta_store;
pub mod meta_worker;
pub mod metrics;
pub mod nbd_server;
pub mod peer;
pub mod resource;
pub mod sendv;
pub mod stage;
pub mod status_file;
pub mod task_pool;
pub mod tls;
