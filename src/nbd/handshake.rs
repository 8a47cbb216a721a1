//! The server side of fixed-newstyle negotiation, as a state machine.
//!
//! The shell reads the 16-byte option header, reads (or, beyond
//! [`OPTION_PAYLOAD_MAX`], discards) the payload, and hands both to
//! [`Negotiation::handle_option`], which returns the bytes to send and what
//! happens next. Nothing here does I/O, so every path is unit-tested and fuzzed.

use super::consts::*;
use std::fmt;

/// Option payloads larger than this are discarded unread and answered with
/// `NBD_REP_ERR_TOO_BIG`. The spec bounds names at 4096 bytes; the largest
/// option we accept is a name plus a few info requests.
pub const OPTION_PAYLOAD_MAX: u32 = 8192;

/// Human messages in error replies are cut to this length.
const MESSAGE_BYTES_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The client flags lack FIXED_NEWSTYLE or carry bits we do not know.
    BadClientFlags(u32),
    /// An option did not start with IHAVEOPT.
    BadOptionMagic(u64),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::BadClientFlags(v) => write!(
                f,
                "client flags {v:#x} are not fixed newstyle (old-style and unknown flags are not supported)"
            ),
            HandshakeError::BadOptionMagic(m) => write!(f, "option magic {m:#018x} is not IHAVEOPT"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The 18-byte greeting: NBDMAGIC, IHAVEOPT, handshake flags.
pub fn server_greeting() -> [u8; 18] {
    let mut g = [0u8; 18];
    g[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    g[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    g[16..].copy_from_slice(&(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES).to_be_bytes());
    g
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    pub fixed_newstyle: bool,
    pub no_zeroes: bool,
}

/// Non-fixed newstyle clients are refused: the spec deprecates them and they
/// cannot receive error replies safely.
pub fn parse_client_flags(raw: u32) -> Result<ClientFlags, HandshakeError> {
    let known = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;
    if raw & !known != 0 || raw & NBD_FLAG_C_FIXED_NEWSTYLE == 0 {
        return Err(HandshakeError::BadClientFlags(raw));
    }
    Ok(ClientFlags {
        fixed_newstyle: true,
        no_zeroes: raw & NBD_FLAG_C_NO_ZEROES != 0,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub length: u32,
}

impl OptionHeader {
    pub fn decode(buf: &[u8; 16]) -> Result<OptionHeader, HandshakeError> {
        let magic = u64::from_be_bytes(take8(buf, 0));
        if magic != IHAVEOPT {
            return Err(HandshakeError::BadOptionMagic(magic));
        }
        Ok(OptionHeader {
            option: u32::from_be_bytes(take4(buf, 8)),
            length: u32::from_be_bytes(take4(buf, 12)),
        })
    }
}

/// What the catalog says about one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    pub name: String,
    pub description: String,
    pub size: u64,
    pub transmission_flags: u16,
    pub block_size_min: u32,
    pub block_size_preferred: u32,
    pub block_size_max: u32,
}

/// Why an export is not granted; the message reaches the client's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No export by that name.
    Unknown(String),
    /// The export exists but is not available now (e.g. this node is Secondary).
    Unavailable(String),
}

/// The exports a server offers, looked up by name during negotiation.
pub trait ExportCatalog {
    /// (name, description) of every export, for NBD_OPT_LIST.
    fn list(&self) -> Vec<(String, String)>;
    /// The empty name asks for the default export.
    fn lookup(&self, name: &str) -> Result<ExportInfo, Refusal>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    Transmission {
        export: ExportInfo,
        structured_replies: bool,
    },
    /// STARTTLS was acknowledged: the TLS handshake comes next, then the
    /// option haggling goes on inside it.
    StartTls,
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub reply: Vec<u8>,
    pub outcome: Outcome,
}

impl Step {
    fn cont(reply: Vec<u8>) -> Step {
        Step {
            reply,
            outcome: Outcome::Continue,
        }
    }
}

pub struct Negotiation {
    flags: ClientFlags,
    structured_replies: bool,
    /// This server requires TLS: nothing but STARTTLS and ABORT before it.
    tls_required: bool,
    /// The TLS handshake has been done.
    secured: bool,
}

impl Negotiation {
    pub fn new(flags: ClientFlags) -> Negotiation {
        Negotiation {
            flags,
            structured_replies: false,
            tls_required: false,
            secured: false,
        }
    }

    /// A server that requires TLS (the spec's "forced TLS" mode).
    pub fn requiring_tls(flags: ClientFlags) -> Negotiation {
        Negotiation {
            tls_required: true,
            ..Negotiation::new(flags)
        }
    }

    /// TLS is required and not yet in place.
    pub fn awaiting_tls(&self) -> bool {
        self.tls_required && !self.secured
    }

    /// The shell finished the TLS handshake after [`Outcome::StartTls`].
    /// What was negotiated in the clear is forgotten, as the spec asks.
    pub fn secured(&mut self) {
        self.secured = true;
        self.structured_replies = false;
    }

    /// The payload was too large to read; the shell discarded it.
    pub fn too_big(&mut self, header: OptionHeader) -> Step {
        if header.option == NBD_OPT_EXPORT_NAME {
            // EXPORT_NAME has no error reply: the only answer is to close.
            return Step {
                reply: Vec::new(),
                outcome: Outcome::Close,
            };
        }
        Step::cont(error_reply(
            header.option,
            NBD_REP_ERR_TOO_BIG,
            "option payload too large",
        ))
    }

    pub fn handle_option(&mut self, header: OptionHeader, payload: &[u8], catalog: &dyn ExportCatalog) -> Step {
        let opt = header.option;
        if payload.len() != header.length as usize {
            // The shell reads exactly `length` bytes; anything else is a bug
            // in the caller, answered safely.
            return Step::cont(error_reply(opt, NBD_REP_ERR_INVALID, "option length mismatch"));
        }
        if self.tls_required && !self.secured && !matches!(opt, NBD_OPT_STARTTLS | NBD_OPT_ABORT) {
            if opt == NBD_OPT_EXPORT_NAME {
                // No error reply exists for EXPORT_NAME: close.
                return Step {
                    reply: Vec::new(),
                    outcome: Outcome::Close,
                };
            }
            return Step::cont(error_reply(
                opt,
                NBD_REP_ERR_TLS_REQD,
                "this server requires TLS: send NBD_OPT_STARTTLS first",
            ));
        }
        match opt {
            NBD_OPT_EXPORT_NAME => self.export_name(payload, catalog),
            NBD_OPT_ABORT => Step {
                reply: reply(opt, NBD_REP_ACK, &[]),
                outcome: Outcome::Close,
            },
            NBD_OPT_LIST => {
                if !payload.is_empty() {
                    return Step::cont(error_reply(opt, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data"));
                }
                let mut out = Vec::new();
                for (name, description) in catalog.list() {
                    let mut data = Vec::with_capacity(4 + name.len() + description.len());
                    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
                    data.extend_from_slice(name.as_bytes());
                    data.extend_from_slice(description.as_bytes());
                    out.extend(reply(opt, NBD_REP_SERVER, &data));
                }
                out.extend(reply(opt, NBD_REP_ACK, &[]));
                Step::cont(out)
            }
            NBD_OPT_INFO | NBD_OPT_GO => self.info_or_go(opt, payload, catalog),
            NBD_OPT_STRUCTURED_REPLY => {
                if !payload.is_empty() {
                    return Step::cont(error_reply(
                        opt,
                        NBD_REP_ERR_INVALID,
                        "NBD_OPT_STRUCTURED_REPLY takes no data",
                    ));
                }
                self.structured_replies = true;
                Step::cont(reply(opt, NBD_REP_ACK, &[]))
            }
            NBD_OPT_LIST_META_CONTEXT | NBD_OPT_SET_META_CONTEXT => self.meta_context(opt, payload),
            NBD_OPT_STARTTLS if !self.tls_required => Step::cont(error_reply(
                opt,
                NBD_REP_ERR_POLICY,
                "TLS is not configured on this server",
            )),
            NBD_OPT_STARTTLS if self.secured => {
                Step::cont(error_reply(opt, NBD_REP_ERR_INVALID, "TLS is already in use"))
            }
            NBD_OPT_STARTTLS if !payload.is_empty() => {
                Step::cont(error_reply(opt, NBD_REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data"))
            }
            NBD_OPT_STARTTLS => Step {
                reply: reply(opt, NBD_REP_ACK, &[]),
                outcome: Outcome::StartTls,
            },
            _ => Step::cont(error_reply(opt, NBD_REP_ERR_UNSUP, "option not supported")),
        }
    }

    fn export_name(&mut self, payload: &[u8], catalog: &dyn ExportCatalog) -> Step {
        let export = std::str::from_utf8(payload)
            .ok()
            .and_then(|name| catalog.lookup(name).ok());
        let Some(export) = export else {
            // The spec gives EXPORT_NAME no way to refuse but closing.
            return Step {
                reply: Vec::new(),
                outcome: Outcome::Close,
            };
        };
        let mut out = Vec::with_capacity(10 + 124);
        out.extend_from_slice(&export.size.to_be_bytes());
        out.extend_from_slice(&export.transmission_flags.to_be_bytes());
        if !self.flags.no_zeroes {
            out.extend_from_slice(&[0u8; 124]);
        }
        Step {
            reply: out,
            outcome: Outcome::Transmission {
                export,
                structured_replies: self.structured_replies,
            },
        }
    }

    fn info_or_go(&mut self, opt: u32, payload: &[u8], catalog: &dyn ExportCatalog) -> Step {
        let Some((name, requests)) = parse_info_request(payload) else {
            return Step::cont(error_reply(
                opt,
                NBD_REP_ERR_INVALID,
                "malformed NBD_OPT_INFO/GO request",
            ));
        };
        let Ok(name) = std::str::from_utf8(name) else {
            return Step::cont(error_reply(opt, NBD_REP_ERR_INVALID, "export name is not UTF-8"));
        };
        let export = match catalog.lookup(name) {
            Ok(e) => e,
            Err(Refusal::Unknown(msg)) | Err(Refusal::Unavailable(msg)) => {
                return Step::cont(error_reply(opt, NBD_REP_ERR_UNKNOWN, &msg));
            }
        };
        let mut out = Vec::new();
        let mut info = Vec::with_capacity(12);
        info.extend_from_slice(&NBD_INFO_EXPORT.to_be_bytes());
        info.extend_from_slice(&export.size.to_be_bytes());
        info.extend_from_slice(&export.transmission_flags.to_be_bytes());
        out.extend(reply(opt, NBD_REP_INFO, &info));
        for req in requests {
            match req {
                NBD_INFO_NAME => {
                    let mut d = NBD_INFO_NAME.to_be_bytes().to_vec();
                    d.extend_from_slice(export.name.as_bytes());
                    out.extend(reply(opt, NBD_REP_INFO, &d));
                }
                NBD_INFO_DESCRIPTION => {
                    let mut d = NBD_INFO_DESCRIPTION.to_be_bytes().to_vec();
                    d.extend_from_slice(export.description.as_bytes());
                    out.extend(reply(opt, NBD_REP_INFO, &d));
                }
                _ => {} // EXPORT is always sent, BLOCK_SIZE below; others are ignored as the spec allows
            }
        }
        // Always sent: the constraints are what makes unaligned I/O safe to
        // refuse, and clients that did not ask simply learn the preference.
        let mut bs = NBD_INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        bs.extend_from_slice(&export.block_size_min.to_be_bytes());
        bs.extend_from_slice(&export.block_size_preferred.to_be_bytes());
        bs.extend_from_slice(&export.block_size_max.to_be_bytes());
        out.extend(reply(opt, NBD_REP_INFO, &bs));
        out.extend(reply(opt, NBD_REP_ACK, &[]));
        let outcome = if opt == NBD_OPT_GO {
            Outcome::Transmission {
                export,
                structured_replies: self.structured_replies,
            }
        } else {
            Outcome::Continue
        };
        Step { reply: out, outcome }
    }

    /// We offer no metadata contexts: validate the request, answer with none.
    fn meta_context(&mut self, opt: u32, payload: &[u8]) -> Step {
        if opt == NBD_OPT_SET_META_CONTEXT && !self.structured_replies {
            return Step::cont(error_reply(
                opt,
                NBD_REP_ERR_INVALID,
                "NBD_OPT_SET_META_CONTEXT needs structured replies first",
            ));
        }
        if !valid_meta_context_request(payload) {
            return Step::cont(error_reply(opt, NBD_REP_ERR_INVALID, "malformed meta context request"));
        }
        Step::cont(reply(opt, NBD_REP_ACK, &[]))
    }
}

/// `u32 name length, name, u16 count, count × u16` — every length checked.
fn parse_info_request(p: &[u8]) -> Option<(&[u8], Vec<u16>)> {
    let name_len = u32::from_be_bytes(p.get(..4)?.try_into().ok()?) as usize;
    let name = p.get(4..4usize.checked_add(name_len)?)?;
    let rest = &p[4 + name_len..];
    let count = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let items = &rest[2..];
    if items.len() != count * 2 {
        return None;
    }
    let requests = items
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    Some((name, requests))
}

/// `u32 name length, name, u32 query count, count × (u32 length, query)`.
fn valid_meta_context_request(p: &[u8]) -> bool {
    let parse = || -> Option<()> {
        let name_len = u32::from_be_bytes(p.get(..4)?.try_into().ok()?) as usize;
        let mut at = 4usize.checked_add(name_len)?;
        let count = u32::from_be_bytes(p.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        for _ in 0..count {
            let len = u32::from_be_bytes(p.get(at..at + 4)?.try_into().ok()?) as usize;
            at = at.checked_add(4)?.checked_add(len)?;
            p.get(..at)?;
        }
        (at == p.len()).then_some(())
    };
    parse().is_some()
}

fn reply(option: u32, reply_type: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

fn error_reply(option: u32, reply_type: u32, message: &str) -> Vec<u8> {
    let mut end = message.len().min(MESSAGE_BYTES_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    reply(option, reply_type, &message.as_bytes()[..end])
}

fn take8(b: &[u8; 16], at: usize) -> [u8; 8] {
    let mut o = [0u8; 8];
    o.copy_from_slice(&b[at..at + 8]);
    o
}

fn take4(b: &[u8; 16], at: usize) -> [u8; 4] {
    let mut o = [0u8; 4];
    o.copy_from_slice(&b[at..at + 4]);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One(Option<String>);

    impl ExportCatalog for One {
        fn list(&self) -> Vec<(String, String)> {
            vec![("r0".into(), "disk".into())]
        }
        fn lookup(&self, name: &str) -> Result<ExportInfo, Refusal> {
            if name != "r0" && !name.is_empty() {
                return Err(Refusal::Unknown(format!("no export named '{name}'")));
            }
            if let Some(why) = &self.0 {
                return Err(Refusal::Unavailable(why.clone()));
            }
            Ok(ExportInfo {
                name: "r0".into(),
                description: "disk".into(),
                size: 1 << 20,
                transmission_flags: NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH,
                block_size_min: 512,
                block_size_preferred: 4096,
                block_size_max: 32 << 20,
            })
        }
    }

    fn neg(no_zeroes: bool) -> Negotiation {
        Negotiation::new(ClientFlags {
            fixed_newstyle: true,
            no_zeroes,
        })
    }

    fn go_payload(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut p = (name.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            p.extend_from_slice(&i.to_be_bytes());
        }
        p
    }

    fn hdr(option: u32, p: &[u8]) -> OptionHeader {
        OptionHeader {
            option,
            length: p.len() as u32,
        }
    }

    /// Split a reply stream into (option, type, data) triples.
    fn replies(mut b: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), REPLY_MAGIC);
            let opt = u32::from_be_bytes(b[8..12].try_into().unwrap());
            let ty = u32::from_be_bytes(b[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(b[16..20].try_into().unwrap()) as usize;
            out.push((opt, ty, b[20..20 + len].to_vec()));
            b = &b[20 + len..];
        }
        out
    }

    #[test]
    fn greeting_bytes() {
        let g = server_greeting();
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..], &[0, 3]);
    }

    #[test]
    fn client_flags() {
        assert_eq!(
            parse_client_flags(3),
            Ok(ClientFlags {
                fixed_newstyle: true,
                no_zeroes: true
            })
        );
        assert!(parse_client_flags(0).is_err());
        assert!(parse_client_flags(1 | 4).is_err());
    }

    #[test]
    fn option_header_magic_checked() {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(b"IHAVEOPT");
        b[8..12].copy_from_slice(&7u32.to_be_bytes());
        b[12..16].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(OptionHeader::decode(&b), Ok(OptionHeader { option: 7, length: 9 }));
        b[0] = b'X';
        assert!(OptionHeader::decode(&b).is_err());
    }

    #[test]
    fn go_sends_export_block_size_and_ack_then_transmission() {
        let mut n = neg(true);
        let p = go_payload("r0", &[NBD_INFO_NAME, NBD_INFO_BLOCK_SIZE]);
        let step = n.handle_option(hdr(NBD_OPT_GO, &p), &p, &One(None));
        assert!(matches!(
            step.outcome,
            Outcome::Transmission {
                structured_replies: false,
                ..
            }
        ));
        let r = replies(&step.reply);
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].1, NBD_REP_INFO);
        assert_eq!(r[0].2, [&[0u8, 0][..], &(1u64 << 20).to_be_bytes(), &[0, 5]].concat());
        assert_eq!(r[1].2, [&[0u8, 1][..], b"r0"].concat());
        assert_eq!(r[2].2[..2], [0, 3]);
        assert_eq!(u32::from_be_bytes(r[2].2[2..6].try_into().unwrap()), 512);
        assert_eq!(r[3], (NBD_OPT_GO, NBD_REP_ACK, vec![]));
    }

    #[test]
    fn info_continues_and_refusal_carries_the_message() {
        let mut n = neg(true);
        let p = go_payload("", &[]);
        let step = n.handle_option(hdr(NBD_OPT_INFO, &p), &p, &One(None));
        assert_eq!(step.outcome, Outcome::Continue);
        let step = n.handle_option(hdr(NBD_OPT_GO, &p), &p, &One(Some("r0 is Secondary on beta".into())));
        assert_eq!(step.outcome, Outcome::Continue);
        let r = replies(&step.reply);
        assert_eq!(
            r,
            vec![(NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, b"r0 is Secondary on beta".to_vec())]
        );
    }

    #[test]
    fn malformed_go_lengths_are_invalid() {
        let mut n = neg(true);
        for p in [
            vec![0, 0, 0, 9, b'r', b'0'],               // name longer than payload
            [go_payload("r0", &[1]), vec![0]].concat(), // trailing byte
            go_payload("r0", &[1])[..8].to_vec(),       // count says 1, no item
            vec![],
        ] {
            let step = n.handle_option(hdr(NBD_OPT_GO, &p), &p, &One(None));
            assert_eq!(step.outcome, Outcome::Continue);
            assert_eq!(replies(&step.reply)[0].1, NBD_REP_ERR_INVALID, "{p:?}");
        }
    }

    #[test]
    fn export_name_with_and_without_zeroes() {
        let step = neg(false).handle_option(hdr(NBD_OPT_EXPORT_NAME, b"r0"), b"r0", &One(None));
        assert_eq!(step.reply.len(), 8 + 2 + 124);
        assert!(matches!(step.outcome, Outcome::Transmission { .. }));
        let step = neg(true).handle_option(hdr(NBD_OPT_EXPORT_NAME, b"r0"), b"r0", &One(None));
        assert_eq!(step.reply.len(), 10);
        let step = neg(true).handle_option(hdr(NBD_OPT_EXPORT_NAME, b"zz"), b"zz", &One(None));
        assert_eq!(
            step,
            Step {
                reply: vec![],
                outcome: Outcome::Close
            }
        );
    }

    #[test]
    fn list_abort_structured_and_unknown() {
        let mut n = neg(true);
        let r = replies(&n.handle_option(hdr(NBD_OPT_LIST, b""), b"", &One(None)).reply);
        assert_eq!(
            r[0],
            (NBD_OPT_LIST, NBD_REP_SERVER, [&[0u8, 0, 0, 2][..], b"r0disk"].concat())
        );
        assert_eq!(r[1].1, NBD_REP_ACK);
        assert_eq!(
            replies(&n.handle_option(hdr(NBD_OPT_LIST, b"x"), b"x", &One(None)).reply)[0].1,
            NBD_REP_ERR_INVALID
        );
        let s = n.handle_option(hdr(NBD_OPT_STRUCTURED_REPLY, b""), b"", &One(None));
        assert_eq!(replies(&s.reply)[0].1, NBD_REP_ACK);
        let p = go_payload("r0", &[]);
        let s = n.handle_option(hdr(NBD_OPT_GO, &p), &p, &One(None));
        assert!(matches!(
            s.outcome,
            Outcome::Transmission {
                structured_replies: true,
                ..
            }
        ));
        let s = neg(true).handle_option(hdr(99, b"abc"), b"abc", &One(None));
        assert_eq!(replies(&s.reply)[0].1, NBD_REP_ERR_UNSUP);
        let s = neg(true).handle_option(hdr(NBD_OPT_STARTTLS, b""), b"", &One(None));
        assert_eq!(replies(&s.reply)[0].1, NBD_REP_ERR_POLICY);
        let s = neg(true).handle_option(hdr(NBD_OPT_ABORT, b""), b"", &One(None));
        assert_eq!(s.outcome, Outcome::Close);
        assert_eq!(replies(&s.reply)[0].1, NBD_REP_ACK);
    }

    #[test]
    fn forced_tls_refuses_everything_but_starttls_then_starts_afresh() {
        let mut n = Negotiation::requiring_tls(ClientFlags {
            fixed_newstyle: true,
            no_zeroes: true,
        });
        let cat = One(None);
        let s = n.handle_option(hdr(NBD_OPT_LIST, b""), b"", &cat);
        assert_eq!(replies(&s.reply)[0].1, NBD_REP_ERR_TLS_REQD);
        let s = n.handle_option(hdr(NBD_OPT_GO, &go_payload("", &[])), &go_payload("", &[]), &cat);
        assert_eq!(replies(&s.reply)[0].1, NBD_REP_ERR_TLS_REQD);
        assert_eq!(s.outcome, Outcome::Continue);
        let s = n.handle_option(hdr(NBD_OPT_EXPORT_NAME, b""), b"", &cat);
        assert_eq!(s.outcome, Outcome::Close);
        let s = n.handle_option(hdr(NBD_OPT_STARTTLS, b"x"), b"x", &cat);
        assert_eq!(replies(&s.reply)[0].1, NBD_REP_ERR_INVALID);
        let s = n.handle_option(hdr(NBD_OPT_STRUCTURED_REPLY, b""), b"", &cat);
        assert_eq!(replies(&s.reply)[0].1, NBD_REP_ERR_TLS_REQD);
        let s = n.handle_option(hdr(NBD_OPT_STARTTLS, b""), b"", &cat);
        assert_eq!(s.outcome, Outcome::StartTls);
        assert_eq!(replies(&s.reply)[0].1, NBD_REP_ACK);
        n.secured();
        let s = n.handle_option(hdr(NBD_OPT_STARTTLS, b""), b"", &cat);
        assert_eq!(replies(&s.reply)[0].1, NBD_REP_ERR_INVALID);
        let s = n.handle_option(hdr(NBD_OPT_GO, &go_payload("", &[])), &go_payload("", &[]), &cat);
        assert!(matches!(
            s.outcome,
            Outcome::Transmission {
                structured_replies: false,
                ..
            }
        ));
    }

    #[test]
    fn meta_contexts_none_offered() {
        let mut n = neg(true);
        let mut p = 2u32.to_be_bytes().to_vec();
        p.extend_from_slice(b"r0");
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(&15u32.to_be_bytes());
        p.extend_from_slice(b"base:allocation");
        let s = n.handle_option(hdr(NBD_OPT_SET_META_CONTEXT, &p), &p, &One(None));
        assert_eq!(replies(&s.reply)[0].1, NBD_REP_ERR_INVALID, "needs structured replies");
        n.handle_option(hdr(NBD_OPT_STRUCTURED_REPLY, b""), b"", &One(None));
        let s = n.handle_option(hdr(NBD_OPT_SET_META_CONTEXT, &p), &p, &One(None));
        assert_eq!(replies(&s.reply), vec![(NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK, vec![])]);
        let bad = &p[..p.len() - 1];
        let s = n.handle_option(hdr(NBD_OPT_LIST_META_CONTEXT, bad), bad, &One(None));
        assert_eq!(replies(&s.reply)[0].1, NBD_REP_ERR_INVALID);
    }

    proptest::proptest! {
        #[test]
        fn any_option_bytes_never_panic(option in 0u32..16, payload in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut n = neg(true);
            let _ = n.handle_option(hdr(option, &payload), &payload, &One(None));
        }
    }
}
