//! The peer handshake: both sides send a `Hello` with a fresh nonce, check
//! each other's names and sizes, then prove knowledge of the shared secret
//! with HMAC-SHA256 over the *other* side's nonce. A recorded handshake is
//! worthless later (the nonces are new every time), and the secret never
//! crosses the wire.

use super::{put_str, Reader, WireError};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of randomness each side contributes.
pub const NONCE_BYTES: usize = 32;
const DOMAIN: &[u8] = b"tandem-peer-auth-v1\0";

/// `Hello` feature bit: the sender only wants to compare UUIDs
/// (`connect --dry-run`); neither side acts on the result.
pub const FEATURE_DRY_RUN: u64 = 1;
/// `Hello` feature bit: the sender understands `VerifyState`. Message types
/// added within a frame version are announced this way, so that a pair of
/// mixed builds keeps its link.
pub const FEATURE_VERIFY_STATE: u64 = 1 << 1;
/// `Hello` feature bit: the sender understands `Flushed`, and a Primary
/// that has it answers an application FLUSH by it without a barrier's round
/// trip.
pub const FEATURE_FLUSHED: u64 = 1 << 2;
/// `Hello` feature bit: the sender reads and sends completion marks (the
/// optional last field of `DataAck`, `Barrier`, `BarrierAck` and
/// `Flushed`), by which a barrier asks only for the writes its client's
/// FLUSH covers.
pub const FEATURE_FLUSH_MARKS: u64 = 1 << 3;
/// The features this build announces on a normal connect.
pub const FEATURES: u64 = FEATURE_VERIFY_STATE | FEATURE_FLUSHED | FEATURE_FLUSH_MARKS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The newest protocol version the sender speaks.
    pub version: u8,
    pub resource: String,
    /// The sender's node name.
    pub node: String,
    /// Who the sender expects to be talking to.
    pub peer: String,
    /// The sender's usable data size.
    pub data_bytes: u64,
    /// Feature bits (`FEATURE_*`); a receiver ignores those it does not know.
    pub features: u64,
    pub nonce: [u8; NONCE_BYTES],
}

impl Hello {
    pub(super) fn encode_into(&self, o: &mut Vec<u8>) {
        o.push(self.version);
        put_str(o, &self.resource);
        put_str(o, &self.node);
        put_str(o, &self.peer);
        o.extend_from_slice(&self.data_bytes.to_be_bytes());
        o.extend_from_slice(&self.features.to_be_bytes());
        o.extend_from_slice(&self.nonce);
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Hello, WireError> {
        let version = r.u8()?;
        let (resource, node, peer) = (r.str()?, r.str()?, r.str()?);
        let (data_bytes, features) = (r.u64()?, r.u64()?);
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(r.take(NONCE_BYTES)?);
        Ok(Hello {
            version,
            resource,
            node,
            peer,
            data_bytes,
            features,
            nonce,
        })
    }
}

/// Why a peer's hello is refused, in a sentence for both logs; `None` if it
/// is the peer this node's configuration names.
pub fn check_hello(mine: &Hello, theirs: &Hello) -> Option<String> {
    if theirs.resource != mine.resource {
        return Some(format!(
            "peer {} offers resource '{}' but this node serves '{}'",
            theirs.node, theirs.resource, mine.resource
        ));
    }
    if theirs.node != mine.peer {
        return Some(format!(
            "peer calls itself '{}' but the configuration of {} names '{}'",
            theirs.node, mine.resource, mine.peer
        ));
    }
    if theirs.peer != mine.node {
        return Some(format!(
            "peer {} expects node '{}', this is '{}'",
            theirs.node, theirs.peer, mine.node
        ));
    }
    if theirs.version < super::ProtocolVersion::V1 as u8 {
        return Some(format!(
            "peer {} speaks protocol version {}, too old",
            theirs.node, theirs.version
        ));
    }
    if theirs.nonce == mine.nonce {
        return Some(format!(
            "peer {} echoed this node's challenge (a reflection attempt)",
            theirs.node
        ));
    }
    None
}

fn mac_for(
    secret: &[u8],
    resource: &str,
    from: &str,
    to: &str,
    to_nonce: &[u8; NONCE_BYTES],
    from_nonce: &[u8; NONCE_BYTES],
) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key"));
    m.update(DOMAIN);
    for part in [resource.as_bytes(), from.as_bytes(), to.as_bytes()] {
        m.update(&(part.len() as u32).to_be_bytes());
        m.update(part);
    }
    m.update(to_nonce);
    m.update(from_nonce);
    m
}

/// The proof this node (`mine`) sends to the peer (`theirs`).
pub fn prove(secret: &[u8], mine: &Hello, theirs: &Hello) -> [u8; 32] {
    let tag = mac_for(
        secret,
        &mine.resource,
        &mine.node,
        &theirs.node,
        &theirs.nonce,
        &mine.nonce,
    )
    .finalize();
    tag.into_bytes().into()
}

/// Check the peer's proof, in constant time.
pub fn verify(secret: &[u8], mine: &Hello, theirs: &Hello, mac: &[u8; 32]) -> bool {
    mac_for(
        secret,
        &mine.resource,
        &theirs.node,
        &mine.node,
        &mine.nonce,
        &theirs.nonce,
    )
    .verify_slice(mac)
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_frame, Message};

    fn hello(node: &str, peer: &str, n: u8) -> Hello {
        Hello {
            version: 1,
            resource: "r0".into(),
            node: node.into(),
            peer: peer.into(),
            data_bytes: 1 << 30,
            features: 0,
            nonce: [n; NONCE_BYTES],
        }
    }

    #[test]
    fn both_sides_prove_the_secret() {
        let (a, b) = (hello("alpha", "beta", 1), hello("beta", "alpha", 2));
        assert_eq!(check_hello(&a, &b), None);
        assert_eq!(check_hello(&b, &a), None);
        assert!(verify(b"s3cret", &b, &a, &prove(b"s3cret", &a, &b)));
        assert!(verify(b"s3cret", &a, &b, &prove(b"s3cret", &b, &a)));
    }

    #[test]
    fn a_wrong_secret_or_a_replay_fails() {
        let (a, b) = (hello("alpha", "beta", 1), hello("beta", "alpha", 2));
        assert!(!verify(b"s3cret", &b, &a, &prove(b"guess", &a, &b)));
        // A proof recorded against one challenge is useless against the next.
        let old = prove(b"s3cret", &a, &b);
        let b_again = hello("beta", "alpha", 3);
        assert!(!verify(b"s3cret", &b_again, &a, &old));
        // Reflecting beta's own proof back at it does not work either.
        assert!(!verify(b"s3cret", &b, &a, &prove(b"s3cret", &b, &a)));
    }

    #[test]
    fn wrong_names_are_refused_with_a_reason() {
        let a = hello("alpha", "beta", 1);
        let mut other = hello("beta", "alpha", 2);
        other.resource = "r1".into();
        assert!(check_hello(&a, &other).unwrap().contains("offers resource 'r1'"));
        let gamma = hello("gamma", "alpha", 2);
        assert!(check_hello(&a, &gamma).unwrap().contains("names 'beta'"));
        let mirror = hello("beta", "alpha", 1);
        assert!(check_hello(&a, &mirror).unwrap().contains("reflection"));
    }

    #[test]
    fn hello_round_trips_on_the_wire() {
        let h = hello("alpha", "beta", 9);
        let f = Message::Hello(h.clone()).encode(&[]);
        let (m, _, _) = decode_frame(&f).unwrap().unwrap();
        assert_eq!(m, Message::Hello(h));
    }
}
