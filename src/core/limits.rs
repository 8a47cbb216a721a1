//! Every bound the core and shell enforce, named with its unit last.

/// Requests one resource keeps in flight at once (all connections together).
pub const INFLIGHT_REQUESTS_MAX: usize = 1024;

/// Requests one NBD connection may have in flight; further requests wait
/// unread in the socket, which is the back-pressure NBD clients expect.
pub const NBD_CONNECTION_INFLIGHT_MAX: usize = 128;

/// NBD connections served per resource at once.
pub const NBD_CONNECTIONS_MAX: usize = 64;

/// Largest READ/WRITE payload accepted (advertised as the maximum block size).
pub const NBD_PAYLOAD_BYTES_MAX: u32 = 32 * 1024 * 1024;

/// Largest control-socket request line.
pub const CONTROL_LINE_BYTES_MAX: usize = 64 * 1024;

const _: () = assert!(NBD_CONNECTION_INFLIGHT_MAX <= INFLIGHT_REQUESTS_MAX);
const _: () = assert!(NBD_PAYLOAD_BYTES_MAX % 4096 == 0);

/// Requests from the peer (writes, reads, digests) being carried out at
/// once; beyond it the link stops reading, so a flooding peer is held back
/// by TCP instead of growing our memory.
pub const PEER_BACKLOG_MAX: usize = 512;
