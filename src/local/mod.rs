//! The local backend: checks from a directory of YAML files (`checkdir`), runs as processes
//! (`process`) or built-in probes (`runner`), state in an append-only journal (`journal`), one
//! engine, one HTTP server. This file wires them together.

pub mod checkdir;
pub mod journal;
pub mod logbook;
pub mod process;
pub mod runner;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing::{error, info};

use crate::alert::{self, Alerting};
use crate::api::validate::Defaults;
use crate::api::CheckKey;
use crate::engine::clock::SystemClock;
use crate::engine::{Board, Driver, Engine, EngineConfig, EngineHandle, EngineRuns};
use crate::metrics::{Metrics, MetricsConfig};
use crate::server::admin::ManualRuns;
use crate::server::{self, AppState};
use crate::{Error, Result};
pub use checkdir::{parse_file, CheckDir};
pub use journal::FileStore;
use logbook::LogBook;
pub use process::local_problems;
pub use runner::LocalRunner;

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub listen_address: String,
    pub checks_dir: PathBuf,
    pub state_dir: PathBuf,
    /// Base URL checks report to; derived from the listening address when None.
    pub report_url: Option<String>,
    pub identity: String,
    pub defaults: Defaults,
    pub max_concurrent_runs: usize,
    /// Checks that never ran start within this window after start-up.
    pub first_run_window: Duration,
    pub metrics: MetricsConfig,
    pub shutdown_grace: Duration,
    pub poll_interval: Duration,
    /// Bearer token for `POST /api/run`; None leaves it off.
    pub run_token: Option<String>,
    pub http: server::Limits,
    /// Receivers and routes of notifications; None sends none.
    pub alerting: Option<Arc<Alerting>>,
}

pub async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr)> {
    let listener = server::listen::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })?;
    Ok((listener, local))
}

/// Where checks on this machine reach the server: the bound address, with a wildcard host
/// replaced by loopback.
pub fn report_base(local: SocketAddr) -> String {
    let ip = if local.ip().is_unspecified() {
        if local.is_ipv6() {
            "[::1]".to_string()
        } else {
            "127.0.0.1".to_string()
        }
    } else if local.is_ipv6() {
        format!("[{}]", local.ip())
    } else {
        local.ip().to_string()
    };
    format!("http://{ip}:{}", local.port())
}

