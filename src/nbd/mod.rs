//! The NBD protocol, server side, without I/O (NetworkBlockDevice/nbd
//! `doc/proto.md`): constants, the fixed-newstyle negotiation as a state
//! machine, request decoding, validation to the exact errno, and reply
//! encoding. The shell drives it; `fuzz/` attacks it.

pub mod consts;
pub mod handshake;
pub mod reply;
pub mod request;
pub mod validate;
