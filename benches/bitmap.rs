//! Micro-benchmarks of the out-of-sync bitmap (`meta::bitmap::Bitmap`, the
//! one `core::Node` keeps in memory) at the size of a 1 TiB device: 2^28
//! bits of 4 KiB blocks, 32 MiB of words.
//!
//! `cargo bench --bench bitmap` (BENCHMARKS.md, "Micro-benchmarks").

mod common;

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use tandem::meta::bitmap::Bitmap;

fn main() {
    common::main();
}

/// 1 TiB of data in 4 KiB blocks.
const BITS_1TIB: u64 = (1 << 40) / 4096;

/// Runs set in the sparse bitmap: a Secondary that missed 1,000 scattered
/// writes of 64 KiB.
const SPARSE_RUNS: u64 = 1000;

/// A clear 1 TiB bitmap as attach leaves it: every page loaded from disk.
/// (`Bitmap::new` alone hands out zeroed memory that the kernel maps only
/// when first written, and the benchmarks would time those page faults, or
/// scan one shared zero page that is always in cache.)
fn loaded() -> Bitmap {
    let mut b = Bitmap::new(BITS_1TIB);
    let zeroes = [0u8; 4096];
    for page in 0..b.pages() {
        b.load_page(page, &zeroes);
    }
    b
}

/// A 1 TiB bitmap with [`SPARSE_RUNS`] runs of 16 blocks spread evenly.
fn sparse() -> Bitmap {
    let mut b = loaded();
    let stride = BITS_1TIB / SPARSE_RUNS;
    for i in 0..SPARSE_RUNS {
        b.set_range(i * stride + stride / 2, 16);
    }
    b.take_dirty_pages();
    b
}

/// Set then clear `blocks` bits, each time at the next place in the 1 TiB
/// bitmap (so the words touched are not always in cache): a degraded write
/// that marks its blocks, then the resync that clears them. Both calls
/// change every bit, so neither takes the nothing-changed shortcut.
/// 1 block = a 4 KiB write, 64 = a 256 KiB resync chunk, 1024 = a 4 MiB
/// activity-log extent.
#[divan::bench(args = [1, 64, 1024])]
fn set_then_clear_range(bencher: Bencher, blocks: u64) {
    let mut b = loaded();
    let stride = 4096 + blocks;
    let mut at = 0;
    bencher.bench_local(|| {
        at = (at + stride) % (BITS_1TIB - blocks);
        b.set_range(black_box(at), blocks);
        b.clear_range(black_box(at), blocks)
    });
}

/// Clearing bits that are already clear: what every write both replicas
/// acknowledged does while connected and in sync.
#[divan::bench]
fn clear_range_already_clear(bencher: Bencher) {
    let mut b = loaded();
    bencher.bench_local(|| b.clear_range(black_box(123_456_789), 1));
}

/// The whole 1 TiB marked, then cleared: `invalidate` (every block out of
/// sync) and, in one call here, what a full resync clears chunk by chunk.
#[divan::bench(sample_count = 20)]
fn set_then_clear_all(bencher: Bencher) {
    let mut b = loaded();
    bencher.counter(ItemsCount::new(BITS_1TIB)).bench_local(|| {
        b.set_range(0, BITS_1TIB);
        b.clear_range(0, BITS_1TIB)
    });
}

/// The next set bit when the only one is the last: a scan of all 32 MiB
/// (the resync cursor's worst case, and `resync-oos` with nothing left).
#[divan::bench(sample_count = 20)]
fn find_next_set_scans_32_mib(bencher: Bencher) {
    let mut b = loaded();
    b.set_range(BITS_1TIB - 1, 1);
    bencher
        .counter(ItemsCount::new(BITS_1TIB))
        .bench(|| b.find_next_set(black_box(0)));
}

/// The resync source's walk: from block 0, jump to each set bit in turn
/// through the sparse bitmap (1,000 runs), to the end.
#[divan::bench(sample_count = 20)]
fn find_next_set_walks_sparse(bencher: Bencher) {
    let b = sparse();
    bencher.bench(|| {
        let mut found = 0u64;
        let mut at = 0;
        while let Some(bit) = b.find_next_set(black_box(at)) {
            found += 1;
            at = bit + 1;
        }
        found
    });
}

/// Counting what the sparse bitmap holds run by run: what a connect sends
/// as `Bitmap` messages (`Node::bitmap_runs`). The total weight itself is
/// kept up to date on every change, so `weight()` is a field read.
#[divan::bench(sample_count = 20)]
fn count_set_runs_sparse(bencher: Bencher) {
    let b = sparse();
    bencher.bench(|| black_box(&b).iter_set_runs().map(|(_, len)| len).sum::<u64>());
}

/// After one degraded 4 KiB write: the dirty page it left, as the 4 KiB
/// the shell writes (`Node::take_bitmap_pages`). The stride is odd, so it
/// reaches every bit once before any repeats: each write sets a fresh one.
#[divan::bench]
fn dirty_page_after_one_write(bencher: Bencher) {
    let mut b = loaded();
    let mut at = 0;
    bencher.bench_local(|| {
        at = (at + 40_961) % BITS_1TIB;
        b.set_range(at, 1);
        b.take_dirty_pages()
            .into_iter()
            .map(|p| (p, Box::new(b.page_bytes(p))))
            .collect::<Vec<_>>()
    });
}
