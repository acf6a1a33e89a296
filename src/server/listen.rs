//! The accept loop, in place of `axum::serve`, so the server can protect itself: a deadline
//! for request headers, an idle timeout, a cap on open connections (the idlest one is closed to
//! make room, so a flood of idle connections cannot lock out `/healthz`), a bound on what one
//! connection buffers, and a shutdown that ends within its drain time whatever clients do.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;
use tracing::{debug, warn};

use crate::metrics::{ConnectionEnd, Metrics};

/// What one connection, and all of them together, may take.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request's headers must arrive within this, from the connection's start or the
    /// previous response.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and nothing read for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections at most; at the cap the idlest is closed for a new one.
    pub max_connections: usize,
    /// Requests handled at once at most (health probes aside); more are answered 503.
    pub max_requests: usize,
    /// The most a connection buffers while reading a request head (hyper's read buffer).
    pub max_header_bytes: usize,
    /// After the stop signal, how long requests in flight may take before their connections
    /// are closed.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_requests: 256,
            max_header_bytes: 16 * 1024,
            drain: Duration::from_secs(2),
        }
    }
}

impl Limits {
    /// These limits with `max_connections` lowered to fit the open-files limit, keeping
    /// descriptors for `max_concurrent_runs` runs of `fds_per_run` each (see `fit_to_fd_limit`).
    pub fn fitted(mut self, max_concurrent_runs: usize, fds_per_run: u64) -> Self {
        self.max_connections = fit_to_fd_limit(
            self.max_connections,
            reserved_fds(max_concurrent_runs, fds_per_run),
        );
        self
    }
}

/// File descriptors kept free of HTTP connections: `per_run` for each run (a local process
/// holds its pipes, a probe its socket; a pod holds none, its API calls share connections),
/// and 64 for the state journal, the API server's connections and the listener.
pub fn reserved_fds(max_concurrent_runs: usize, per_run: u64) -> u64 {
    let runs = if max_concurrent_runs == 0 {
        1000
    } else {
        max_concurrent_runs.min(10_000)
    };
    64 + per_run * runs as u64
}

/// Raises the soft open-files limit to the hard one (as Go's runtime does) and caps
/// `max_connections` so that `reserve` descriptors always stay free for runs: clients can never
/// starve the scheduler. Returns the cap in force.
pub fn fit_to_fd_limit(max_connections: usize, reserve: u64) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return max_connections;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    };
    let cap = connection_cap(max_connections, soft, reserve);
    if cap < max_connections {
        warn!(
            open_files = soft,
            reserved = reserve,
            "the open-files limit allows {cap} HTTP connections, not {max_connections}: {reserve} descriptors stay reserved for runs"
        );
    }
    cap
}

/// The connections allowed with `soft` descriptors of which `reserve` stay for runs. The
/// reserve is never more than half the limit: a small limit with many allowed runs must still
/// leave the server some connections.
fn connection_cap(max_connections: usize, soft: u64, reserve: u64) -> usize {
    let reserve = reserve.min(soft / 2);
    let room = soft.saturating_sub(reserve) as usize;
    max_connections.min(room).max(8)
}

/// What the accept loop knows of one connection.
#[derive(Debug)]
struct Conn {
    /// Requests in flight.
    busy: AtomicUsize,
    /// Last byte read or response finished, in ms since `Registry::epoch`.
    active_ms: AtomicU64,
    close: Notify,
    opened: Instant,
}

