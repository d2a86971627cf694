//! The servers under test, each its own process: killed when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use crate::load::{self, Target};

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Anonymous resident memory of the process (and, for nginx, its
    /// workers), KiB: heap and stacks, without mapped files (the gateway
    /// reads SQLite through a memory map, whose pages come and go with the
    /// file, not with connections).
    pub fn anon_rss_kib(&self) -> anyhow::Result<u64> {
        anon_rss_kib(self.pid())
    }

    /// Waits until `target` answers `path` with 2xx, or fails with the
    /// tail of the process's log.
    pub async fn wait_ready(&mut self, target: &Target, path: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("{} exited with {status}:\n{}", self.name, self.log_tail());
            }
            if let Ok((s, _)) = load::one(target, "GET", path, &[], Bytes::new()).await
                && (200..300).contains(&s)
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(120) {
                anyhow::bail!("{} not ready after 120 s:\n{}", self.name, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Proc {
    /// SIGTERM first, so that a master process (nginx) takes its workers
    /// down with it (killed outright, it left them running, orphaned, after
    /// every run); SIGKILL after 3 s.
    fn drop(&mut self) {
        let termed = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        if termed {
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RssAnon of `pid` plus that of its direct children (nginx workers), KiB.
pub fn anon_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let own = rss_anon(pid)?;
    let mut children = 0;
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        for c in text
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            children += rss_anon(c).unwrap_or(0);
        }
    }
    Ok(own + children)
}

fn rss_anon(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no RssAnon in /proc status")
}

/// What a process has used so far, from `/proc`: CPU time of its threads
/// summed by thread name (`schedstat`, nanoseconds), and the bytes it has
/// read through system calls (`rchar`: files, sockets and pipes alike).
/// Threads that end between two readings take their time with them.
#[derive(Debug, Default)]
pub struct Usage {
    cpu_ns: std::collections::BTreeMap<String, u64>,
    read_bytes: u64,
}

impl Usage {
    /// Reads `pid`'s usage now.
    pub fn of(pid: u32) -> anyhow::Result<Usage> {
        let mut cpu_ns = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let dir = entry?.path();
            // A thread may end between the listing and the reading.
            let (Ok(name), Ok(stat)) = (
                std::fs::read_to_string(dir.join("comm")),
                std::fs::read_to_string(dir.join("schedstat")),
            ) else {
                continue;
            };
            let ns: u64 = stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .context("unreadable /proc schedstat")?;
            *cpu_ns.entry(name.trim().to_owned()).or_default() += ns;
        }
        let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
        let read_bytes = io
            .lines()
            .find_map(|l| l.strip_prefix("rchar:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no rchar in /proc io")?;
        Ok(Usage { cpu_ns, read_bytes })
    }

    /// Since `before`, per request of `requests`: CPU microseconds by
    /// thread name (threads under 0.05 µs left out) and KB read, as one line.
    pub fn per_request(&self, before: &Usage, requests: u64) -> String {
        let n = requests.max(1) as f64;
        let mut total = 0.0;
        let mut threads = Vec::new();
        for (name, ns) in &self.cpu_ns {
            let us =
                ns.saturating_sub(before.cpu_ns.get(name).copied().unwrap_or(0)) as f64 / 1e3 / n;
            total += us;
            if us >= 0.05 {
                threads.push(format!("{name} {us:.1}"));
            }
        }
        let kb = self.read_bytes.saturating_sub(before.read_bytes) as f64 / 1e3 / n;
        format!(
            "per request: CPU {total:.1} µs ({}), read {kb:.1} KB",
            threads.join(", ")
        )
    }
}

/// A free loopback port.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// The echo server (this binary's `echo` subcommand).
pub fn echo(dir: &Path, pki: &Path) -> anyhow::Result<(Proc, SocketAddr, SocketAddr)> {
    let tls = free_addr()?;
    let plain = free_addr()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("echo")
        .arg("--pki")
        .arg(pki)
        .arg("--tls")
        .arg(tls.to_string())
        .arg("--plain")
        .arg(plain.to_string());
    let p = Proc::spawn("echo", cmd, dir.join(format!("echo-{}.log", tls.port())))?;
    Ok((p, tls, plain))
}

/// nginx terminating mTLS with the gateway's certificates and proxying to
/// `upstream` over kept-alive plain HTTP/1.1.
pub fn nginx(dir: &Path, pki: &Path, upstream: SocketAddr) -> anyhow::Result<(Proc, SocketAddr)> {
    let listen = free_addr()?;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp"))?;
    let running_as_root = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let user = if running_as_root {
        "user root root;"
    } else {
        ""
    };
    let p = |f: &str| pki.join(f).display().to_string();
    let tmp = prefix.join("tmp").display().to_string();
    let conf = format!(
        "{user}\nworker_processes auto;\ndaemon off;\npid {pid};\nerror_log {err} warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 600s;\n\
           client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};\n\
           uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n\
           upstream echo {{ server {upstream}; keepalive 256; }}\n\
           server {{\n    listen {listen} ssl;\n\
             ssl_certificate {crt};\n    ssl_certificate_key {key};\n\
             ssl_client_certificate {ca};\n    ssl_verify_client on;\n    ssl_protocols TLSv1.3;\n\
             location / {{\n      proxy_pass http://echo;\n      proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n      proxy_set_header X-Client-DN $ssl_client_s_dn;\n    }}\n  }}\n}}\n",
        pid = prefix.join("nginx.pid").display(),
        err = prefix.join("error.log").display(),
        crt = p("server.crt"),
        key = p("server.key"),
        ca = p("ca.crt"),
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = Command::new(nginx_binary()?);
    cmd.arg("-p").arg(&prefix).arg("-c").arg(&conf_path);
    let proc = Proc::spawn("nginx", cmd, prefix.join("stdout.log"))?;
    Ok((proc, listen))
}

fn nginx_binary() -> anyhow::Result<PathBuf> {
    for c in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(c).exists() {
            return Ok(PathBuf::from(c));
        }
    }
    anyhow::bail!("nginx not found (tests/bench/run installs it with apt-get)")
}

/// How to start a gateway process.
pub struct GatewaySpec<'a> {
    pub bin: &'a Path,
    pub config: &'a Path,
    pub database_url: String,
    pub audit: bool,
    pub log: PathBuf,
}

/// A gateway process on a free port.
pub fn gateway(spec: &GatewaySpec<'_>) -> anyhow::Result<(Proc, SocketAddr)> {
    let listen = free_addr()?;
    let mut cmd = Command::new(spec.bin);
    cmd.arg("serve")
        .arg("--config")
        .arg(spec.config)
        .env("GATEWAY_LISTEN", listen.to_string())
        .env("GATEWAY_DATABASE_URL", &spec.database_url)
        .env("GATEWAY_RATE_LIMIT__ENABLED", "false")
        .env("GATEWAY_LIMITS__IDLE_TIMEOUT_SECS", "600")
        .env(
            "GATEWAY_AUDIT__BENCH_ONLY_DISABLE",
            (!spec.audit).to_string(),
        )
        .env("RUST_LOG", "warn");
    let name = if spec.audit {
        "gateway"
    } else {
        "gateway (audit off)"
    };
    let p = Proc::spawn(name, cmd, spec.log.clone())?;
    Ok((p, listen))
}
