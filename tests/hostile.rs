//! Bad input from NBD clients: refused precisely, the connection kept where
//! the protocol allows, the daemon and other clients untouched, nothing lost.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::Duration;

const EINVAL: u32 = 22;
const ENOSPC: u32 = 28;
const EOVERFLOW: u32 = 75;

#[test]
fn out_of_range_requests_get_einval_and_the_connection_keeps_working() {
    let node = Node::primary(32 << 20);
    let (mut c, size) = RawClient::handshake(node.port);
    assert_eq!(size, node.export_size());
    assert_eq!(c.write(1, 0, &pattern(1, 4096)), 0);

    assert_eq!(c.read(2, size - 512, 4096), Err(EINVAL), "read past the end");
    assert_eq!(c.read(3, u64::MAX - 100, 4096), Err(EINVAL), "offset overflow");
    let err = c.write(4, size, &pattern(2, 4096));
    assert!(err == EINVAL || err == ENOSPC, "write past the end answered {err}");
    c.send_request(NBD_CMD_TRIM, 0, 5, size - 4096, 8192, &[]);
    assert_eq!(c.simple_reply(), (5, EINVAL), "trim past the end");
    c.send_request(NBD_CMD_READ, 1 << 9, 6, 0, 4096, &[]); // an undefined flag
    assert_eq!(c.simple_reply(), (6, EINVAL));
    c.send_request(0x77, 0, 7, 0, 4096, &[]); // an undefined command
    assert_eq!(c.simple_reply(), (7, EINVAL));

    // Still in step: the first write reads back.
    assert_eq!(c.read(8, 0, 4096), Ok(pattern(1, 4096)));
}

#[test]
fn a_request_beyond_the_advertised_maximum_is_refused_and_its_payload_skipped() {
    let node = Node::primary(128 << 20);
    let (mut c, _) = RawClient::handshake(node.port);
    let big = 33 << 20; // the maximum block size is 32 MiB
    match c.read(1, 0, big) {
        Err(e) => assert!(e == EINVAL || e == EOVERFLOW, "oversize read answered {e}"),
        Ok(_) => panic!("oversize read was served"),
    }
    let payload = vec![0xabu8; big as usize];
    let err = c.write(2, 0, &payload);
    assert!(err == EINVAL || err == EOVERFLOW, "oversize write answered {err}");
    // The refused write's payload was consumed, not taken for requests, and
    // not written.
    assert_eq!(c.read(3, 0, 4096), Ok(vec![0u8; 4096]));
}

#[test]
fn garbage_truncation_and_vanishing_clients_end_only_their_own_connection() {
    let node = Node::primary(32 << 20);
    let (mut good, _) = RawClient::handshake(node.port);
    let data = pattern(7, 65536);
    assert_eq!(good.write(1, 1 << 20, &data), 0);

    // Garbage instead of the client flags.
    let mut g = RawClient::connect(node.port);
    let mut greet = [0u8; 18];
    g.stream.read_exact(&mut greet).expect("greeting");
    g.stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send garbage");
    assert!(g.is_closed(), "server kept a connection that sent garbage");

    // A bad request magic after a good handshake.
    let (mut bad, _) = RawClient::handshake(node.port);
    bad.stream.write_all(&[0xde; 28]).expect("send bad request");
    assert!(bad.is_closed(), "server kept a connection with a bad request magic");

    // A truncated request header, then the client vanishes.
    let (mut t, _) = RawClient::handshake(node.port);
    t.stream
        .write_all(&0x2560_9513u32.to_be_bytes())
        .expect("partial header");
    drop(t);

    // A write whose payload stops halfway, then the client vanishes.
    let (mut w, _) = RawClient::handshake(node.port);
    let mut req = Vec::new();
    req.extend_from_slice(&0x2560_9513u32.to_be_bytes());
    req.extend_from_slice(&0u16.to_be_bytes());
    req.extend_from_slice(&NBD_CMD_WRITE.to_be_bytes());
    req.extend_from_slice(&9u64.to_be_bytes());
    req.extend_from_slice(&(1u64 << 20).to_be_bytes());
    req.extend_from_slice(&(1u32 << 20).to_be_bytes());
    req.extend_from_slice(&vec![0xee; 300_000]);
    w.stream.write_all(&req).expect("half a write");
    drop(w);

    std::thread::sleep(Duration::from_millis(200));
    // The good client carries on; what it wrote is intact (the torn write
    // was never acknowledged, and never applied).
    assert_eq!(good.read(2, 1 << 20, 65536), Ok(data));
    good.send_request(NBD_CMD_FLUSH, 0, 3, 0, 0, &[]);
    assert_eq!(good.simple_reply(), (3, 0));
    let mut node = node;
    assert!(node.is_running(), "tandemd died:\n{}", node.log());
    // And new clients are still served.
    let (mut again, _) = RawClient::handshake(node.port);
    assert_eq!(again.read(1, 1 << 20, 4096), Ok(pattern(7, 65536)[..4096].to_vec()));
}

#[test]
fn a_disconnect_request_finishes_in_flight_writes_first() {
    let node = Node::primary(32 << 20);
    let (mut c, _) = RawClient::handshake(node.port);
    // Pipeline many writes and a DISC without waiting for replies.
    for i in 0..64u64 {
        let data = pattern(100 + i, 4096);
        c.send_request(NBD_CMD_WRITE, 0, i, i * 4096, 4096, &data);
    }
    c.send_request(NBD_CMD_DISC, 0, 999, 0, 0, &[]);
    // All 64 replies arrive (in any order), then the server closes.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..64 {
        let (cookie, err) = c.simple_reply();
        assert_eq!(err, 0);
        seen.insert(cookie);
    }
    assert_eq!(seen.len(), 64);
    let (mut r, _) = RawClient::handshake(node.port);
    for i in 0..64u64 {
        assert_eq!(r.read(i, i * 4096, 4096), Ok(pattern(100 + i, 4096)));
    }
}

#[test]
fn an_unknown_export_name_is_refused_with_a_message() {
    let node = Node::primary(16 << 20);
    require_tool("qemu-io", "qemu-utils");
    let uri = format!("nbd://127.0.0.1:{}/nope", node.port);
    let out = run(std::process::Command::new("qemu-io").args(["-f", "raw", "-c", "read 0 4k", &uri]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("no export named 'nope'"), "{err}");
}
