//! The limit of any synchronous mirror on this machine: every write goes to
//! two files at once and counts as done when both hold it, with no network
//! and no NBD in between. At queue depth N, N such pairs are in flight.
//!
//! Two files written independently (fio's two jobs, the benchmark's
//! `file-pair`) keep N writes in each file's queue all the time. A mirror
//! cannot: a request holds its slot until the slower of its two writes
//! finishes, so while one copy waits the other file's queue is shorter,
//! and each request pays the slower of two writes. This measures that, so
//! a replicated row can be held against what replication itself allows on
//! this disk.
//!
//! ```sh
//! cargo run --release --example lockstep_writes -- A B --rw=randwrite --bs=4k --iodepth=32 [--fsync=1] [--runtime=5]
//! ```
//!
//! Takes fio's spelling of the options the benchmark's write rows use
//! (`--rw=randwrite|write`, `--bs`, `--iodepth`, `--fsync=1`, `--runtime`,
//! `--ramp_time`), opens both files with O_DIRECT, and prints one job
//! record in the shape of `fio --output-format=json` (the write side, and
//! with `--fsync=1` the sync side, each with its latency percentiles), so
//! `benches/run.py` reads it as it reads fio.

use std::cell::RefCell;
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tandem::shell::buf::{AlignedBuf, SharedBuf};

/// The percentiles fio is asked for by the benchmark.
const PERCENTILES: [f64; 16] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99,
];

struct Args {
    a: String,
    b: String,
    sequential: bool,
    block: usize,
    depth: usize,
    fsync: bool,
    runtime: f64,
    ramp: f64,
}

fn size(s: &str) -> Result<f64, String> {
    let (digits, scale) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1024.0),
        Some((i, 'm' | 'M')) => (&s[..i], 1024.0 * 1024.0),
        _ => (s, 1.0),
    };
    digits
        .parse::<f64>()
        .map(|n| n * scale)
        .map_err(|e| format!("{s:?}: {e}"))
}

fn args() -> Result<Args, String> {
    let mut files = Vec::new();
    let mut a = Args {
        a: String::new(),
        b: String::new(),
        sequential: false,
        block: 4096,
        depth: 1,
        fsync: false,
        runtime: 5.0,
        ramp: 1.0,
    };
    for arg in std::env::args().skip(1) {
        let Some(opt) = arg.strip_prefix("--") else {
            files.push(arg);
            continue;
        };
        let (key, value) = opt
            .split_once('=')
            .ok_or_else(|| format!("--{opt}: expected --key=value"))?;
        match key {
            "rw" => {
                a.sequential = match value {
                    "randwrite" => false,
                    "write" => true,
                    other => return Err(format!("--rw={other}: only writes (randwrite, write) are mirrored")),
                }
            }
            "bs" => a.block = size(value)? as usize,
            "iodepth" => a.depth = (size(value)? as usize).max(1),
            "fsync" => a.fsync = value != "0",
            "runtime" => a.runtime = size(value)?,
            "ramp_time" => a.ramp = size(value)?,
            other => return Err(format!("--{other}: not an option of this program")),
        }
    }
    let [fa, fb]: [String; 2] = files.try_into().map_err(|_| {
        "usage: lockstep_writes A B [--rw=randwrite|write] [--bs=4k] [--iodepth=N] [--fsync=1] [--runtime=S]"
    })?;
    if a.block == 0 || a.block % 4096 != 0 {
        return Err(format!("--bs={}: must be a multiple of 4096", a.block));
    }
    if a.runtime <= 0.0 {
        return Err("--runtime must be positive".into());
    }
    (a.a, a.b) = (fa, fb);
    Ok(a)
}

fn open(path: &str) -> Result<(tokio_uring::fs::File, u64), String> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    let size = f.metadata().map_err(|e| format!("{path}: {e}"))?.len();
    Ok((tokio_uring::fs::File::from_std(f), size))
}

