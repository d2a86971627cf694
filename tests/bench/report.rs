//! Results: the figures, the ratios held against the goals, and their
//! terminal, JSON and Markdown forms.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::load::Outcome;
use crate::scenarios::{Settings, median};

/// One figure measured over several rounds.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    pub unit: String,
    pub rounds: Vec<f64>,
    pub median: f64,
    /// Latency quantiles of the median round (throughput scenarios).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    pub errors: u64,
    #[serde(skip)]
    latencies: Vec<(f64, f64, f64)>,
}

impl Series {
    pub fn new(unit: &str) -> Self {
        Series {
            unit: unit.to_owned(),
            rounds: Vec::new(),
            median: 0.0,
            p50_ms: None,
            p99_ms: None,
            errors: 0,
            latencies: Vec::new(),
        }
    }

    pub fn push(&mut self, v: f64) {
        self.rounds.push(v);
        self.median = median(&self.rounds);
    }

    fn finish(&mut self) {
        self.median = median(&self.rounds);
        if let Some(&(_, p50, p99)) = self.latencies.iter().min_by(|a, b| {
            (a.0 - self.median)
                .abs()
                .total_cmp(&(b.0 - self.median).abs())
        }) {
            self.p50_ms = Some(p50);
            self.p99_ms = Some(p99);
        }
    }
}

/// Resident memory around opening idle connections.
#[derive(Clone, Debug, Serialize)]
pub struct IdleMemory {
    pub connections: usize,
    pub before_kib: u64,
    pub after_kib: u64,
    pub per_connection_kib: f64,
}

/// A ratio (or absolute figure) held against its goal.
#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// `>= x` or `<= x`.
    pub goal: String,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub mode: &'static str,
    pub cores: usize,
    pub connections: usize,
    pub handshake_workers: usize,
    pub seconds_per_round: u64,
    pub rounds: usize,
    pub persons: u64,
    pub match_ids: usize,
    pub keep_alive: BTreeMap<String, Series>,
    pub handshake: BTreeMap<String, Series>,
    pub match_seconds: BTreeMap<String, Series>,
    pub publish: BTreeMap<String, Series>,
    pub idle_memory: BTreeMap<String, IdleMemory>,
    pub goals: Vec<Goal>,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
    pub elapsed_secs: f64,
}

impl Results {
    pub fn new(s: &Settings) -> Self {
        Results {
            mode: if s.smoke { "smoke" } else { "full" },
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            connections: s.conns,
            handshake_workers: s.handshake_workers,
            seconds_per_round: s.seconds.unwrap_or(if s.smoke { 1 } else { 10 }),
            rounds: s.rounds.unwrap_or(3),
            persons: s
                .persons
                .unwrap_or(if s.smoke { 20_000 } else { 1_000_000 }),
            match_ids: s.match_ids.unwrap_or(if s.smoke { 2_000 } else { 100_000 }),
            keep_alive: BTreeMap::new(),
            handshake: BTreeMap::new(),
            match_seconds: BTreeMap::new(),
            publish: BTreeMap::new(),
            idle_memory: BTreeMap::new(),
            goals: Vec::new(),
            notes: Vec::new(),
            errors: Vec::new(),
            elapsed_secs: 0.0,
        }
    }

    /// Records one round of a throughput scenario (`group` is `keep_alive`
    /// or `handshake`).
    pub fn add_throughput(&mut self, group: &str, name: &str, mut out: Outcome) {
        let unit = if group == "handshake" {
            "handshakes/s"
        } else {
            "req/s"
        };
        let rate = out.rate();
        let p50 = out.latency_ms(0.5);
        let p99 = out.latency_ms(0.99);
        if out.errors > 0 {
            self.errors.push(format!(
                "{group} {name}: {} failed requests, first: {}",
                out.errors,
                out.first_error.as_deref().unwrap_or("?")
            ));
        }
        let map = if group == "handshake" {
            &mut self.handshake
        } else {
            &mut self.keep_alive
        };
        let s = map
            .entry(name.to_owned())
            .or_insert_with(|| Series::new(unit));
        s.rounds.push(rate);
        s.errors += out.errors;
        s.latencies.push((rate, p50, p99));
    }

