//! The peer protocol between two `tandemd`s: framing, messages, and the
//! authenticated handshake. Pure: bytes in, bytes out.
//!
//! Frame (big-endian, network order):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `TNDM` |
//! | 4 | 1 | protocol version |
//! | 5 | 1 | message type |
//! | 6 | 2 | zero |
//! | 8 | 4 | payload length (≤ [`FRAME_PAYLOAD_MAX`], checked before anything is allocated) |
//! | 12 | 4 | crc32c of header bytes 0..12 and the payload |
//!
//! The crc covers every data packet end to end (DRBD's `data-integrity-alg`
//! with crc32c), so a corrupted block is caught before it touches a disk.

pub mod handshake;

use std::fmt;

pub const MAGIC: u32 = u32::from_be_bytes(*b"TNDM");
pub const HEADER_LEN: usize = 16;
/// Largest payload: a 32 MiB data block plus its small header.
pub const FRAME_PAYLOAD_MAX: u32 = 32 * 1024 * 1024 + 64;
/// Names (resource, node) are bounded like NBD export names.
pub const NAME_BYTES_MAX: usize = 256;

/// Versions of the peer protocol. Bump and describe when a message changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum ProtocolVersion {
    /// First version: hello, HMAC-SHA256 auth both ways, UUIDs, data with
    /// crc32c, data acks, barriers, pings.
    V1 = 1,
    /// `Uuids` carries the divergence times; `DigestCheck`/`DigestReply`
    /// (online verify, checksum-based resync); `StartResync` says whether
    /// the resync is full or of the sender's bitmap only.
    V2 = 2,
}

impl ProtocolVersion {
    pub const fn current() -> ProtocolVersion {
        ProtocolVersion::V2
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    BadMagic(u32),
    UnsupportedVersion(u8),
    TooLong(u32),
    BadCrc {
        stored: u32,
        computed: u32,
    },
    UnknownType(u8),
    /// The payload does not have the shape its type requires.
    Malformed(&'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadMagic(m) => write!(f, "not a Tandem peer (magic {m:#010x})"),
            WireError::UnsupportedVersion(v) => write!(
                f,
                "peer speaks protocol version {v}, this node speaks {}",
                ProtocolVersion::current() as u8
            ),
            WireError::TooLong(n) => write!(f, "frame of {n} bytes exceeds the limit of {FRAME_PAYLOAD_MAX}"),
            WireError::BadCrc { stored, computed } => {
                write!(f, "crc32c mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            WireError::UnknownType(t) => write!(f, "unknown message type {t}"),
            WireError::Malformed(what) => write!(f, "malformed {what} message"),
        }
    }
}

impl std::error::Error for WireError {}

/// A decoded header; the payload follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub length: u32,
    pub crc: u32,
}

impl Header {
    /// Check everything knowable before the payload is read, so a hostile
    /// length never turns into an allocation.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        if b[4] != ProtocolVersion::current() as u8 {
            return Err(WireError::UnsupportedVersion(b[4]));
        }
        if b[6] != 0 || b[7] != 0 {
            // Reserved for later versions; a v1 peer never sets them.
            return Err(WireError::Malformed("frame header"));
        }
        let length = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        if length > FRAME_PAYLOAD_MAX {
            return Err(WireError::TooLong(length));
        }
        Ok(Header {
            kind: b[5],
            length,
            crc: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        })
    }

    /// Verify the crc once the payload is in.
    pub fn check(&self, header: &[u8; HEADER_LEN], payload: &[u8]) -> Result<(), WireError> {
        let computed = crc32c::crc32c_append(crc32c::crc32c(&header[..12]), payload);
        if computed != self.crc {
            return Err(WireError::BadCrc {
                stored: self.crc,
                computed,
            });
        }
        Ok(())
    }
}

