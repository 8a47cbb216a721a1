//! A scripted hostile peer against a real `tandemd`: replayed handshakes,
//! wrong names, garbage, lies about sizes and lengths, a stall mid-frame and
//! a flood of writes. Each is refused or cut off with a log line saying why;
//! the daemon keeps running and answering its operator throughout.

mod common;

use common::pair::*;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use tandem::wire::handshake::{prove, Hello, NONCE_BYTES};
use tandem::wire::{self, Message, HEADER_LEN};

const SIZE: u64 = 16 << 20;
const SECRET: &str = "s3cret";

/// alpha, running, whose peer "beta" is this test, listening at beta's
/// replication address (alpha's name sorts first, so alpha dials).
struct Setup {
    _dir: tempfile::TempDir,
    alpha: Daemon,
    listener: TcpListener,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tmp");
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let conf = dir.path().join("alpha.conf");
    write_conf(&conf, dir.path(), SECRET, ports, "", "", "");
    let image = dir.path().join("alpha.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(SIZE))
        .expect("image");
    let listener = TcpListener::bind(("127.0.0.1", ports[3])).expect("listen as beta");
    let mut alpha = Daemon::new("alpha", conf, dir.path(), image);
    alpha.adm_ok(&["create-md", "r0"]);
    alpha.start();
    alpha.adm_ok(&["up", "r0"]);
    Setup {
        _dir: dir,
        alpha,
        listener,
    }
}

fn accept(l: &TcpListener) -> TcpStream {
    let (s, _) = l.accept().expect("alpha dials");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s
}

fn send(s: &mut TcpStream, m: &Message) {
    let _ = s.write_all(&m.encode(&[]));
}

fn recv(s: &mut TcpStream) -> Option<Message> {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).ok()?;
    let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let mut f = h.to_vec();
    f.resize(HEADER_LEN + len, 0);
    s.read_exact(&mut f[HEADER_LEN..]).ok()?;
    wire::decode_frame(&f).ok()?.map(|(m, _, _)| m)
}

fn hello(node: &str, resource: &str, data_bytes: u64, n: u8) -> Hello {
    Hello {
        version: wire::ProtocolVersion::current() as u8,
        resource: resource.into(),
        node: node.into(),
        peer: "alpha".into(),
        data_bytes,
        features: 0,
        nonce: [n; NONCE_BYTES],
    }
}

/// Hello both ways; returns (ours, alpha's).
fn hellos(s: &mut TcpStream, mine: Hello) -> (Hello, Hello) {
    send(s, &Message::Hello(mine.clone()));
    match recv(s) {
        Some(Message::Hello(h)) => (mine, h),
        other => panic!("expected alpha's hello, got {other:?}"),
    }
}

/// The whole handshake as an honest beta, up to both UUID reports.
fn authenticate(s: &mut TcpStream, n: u8) {
    let (mine, theirs) = hellos(s, hello("beta", "r0", SIZE, n));
    send(
        s,
        &Message::Auth {
            mac: prove(SECRET.as_bytes(), &mine, &theirs),
        },
    );
    assert!(matches!(recv(s), Some(Message::Auth { .. })));
    send(s, &Message::AuthOk);
    assert!(matches!(recv(s), Some(Message::AuthOk)));
    // A peer with good, newer data: alpha (fresh) becomes its SyncTarget.
    send(
        s,
        &Message::Uuids {
            current: 0x1234_5678_0000_0000,
            bitmap: 0,
            history: [0, 0],
            bitmap_bits: 0,
            flags: 0,
            primary: false,
            first_write_s: 0,
            last_write_s: 0,
        },
    );
    assert!(matches!(recv(s), Some(Message::Uuids { .. })));
}

/// The link was cut: reading hits the end (or a refusal, then the end).
fn assert_cut(s: &mut TcpStream, within: Duration) {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("link not cut after {:?}: {e}", t0.elapsed()),
        }
    }
}

