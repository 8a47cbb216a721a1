//! The bodies of the fuzz targets, shared by `fuzz/` (libFuzzer) and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpus on every test
//! run. Each one feeds untrusted bytes to a decoder and checks a property
//! beyond "does not panic".

use crate::nbd::handshake::{ClientFlags, ExportCatalog, ExportInfo, Negotiation, OptionHeader, Outcome, Refusal};
use crate::nbd::request::{Command, Request, REQUEST_HEADER_LEN};
use crate::nbd::validate::validate;

struct FuzzCatalog;

impl ExportCatalog for FuzzCatalog {
    fn list(&self) -> Vec<(String, String)> {
        vec![("r0".into(), "fuzz".into())]
    }
    fn lookup(&self, name: &str) -> Result<ExportInfo, Refusal> {
        if name == "r0" || name.is_empty() {
            Ok(fuzz_export())
        } else {
            Err(Refusal::Unknown(name.to_owned()))
        }
    }
}

fn fuzz_export() -> ExportInfo {
    ExportInfo {
        name: "r0".into(),
        description: "fuzz".into(),
        size: 1 << 30,
        transmission_flags: 0x1ff,
        block_size_min: 512,
        block_size_preferred: 4096,
        block_size_max: 32 << 20,
    }
}

/// A stream of options: every reply is well-framed, and nothing after a
/// Close or Transmission outcome is consumed.
pub fn nbd_option(data: &[u8]) {
    let flags = ClientFlags {
        fixed_newstyle: true,
        no_zeroes: data.first().is_some_and(|b| b & 1 == 1),
    };
    // Half the inputs face a server that requires TLS.
    let mut neg = if data.first().is_some_and(|b| b & 2 == 2) {
        Negotiation::requiring_tls(flags)
    } else {
        Negotiation::new(flags)
    };
    let mut rest = data;
    while rest.len() >= 8 {
        let option = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) % 16;
        let len = (u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize % 64).min(rest.len() - 8);
        let mut hdr = [0u8; 16];
        hdr[..8].copy_from_slice(&crate::nbd::consts::IHAVEOPT.to_be_bytes());
        hdr[8..12].copy_from_slice(&option.to_be_bytes());
        hdr[12..16].copy_from_slice(&(len as u32).to_be_bytes());
        let header = OptionHeader::decode(&hdr).expect("built with the right magic");
        let step = neg.handle_option(header, &rest[8..8 + len], &FuzzCatalog);
        rest = &rest[8 + len..];
        match step.outcome {
            Outcome::Continue => assert!(!step.reply.is_empty(), "every option gets a reply"),
            // The shell does the TLS handshake here; the haggling goes on.
            Outcome::StartTls => neg.secured(),
            Outcome::Close | Outcome::Transmission { .. } => return,
        }
    }
}

/// Request headers: decode never panics, round-trips, and validation accepts
/// only requests inside the export.
pub fn nbd_request(data: &[u8]) {
    for chunk in data.chunks_exact(REQUEST_HEADER_LEN) {
        let mut hdr = [0u8; REQUEST_HEADER_LEN];
        hdr.copy_from_slice(chunk);
        let Ok(req) = Request::decode(&hdr) else { continue };
        assert_eq!(req.encode(), hdr);
        let export = fuzz_export();
        // FLUSH and DISC carry no range (their offset/length are ignored);
        // every command that addresses data must stay inside the export.
        let addresses_data = matches!(
            req.command,
            Command::Read | Command::Write | Command::Trim | Command::WriteZeroes | Command::Cache
        );
        if validate(&req, &export, true).is_ok() && addresses_data {
            let end = req.offset.checked_add(u64::from(req.length));
            assert!(
                req.length > 0 && end.is_some_and(|e| e <= export.size),
                "{req:?} accepted"
            );
        }
    }
}

/// Control requests: anything that decodes re-encodes to an equal request.
pub fn control(data: &[u8]) {
    if let Ok(req) = crate::control::Request::decode(data) {
        let again = serde_json::to_vec(&req).expect("a decoded request encodes");
        assert_eq!(crate::control::Request::decode(&again), Ok(req));
    }
}

/// Config text: parsing never panics, and every error carries a position
/// inside the text it was given.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = crate::config::parse_str(&text, std::path::Path::new("/nonexistent/fuzz.res"));
    // Errors in this text (not in an include) must point inside it.
    if let Some(location) = parsed
        .as_ref()
        .err()
        .and_then(|e| e.location())
        .filter(|l| l.file.ends_with("fuzz.res"))
    {
        let lines = text.lines().count().max(1) as u32;
        assert!(
            location.line >= 1 && location.line <= lines + 1,
            "error line {} of {lines}",
            location.line
        );
    }
}

/// Metadata blocks: a superblock or AL block that decodes re-encodes to the
/// same bytes (so nothing unchecked was accepted), and recovery never panics.
pub fn superblock(data: &[u8]) {
    use crate::meta::{al, Superblock, BLOCK_BYTES};
    let mut block = [0u8; BLOCK_BYTES];
    let n = data.len().min(BLOCK_BYTES);
    block[..n].copy_from_slice(&data[..n]);
    if let Ok(sb) = Superblock::decode(&block) {
        let again = sb.encode();
        assert_eq!(Superblock::decode(&again[..]), Ok(sb));
        // A current-format block re-encodes byte for byte; an older one is
        // upgraded on its next write.
        if block[8..12] == crate::meta::FORMAT_VERSION.to_le_bytes() {
            assert_eq!(&again[..], &block[..]);
        }
    }
    if let Ok(t) = al::AlTransaction::decode(&block) {
        assert_eq!(&t.encode()[..], &block[..]);
    }
    let _ = al::recover_hot_extents(&[&block, &[0u8; BLOCK_BYTES]]);
    let _ = Superblock::decode(data);
}

/// Peer frames: a frame that decodes re-encodes to the same bytes, and no
/// length in a hostile header is ever trusted beyond the buffer.
pub fn peer_frame(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((msg, block, used))) = crate::wire::decode_frame(rest) {
        assert!(used <= rest.len());
        let mut again = msg.encode(block);
        again.extend_from_slice(block);
        assert_eq!(&again[..], &rest[..used]);
        rest = &rest[used..];
    }
}
