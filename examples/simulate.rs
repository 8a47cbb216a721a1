//! Run many seeds of the deterministic simulation:
//! `cargo run --release --example simulate -- --seeds 100000 [--from N]`.
//! Prints totals, and the first failing seed with its trace.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (seeds, from) = (arg("--seeds", 1000), arg("--from", 1));
    let mut total = tandem::sim::Report::default();
    for seed in from..from + seeds {
        match tandem::sim::run(seed) {
            Ok(r) => total.add(&r),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        if (seed - from + 1) % 1000 == 0 {
            eprintln!("{} seeds: {total:?}", seed - from + 1);
        }
    }
    println!("{seeds} seeds from {from}: {total:?}");
}