/// xorshift64: offsets that are random enough and cost nothing.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// fio's latency record: mean and percentiles in ns.
fn lat_json(ns: &mut [u64]) -> String {
    ns.sort_unstable();
    let mean = ns.iter().map(|&n| n as f64).sum::<f64>() / ns.len().max(1) as f64;
    let pct: Vec<String> = PERCENTILES
        .iter()
        .map(|p| {
            let at = ((ns.len().saturating_sub(1)) as f64 * p / 100.0).round() as usize;
            format!("\"{p:.6}\": {}", ns.get(at).copied().unwrap_or(0))
        })
        .collect();
    format!("{{\"mean\": {mean:.1}, \"percentile\": {{{}}}}}", pct.join(", "))
}

#[derive(Default)]
struct Record {
    write_ns: Vec<u64>,
    sync_ns: Vec<u64>,
}

async fn run(a: Args) -> Result<String, String> {
    let (fa, sa) = open(&a.a)?;
    let (fb, sb) = open(&a.b)?;
    let blocks = sa.min(sb) / a.block as u64;
    if blocks == 0 {
        return Err("the files are smaller than one block".to_string());
    }
    let (fa, fb) = (Rc::new(fa), Rc::new(fb));
    let measure_from = Instant::now() + Duration::from_secs_f64(a.ramp);
    let end = measure_from + Duration::from_secs_f64(a.runtime);
    let record: Rc<RefCell<Record>> = Rc::default();
    // fio's sequential writer at depth N keeps N consecutive blocks in flight.
    let cursor = Rc::new(RefCell::new(0u64));
    let mut tasks = Vec::new();
    for slot in 0..a.depth {
        let (fa, fb, record, cursor) = (Rc::clone(&fa), Rc::clone(&fb), Rc::clone(&record), Rc::clone(&cursor));
        let (block, sequential, fsync) = (a.block, a.sequential, a.fsync);
        tasks.push(tokio_uring::spawn(async move {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ ((slot as u64 + 1) << 32);
            let mut fill = AlignedBuf::zeroed(block);
            fill.as_full_mut().fill(0x5a);
            let buf = SharedBuf::new(fill);
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    return Ok::<(), String>(());
                }
                let n = if sequential {
                    let mut c = cursor.borrow_mut();
                    let n = *c;
                    *c = (n + 1) % blocks;
                    n
                } else {
                    next(&mut rng) % blocks
                };
                let at = n * block as u64;
                let (ra, rb) = tokio::join!(fa.write_all_at(buf.clone(), at), fb.write_all_at(buf.clone(), at));
                ra.0.map_err(|e| format!("write at {at}: {e}"))?;
                rb.0.map_err(|e| format!("write at {at}: {e}"))?;
                let t1 = Instant::now();
                if fsync {
                    let (ra, rb) = tokio::join!(fa.sync_data(), fb.sync_data());
                    ra.map_err(|e| format!("fdatasync: {e}"))?;
                    rb.map_err(|e| format!("fdatasync: {e}"))?;
                }
                if t0 >= measure_from {
                    let mut r = record.borrow_mut();
                    r.write_ns.push((t1 - t0).as_nanos() as u64);
                    if fsync {
                        r.sync_ns.push(t1.elapsed().as_nanos() as u64);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let mut r = std::mem::take(&mut *record.borrow_mut());
    if r.write_ns.is_empty() {
        return Err("no write finished in the measured time".to_string());
    }
    let n = r.write_ns.len() as f64;
    let io_bytes = r.write_ns.len() as u64 * a.block as u64;
    let sync = if a.fsync {
        format!(", \"sync\": {{\"lat_ns\": {}}}", lat_json(&mut r.sync_ns))
    } else {
        String::new()
    };
    Ok(format!(
        "{{\"jobs\": [{{\"jobname\": \"lockstep\", \"read\": {{\"io_bytes\": 0}}, \"write\": {{\"io_bytes\": {io_bytes}, \
         \"bw_bytes\": {:.0}, \"iops\": {:.1}, \"lat_ns\": {}}}{sync}}}]}}",
        io_bytes as f64 / a.runtime,
        n / a.runtime,
        lat_json(&mut r.write_ns)
    ))
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lockstep_writes: {e}");
            std::process::exit(2);
        }
    };
    match tokio_uring::start(run(a)) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("lockstep_writes: {e}");
            std::process::exit(1);
        }
    }
}