    /// Medians, then the goals.
    pub fn finish(&mut self) {
        for m in [
            &mut self.keep_alive,
            &mut self.handshake,
            &mut self.match_seconds,
            &mut self.publish,
        ] {
            for s in m.values_mut() {
                s.finish();
            }
        }
        let ka = |n: &str| self.keep_alive.get(n).map(|s| s.median);
        let hs = |n: &str| self.handshake.get(n).map(|s| s.median);
        let mut goals = Vec::new();
        let mut ratio = |name: &str, a: Option<f64>, b: Option<f64>, min: f64| {
            if let (Some(a), Some(b)) = (a, b) {
                let v = a / b.max(1e-9);
                goals.push(Goal {
                    name: name.to_owned(),
                    value: v,
                    unit: "ratio".into(),
                    goal: format!(">= {min}"),
                    met: v >= min,
                });
            }
        };
        ratio(
            "gateway ÷ echo (keep-alive)",
            ka("gateway"),
            ka("echo"),
            0.6,
        );
        ratio(
            "gateway ÷ nginx (keep-alive)",
            ka("gateway"),
            ka("nginx"),
            1.2,
        );
        ratio(
            "gateway ÷ gateway without audit",
            ka("gateway"),
            ka("gateway_audit_off"),
            0.8,
        );
        ratio(
            "handshakes gateway (/healthz) ÷ echo",
            hs("gateway"),
            hs("echo"),
            0.9,
        );
        ratio(
            "publish validated ÷ unvalidated",
            self.publish.get("validated").map(|s| s.median),
            self.publish.get("unvalidated").map(|s| s.median),
            0.9,
        );
        for (backend, max) in [("sqlite", 0.5), ("postgres", 1.0)] {
            if let Some(s) = self.match_seconds.get(backend) {
                goals.push(Goal {
                    name: format!("match {} IDs, {backend}", self.match_ids),
                    value: s.median,
                    unit: "s".into(),
                    goal: format!("<= {max}"),
                    met: s.median <= max,
                });
            }
        }
        if let Some(m) = self.idle_memory.get("gateway") {
            goals.push(Goal {
                name: "memory per idle connection (gateway)".into(),
                value: m.per_connection_kib,
                unit: "KiB".into(),
                goal: "<= 32".into(),
                met: m.per_connection_kib <= 32.0,
            });
        }
        self.goals = goals;
    }

    fn figures(&self) -> Vec<[String; 4]> {
        let mut rows = Vec::new();
        let mut series = |group: &str, m: &BTreeMap<String, Series>| {
            for (name, s) in m {
                let lat = match (s.p50_ms, s.p99_ms) {
                    (Some(a), Some(b)) => format!("p50 {a:.2} ms, p99 {b:.2} ms"),
                    _ => String::new(),
                };
                let rounds: Vec<String> = s.rounds.iter().map(|r| fmt_num(*r)).collect();
                rows.push([
                    format!("{group}: {name}"),
                    format!("{} {}", fmt_num(s.median), s.unit),
                    rounds.join(" / "),
                    lat,
                ]);
            }
        };
        series("keep-alive", &self.keep_alive);
        series("handshake per request", &self.handshake);
        series("match", &self.match_seconds);
        series("publish", &self.publish);
        for (name, m) in &self.idle_memory {
            rows.push([
                format!("idle connections: {name}"),
                format!("{:.1} KiB/conn", m.per_connection_kib),
                format!(
                    "{} conns, anonymous RSS {} → {} KiB",
                    m.connections, m.before_kib, m.after_kib
                ),
                String::new(),
            ]);
        }
        rows
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{} run on {} cores: {} keep-alive connections, {} handshake loops, {} s × {} rounds (median)",
            self.mode,
            self.cores,
            self.connections,
            self.handshake_workers,
            self.seconds_per_round,
            self.rounds
        );
        let rows = self.figures();
        let w0 = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r[1].chars().count()).max().unwrap_or(0);
        let w2 = rows.iter().map(|r| r[2].chars().count()).max().unwrap_or(0);
        for r in &rows {
            let _ = writeln!(
                out,
                "  {:<w0$}  {:>w1$}  {:<w2$}  {}",
                r[0], r[1], r[2], r[3]
            );
        }
        let _ = writeln!(out, "\ngoals:");
        for g in &self.goals {
            let _ = writeln!(
                out,
                "  {:<40} {:>9.2} {:<5} goal {:<7} {}",
                g.name,
                g.value,
                g.unit,
                g.goal,
                if g.met { "met" } else { "MISSED" }
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        for e in &self.errors {
            let _ = writeln!(out, "ERROR: {e}");
        }
        out
    }

    /// The Markdown table (README's Performance section).
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} run, {} cores, {} keep-alive connections, {} handshake loops, {} s × {} interleaved rounds, medians; {} persons, {} IDs per match.\n",
            self.mode,
            self.cores,
            self.connections,
            self.handshake_workers,
            self.seconds_per_round,
            self.rounds,
            self.persons,
            self.match_ids
        );
        let _ = writeln!(
            out,
            "| scenario | median | rounds | latency |\n|---|---:|---|---|"
        );
        for r in self.figures() {
            let _ = writeln!(out, "| {} | {} | {} | {} |", r[0], r[1], r[2], r[3]);
        }
        let _ = writeln!(out, "\n| goal | figure | target | |\n|---|---:|---|---|");
        for g in &self.goals {
            let _ = writeln!(
                out,
                "| {} | {:.2} {} | {} | {} |",
                g.name,
                g.value,
                g.unit,
                g.goal,
                if g.met { "met" } else { "**missed**" }
            );
        }
        out
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