/// Message type numbers.
pub mod kind {
    pub const HELLO: u8 = 1;
    pub const AUTH: u8 = 2;
    pub const AUTH_OK: u8 = 3;
    pub const REFUSE: u8 = 4;
    pub const UUIDS: u8 = 5;
    pub const DATA: u8 = 6;
    pub const DATA_ACK: u8 = 7;
    pub const BARRIER: u8 = 8;
    pub const BARRIER_ACK: u8 = 9;
    pub const PING: u8 = 10;
    pub const PING_ACK: u8 = 11;
    pub const BITMAP: u8 = 12;
    pub const SYNC_UUID: u8 = 13;
    pub const RESYNC_DONE: u8 = 14;
    pub const STATE: u8 = 15;
    pub const START_RESYNC: u8 = 16;
    pub const DIGEST_CHECK: u8 = 17;
    pub const DIGEST_REPLY: u8 = 18;
    pub const READ_REQUEST: u8 = 19;
    pub const READ_REPLY: u8 = 20;
    pub const VERIFY_STATE: u8 = 21;
    pub const FLUSHED: u8 = 22;
}

/// Bytes of a `ReadReply` body before its data.
pub const READ_REPLY_BODY_LEN: usize = 16;

/// Longest digest a `DigestCheck` carries (SHA-256 needs 32).
pub const DIGEST_BYTES_MAX: usize = 64;

/// What a `DigestCheck` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestPurpose {
    /// Online verify: a mismatch marks the range out of sync.
    Verify = 1,
    /// Checksum-based resync: a match means the block need not travel.
    Resync = 2,
}

/// Every message except the data block's bytes, which travel by reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(handshake::Hello),
    /// HMAC-SHA256 over the peer's challenge (see `handshake`).
    Auth {
        mac: [u8; 32],
    },
    AuthOk,
    /// The sender refuses the connection; `reason` is logged on both sides.
    Refuse {
        reason: String,
    },
    Uuids {
        current: u64,
        bitmap: u64,
        history: [u64; 2],
        bitmap_bits: u64,
        flags: u32,
        primary: bool,
        /// Unix seconds of the first and last write the peer has not seen.
        first_write_s: u64,
        last_write_s: u64,
    },
    /// A write to replicate; `len` bytes of data follow the 24-byte body.
    Data {
        seq: u64,
        offset: u64,
        len: u32,
        flags: u32,
    },
    /// `status` 0: written (protocol C) or received (B); else an errno.
    /// `disk_us`: how long the receiver's disk write took, so the sender can
    /// split its latency into network and peer disk. `completed`: sent
    /// with a write the disk completed, to a peer whose hello has
    /// [`handshake::FEATURE_FLUSH_MARKS`]: the receiver's count of writes
    /// its disk has completed, this one included (its *completion mark*).
    DataAck {
        seq: u64,
        status: u32,
        disk_us: u32,
        completed: Option<u64>,
    },
    /// Without `needs`: everything received before must be on stable
    /// storage before the ack. With it (to a peer whose hello has
    /// [`handshake::FEATURE_FLUSH_MARKS`]): a finished flush issued once the
    /// receiver had completed `needs` writes is enough, the mark of the
    /// newest `DataAck` the sender had when its client's FLUSH arrived;
    /// writes still in flight then are no FLUSH's business.
    Barrier {
        epoch: u64,
        needs: Option<u64>,
    },
    /// `covers`: the completion mark every finished flush of the sender's
    /// covers (to a peer whose hello has [`handshake::FEATURE_FLUSH_MARKS`]).
    BarrierAck {
        epoch: u64,
        covers: Option<u64>,
    },
    Ping,
    PingAck,
    /// Out-of-sync runs `(first block, blocks)` of the sender's bitmap; `last`
    /// ends the exchange.
    Bitmap {
        runs: Vec<(u64, u64)>,
        last: bool,
    },
    /// The sync source's new current UUID, sent at resync start.
    SyncUuid {
        uuid: u64,
    },
    /// The source has sent every block; the target adopts `uuids`.
    ResyncDone {
        current: u64,
        bitmap: u64,
        history: [u64; 2],
    },
    /// Role and disk state changed (promote, demote, disk failure).
    State {
        primary: bool,
        disk: u8,
    },
    /// `invalidate` / `invalidate-remote`: a full resync starts now, with
    /// the sender as source (`source_is_sender`) or as target.
    StartResync {
        source_is_sender: bool,
        /// Every block (`invalidate`), or only the sender's out-of-sync
        /// blocks, sent just before as `Bitmap` (`resync-oos` after verify).
        full: bool,
    },
    /// "Here is the digest of my copy of this range; compare with yours."
    DigestCheck {
        seq: u64,
        offset: u64,
        len: u32,
        purpose: DigestPurpose,
        /// `crate::digest::DigestAlg` as its wire number.
        alg: u8,
        digest: Vec<u8>,
    },
    DigestReply {
        seq: u64,
        equal: bool,
    },
    /// A Primary without a usable local copy of this range (its disk
    /// detached after an I/O error, or not yet resynced) reads it here.
    ReadRequest {
        seq: u64,
        offset: u64,
        len: u32,
    },
    /// The answer: `status` 0 and `len` bytes of data, or an errno and none.
    ReadReply {
        seq: u64,
        status: u32,
        len: u32,
    },
    /// An online verify started (or resumed: `left` < `total` blocks) on
    /// the sender, or (`running` false) it is over. Sent only to a peer
    /// whose hello has [`handshake::FEATURE_VERIFY_STATE`]: a peer without
    /// it would drop the link on a type it does not know.
    VerifyState {
        running: bool,
        left: u64,
        total: u64,
    },
    /// A flush the sender issued on its own, as the peer's writes went
    /// quiet, has finished: every `Data` with a seq below `through` that it
    /// received is on its stable storage. The Primary answers an
    /// application FLUSH that needs no more without waiting for its
    /// barrier's ack. Sent only to a peer whose hello has
    /// [`handshake::FEATURE_FLUSHED`]. `covers`: as in `BarrierAck`.
    Flushed {
        through: u64,
        covers: Option<u64>,
    },
}

