//! The load client: HTTP/1.1 over mutual TLS with hyper and rustls, the
//! same for every scenario so the figures compare. Keep-alive mode holds
//! `conns` connections and sends the next request as soon as the previous
//! answer is read (closed loop); handshake mode opens a fresh TCP + TLS
//! connection (no session resumption) for every request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// Where and what to request.
#[derive(Clone)]
pub struct Target {
    /// The server's address.
    pub addr: SocketAddr,
    /// Client TLS configuration (trust and client certificate).
    pub tls: Arc<rustls::ClientConfig>,
    /// Request paths, used round-robin.
    pub paths: Arc<Vec<String>>,
    /// Extra request headers.
    pub headers: Arc<Vec<(&'static str, String)>>,
}

impl Target {
    pub fn new(
        addr: SocketAddr,
        tls: rustls::ClientConfig,
        paths: Vec<String>,
        headers: Vec<(&'static str, String)>,
    ) -> Self {
        Target {
            addr,
            tls: Arc::new(tls),
            paths: Arc::new(paths),
            headers: Arc::new(headers),
        }
    }

    /// The same target without TLS session resumption: every connection
    /// makes a full handshake.
    pub fn without_resumption(&self) -> Self {
        let mut tls = (*self.tls).clone();
        tls.resumption = rustls::client::Resumption::disabled();
        Target {
            tls: Arc::new(tls),
            ..self.clone()
        }
    }

    fn request(&self, i: usize, close: bool) -> hyper::Request<Full<Bytes>> {
        let path = &self.paths[i % self.paths.len()];
        let mut b = hyper::Request::get(path.as_str()).header("host", "localhost");
        for (k, v) in self.headers.iter() {
            b = b.header(*k, v.as_str());
        }
        if close {
            b = b.header("connection", "close");
        }
        b.body(Full::new(Bytes::new()))
            .expect("request from valid parts")
    }
}

/// One connection, TLS and HTTP/1.1, ready to send requests.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to `target`, handshakes TLS, starts HTTP/1.1.
    pub async fn open(target: &Target) -> anyhow::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost")?;
        let tls = TlsConnector::from(target.tls.clone())
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender })
    }

    /// Sends one request and returns the status and the whole body.
    pub async fn send_full(
        &mut self,
        req: hyper::Request<Full<Bytes>>,
    ) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    /// Sends one request and reads the whole answer; returns the status
    /// and the body length.
    pub async fn send(&mut self, req: hyper::Request<Full<Bytes>>) -> anyhow::Result<(u16, usize)> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body.len()))
    }
}

/// Sends one request on a new connection (for readiness checks and
/// single large requests); returns the status and the body.
pub async fn one(
    target: &Target,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    let mut conn = Conn::open(target).await?;
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    conn.sender.ready().await?;
    let resp = conn.sender.send_request(b.body(Full::new(body))?).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// What one load run measured.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Answers with a 2xx status inside the measured window.
    pub ok: u64,
    /// Answers with another status, or failed requests.
    pub errors: u64,
    /// The measured window.
    pub elapsed: Duration,
    /// Latencies of successful requests, microseconds.
    pub latencies_us: Vec<u32>,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile of latency in milliseconds.
    pub fn latency_ms(&mut self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }

    /// Counts one request's result; `false` when it failed below HTTP
    /// (the connection is unusable).
    fn record(&mut self, sent: Instant, result: anyhow::Result<(u16, usize)>) -> bool {
        match result {
            Ok((status, _)) if (200..300).contains(&status) => {
                self.ok += 1;
                self.latencies_us
                    .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                true
            }
            Ok((status, _)) => {
                self.errors += 1;
                self.first_error
                    .get_or_insert_with(|| format!("HTTP {status}"));
                true
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
                false
            }
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Keep-alive load: `conns` connections, each sending requests back to
/// back for `duration` after all connections are open.
pub async fn keep_alive(
    target: &Target,
    conns: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(Conn::open(target).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (n, mut conn) in opened.into_iter().enumerate() {
        let target = target.clone();
        tasks.spawn(async move {
            let mut out = Outcome::default();
            let mut i = n * 7919;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let result = conn.send(target.request(i, false)).await;
                if !out.record(sent, result) {
                    // The connection is gone; open another one.
                    match Conn::open(&target).await {
                        Ok(c) => conn = c,
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                i += 1;
            }
            out
        });
    }
    gather(tasks, start).await
}

/// Handshake load: `workers` concurrent loops, each opening a new
/// connection (full mTLS handshake) for every request.
pub async fn handshakes(
    target: &Target,
    workers: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let target = target.without_resumption();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..workers {
        let target = target.clone();
        tasks.spawn(async move {
            let mut out = Outcome::default();
            let mut i = n * 7919;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let r = async {
                    let mut c = Conn::open(&target).await?;
                    c.send(target.request(i, true)).await
                }
                .await;
                out.record(sent, r);
                i += 1;
            }
            out
        });
    }
    gather(tasks, start).await
}

/// Waits for every worker and sums their outcomes over the window since
/// `start`.
async fn gather(
    mut tasks: tokio::task::JoinSet<Outcome>,
    start: Instant,
) -> anyhow::Result<Outcome> {
    let mut total = Outcome::default();
    while let Some(r) = tasks.join_next().await {
        total.merge(r?);
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

/// Opens `n` connections, sends one request on each and keeps them open
/// (idle) until the returned vector is dropped.
pub async fn hold_idle(target: &Target, n: usize) -> anyhow::Result<Vec<Conn>> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Conn::open(target)
            .await
            .with_context(|| format!("opening idle connection {}", i + 1))?;
        let (status, _) = c.send(target.request(i, false)).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "idle connection {i}: HTTP {status}"
        );
        held.push(c);
    }
    Ok(held)
}
