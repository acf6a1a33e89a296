//! The local backend: checks from a directory of YAML files (`checkdir`), runs as processes
//! (`process`) or built-in probes (`runner`), state in an append-only journal (`journal`), one
//! engine, one HTTP server. This file wires them together.

pub mod checkdir;
pub mod journal;
pub mod listing;
pub mod logbook;
pub mod process;
pub mod runner;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info};

use crate::api::{CheckKey, HealthCheck};
use crate::engine::{Board, Desired, EngineHandle, Plans};
use crate::serve::{self, Leading, Parts, Settings};
use crate::server;
use crate::{Error, Result};
pub use checkdir::{parse_file, CheckDir};
pub use journal::FileStore;
use logbook::LogBook;
pub use process::local_problems;
pub use runner::LocalRunner;

/// The local backend's own settings; the shared ones are `serve::Settings`.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub checks_dir: PathBuf,
    pub state_dir: PathBuf,
    /// Base URL checks report to; derived from the listening address when None.
    pub report_url: Option<String>,
    /// After a stop signal, how long runs in flight may finish.
    pub shutdown_grace: Duration,
    pub poll_interval: Duration,
    /// What resource probes read (None: KUBECONFIG, then ~/.kube/config).
    pub kubeconfig: Option<PathBuf>,
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
pub async fn serve(
    settings: Settings,
    cfg: LocalConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let plans = Arc::new(Plans::new(settings.defaults.clone()));
    let dir = CheckDir::new(&cfg.checks_dir, local_problems).validating_with(plans.clone());
    // The first scan must work: a wrong --checks is a start-up error, not an empty dashboard.
    let (dir, first) = scan(dir).await?;
    let first = first.map_err(|e| Error::Setting {
        setting: "--checks",
        source: Box::new(e),
    })?;
    let store = Arc::new(FileStore::open(&cfg.state_dir)?);
    let alerting = settings.alerting.is_some();
    serve::serve(settings, Leading::Solo, shutdown, move |shared| {
        let base = cfg
            .report_url
            .clone()
            .unwrap_or_else(|| report_base(shared.local_addr));
        info!(
            "listening on http://{}; checks report to {base}/check",
            shared.local_addr
        );
        {
            // A full disk shows on the status page, in metrics and in the log, and clears
            // itself.
            let (board, metrics) = (shared.board.clone(), shared.metrics.clone());
            store.on_health(move |error| {
                board.set_source_error("state journal", error.map(String::from));
                metrics.state_write(error);
            });
        }
        let logbook = LogBook::new(&cfg.state_dir);
        let runner = LocalRunner::new(shared.engine.clone(), base)
            .keeping_logs(logbook.clone())
            .reading_cluster(cfg.kubeconfig.clone());
        let watcher = tokio::spawn(watch_checks(
            dir,
            first,
            store.clone(),
            shared.engine.clone(),
            shared.board.clone(),
            cfg.poll_interval,
            shared.shutdown.clone(),
        ));
        let mut parts = Parts::new(Arc::new(runner), store.clone());
        // A deleted check file with open alerts is kept (in the journal) until they are
        // resolved.
        parts.keep_departed = alerting;
        parts.grace = cfg.shutdown_grace;
        parts.plans = Some(plans);
        parts.logs = Some(Arc::new(logbook));
        // A process run holds its pipes: four descriptors each, kept from HTTP clients.
        parts.fds_per_run = 4;
        parts.tasks = vec![watcher];
        // Writes queued by the last events (not all of them awaited by a report) reach the
        // journal.
        parts.finish = Some(Box::new(move |_| {
            Box::pin(async move { store.flush().await })
        }));
        Ok(parts)
    })
    .await
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
                if !loaded {
                    // Deleted before a restart with alerts still open: carried on until their
                    // receivers are told.
                    for (key, saved) in store.departed() {
                        if known.contains(&key) {
                            continue;
                        }
                        let departure = saved.departed.clone().unwrap_or_default();
                        let mut check = HealthCheck::default();
                        check.metadata.namespace = Some(key.namespace().to_string());
                        check.metadata.name = Some(key.name().to_string());
                        check.metadata.labels = Some(departure.labels);
                        engine
                            .upsert(
                                Desired::departing(Arc::new(check), departure.reason),
                                Some(saved),
                            )
                            .await;
                    }
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
            book.read(&key).await.map_err(|e| server::logs::LogsError {
                what: "reading the kept output",
                source: Box::new(e),
            })
        })
    }
}
