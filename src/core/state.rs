//! The state names DRBD 8.4 prints, which monitoring and cluster scripts parse.
//!
//! Display strings are exactly DRBD's (`user/v84/drbd_strings.c`): `cs:`,
//! `ro:` and `ds:` fields of the status file are built from them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `ro:` — the role of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Primary,
    Secondary,
    /// Only ever the peer's role, while it is not connected.
    Unknown,
}

/// `cs:` — the connection state, in DRBD's enum order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConnState {
    StandAlone,
    Disconnecting,
    Unconnected,
    Timeout,
    BrokenPipe,
    NetworkFailure,
    ProtocolError,
    TearDown,
    WFConnection,
    WFReportParams,
    Connected,
    StartingSyncS,
    StartingSyncT,
    WFBitMapS,
    WFBitMapT,
    WFSyncUUID,
    SyncSource,
    SyncTarget,
    VerifyS,
    VerifyT,
    PausedSyncS,
    PausedSyncT,
    Ahead,
    Behind,
}

/// `ds:` — the disk state, ordered from worst to best as DRBD orders it, so
/// that `>= Outdated` style comparisons read as in DRBD's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DiskState {
    Diskless,
    Attaching,
    Failed,
    Negotiating,
    Inconsistent,
    Outdated,
    DUnknown,
    Consistent,
    UpToDate,
}

impl DiskState {
    /// The inverse of `disk as u8` (how the peer protocol carries it).
    pub fn from_wire(v: u8) -> Option<DiskState> {
        use DiskState::*;
        [
            Diskless,
            Attaching,
            Failed,
            Negotiating,
            Inconsistent,
            Outdated,
            DUnknown,
            Consistent,
            UpToDate,
        ]
        .get(usize::from(v))
        .copied()
    }
}

macro_rules! display_as_debug {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // The variant names are DRBD's spellings; keep them in sync.
                fmt::Debug::fmt(self, f)
            }
        }
    )*};
}
display_as_debug!(Role, ConnState, DiskState);

impl ConnState {
    /// Whether the status file shows resync/verify progress lines.
    pub fn shows_progress(self) -> bool {
        matches!(
            self,
            ConnState::SyncSource
                | ConnState::SyncTarget
                | ConnState::VerifyS
                | ConnState::VerifyT
                | ConnState::PausedSyncS
                | ConnState::PausedSyncT
        )
    }
}