/// Runs per `Bitmap` message (16 bytes each, 64 KiB per message).
pub const BITMAP_RUNS_PER_MESSAGE: usize = 4096;

/// `Data` flag: the write carried FUA.
pub const DATA_FLAG_FUA: u32 = 1;
/// `Data` flag: discard the range (no data follows).
pub const DATA_FLAG_TRIM: u32 = 1 << 1;
/// `Data` flag: zero the range (no data follows).
pub const DATA_FLAG_ZERO: u32 = 1 << 2;
/// `Data` flag: with ZERO, a hole may be punched.
pub const DATA_FLAG_MAY_TRIM: u32 = 1 << 3;
/// `Data` flag: resync traffic, not an application write.
pub const DATA_FLAG_RESYNC: u32 = 1 << 4;
/// `Data` flag: an application FLUSH came before this write and went
/// without a barrier, the receiver's `Flushed` having answered it. Only to
/// a peer whose hello has [`handshake::FEATURE_FLUSHED`].
pub const DATA_FLAG_AFTER_FLUSH: u32 = 1 << 5;

/// Whether a `Data` message with these flags carries its block.
pub fn data_has_payload(flags: u32) -> bool {
    flags & (DATA_FLAG_TRIM | DATA_FLAG_ZERO) == 0
}

/// A completion mark goes last, and only where the peer reads it.
fn put_mark(out: &mut Vec<u8>, mark: Option<u64>) {
    if let Some(m) = mark {
        out.extend_from_slice(&m.to_be_bytes());
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A cursor over a payload that never reads past its end.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { b, what }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return Err(WireError::Malformed(self.what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    /// A flag byte: exactly 0 or 1, so every message has one encoding.
    pub(crate) fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Malformed(self.what)),
        }
    }
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    pub(crate) fn str(&mut self) -> Result<String, WireError> {
        let n = self.u16()? as usize;
        if n > NAME_BYTES_MAX {
            return Err(WireError::Malformed(self.what));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| WireError::Malformed(self.what))
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.b
    }
    /// A completion mark: the optional last field of the messages that
    /// carry one (absent from a build without
    /// [`handshake::FEATURE_FLUSH_MARKS`]).
    pub(crate) fn mark(&mut self) -> Result<Option<u64>, WireError> {
        if self.b.is_empty() {
            Ok(None)
        } else {
            self.u64().map(Some)
        }
    }

    pub(crate) fn end(&self) -> Result<(), WireError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(WireError::Malformed(self.what))
        }
    }
}

