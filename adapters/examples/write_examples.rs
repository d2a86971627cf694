//! Writes the demo's example files (synthetic) into a directory:
//! `cargo run -p adapters --example write_examples -- DIR [SEED]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: write_examples DIR [SEED]");
        std::process::exit(64);
    };
    let seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(42);
    match adapters::synth::write_examples(std::path::Path::new(&dir), seed) {
        Ok(paths) => paths.iter().for_each(|p| println!("{}", p.display())),
        Err(e) => {
            eprintln!("cannot write examples: {e}");
            std::process::exit(1);
        }
    }
}
