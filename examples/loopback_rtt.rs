//! The round trip a replicated write cannot avoid: a 4 KiB write and its
//! header go to the peer, a short ack comes back, over TCP on loopback
//! with TCP_NODELAY, one at a time. Two threads of one process stand for
//! the two nodes; nothing else runs, so this is the network's floor for a
//! protocol-C write at queue depth 1 on this machine.
//!
//! ```sh
//! cargo run --release --example loopback_rtt [iterations]
//! ```
//!
//! Prints one JSON line: mean, p50, p99 and min in µs. `benches/run.py`
//! runs it among its limits.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

/// About a Data frame: a 4 KiB payload behind its header and fields.
const REQUEST: usize = 64 + 4096;
/// About an ack frame.
const REPLY: usize = 32;

fn main() -> std::io::Result<()> {
    let iterations: usize = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|e| std::io::Error::other(format!("iterations {n:?}: {e}")))?,
        None => 20_000,
    };
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut req = vec![0u8; REQUEST];
        let reply = [0u8; REPLY];
        loop {
            match s.read_exact(&mut req) {
                Ok(()) => s.write_all(&reply)?,
                // The client is done.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let req = vec![0x5au8; REQUEST];
    let mut reply = [0u8; REPLY];
    // The first tenth warms up (connection, caches), as fio's ramp.
    let warmup = iterations / 10;
    let mut us = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t0 = Instant::now();
        c.write_all(&req)?;
        c.read_exact(&mut reply)?;
        if i >= warmup {
            us.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(c);
    server
        .join()
        .map_err(|_| std::io::Error::other("the server thread panicked"))??;
    us.sort_by(f64::total_cmp);
    let pick = |q: f64| us[((us.len() - 1) as f64 * q) as usize];
    let mean = us.iter().sum::<f64>() / us.len() as f64;
    println!(
        "{{\"iterations\": {}, \"mean_us\": {mean:.1}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"min_us\": {:.1}}}",
        us.len(),
        pick(0.5),
        pick(0.99),
        us[0]
    );
    Ok(())
}
