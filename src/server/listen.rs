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
    /// Opened or last response finished, in ms since `Registry::epoch`.
    served_ms: AtomicU64,
    /// When the first byte of a request head not yet answered was read, or `NO_HEAD`.
    head_ms: AtomicU64,
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

    fn open(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn touch(&self, c: &Conn) {
        c.active_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn read_some(&self, c: &Conn) {
        let now = self.now_ms();
        c.active_ms.store(now, Ordering::Relaxed);
        let _ = c
            .head_ms
            .compare_exchange(NO_HEAD, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn served(&self, c: &Conn) {
        let now = self.now_ms();
        c.active_ms.store(now, Ordering::Relaxed);
        c.served_ms.store(now, Ordering::Relaxed);
        c.head_ms.store(NO_HEAD, Ordering::Relaxed);
    }

    /// Closes one connection with no request in flight, if there is one: first the one that has
    /// been sending an unanswered request head the longest, else the one served longest ago (or
    /// opened, if it never was). A connection that has sent nothing and is younger than
    /// `FAIR_CHANCE` is spared: under a flood of new connections, a health probe accepted a
    /// moment ago may not have been read yet. The connection leaves the registry at once, so a
    /// burst of accepts evicts one each, not the same one again before its task has run.
    fn evict_idlest(&self) -> bool {
        let now = self.now_ms();
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let idlest = conns
            .iter()
            .filter(|(_, c)| c.busy.load(Ordering::Relaxed) == 0)
            .filter(|(_, c)| {
                c.head_ms.load(Ordering::Relaxed) != NO_HEAD
                    || now.saturating_sub(c.served_ms.load(Ordering::Relaxed))
                        >= FAIR_CHANCE.as_millis() as u64
            })
            .min_by_key(|(_, c)| (eviction_rank(c), c.opened))
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

/// How long a new connection that has sent nothing is spared from eviction.
const FAIR_CHANCE: Duration = Duration::from_millis(250);

/// How often a full server looks again for a connection to evict when none could be.
const CAP_RECHECK: Duration = Duration::from_millis(10);

/// `Conn::head_ms` when no request head is pending.
const NO_HEAD: u64 = u64::MAX;

/// Lower goes first: (0, since) for a connection in the middle of a request head, (1, served)
/// for one waiting for its next request.
fn eviction_rank(c: &Conn) -> (u8, u64) {
    match c.head_ms.load(Ordering::Relaxed) {
        NO_HEAD => (1, c.served_ms.load(Ordering::Relaxed)),
        since => (0, since),
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
            self.registry.read_some(&self.conn);
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
    'accept: loop {
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
        // At the cap, make room by evicting; if every connection is busy or too new to judge,
        // wait for one to end or to become evictable. The clients behind this one wait in the
        // kernel's accept queue meanwhile, which is TCP's own back-pressure.
        while registry.open() >= limits.max_connections {
            if registry.evict_idlest() {
                metrics.connection_closed(ConnectionEnd::Evicted);
                break;
            }
            tokio::select! {
                _ = &mut stop => break 'accept,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = tokio::time::sleep(CAP_RECHECK) => {}
            }
        }
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            active_ms: AtomicU64::new(registry.now_ms()),
            served_ms: AtomicU64::new(registry.now_ms()),
            head_ms: AtomicU64::new(NO_HEAD),
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
            r.served(&c);
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

    fn conn(head_ms: u64, served_ms: u64, busy: usize) -> Arc<Conn> {
        Arc::new(Conn {
            busy: AtomicUsize::new(busy),
            active_ms: AtomicU64::new(served_ms),
            served_ms: AtomicU64::new(served_ms),
            head_ms: AtomicU64::new(head_ms),
            close: Notify::new(),
            opened: Instant::now(),
        })
    }

    #[test]
    fn eviction_takes_head_tricklers_first_then_the_longest_unserved() {
        // Two seconds in: two clients in the middle of a head (one began it just now), a
        // keep-alive client served long ago, one opened a second ago that sent nothing, a
        // connection with a request in flight, and a health probe accepted a moment ago and not
        // read yet.
        let registry = Registry {
            epoch: Instant::now() - Duration::from_secs(2),
            conns: Mutex::default(),
        };
        {
            let mut conns = registry.conns.lock().unwrap();
            conns.insert(1, conn(1_990, 5, 0));
            conns.insert(2, conn(1_500, 400, 0));
            conns.insert(3, conn(NO_HEAD, 100, 0));
            conns.insert(4, conn(NO_HEAD, 1_000, 0));
            conns.insert(5, conn(NO_HEAD, 0, 1));
            conns.insert(6, conn(NO_HEAD, 1_900, 0));
        }
        let mut order: Vec<u64> = Vec::new();
        while registry.evict_idlest() {
            let left = registry.conns.lock().unwrap();
            let gone = (1..=6).find(|id| !left.contains_key(id) && !order.contains(id));
            order.push(gone.unwrap());
        }
        assert_eq!(order, vec![2, 1, 3, 4]);
        let left = registry.conns.lock().unwrap();
        assert!(
            left.contains_key(&5) && left.contains_key(&6),
            "a request in flight, a connection not yet given a fair chance"
        );
    }

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