impl Message {
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => kind::HELLO,
            Message::Auth { .. } => kind::AUTH,
            Message::AuthOk => kind::AUTH_OK,
            Message::Refuse { .. } => kind::REFUSE,
            Message::Uuids { .. } => kind::UUIDS,
            Message::Data { .. } => kind::DATA,
            Message::DataAck { .. } => kind::DATA_ACK,
            Message::Barrier { .. } => kind::BARRIER,
            Message::BarrierAck { .. } => kind::BARRIER_ACK,
            Message::Ping => kind::PING,
            Message::PingAck => kind::PING_ACK,
            Message::Bitmap { .. } => kind::BITMAP,
            Message::SyncUuid { .. } => kind::SYNC_UUID,
            Message::ResyncDone { .. } => kind::RESYNC_DONE,
            Message::State { .. } => kind::STATE,
            Message::StartResync { .. } => kind::START_RESYNC,
            Message::DigestCheck { .. } => kind::DIGEST_CHECK,
            Message::DigestReply { .. } => kind::DIGEST_REPLY,
            Message::ReadRequest { .. } => kind::READ_REQUEST,
            Message::ReadReply { .. } => kind::READ_REPLY,
            Message::VerifyState { .. } => kind::VERIFY_STATE,
            Message::Flushed { .. } => kind::FLUSHED,
        }
    }

    /// Append the body to `o`.
    fn put_body(&self, o: &mut Vec<u8>) {
        match self {
            Message::Hello(h) => h.encode_into(o),
            Message::Auth { mac } => o.extend_from_slice(mac),
            Message::AuthOk | Message::Ping | Message::PingAck => {}
            Message::Refuse { reason } => put_str(o, &reason[..reason.len().min(NAME_BYTES_MAX)]),
            Message::Uuids {
                current,
                bitmap,
                history,
                bitmap_bits,
                flags,
                primary,
                first_write_s,
                last_write_s,
            } => {
                for v in [current, bitmap, &history[0], &history[1], bitmap_bits] {
                    o.extend_from_slice(&v.to_be_bytes());
                }
                o.extend_from_slice(&flags.to_be_bytes());
                o.push(u8::from(*primary));
                o.extend_from_slice(&first_write_s.to_be_bytes());
                o.extend_from_slice(&last_write_s.to_be_bytes());
            }
            Message::Data {
                seq,
                offset,
                len,
                flags,
            } => {
                o.extend_from_slice(&seq.to_be_bytes());
                o.extend_from_slice(&offset.to_be_bytes());
                o.extend_from_slice(&len.to_be_bytes());
                o.extend_from_slice(&flags.to_be_bytes());
            }
            Message::DataAck {
                seq,
                status,
                disk_us,
                completed,
            } => {
                o.extend_from_slice(&seq.to_be_bytes());
                o.extend_from_slice(&status.to_be_bytes());
                o.extend_from_slice(&disk_us.to_be_bytes());
                put_mark(o, *completed);
            }
            Message::Barrier { epoch, needs: mark } | Message::BarrierAck { epoch, covers: mark } => {
                o.extend_from_slice(&epoch.to_be_bytes());
                put_mark(o, *mark);
            }
            Message::Bitmap { runs, last } => {
                o.push(u8::from(*last));
                o.extend_from_slice(&(runs.len() as u32).to_be_bytes());
                for (start, len) in runs {
                    o.extend_from_slice(&start.to_be_bytes());
                    o.extend_from_slice(&len.to_be_bytes());
                }
            }
            Message::SyncUuid { uuid } => o.extend_from_slice(&uuid.to_be_bytes()),
            Message::ResyncDone {
                current,
                bitmap,
                history,
            } => {
                for v in [current, bitmap, &history[0], &history[1]] {
                    o.extend_from_slice(&v.to_be_bytes());
                }
            }
            Message::State { primary, disk } => {
                o.push(u8::from(*primary));
                o.push(*disk);
            }
            Message::StartResync { source_is_sender, full } => {
                o.push(u8::from(*source_is_sender));
                o.push(u8::from(*full));
            }
            Message::DigestCheck {
                seq,
                offset,
                len,
                purpose,
                alg,
                digest,
            } => {
                o.extend_from_slice(&seq.to_be_bytes());
                o.extend_from_slice(&offset.to_be_bytes());
                o.extend_from_slice(&len.to_be_bytes());
                o.push(*purpose as u8);
                o.push(*alg);
                let d = &digest[..digest.len().min(DIGEST_BYTES_MAX)];
                o.push(d.len() as u8);
                o.extend_from_slice(d);
            }
            Message::DigestReply { seq, equal } => {
                o.extend_from_slice(&seq.to_be_bytes());
                o.push(u8::from(*equal));
            }
            Message::VerifyState { running, left, total } => {
                o.push(u8::from(*running));
                o.extend_from_slice(&left.to_be_bytes());
                o.extend_from_slice(&total.to_be_bytes());
            }
            Message::Flushed { through, covers } => {
                o.extend_from_slice(&through.to_be_bytes());
                put_mark(o, *covers);
            }
            Message::ReadRequest { seq, offset, len } => {
                o.extend_from_slice(&seq.to_be_bytes());
                o.extend_from_slice(&offset.to_be_bytes());
                o.extend_from_slice(&len.to_be_bytes());
            }
            Message::ReadReply { seq, status, len } => {
                o.extend_from_slice(&seq.to_be_bytes());
                o.extend_from_slice(&status.to_be_bytes());
                o.extend_from_slice(&len.to_be_bytes());
            }
        }
    }

    /// Header + body, with the crc over both and over `data` (the block of a
    /// `Data` message, sent right after the returned bytes).
    pub fn encode(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 32);
        self.encode_into(data, &mut out);
        out
    }

    /// [`Message::encode`], appended to `out`: the peer link's writer
    /// encodes into one buffer it reuses, so the data path allocates nothing
    /// per frame.
    pub fn encode_into(&self, data: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.push(ProtocolVersion::current() as u8);
        out.push(self.kind());
        out.extend_from_slice(&[0, 0]);
        // Length and crc are filled in once the body is there.
        out.extend_from_slice(&[0; 8]);
        self.put_body(out);
        let body_len = out.len() - start - HEADER_LEN;
        let length = (body_len + data.len()) as u32;
        out[start + 8..start + 12].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c_append(
            crc32c::crc32c_append(crc32c::crc32c(&out[start..start + 12]), &out[start + HEADER_LEN..]),
            data,
        );
        out[start + 12..start + 16].copy_from_slice(&crc.to_be_bytes());
    }

    /// Decode a verified payload. For `Data` the returned slice is the block.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<(Message, &[u8]), WireError> {
        let mut r = Reader::new(payload, "peer");
        let msg = match kind {
            kind::HELLO => Message::Hello(handshake::Hello::decode(&mut r)?),
            kind::AUTH => {
                let mut mac = [0u8; 32];
                mac.copy_from_slice(r.take(32)?);
                Message::Auth { mac }
            }
            kind::AUTH_OK => Message::AuthOk,
            kind::REFUSE => Message::Refuse { reason: r.str()? },
            kind::UUIDS => Message::Uuids {
                current: r.u64()?,
                bitmap: r.u64()?,
                history: [r.u64()?, r.u64()?],
                bitmap_bits: r.u64()?,
                flags: r.u32()?,
                primary: r.bool()?,
                first_write_s: r.u64()?,
                last_write_s: r.u64()?,
            },
            kind::DATA => {
                let (seq, offset, len, flags) = (r.u64()?, r.u64()?, r.u32()?, r.u32()?);
                let data = r.rest();
                let want = if data_has_payload(flags) { len as usize } else { 0 };
                if data.len() != want {
                    return Err(WireError::Malformed("data"));
                }
                return Ok((
                    Message::Data {
                        seq,
                        offset,
                        len,
                        flags,
                    },
                    data,
                ));
            }
            kind::DATA_ACK => Message::DataAck {
                seq: r.u64()?,
                status: r.u32()?,
                disk_us: r.u32()?,
                completed: r.mark()?,
            },
            kind::BARRIER => Message::Barrier {
                epoch: r.u64()?,
                needs: r.mark()?,
            },
            kind::BARRIER_ACK => Message::BarrierAck {
                epoch: r.u64()?,
                covers: r.mark()?,
            },
            kind::PING => Message::Ping,
            kind::PING_ACK => Message::PingAck,
            kind::BITMAP => {
                let last = r.bool()?;
                let n = r.u32()? as usize;
                if n > BITMAP_RUNS_PER_MESSAGE {
                    return Err(WireError::Malformed("bitmap"));
                }
                let mut runs = Vec::with_capacity(n);
                for _ in 0..n {
                    runs.push((r.u64()?, r.u64()?));
                }
                Message::Bitmap { runs, last }
            }
            kind::SYNC_UUID => Message::SyncUuid { uuid: r.u64()? },
            kind::RESYNC_DONE => Message::ResyncDone {
                current: r.u64()?,
                bitmap: r.u64()?,
                history: [r.u64()?, r.u64()?],
            },
            kind::START_RESYNC => Message::StartResync {
                source_is_sender: r.bool()?,
                full: r.bool()?,
            },
            kind::DIGEST_CHECK => {
                let (seq, offset, len) = (r.u64()?, r.u64()?, r.u32()?);
                let purpose = match r.u8()? {
                    1 => DigestPurpose::Verify,
                    2 => DigestPurpose::Resync,
                    _ => return Err(WireError::Malformed("digest check")),
                };
                let alg = r.u8()?;
                let n = r.u8()? as usize;
                if n > DIGEST_BYTES_MAX {
                    return Err(WireError::Malformed("digest check"));
                }
                Message::DigestCheck {
                    seq,
                    offset,
                    len,
                    purpose,
                    alg,
                    digest: r.take(n)?.to_vec(),
                }
            }
            kind::DIGEST_REPLY => Message::DigestReply {
                seq: r.u64()?,
                equal: r.bool()?,
            },
            kind::VERIFY_STATE => {
                let (running, left, total) = (r.bool()?, r.u64()?, r.u64()?);
                if left > total {
                    return Err(WireError::Malformed("verify state"));
                }
                Message::VerifyState { running, left, total }
            }
            kind::FLUSHED => Message::Flushed {
                through: r.u64()?,
                covers: r.mark()?,
            },
            kind::READ_REQUEST => Message::ReadRequest {
                seq: r.u64()?,
                offset: r.u64()?,
                len: r.u32()?,
            },
            kind::READ_REPLY => {
                let (seq, status, len) = (r.u64()?, r.u32()?, r.u32()?);
                let data = r.rest();
                let want = if status == 0 { len as usize } else { 0 };
                if data.len() != want {
                    return Err(WireError::Malformed("read reply"));
                }
                return Ok((Message::ReadReply { seq, status, len }, data));
            }
            kind::STATE => Message::State {
                primary: r.bool()?,
                disk: r.u8()?,
            },
            other => return Err(WireError::UnknownType(other)),
        };
        r.end()?;
        Ok((msg, &[]))
    }
}

