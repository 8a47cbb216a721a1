//! Micro-benchmarks of the codecs every request passes through: the NBD
//! request header (decode, then validate against the export) and the
//! replies, and the peer frame, whose crc32c covers the whole block of a
//! `Data` message (so the data path's cost per byte is the crc's).
//!
//! `cargo bench --bench codecs` (BENCHMARKS.md, "Micro-benchmarks").

mod common;

use divan::counter::BytesCount;
use divan::{black_box, Bencher};

fn main() {
    common::main();
}

mod nbd {
    use super::*;
    use tandem::nbd::consts::*;
    use tandem::nbd::handshake::ExportInfo;
    use tandem::nbd::reply;
    use tandem::nbd::request::{Command, Request, REQUEST_HEADER_LEN};
    use tandem::nbd::validate::validate;

    /// The export a 1 TiB Primary grants (the flags `shell::nbd_server` sets).
    fn export() -> ExportInfo {
        ExportInfo {
            name: "r0".into(),
            description: "Tandem resource r0".into(),
            size: 1 << 40,
            transmission_flags: NBD_FLAG_HAS_FLAGS
                | NBD_FLAG_SEND_FLUSH
                | NBD_FLAG_SEND_FUA
                | NBD_FLAG_SEND_TRIM
                | NBD_FLAG_SEND_WRITE_ZEROES
                | NBD_FLAG_CAN_MULTI_CONN,
            block_size_min: 512,
            block_size_preferred: 4096,
            block_size_max: 32 << 20,
        }
    }

    fn header(command: Command, flags: u16) -> [u8; REQUEST_HEADER_LEN] {
        Request {
            flags,
            command,
            cookie: 0x0123_4567_89ab_cdef,
            offset: 512 << 30,
            length: 4096,
        }
        .encode()
    }

    /// What the connection's reader does with each 28-byte header before
    /// the request goes anywhere.
    fn decode_validate(bencher: Bencher, bytes: [u8; REQUEST_HEADER_LEN]) {
        let export = export();
        bencher.bench(|| {
            let req = Request::decode(black_box(&bytes)).expect("a well-formed header");
            validate(&req, &export, true).map(|()| req)
        });
    }

    #[divan::bench]
    fn request_decode_validate_write_fua(bencher: Bencher) {
        decode_validate(bencher, header(Command::Write, NBD_CMD_FLAG_FUA));
    }

    #[divan::bench]
    fn request_decode_validate_read(bencher: Bencher) {
        decode_validate(bencher, header(Command::Read, 0));
    }

    /// The reply to every write, flush and trim.
    #[divan::bench]
    fn reply_simple() -> [u8; 16] {
        reply::simple_reply(black_box(0x0123_4567_89ab_cdef), black_box(0))
    }

    /// The header in front of a read's data once structured replies are on.
    #[divan::bench]
    fn reply_structured_read_header() -> [u8; 28] {
        reply::structured_offset_data_header(black_box(0x0123_4567_89ab_cdef), black_box(512 << 30), 4096, true)
    }

    /// A failed read (allocates: the message travels with it).
    #[divan::bench]
    fn reply_structured_error() -> Vec<u8> {
        reply::structured_error(
            black_box(7),
            5,
            black_box("r0: I/O error reading 4096 bytes at 4096"),
            true,
        )
    }
}

mod peer_frame {
    use super::*;
    use tandem::wire::{decode_frame, Message, DATA_FLAG_FUA};

    /// Payload sizes: one 4 KiB block, and a 1 MiB write (as fio's 1M rows).
    const PAYLOADS: [usize; 2] = [4096, 1 << 20];

    fn data(len: usize) -> Message {
        Message::Data {
            seq: 42,
            offset: 512 << 30,
            len: len as u32,
            flags: DATA_FLAG_FUA,
        }
    }

    /// The whole frame as it arrives: header and body, then the block.
    fn frame(msg: &Message, payload: &[u8]) -> Vec<u8> {
        let mut f = msg.encode(payload);
        f.extend_from_slice(payload);
        f
    }

    /// The sender's side of a replicated write: header, body and a crc32c
    /// over all of them and the block (which is then sent from its own
    /// buffer, not copied).
    #[divan::bench(args = PAYLOADS)]
    fn data_encode(bencher: Bencher, len: usize) {
        let payload = vec![0xa5u8; len];
        let msg = data(len);
        bencher
            .counter(BytesCount::new(len))
            .bench(|| black_box(&msg).encode(black_box(&payload)));
    }

    /// The receiver's side: header checks, crc32c over everything, body.
    #[divan::bench(args = PAYLOADS)]
    fn data_decode(bencher: Bencher, len: usize) {
        let f = frame(&data(len), &vec![0xa5u8; len]);
        bencher.counter(BytesCount::new(len)).bench(|| {
            let (msg, block, used) = decode_frame(black_box(&f)).expect("valid").expect("whole");
            (msg, block.len(), used)
        });
    }

    /// The acknowledgement of every replicated write (no payload).
    #[divan::bench]
    fn data_ack_encode() -> Vec<u8> {
        Message::DataAck {
            seq: black_box(42),
            status: 0,
            disk_us: 70,
            completed: Some(1 << 20),
        }
        .encode(&[])
    }

    #[divan::bench]
    fn data_ack_decode(bencher: Bencher) {
        let f = frame(
            &Message::DataAck {
                seq: 42,
                status: 0,
                disk_us: 70,
                completed: Some(1 << 20),
            },
            &[],
        );
        bencher.bench(|| decode_frame(black_box(&f)).expect("valid").expect("whole").0);
    }
}