/// `probity serve` without a cluster. Returns when `shutdown` flips and runs in flight have
/// ended (or the grace period passed).
pub async fn serve(cfg: LocalConfig, shutdown: watch::Receiver<bool>) -> Result<()> {
    let dir = CheckDir::new(&cfg.checks_dir, local_problems).validating_with(cfg.defaults.clone());
    // The first scan must work: a wrong --checks is a start-up error, not an empty dashboard.
    let (dir, first) = scan(dir).await?;
    let first = first.map_err(|e| Error::Setting {
        setting: "--checks",
        source: Box::new(e),
    })?;
    let store = Arc::new(FileStore::open(&cfg.state_dir)?);
    let (listener, local) = bind(&cfg.listen_address).await?;
    let base = cfg.report_url.clone().unwrap_or_else(|| report_base(local));
    info!("listening on http://{local}; checks report to {base}/check");

    let board = Arc::new(Board::new(&cfg.identity));
    let metrics = Arc::new(Metrics::new(cfg.metrics.clone(), board.clone()));
    {
        // A full disk shows on the status page, in metrics and in the log, and clears itself.
        let (board, metrics) = (board.clone(), metrics.clone());
        store.on_health(move |error| {
            board.set_source_error("state journal", error.map(String::from));
            metrics.state_write(error);
        });
    }
    let (handle, events) = EngineHandle::channel();
    let logbook = LogBook::new(&cfg.state_dir);
    let runner = Arc::new(LocalRunner::new(handle.clone(), base).keeping_logs(logbook.clone()));
    let engine = Engine::new(EngineConfig {
        identity: cfg.identity.clone(),
        max_concurrent_runs: cfg.max_concurrent_runs,
        defaults: cfg.defaults.clone(),
        first_run_window: cfg.first_run_window,
    });
    let driver = Driver::new(
        engine,
        runner,
        store.clone(),
        SystemClock,
        events,
        board.clone(),
    )
    .observed_by_shared(metrics.clone())
    .stopping_on(shutdown.clone())
    .grace(cfg.shutdown_grace);
    let driver = tokio::spawn(driver.run());
    let notifier = alert::spawn(
        cfg.alerting.as_ref(),
        &board,
        &handle,
        &metrics,
        shutdown.clone(),
    )?;
    let watcher = tokio::spawn(watch_checks(
        dir,
        first,
        store.clone(),
        handle.clone(),
        board.clone(),
        cfg.poll_interval,
        shutdown,
    ));
    let (stop_server, server_stop) = oneshot::channel::<()>();
    let manual = cfg.run_token.clone().map(|token| ManualRuns {
        token: token.into(),
        backend: Arc::new(EngineRuns(handle.clone())),
    });
    // A process run holds its pipes: four descriptors each, kept from HTTP clients.
    let limits = cfg.http.clone().fitted(cfg.max_concurrent_runs, 4);
    let state = AppState::new(board, handle, metrics, manual, &limits).with_logs(Arc::new(logbook));
    let server = tokio::spawn(server::serve(listener, state, limits, async move {
        let _ = server_stop.await;
    }));
    // The server outlives the scheduler so reports of runs in flight still land while it drains.
    // Ends at shutdown, or when the scheduler died (a bug): then the process must exit non-zero
    // so its supervisor restarts it, not go on serving a page that no longer changes.
    let driven = driver.await;
    watcher.abort();
    if let Some(n) = notifier {
        n.abort();
    }
    // Writes queued by the last events (not all of them awaited by a report) reach the journal.
    store.flush().await;
    let _ = stop_server.send(());
    crate::error::serve_outcome(server.await, driven)
}

#[allow(clippy::too_many_arguments)]
async fn watch_checks(
    mut dir: CheckDir,
    first: checkdir::Changes,
    store: Arc<FileStore>,
    engine: EngineHandle,
    board: Arc<Board>,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut known: HashSet<CheckKey> = HashSet::new();
    let root = "checks directory";
    let mut changes: Result<checkdir::Changes> = Ok(first);
    let mut loaded = false;
    loop {
        match changes {
            Ok(c) => {
                board.set_source_error(root, None);
                for (file, err) in c.file_errors {
                    if let Some(e) = &err {
                        error!("{file}: {e}");
                    }
                    board.set_source_error(&file, err);
                }
                for key in c.removes {
                    known.remove(&key);
                    engine.remove(key).await;
                }
                for d in c.upserts {
                    let key = CheckKey::of(&d.check);
                    let saved = if known.insert(key.clone()) {
                        store.load(&key)
                    } else {
                        None
                    };
                    engine.upsert(d, saved).await;
                }
            }
            Err(e) => {
                error!("{e}");
                board.set_source_error(root, Some(e.to_string()));
            }
        }
        if !loaded {
            engine.loaded().await;
            loaded = true;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(poll) => {}
        }
        let scanned = match scan(dir).await {
            Ok(s) => s,
            Err(e) => {
                error!("{e}");
                return;
            }
        };
        (dir, changes) = scanned;
    }
}

/// Reads the checks directory on a blocking thread: parsing YAML (up to `MAX_FILE_BYTES` a
/// file, many files) must never hold up the runtime that answers reports and health probes.
async fn scan(mut dir: CheckDir) -> Result<(CheckDir, Result<checkdir::Changes>)> {
    tokio::task::spawn_blocking(move || {
        let changes = dir.scan();
        (dir, changes)
    })
    .await
    .map_err(|source| Error::Task {
        task: "checks directory reader",
        source,
    })
}

/// The check page reads the output the log book keeps.
impl server::logs::CheckLogs for LogBook {
    fn logs(&self, key: CheckKey) -> server::logs::LogsFuture {
        let book = self.clone();
        Box::pin(async move {
            book.read(&key)
                .await
                .map_err(|e| format!("reading the kept output: {e}"))
        })
    }
}