#[derive(Debug)]
struct Registry {
    epoch: Instant,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self, c: &Conn) {
        c.active_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Closes the idlest connection with no request in flight, if there is one. It leaves the
    /// registry at once, so a burst of accepts evicts one connection each, not the same one
    /// again before its task has run.
    fn evict_idlest(&self) -> bool {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let idlest = conns
            .iter()
            .filter(|(_, c)| c.busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|(_, c)| (c.active_ms.load(Ordering::Relaxed), c.opened))
            .map(|(id, _)| *id);
        match idlest.and_then(|id| conns.remove(&id)) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The connection's socket, noting when it last read something.
struct Watched {
    io: TcpStream,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.registry.touch(&self.conn);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    // Vectored writes keep hyper from copying each response body into its own buffer (it
    // flattens for streams that cannot write vectored): a 15 MB `/metrics` is sent as it is.
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `stop` resolves; then closes idle connections, lets
/// requests in flight finish for `limits.drain`, and closes whatever is left.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        conns: Mutex::default(),
    });
    let stopping = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let mut next_id: u64 = 0;
    let mut stop = pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            a = listener.accept() => a,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and the like: the reserve keeps runs going; back off instead of
                // spinning on an accept that keeps failing.
                debug!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let open = registry
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        if open >= limits.max_connections {
            if registry.evict_idlest() {
                metrics.connection_closed(ConnectionEnd::Evicted);
            } else {
                metrics.connection_closed(ConnectionEnd::Refused);
                drop(stream);
                continue;
            }
        }
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            active_ms: AtomicU64::new(registry.now_ms()),
            close: Notify::new(),
            opened: Instant::now(),
        });
        registry
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, conn.clone());
        metrics.connection_opened();
        tasks.spawn(connection(
            Watched {
                io: stream,
                conn: conn.clone(),
                registry: registry.clone(),
            },
            app.clone(),
            limits.clone(),
            stopping.clone(),
            metrics.clone(),
            id,
        ));
    }
    drop(listener);
    stopping.notify_waiters();
    let drained = tokio::time::timeout(limits.drain, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            left = tasks.len(),
            "closing connections still open after the drain"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

async fn connection(
    io: Watched,
    app: Router,
    limits: Limits,
    stopping: Arc<Notify>,
    metrics: Arc<Metrics>,
    id: u64,
) {
    let conn = io.conn.clone();
    let registry = io.registry.clone();
    let stopped = stopping.notified();
    let svc_conn = conn.clone();
    let svc_registry = registry.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (c, r) = (svc_conn.clone(), svc_registry.clone());
        c.busy.fetch_add(1, Ordering::Relaxed);
        let app = app.clone();
        async move {
            let resp = app.oneshot(req.map(axum::body::Body::new)).await;
            r.touch(&c);
            c.busy.fetch_sub(1, Ordering::Relaxed);
            resp
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let http = builder.serve_connection(TokioIo::new(io), service);
    let mut http = pin!(http);
    let mut stopped = pin!(stopped);
    let mut shutting_down = false;
    let end = loop {
        let idle_for = Duration::from_millis(
            registry
                .now_ms()
                .saturating_sub(conn.active_ms.load(Ordering::Relaxed)),
        );
        let idle_left = limits.idle_timeout.saturating_sub(idle_for);
        tokio::select! {
            r = http.as_mut() => {
                if let Err(e) = r {
                    debug!("connection: {e}");
                }
                break None;
            }
            _ = conn.close.notified() => break Some(ConnectionEnd::Evicted),
            _ = &mut stopped, if !shutting_down => {
                shutting_down = true;
                http.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(idle_left) => {
                let quiet = registry.now_ms().saturating_sub(conn.active_ms.load(Ordering::Relaxed));
                if conn.busy.load(Ordering::Relaxed) == 0
                    && quiet >= limits.idle_timeout.as_millis() as u64
                {
                    break Some(ConnectionEnd::Idle);
                }
                if conn.busy.load(Ordering::Relaxed) > 0 {
                    // A slow handler is not an idle client.
                    registry.touch(&conn);
                }
            }
        }
    };
    if let Some(ConnectionEnd::Idle) = end {
        metrics.connection_closed(ConnectionEnd::Idle);
    }
    registry
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    metrics.connection_gone();
}

/// The accept queue asked of the kernel (it caps it at `net.core.somaxconn`, 4096 by default).
const BACKLOG: u32 = 4096;

/// Binds like `TcpListener::bind`, with a deeper accept queue than tokio's 1024: a burst of
/// connections (1,500 slow clients at once in tests/hostile.rs) otherwise fills it, the kernel
/// drops SYNs, and even a health probe waits for the 1 s SYN retransmit.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a) {
            Ok(()) => return socket.listen(BACKLOG),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr} names no address"),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_for_runs_are_kept_out_of_the_connection_cap() {
        // Local defaults (100 runs, 4 each) under nofile 1024: 464 kept, 512 fit.
        assert_eq!(connection_cap(512, 1024, reserved_fds(100, 4)), 512);
        // Asked for more than fits: lowered to what leaves the reserve.
        assert_eq!(connection_cap(2000, 1024, reserved_fds(100, 4)), 560);
        // A cluster's 1,000 runs under nofile 1024: the reserve is capped at half.
        assert_eq!(reserved_fds(1000, 1), 1064);
        assert_eq!(connection_cap(512, 1024, reserved_fds(1000, 1)), 512);
        assert_eq!(connection_cap(2000, 1024, reserved_fds(1000, 1)), 512);
        // No limit on runs counts as 1,000; a tiny limit still serves a few.
        assert_eq!(reserved_fds(0, 4), 4064);
        assert_eq!(connection_cap(512, 16, 4064), 8);
        // A generous limit changes nothing.
        assert_eq!(connection_cap(512, 1 << 20, reserved_fds(1000, 4)), 512);
    }
}
