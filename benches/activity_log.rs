//! Micro-benchmarks of the activity log: the decision every write makes
//! (`core::activity_log::ActivityLog::activate`), hot and cold, and the
//! 4 KiB transaction a cold extent costs (`meta::al::AlTransaction`).
//!
//! `cargo bench --bench activity_log` (BENCHMARKS.md, "Micro-benchmarks").

mod common;

use divan::{black_box, Bencher};
use std::collections::HashSet;
use tandem::core::activity_log::ActivityLog;
use tandem::meta::al::{AlTransaction, EXTENTS_PER_BLOCK};
use tandem::meta::AL_EXTENT_SHIFT;

fn main() {
    common::main();
}

const EXTENT_BYTES: u64 = 1 << AL_EXTENT_SHIFT;

/// `al-extents` as configured: a small set, DRBD's default 1237 (two
/// transaction blocks) and the most the ring holds.
const AL_EXTENTS: [u32; 3] = [127, 1237, 8120];

/// A log whose hot set is full: extents `0..capacity`, used in that order.
fn full(al_extents: u32) -> ActivityLog {
    let mut al = ActivityLog::new(al_extents, 0);
    for e in 0..al.capacity() as u64 {
        al.activate(e * EXTENT_BYTES, 4096, HashSet::new);
    }
    al
}

/// A 4 KiB write into an extent already hot: no transaction, only the
/// lookup (a hash map) and the use stamp. The writes visit every hot
/// extent in turn.
#[divan::bench(args = AL_EXTENTS)]
fn hot_extent_hit(bencher: Bencher, al_extents: u32) {
    let mut al = full(al_extents);
    let hot = al.capacity() as u64;
    assert!(al.activate(8192, 4096, HashSet::new).is_none(), "extent 0 is hot");
    let mut i = 0u64;
    bencher.bench_local(|| {
        i = (i + 1) % hot;
        al.activate(black_box(i * EXTENT_BYTES + 8192), 4096, HashSet::new)
    });
}

/// A 4 KiB write into a cold extent with the set full: the least recently
/// used idle extent is evicted and the transaction listing the new set
/// (sorted) is built. Every write goes to an extent never seen before.
#[divan::bench(args = AL_EXTENTS)]
fn cold_extent_with_eviction(bencher: Bencher, al_extents: u32) {
    let mut al = full(al_extents);
    let mut next = al.capacity() as u64;
    let first = al.activate(next * EXTENT_BYTES, 4096, HashSet::new);
    assert!(first.is_some_and(|u| u.evicted == [0]), "the oldest extent goes");
    bencher.bench_local(|| {
        next += 1;
        al.activate(black_box(next * EXTENT_BYTES), 4096, HashSet::new)
    });
}

/// A full transaction block (1015 extents) as the 4 KiB written to the
/// ring, crc32c included.
fn full_block() -> AlTransaction {
    AlTransaction {
        tr_number: 1 << 20,
        total: EXTENTS_PER_BLOCK as u32,
        context_start: 0,
        extents: (0..EXTENTS_PER_BLOCK as u32).map(|e| e * 7).collect(),
    }
}

#[divan::bench]
fn transaction_encode(bencher: Bencher) {
    let t = full_block();
    bencher.bench(|| black_box(&t).encode());
}

/// The same block read back and checked (attach after a crash reads the
/// whole ring).
#[divan::bench]
fn transaction_decode(bencher: Bencher) {
    let block = full_block().encode();
    bencher.bench(|| AlTransaction::decode(black_box(&block[..])).expect("valid"));
}
