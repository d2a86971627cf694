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
    /// Load one server, for profiling: keep-alive (or handshake per
    /// request) GETs of the given paths, round-robin.
    Load {
        #[arg(long)]
        addr: SocketAddr,
        /// PKI folder (ca.crt, CLIENT.crt, CLIENT.key).
        #[arg(long)]
        pki: PathBuf,
        #[arg(long, default_value = "education")]
        client: String,
        /// Request path; repeat for several; `@FILE` reads one ID per line
        /// and requests `/v1/persons/ID`.
        #[arg(long, required = true)]
        path: Vec<String>,
        #[arg(long, default_value = "student-aid")]
        purpose: String,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        handshake: bool,
        /// Also report, per request, the CPU time of this process's threads
        /// (the server's pid; by thread name) and the bytes it read, from
        /// /proc, over the run.
        #[arg(long)]
        pid: Option<u32>,
    },
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
        Cmd::Load {
            addr,
            pki,
            client,
            path,
            purpose,
            conns,
            seconds,
            handshake,
            pid,
        } => runtime.block_on(async move {
            let mut paths = Vec::new();
            for p in path {
                match p.strip_prefix('@') {
                    Some(file) => paths.extend(
                        std::fs::read_to_string(file)?
                            .lines()
                            .filter(|l| !l.is_empty())
                            .map(|id| format!("/v1/persons/{id}")),
                    ),
                    None => paths.push(p),
                }
            }
            let tls = gateway_tests::client_tls_config(&pki, Some(&client));
            let t = load::Target::new(addr, tls, paths, vec![("x-purpose", purpose)]);
            let d = std::time::Duration::from_secs(seconds);
            let before = pid.map(procs::Usage::of).transpose()?;
            let mut out = if handshake {
                load::handshakes(&t, conns, d).await?
            } else {
                load::keep_alive(&t, conns, d).await?
            };
            let (p50, p99) = (out.latency_ms(0.5), out.latency_ms(0.99));
            println!(
                "{:.0} req/s, {} errors{}, p50 {p50:.2} ms, p99 {p99:.2} ms",
                out.rate(),
                out.errors,
                out.first_error
                    .as_deref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default(),
            );
            if let (Some(pid), Some(before)) = (pid, before) {
                let after = procs::Usage::of(pid)?;
                println!("{}", after.per_request(&before, out.ok + out.errors));
            }
            Ok(())
        }),
    }
}
