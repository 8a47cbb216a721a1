//! What the micro-benchmark binaries share (divan; `harness = false`).

/// The entry point of every micro-benchmark binary.
///
/// `scripts/test.sh` runs every target, benches included, as
/// `cargo test --all-targets -- --test-threads=N`, so that each benchmark
/// runs once as a smoke test. divan does not know libtest's
/// `--test-threads` and would refuse the whole command line; in that case
/// the benchmarks run once each without parsing it.
pub fn main() {
    if std::env::args().any(|a| a.starts_with("--test-threads")) {
        divan::Divan::default().test_benches();
    } else {
        divan::main();
    }
}
