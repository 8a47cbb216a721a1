//! Transmission-phase requests, "Transmission" / "Request message" in proto.md.

use super::consts::*;
use std::fmt;

pub const REQUEST_HEADER_LEN: usize = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Read,
    Write,
    Disc,
    Flush,
    Trim,
    Cache,
    WriteZeroes,
    BlockStatus,
    Resize,
    Unknown(u16),
}

impl Command {
    pub fn from_wire(v: u16) -> Command {
        match v {
            NBD_CMD_READ => Command::Read,
            NBD_CMD_WRITE => Command::Write,
            NBD_CMD_DISC => Command::Disc,
            NBD_CMD_FLUSH => Command::Flush,
            NBD_CMD_TRIM => Command::Trim,
            NBD_CMD_CACHE => Command::Cache,
            NBD_CMD_WRITE_ZEROES => Command::WriteZeroes,
            NBD_CMD_BLOCK_STATUS => Command::BlockStatus,
            NBD_CMD_RESIZE => Command::Resize,
            other => Command::Unknown(other),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: Command,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// Not a request: the stream is out of step and the connection must end.
    BadMagic { found: u32 },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadMagic { found } => {
                write!(
                    f,
                    "request magic {found:#010x} is not {REQUEST_MAGIC:#010x}; closing the connection"
                )
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

impl Request {
    pub fn decode(buf: &[u8; REQUEST_HEADER_LEN]) -> Result<Request, ProtocolError> {
        let u32_at = |at: usize| u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let u64_at = |at: usize| (u64::from(u32_at(at)) << 32) | u64::from(u32_at(at + 4));
        let magic = u32_at(0);
        if magic != REQUEST_MAGIC {
            return Err(ProtocolError::BadMagic { found: magic });
        }
        Ok(Request {
            flags: u16::from_be_bytes([buf[4], buf[5]]),
            command: Command::from_wire(u16::from_be_bytes([buf[6], buf[7]])),
            cookie: u64_at(8),
            offset: u64_at(16),
            length: u32_at(24),
        })
    }

    /// Payload bytes that follow this header on the wire. Only WRITE carries
    /// one; the shell consumes it even when the request is refused.
    pub fn payload_len(&self) -> u32 {
        match self.command {
            Command::Write => self.length,
            _ => 0,
        }
    }

    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let cmd = match self.command {
            Command::Read => NBD_CMD_READ,
            Command::Write => NBD_CMD_WRITE,
            Command::Disc => NBD_CMD_DISC,
            Command::Flush => NBD_CMD_FLUSH,
            Command::Trim => NBD_CMD_TRIM,
            Command::Cache => NBD_CMD_CACHE,
            Command::WriteZeroes => NBD_CMD_WRITE_ZEROES,
            Command::BlockStatus => NBD_CMD_BLOCK_STATUS,
            Command::Resize => NBD_CMD_RESIZE,
            Command::Unknown(v) => v,
        };
        let mut b = [0u8; REQUEST_HEADER_LEN];
        b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&cmd.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_a_write() {
        let mut b = [0u8; 28];
        b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&1u16.to_be_bytes());
        b[6..8].copy_from_slice(&1u16.to_be_bytes());
        b[8..16].copy_from_slice(&0xdead_beefu64.to_be_bytes());
        b[16..24].copy_from_slice(&4096u64.to_be_bytes());
        b[24..28].copy_from_slice(&512u32.to_be_bytes());
        let r = Request::decode(&b).unwrap();
        assert_eq!(
            r,
            Request {
                flags: 1,
                command: Command::Write,
                cookie: 0xdead_beef,
                offset: 4096,
                length: 512
            }
        );
        assert_eq!(r.payload_len(), 512);
        assert_eq!(r.encode(), b);
    }

    #[test]
    fn bad_magic() {
        assert_eq!(
            Request::decode(&[0xde; 28]),
            Err(ProtocolError::BadMagic { found: 0xdede_dede })
        );
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics_and_round_trips(bytes in proptest::array::uniform28(proptest::num::u8::ANY)) {
            if let Ok(r) = Request::decode(&bytes) {
                proptest::prop_assert_eq!(r.encode(), bytes);
                proptest::prop_assert!(r.payload_len() == 0 || r.command == Command::Write);
            }
        }
    }
}
