//! Runs the swap benchmark:
//! `bench_swap [DIR] [SIZE_MIB,...] [direct|buffered] [REPEATS] [CHUNK_MIB]`.
//! Example: `cargo run --release -p gpufn-swap --example bench_swap -- /var/tmp/swapbench 256,1024`.

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "./swap-bench".into());
    let mut config = gpufn_swap::bench::BenchConfig::new(&dir);
    if let Some(sizes) = args.next() {
        config.sizes = sizes
            .split(',')
            .map(|s| s.trim().parse::<u64>().expect("sizes are MiB numbers") << 20)
            .collect();
    }
    if args.next().as_deref() == Some("buffered") {
        config.direct_io = false;
    }
    if let Some(repeats) = args.next() {
        config.repeats = repeats.parse().expect("REPEATS is a number");
    }
    if let Some(chunk) = args.next() {
        config.chunk_size = chunk.parse::<usize>().expect("CHUNK_MIB is a number") << 20;
    }
    match gpufn_swap::bench::run(&config) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("swap benchmark failed: {e}");
            std::process::exit(1);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
