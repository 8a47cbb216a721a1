//! # Tandem
//!
//! Userspace block replication in the spirit of DRBD: `tandemd` owns a backing
//! disk, exports it over NBD while Primary, and (from the replication issue on)
//! keeps a peer's copy identical.
//!
//! The crate is split the way the data must flow:
//!
//! * pure modules — no sockets, no files, no clock — that decide and encode:
//!   [`config`] (the DRBD `.res` grammar), [`meta`] (on-disk metadata formats),
//!   [`nbd`] (the NBD protocol codec and handshake), [`control`] (the control
//!   socket's request/response types), [`status`] (the `/proc/drbd` rendering)
//!   and [`core`] (the per-resource state machine: events in, actions out);
//! * the I/O [`shell`], which reads sockets and disks, turns what happens into
//!   events for [`core`], and carries out the actions it returns.
//!
//! `ARCHITECTURE.md` at the repository root is the longer map.

pub mod config;
pub mod control;
pub mod core;
pub mod digest;
pub mod fuzz_entry;
pub mod meta;
pub mod nbd;
pub mod shell;
pub mod sim;
pub mod status;
pub mod wire;
