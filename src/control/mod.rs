//! The control socket's protocol: one JSON request line from `tandemadm`, one
//! JSON response line from `tandemd` (or, for `events`, a stream of lines).
//!
//! Version 1. The daemon renders all human text, so the CLI stays a thin pipe
//! and scripts that read `--json` get exactly what the daemon knows.

use serde::{Deserialize, Serialize};

/// Bumped when a request or response field changes meaning.
pub const PROTOCOL_VERSION: u32 = 1;

/// Commands the daemon carries out. `create-md` and `dump-md` are not here:
/// like drbdmeta, `tandemadm` runs them directly on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    Up,
    Down,
    Attach,
    Detach,
    Connect,
    Disconnect,
    Primary,
    Secondary,
    Role,
    Cstate,
    Dstate,
    Status,
    Events,
    /// Which resources are attached (used by create-md to refuse politely).
    Attached,
    Invalidate,
    Adjust,
    Outdate,
    InvalidateRemote,
    PauseSync,
    ResumeSync,
    /// `new-current-uuid [--clear-bitmap]` (`force` carries --clear-bitmap).
    NewCurrentUuid,
    /// What each side changed since a split brain (`json` for scripts).
    SplitBrainReport,
    /// Online verify against the peer.
    Verify,
    /// Resync what verify marked out of sync, without a reconnect.
    ResyncOos,
    /// Release writes held by fencing.
    ResumeIo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub command: Command,
    /// A resource name or `all`.
    pub resource: String,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub json: bool,
    #[serde(default)]
    pub verbose: bool,
    /// Colour the output (the CLI sets it when stdout is a terminal).
    #[serde(default)]
    pub color: bool,
    #[serde(default)]
    pub discard_my_data: bool,
    #[serde(default)]
    pub dry_run: bool,
}

impl Request {
    pub fn new(command: Command, resource: &str) -> Request {
        Request {
            version: PROTOCOL_VERSION,
            command,
            resource: resource.to_owned(),
            force: false,
            json: false,
            verbose: false,
            color: false,
            discard_my_data: false,
            dry_run: false,
        }
    }

    /// Parse one request line; refuses anything that is not a well-formed v1 request.
    pub fn decode(line: &[u8]) -> Result<Request, String> {
        let req: Request = serde_json::from_slice(line).map_err(|e| format!("malformed control request: {e}"))?;
        if req.version != PROTOCOL_VERSION {
            return Err(format!(
                "control protocol version {} is not supported (tandemd speaks {}); use the tandemadm that came with this tandemd",
                req.version, PROTOCOL_VERSION
            ));
        }
        if req.resource.is_empty() || req.resource.len() > 256 {
            return Err("resource name must be 1 to 256 bytes".to_owned());
        }
        Ok(req)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// What to print on stdout (may be empty).
    #[serde(default)]
    pub output: String,
    /// One line for stderr when `ok` is false.
    #[serde(default)]
    pub error: String,
    /// The process exit status the CLI should use.
    #[serde(default)]
    pub exit_code: i32,
    /// Resources the request concerned that are attached (for `attached`).
    #[serde(default)]
    pub attached: Vec<String>,
}

impl Response {
    pub fn ok(output: impl Into<String>) -> Response {
        Response {
            ok: true,
            output: output.into(),
            error: String::new(),
            exit_code: 0,
            attached: Vec::new(),
        }
    }

    /// `exit_code` follows drbdadm: 11 for a refused state change, 10 for
    /// other failures, 20 for an unknown resource.
    pub fn err(exit_code: i32, error: impl Into<String>) -> Response {
        Response {
            ok: false,
            output: String::new(),
            error: error.into(),
            exit_code,
            attached: Vec::new(),
        }
    }
}

/// Exit codes `tandemadm` uses.
pub mod exit {
    pub const OK: i32 = 0;
    pub const USAGE: i32 = 1;
    pub const NOT_RUNNING: i32 = 3;
    pub const FAILED: i32 = 10;
    pub const STATE_CHANGE_REFUSED: i32 = 11;
    pub const CONFIG: i32 = 12;
    pub const UNKNOWN_RESOURCE: i32 = 20;
    /// `role`, `cstate`, `dstate` of a resource that is not up: a stopped
    /// resource, which cluster agents must tell from a failure.
    pub const RESOURCE_DOWN: i32 = 21;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut r = Request::new(Command::Primary, "r0");
        r.force = true;
        let line = serde_json::to_vec(&r).expect("serialises");
        assert_eq!(Request::decode(&line), Ok(r));
    }

    #[test]
    fn refuses_garbage_and_other_versions() {
        assert!(Request::decode(b"{").is_err());
        assert!(Request::decode(b"\xff\xfe").is_err());
        let line = br#"{"version":9,"command":"up","resource":"r0"}"#;
        assert!(Request::decode(line).unwrap_err().contains("version 9"));
        let line = br#"{"version":1,"command":"launch","resource":"r0"}"#;
        assert!(Request::decode(line).is_err());
    }
}
