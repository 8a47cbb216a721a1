//! Why a state change was refused, in DRBD's words.
//!
//! Scripts grep drbdadm's `State change failed: (-N) text` lines, so the code
//! and text are DRBD's (`enum drbd_state_rv`); `detail` is Tandem's specific
//! reason, appended after the DRBD text.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRv {
    MultiplePrimaries = -1,
    NoUpToDateDisk = -2,
    NoLocalDisk = -4,
    NoRemoteDisk = -5,
    OutdateWhileConnected = -6,
    ResyncRunning = -8,
    AlreadyStandAlone = -9,
    DiskLess = -11,
    DeviceInUse = -12,
    NoNetConfig = -13,
    VerifyAlgNotConfigured = -14,
    NeedConnection = -15,
    LowerThanOutdated = -16,
    InTransientState = -18,
}

impl StateRv {
    pub fn text(self) -> &'static str {
        match self {
            StateRv::MultiplePrimaries => "Multiple primaries not allowed by config",
            StateRv::NoUpToDateDisk => "Need access to UpToDate data",
            StateRv::NoLocalDisk => "Can not resync without local disk",
            StateRv::NoRemoteDisk => "Can not resync without remote disk",
            StateRv::OutdateWhileConnected => "Refusing to be Outdated while Connected",
            StateRv::AlreadyStandAlone => "Can not disconnect a StandAlone device",
            StateRv::DiskLess => "Device is diskless, the requested operation requires a disk",
            StateRv::DeviceInUse => "Device is held open by someone",
            StateRv::NoNetConfig => "Have no net/connection configuration",
            StateRv::VerifyAlgNotConfigured => "Need a verify algorithm to start online verify",
            StateRv::NeedConnection => "Need a connection to start verify or resync",
            StateRv::ResyncRunning => "Can not start OV/resync since it is already active",
            StateRv::LowerThanOutdated => "Disk state is lower than outdated",
            StateRv::InTransientState => "In transient state, retry after next state change",
        }
    }
}

/// A refused state change: DRBD's code and text, then what exactly stood in the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rv: StateRv,
    pub detail: String,
}

impl Refusal {
    pub fn new(rv: StateRv, detail: impl Into<String>) -> Self {
        Refusal {
            rv,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "State change failed: ({}) {}", self.rv as i32, self.rv.text())?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for Refusal {}
