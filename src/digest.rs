//! Block digests for online verify (`verify-alg`) and checksum-based resync
//! (`csums-alg`). The names are DRBD's (the kernel crypto API's); the wire
//! carries the algorithm's number so both sides provably hash alike.

use sha2::Digest as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlg {
    Crc32c = 1,
    Md5 = 2,
    Sha1 = 3,
    Sha256 = 4,
}

impl DigestAlg {
    /// The algorithm a configuration names. DRBD's `crc32` and names Tandem
    /// does not know (the config parser already warned) fall back to crc32c.
    pub fn from_config(name: &str) -> DigestAlg {
        match name {
            "md5" => DigestAlg::Md5,
            "sha1" => DigestAlg::Sha1,
            "sha256" => DigestAlg::Sha256,
            _ => DigestAlg::Crc32c,
        }
    }

    pub fn from_wire(n: u8) -> Option<DigestAlg> {
        match n {
            1 => Some(DigestAlg::Crc32c),
            2 => Some(DigestAlg::Md5),
            3 => Some(DigestAlg::Sha1),
            4 => Some(DigestAlg::Sha256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DigestAlg::Crc32c => "crc32c",
            DigestAlg::Md5 => "md5",
            DigestAlg::Sha1 => "sha1",
            DigestAlg::Sha256 => "sha256",
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            DigestAlg::Crc32c => crc32c::crc32c(data).to_be_bytes().to_vec(),
            DigestAlg::Md5 => md5::Md5::digest(data).to_vec(),
            DigestAlg::Sha1 => sha1::Sha1::digest(data).to_vec(),
            DigestAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        assert_eq!(DigestAlg::Crc32c.digest(b"123456789"), 0xe306_9283u32.to_be_bytes());
        let hex = |v: Vec<u8>| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(DigestAlg::Md5.digest(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex(DigestAlg::Sha1.digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert!(hex(DigestAlg::Sha256.digest(b"abc")).starts_with("ba7816bf"));
        for n in 1..=4 {
            let a = DigestAlg::from_wire(n).unwrap();
            assert_eq!(a as u8, n);
            assert_eq!(DigestAlg::from_config(a.name()), a);
            assert!(a.digest(&[0; 4096]).len() <= crate::wire::DIGEST_BYTES_MAX);
        }
        assert_eq!(DigestAlg::from_wire(0), None);
    }
}
