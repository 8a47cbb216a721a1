//! Reply encodings: simple replies and structured reply chunks.

use super::consts::*;

pub const SIMPLE_REPLY_LEN: usize = 16;

pub fn simple_reply(cookie: u64, error: u32) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..].copy_from_slice(&cookie.to_be_bytes());
    b
}

fn chunk_header(flags: u16, chunk_type: u16, cookie: u64, length: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&chunk_type.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..].copy_from_slice(&length.to_be_bytes());
    b
}

/// The final chunk of a reply that carried no data.
pub fn structured_none_done(cookie: u64) -> [u8; 20] {
    chunk_header(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, cookie, 0)
}

/// Header of an OFFSET_DATA chunk: chunk header plus the 8-byte offset; the
/// `data_len` bytes of data follow.
pub fn structured_offset_data_header(cookie: u64, offset: u64, data_len: u32, done: bool) -> [u8; 28] {
    let flags = if done { NBD_REPLY_FLAG_DONE } else { 0 };
    let mut b = [0u8; 28];
    b[..20].copy_from_slice(&chunk_header(
        flags,
        NBD_REPLY_TYPE_OFFSET_DATA,
        cookie,
        data_len.saturating_add(8),
    ));
    b[20..].copy_from_slice(&offset.to_be_bytes());
    b
}

/// An ERROR chunk with a human-readable message (cut to 4 KiB).
pub fn structured_error(cookie: u64, error: u32, message: &str, done: bool) -> Vec<u8> {
    let mut end = message.len().min(4096);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let msg = &message.as_bytes()[..end];
    let flags = if done { NBD_REPLY_FLAG_DONE } else { 0 };
    let mut out = Vec::with_capacity(20 + 6 + msg.len());
    out.extend_from_slice(&chunk_header(flags, NBD_REPLY_TYPE_ERROR, cookie, 6 + msg.len() as u32));
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple() {
        assert_eq!(
            simple_reply(0x0102_0304_0506_0708, 22),
            [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22, 1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn structured() {
        let h = structured_offset_data_header(9, 4096, 512, true);
        assert_eq!(&h[..4], &[0x66, 0x8e, 0x33, 0xef]);
        assert_eq!(&h[4..8], &[0, 1, 0, 1]);
        assert_eq!(&h[16..20], &520u32.to_be_bytes());
        assert_eq!(&h[20..], &4096u64.to_be_bytes());
        let e = structured_error(9, 5, "disk", true);
        assert_eq!(&e[6..8], &[0x80, 0x01]);
        assert_eq!(&e[16..20], &10u32.to_be_bytes());
        assert_eq!(&e[20..24], &5u32.to_be_bytes());
        assert_eq!(&e[24..26], &4u16.to_be_bytes());
        assert_eq!(&e[26..], b"disk");
        assert_eq!(&structured_none_done(3)[4..8], &[0, 1, 0, 0]);
    }
}