/// A decoded frame: the message, its data block (empty unless `Data` or `ReadReply`), and
/// how many bytes of the buffer it used.
pub type Frame<'a> = (Message, &'a [u8], usize);

/// Decode one whole frame from a buffer: `Ok(None)` if more bytes are needed.
pub fn decode_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, WireError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut hb = [0u8; HEADER_LEN];
    hb.copy_from_slice(h);
    let header = Header::decode(&hb)?;
    let total = HEADER_LEN + header.length as usize;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Ok(None);
    };
    header.check(&hb, payload)?;
    let (msg, data) = Message::decode(header.kind, payload)?;
    Ok(Some((msg, data, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(m: &Message, data: &[u8]) -> Vec<u8> {
        let mut f = m.encode(data);
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn encode_into_appends_the_frame_encode_returns() {
        let data = [9u8; 512];
        let msgs = [
            Message::Data {
                seq: 3,
                offset: 4096,
                len: 512,
                flags: 0,
            },
            Message::Refuse { reason: "no".into() },
        ];
        let mut out = vec![0xee; 5];
        for m in &msgs {
            let before = out.len();
            m.encode_into(&data, &mut out);
            assert_eq!(out[before..], m.encode(&data)[..], "{m:?}");
        }
        assert_eq!(out[..5], [0xee; 5]);
    }

    #[test]
    fn round_trips() {
        let msgs = [
            Message::Auth { mac: [7; 32] },
            Message::AuthOk,
            Message::Refuse {
                reason: "wrong shared secret".into(),
            },
            Message::Uuids {
                current: 1,
                bitmap: 2,
                history: [3, 4],
                bitmap_bits: 5,
                flags: 6,
                primary: true,
                first_write_s: 1_700_000_000,
                last_write_s: 1_700_000_060,
            },
            Message::DigestCheck {
                seq: 4,
                offset: 8192,
                len: 4096,
                purpose: DigestPurpose::Verify,
                alg: 4,
                digest: vec![0xab; 32],
            },
            Message::DigestReply { seq: 4, equal: false },
            Message::VerifyState {
                running: true,
                left: 5,
                total: 9,
            },
            Message::Flushed {
                through: 1 << 40,
                covers: None,
            },
            Message::Flushed {
                through: 1 << 40,
                covers: Some(7),
            },
            Message::ReadRequest {
                seq: 5,
                offset: 4096,
                len: 8192,
            },
            Message::ReadReply {
                seq: 5,
                status: 5,
                len: 8192,
            },
            Message::DataAck {
                seq: 9,
                status: 0,
                disk_us: 70,
                completed: None,
            },
            Message::DataAck {
                seq: 9,
                status: 0,
                disk_us: 70,
                completed: Some(1 << 33),
            },
            Message::Barrier { epoch: 3, needs: None },
            Message::Barrier {
                epoch: 3,
                needs: Some(12),
            },
            Message::BarrierAck { epoch: 3, covers: None },
            Message::BarrierAck {
                epoch: 3,
                covers: Some(12),
            },
            Message::Ping,
            Message::PingAck,
            Message::Bitmap {
                runs: vec![(0, 3), (100, 1)],
                last: true,
            },
            Message::SyncUuid { uuid: 77 },
            Message::ResyncDone {
                current: 1,
                bitmap: 0,
                history: [2, 3],
            },
            Message::State { primary: true, disk: 8 },
            Message::StartResync {
                source_is_sender: true,
                full: false,
            },
            Message::Data {
                seq: 2,
                offset: 0,
                len: 1 << 20,
                flags: DATA_FLAG_ZERO,
            },
        ];
        for m in msgs {
            let f = frame(&m, &[]);
            let (back, data, used) = decode_frame(&f).unwrap().unwrap();
            assert_eq!((back, data.len(), used), (m, 0, f.len()));
        }
        let block = vec![0xab; 4096];
        let m = Message::Data {
            seq: 1,
            offset: 8192,
            len: 4096,
            flags: DATA_FLAG_FUA,
        };
        let f = frame(&m, &block);
        let (back, data, _) = decode_frame(&f).unwrap().unwrap();
        assert_eq!((back, data), (m, &block[..]));
    }

    /// A completion mark is the last field of the messages that carry
    /// one, so the frame of a build that sends none still decodes, and
    /// anything after a mark is refused.
    #[test]
    fn a_mark_is_optional_and_last() {
        let ack = Message::DataAck {
            seq: 9,
            status: 0,
            disk_us: 70,
            completed: Some(5),
        };
        let body = ack.encode(&[]);
        let payload = &body[HEADER_LEN..];
        assert_eq!(payload.len(), 24);
        let (short, _) = Message::decode(kind::DATA_ACK, &payload[..16]).unwrap();
        assert!(matches!(short, Message::DataAck { completed: None, .. }));
        let mut long = payload.to_vec();
        long.push(0);
        assert!(Message::decode(kind::DATA_ACK, &long).is_err());
        assert!(Message::decode(kind::DATA_ACK, &payload[..20]).is_err(), "half a mark");
    }

    #[test]
    fn corruption_in_the_data_is_caught() {
        let block = vec![0x11; 4096];
        let mut f = frame(
            &Message::Data {
                seq: 1,
                offset: 0,
                len: 4096,
                flags: 0,
            },
            &block,
        );
        let last = f.len() - 1;
        f[last] ^= 0x40;
        assert!(matches!(decode_frame(&f), Err(WireError::BadCrc { .. })));
    }

    #[test]
    fn hostile_headers_are_refused_before_allocating() {
        let mut f = frame(&Message::Ping, &[]);
        f[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_frame(&f), Err(WireError::TooLong(u32::MAX)));
        let mut f = frame(&Message::Ping, &[]);
        f[4] = 9;
        assert_eq!(decode_frame(&f), Err(WireError::UnsupportedVersion(9)));
        assert!(matches!(
            decode_frame(b"GET / HTTP/1.1\r\n\r\n"),
            Err(WireError::BadMagic(_))
        ));
        let f = frame(&Message::Ping, &[]);
        assert_eq!(decode_frame(&f[..10]), Ok(None));
    }

    #[test]
    fn a_verify_state_with_more_left_than_in_all_is_refused() {
        // Encoded as sent, so the crc is right and only the body is wrong.
        let f = frame(
            &Message::VerifyState {
                running: true,
                left: 10,
                total: 9,
            },
            &[],
        );
        assert_eq!(decode_frame(&f), Err(WireError::Malformed("verify state")));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame(&b);
            for k in 0..16u8 {
                let _ = Message::decode(k, &b);
            }
        }
    }
}
