//! `gwbench`: the benchmark harness behind `tests/bench/run`.
//!
//! `gwbench run` starts every server under test as its own process — the
//! bare axum + rustls echo, nginx proxying to it, the gateway with and
//! without its audit log — and drives them with the same load client
//! (this process), the same client certificate, keep-alive and
//! concurrency, rounds interleaved; then the batch match, the publish
//! comparison and the idle-connection memory. It prints a table and writes
//! it as JSON and Markdown. `gwbench echo` is the echo server itself.

mod echo;
mod load;
mod procs;
mod report;
mod scenarios;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmark harness of the data-sharing gateway")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark scenarios.
    Run(scenarios::Settings),
    /// Serve the bare mTLS echo (used by `run`).
    Echo {
        #[arg(long)]
        pki: PathBuf,
        #[arg(long)]
        tls: SocketAddr,
        #[arg(long)]
        plain: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Echo { pki, tls, plain } => runtime.block_on(echo::serve(&pki, tls, plain)),
        Cmd::Run(settings) => runtime.block_on(scenarios::run(settings)),
    }
}
