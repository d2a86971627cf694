//! The listener: TCP accept, TLS handshake with a timeout and a connection
//! cap, HTTP/1.1 and HTTP/2 with header-read and idle timeouts, reload on
//! SIGHUP or file change, graceful shutdown.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::app::{AppState, ConnInfo};
use crate::tls::{HandshakeFailure, classify_handshake_error, peer_certificate};

/// Something to tell about refused handshakes (the audit log listens).
pub type HandshakeObserver = Arc<dyn Fn(SocketAddr, &HandshakeFailure) + Send + Sync>;

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops
/// accepting, asks open connections to finish, and waits for them (at most
/// `drain` long).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    router: axum::Router,
    on_refused: Option<HandshakeObserver>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let limits = state.config.limits.clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let conn_shutdown = CancellationToken::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shutdown.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(state.tls.current());
        let state = state.clone();
        let router = router.clone();
        let on_refused = on_refused.clone();
        let conn_shutdown = conn_shutdown.clone();
        let limits = limits.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let handshake = Duration::from_millis(limits.handshake_timeout_ms);
            let tls = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let failure = classify_handshake_error(&e);
                    refused(&state, &on_refused, peer, failure);
                    return;
                }
                Err(_) => {
                    let failure = HandshakeFailure {
                        reason: "timeout",
                        fingerprint: None,
                    };
                    refused(&state, &on_refused, peer, failure);
                    return;
                }
            };
            let info = ConnInfo {
                peer,
                certificate: peer_certificate(tls.get_ref().1),
            };
            state.metrics.connections.inc();
            serve_connection(tls, info, router, &limits, conn_shutdown).await;
            state.metrics.connections.dec();
        });
    }
    drop(listener);
    tracker.close();
    conn_shutdown.cancel();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!(
            open = tracker.len(),
            "connections still open after the drain period; closing them"
        );
    }
}

fn refused(
    state: &AppState,
    observer: &Option<HandshakeObserver>,
    peer: SocketAddr,
    failure: HandshakeFailure,
) {
    state
        .metrics
        .handshake_failures
        .with_label_values(&[failure.reason])
        .inc();
    tracing::info!(
        peer = %peer,
        reason = failure.reason,
        fingerprint = failure.fingerprint.as_deref().unwrap_or("-"),
        "TLS handshake refused"
    );
    if let Some(o) = observer {
        o(peer, &failure);
    }
}

async fn serve_connection(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    info: ConnInfo,
    router: axum::Router,
    limits: &crate::config::Limits,
    shutdown: CancellationToken,
) {
    let last_activity = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let io = TokioIo::new(ActivityIo {
        inner: tls,
        started,
        last: last_activity.clone(),
    });
    let service = TowerToHyperService::new(router.map_request(
        move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(info.clone());
            req
        },
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let tick = (idle / 4).max(Duration::from_millis(100));
    let mut closing = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep(tick), if !closing => {
                let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
                if started.elapsed().saturating_sub(last) > idle {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Records the time of the last read or write, for the idle timeout.
struct ActivityIo<T> {
    inner: T,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl<T> ActivityIo<T> {
    fn touch(&self) {
        self.last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Reloads TLS material and the registry on SIGHUP and, every
/// `interval`, when a watched file changed.
pub fn spawn_reloader(
    state: AppState,
    interval: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let poll = !interval.is_zero();
        let mut ticker = tokio::time::interval(if poll {
            interval
        } else {
            Duration::from_secs(3600)
        });
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hup_fut = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hup_fut = std::future::pending::<()>();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = hup_fut => { state.reload(); }
                _ = ticker.tick() => {
                    if poll && state.tls.changed() {
                        state.reload();
                    }
                    state.rate_limits.shrink();
                }
            }
        }
    })
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
    }
}