fn wait_log(d: &Daemon, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains(what) {
        assert!(Instant::now() < deadline, "log never said {what:?}:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_alive(d: &Daemon) {
    let s = d.adm_ok(&["status", "r0"]);
    assert!(s.contains("r0 role:Secondary"), "{s}");
}

#[test]
fn refused_handshakes_say_why() {
    let t = setup();
    // A replayed proof: the MAC of an earlier session.
    let mut s = accept(&t.listener);
    let (mine, theirs) = hellos(&mut s, hello("beta", "r0", SIZE, 1));
    let old_mac = prove(SECRET.as_bytes(), &mine, &theirs);
    drop(s);
    let mut s = accept(&t.listener);
    hellos(&mut s, hello("beta", "r0", SIZE, 2));
    send(&mut s, &Message::Auth { mac: old_mac });
    let _ = recv(&mut s);
    assert_cut(&mut s, Duration::from_secs(5));
    wait_log(&t.alpha, "wrong shared secret");

    // A wrong secret.
    let mut s = accept(&t.listener);
    let (mine, theirs) = hellos(&mut s, hello("beta", "r0", SIZE, 3));
    send(
        &mut s,
        &Message::Auth {
            mac: prove(b"guess", &mine, &theirs),
        },
    );
    assert_cut(&mut s, Duration::from_secs(5));

    // A wrong resource name, and a node name the config does not know.
    let mut s = accept(&t.listener);
    send(&mut s, &Message::Hello(hello("beta", "r9", SIZE, 4)));
    assert_cut(&mut s, Duration::from_secs(5));
    wait_log(&t.alpha, "offers resource 'r9'");
    let mut s = accept(&t.listener);
    send(&mut s, &Message::Hello(hello("mallory", "r0", SIZE, 5)));
    assert_cut(&mut s, Duration::from_secs(5));
    wait_log(&t.alpha, "calls itself 'mallory'");

    // A reflection of alpha's own challenge.
    let mut s = accept(&t.listener);
    let theirs = match recv(&mut s) {
        Some(Message::Hello(h)) => h,
        other => panic!("{other:?}"),
    };
    let mut mine = hello("beta", "r0", SIZE, 0);
    mine.nonce = theirs.nonce;
    send(&mut s, &Message::Hello(mine));
    assert_cut(&mut s, Duration::from_secs(5));
    wait_log(&t.alpha, "reflection");
    assert_alive(&t.alpha);
}

#[test]
fn an_authenticated_peer_that_lies_or_sends_garbage_is_cut_off() {
    let t = setup();
    // Lies about its size: refused after the UUIDs.
    let mut s = accept(&t.listener);
    let (mine, theirs) = hellos(&mut s, hello("beta", "r0", SIZE * 2, 6));
    send(
        &mut s,
        &Message::Auth {
            mac: prove(SECRET.as_bytes(), &mine, &theirs),
        },
    );
    let _ = recv(&mut s);
    send(&mut s, &Message::AuthOk);
    let _ = recv(&mut s);
    send(
        &mut s,
        &Message::Uuids {
            current: 0x1234_5678_0000_0000,
            bitmap: 0,
            history: [0, 0],
            bitmap_bits: 0,
            flags: 0,
            primary: false,
            first_write_s: 0,
            last_write_s: 0,
        },
    );
    assert_cut(&mut s, Duration::from_secs(5));
    wait_log(&t.alpha, "sizes must match");
    t.alpha.adm_ok(&["connect", "r0"]);

    // Garbage after a good handshake.
    let mut s = accept(&t.listener);
    authenticate(&mut s, 7);
    let _ = s.write_all(&[0xde; 64]);
    assert_cut(&mut s, Duration::from_secs(5));
    assert_alive(&t.alpha);

    // A frame header claiming a payload far beyond the limit.
    let mut s = accept(&t.listener);
    authenticate(&mut s, 8);
    let mut f = Message::Ping.encode(&[]);
    f[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    let _ = s.write_all(&f);
    assert_cut(&mut s, Duration::from_secs(5));

    // A write outside the device is refused, not applied.
    let mut s = accept(&t.listener);
    authenticate(&mut s, 9);
    let block = vec![0x77u8; 4096];
    let msg = Message::Data {
        seq: 1,
        offset: SIZE,
        len: 4096,
        flags: wire::DATA_FLAG_RESYNC,
    };
    let mut f = msg.encode(&block);
    f.extend_from_slice(&block);
    let _ = s.write_all(&f);
    loop {
        match recv(&mut s) {
            Some(Message::DataAck { seq: 1, status, .. }) => {
                assert_ne!(status, 0, "a write beyond the end was acknowledged");
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    drop(s);

    // A stall in the middle of a frame: cut after the ping timeout.
    let mut s = accept(&t.listener);
    authenticate(&mut s, 10);
    let _ = s.write_all(&Message::Ping.encode(&[])[..7]);
    let t0 = Instant::now();
    assert_cut(&mut s, Duration::from_secs(10));
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "stalled peer kept for {:?}",
        t0.elapsed()
    );
    assert_alive(&t.alpha);
}

#[test]
fn a_flood_of_writes_is_held_back_and_the_daemon_stays_responsive() {
    let t = setup();
    let mut s = accept(&t.listener);
    authenticate(&mut s, 11);
    // alpha becomes SyncTarget once both bitmaps are exchanged.
    send(
        &mut s,
        &Message::Bitmap {
            runs: vec![],
            last: true,
        },
    );
    t.alpha.wait_for("cs:SyncTarget", 10);
    // Drain whatever alpha sends, so only our flood is in question.
    let mut reader = s.try_clone().expect("clone");
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    let mut writer = s.try_clone().expect("clone");
    let flood = std::thread::spawn(move || {
        let block = vec![0x5au8; 65536];
        for seq in 0..6000u64 {
            let msg = Message::Data {
                seq,
                offset: (seq * 65536) % SIZE,
                len: 65536,
                flags: wire::DATA_FLAG_RESYNC,
            };
            let mut f = msg.encode(&block);
            f.extend_from_slice(&block);
            if writer.write_all(&f).is_err() {
                return seq;
            }
        }
        6000
    });
    // The operator is answered while the flood goes on.
    for _ in 0..10 {
        let t0 = Instant::now();
        t.alpha.adm_ok(&["status", "r0"]);
        assert!(t0.elapsed() < Duration::from_secs(2), "status took {:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = flood.join().expect("flood");
    assert_eq!(sent, 6000, "alpha cut an honest (if fast) peer off");
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = drain.join();
    assert!(std::fs::read(&t.alpha.image).expect("image")[..65536]
        .iter()
        .all(|&b| b == 0x5a));
    // Memory stayed bounded: nowhere near the 375 MiB that was sent.
    let pid = t.alpha.child.as_ref().expect("running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc");
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    assert!(rss_kib < 200 * 1024, "peak RSS {rss_kib} KiB");
}
