//! The local backend wired together: checks from a directory, runs as processes, state in a
//! directory, one engine, one HTTP server. Also `probity run` (each check of a file once) and
//! `probity validate`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info};

use crate::api::validate::{self, Defaults};
use crate::api::{duration, CheckKey, Outcome};
use crate::engine::clock::SystemClock;
use crate::engine::driver::{Driver, Finished};
use crate::engine::{Board, Engine, EngineConfig, EngineHandle};
use crate::metrics::{Metrics, MetricsConfig};
use crate::runner::process::local_problems;
use crate::runner::LocalRunner;
use crate::server::admin::{EngineRuns, ManualRuns};
use crate::server::{self, AppState};
use crate::store::checkdir::{parse_file, CheckDir};
use crate::store::{FileStore, MemoryStore};
use crate::{Error, Result};

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
    pub metrics: MetricsConfig,
    pub shutdown_grace: Duration,
    pub poll_interval: Duration,
    /// Bearer token for `POST /api/run`; None leaves it off.
    pub run_token: Option<String>,
}

async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
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
fn report_base(local: SocketAddr) -> String {
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
    let mut dir = CheckDir::new(&cfg.checks_dir, local_problems);
    // The first scan must work: a wrong --checks is a start-up error, not an empty dashboard.
    let first = dir
        .scan()
        .map_err(|e| Error::Config(format!("--checks: {e}")))?;
    let store = Arc::new(FileStore::open(&cfg.state_dir)?);
    let (listener, local) = bind(&cfg.listen_address).await?;
    let base = cfg.report_url.clone().unwrap_or_else(|| report_base(local));
    info!("listening on http://{local}; checks report to {base}/check");

    let board = Arc::new(Board::new(&cfg.identity));
    let metrics = Arc::new(Metrics::new(cfg.metrics.clone(), board.clone()));
    let (handle, events) = EngineHandle::channel();
    let runner = Arc::new(LocalRunner::new(handle.clone(), base));
    let engine = Engine::new(EngineConfig {
        identity: cfg.identity.clone(),
        max_concurrent_runs: cfg.max_concurrent_runs,
        defaults: cfg.defaults.clone(),
    });
    let driver = Driver::new(engine, runner, store.clone(), SystemClock, events)
        .publishing(board.clone(), metrics.clone())
        .stopping_on(shutdown.clone())
        .grace(cfg.shutdown_grace);
    let driver = tokio::spawn(driver.run());
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
    let state = AppState {
        board,
        manual: cfg.run_token.clone().map(|token| ManualRuns {
            token: token.into(),
            backend: Arc::new(EngineRuns(handle.clone())),
        }),
        engine: handle,
        metrics,
    };
    let server = tokio::spawn(server::serve(listener, state, async move {
        let _ = server_stop.await;
    }));
    // The server outlives the scheduler so reports of runs in flight still land while it drains.
    let _ = driver.await;
    watcher.abort();
    // Writes queued by the last events (not all of them awaited by a report) reach the journal.
    store.flush().await;
    let _ = stop_server.send(());
    match server.await {
        Ok(r) => r,
        Err(e) => Err(Error::Config(format!("the HTTP server stopped: {e}"))),
    }
}

#[allow(clippy::too_many_arguments)]
async fn watch_checks(
    mut dir: CheckDir,
    first: crate::store::checkdir::Changes,
    store: Arc<FileStore>,
    engine: EngineHandle,
    board: Arc<Board>,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut known: HashSet<CheckKey> = HashSet::new();
    let root = "checks directory";
    let mut changes = Ok(first);
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
                board.set_source_error(root, Some(e));
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
        changes = dir.scan();
    }
}

/// One check's result from `probity run`.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub key: CheckKey,
    pub outcome: Result<(Outcome, Duration, Vec<String>), String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        matches!(&self.outcome, Ok((o, _, _)) if o.is_success())
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Ok((o, d, _)) if o.is_success() => {
                write!(f, "PASS {} ({})", self.key, duration::format(*d))
            }
            Ok((o, d, errors)) => write!(
                f,
                "FAIL {} ({}, {}): {}",
                self.key,
                duration::format(*d),
                o.as_str(),
                errors.join("; ")
            ),
            Err(e) => write!(f, "INVALID {}: {e}", self.key),
        }
    }
}

/// `probity run FILE`: every check in the file once, at the same time, with nothing saved.
pub async fn run_file(
    path: &Path,
    defaults: Defaults,
    identity: &str,
) -> Result<(Vec<Verdict>, Vec<String>)> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let (docs, file_errors) =
        parse_file(&name, &text, local_problems).map_err(|message| Error::Parse {
            file: name.clone(),
            message,
        })?;
    let file_errors: Vec<String> = file_errors
        .into_iter()
        .map(|e| format!("{name}: {e}"))
        .collect();

    let (listener, local) = bind("127.0.0.1:0").await?;
    let (handle, events) = EngineHandle::channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (obs_tx, mut obs_rx) = mpsc::unbounded_channel::<Finished>();
    let mut engine = Engine::new(EngineConfig {
        identity: identity.to_string(),
        max_concurrent_runs: 0,
        defaults: defaults.clone(),
    });
    engine.finish_startup();
    let runner = Arc::new(LocalRunner::new(handle.clone(), report_base(local)));
    let driver = Driver::new(engine, runner, Arc::new(MemoryStore), SystemClock, events)
        .stopping_on(stop_rx)
        .grace(Duration::from_secs(5))
        .observed_by(obs_tx);
    let (board, metrics) = (driver.board().clone(), driver.metrics().clone());
    let driver = tokio::spawn(driver.run());
    let (stop_server, server_stop) = oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        AppState {
            board,
            engine: handle.clone(),
            metrics,
            manual: None,
        },
        async move {
            let _ = server_stop.await;
        },
    ));

    let mut verdicts = Vec::new();
    let mut waiting = HashSet::new();
    for (_, d) in docs {
        let key = CheckKey::of(&d.check);
        let invalid = match validate::validate(&d.check, &defaults) {
            Err(v) => Some(v.to_string()),
            Ok(_) => d.load_error.as_ref().map(|e| e.to_string()),
        };
        if let Some(e) = invalid {
            verdicts.push(Verdict {
                key,
                outcome: Err(e),
            });
            continue;
        }
        // Suspended: the scheduler leaves it alone and only the manual run below starts it.
        let mut check = (*d.check).clone();
        check.spec.suspend = Some(true);
        let d = crate::engine::Desired {
            check: Arc::new(check),
            load_error: d.load_error,
        };
        handle.upsert(d, None).await;
        match handle.run_now(key.clone()).await {
            Ok(()) => {
                waiting.insert(key);
            }
            Err(e) => verdicts.push(Verdict {
                key,
                outcome: Err(e),
            }),
        }
    }
    while !waiting.is_empty() {
        let Some(f) = obs_rx.recv().await else { break };
        if waiting.remove(&f.key) {
            verdicts.push(Verdict {
                key: f.key,
                outcome: Ok((f.outcome, f.duration, f.errors)),
            });
        }
    }
    let _ = stop_tx.send(true);
    let _ = driver.await;
    let _ = stop_server.send(());
    let _ = server.await;
    verdicts.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((verdicts, file_errors))
}

/// `probity validate FILE...`: one line per check and per problem; true when all are valid.
pub fn validate_files(
    paths: &[PathBuf],
    defaults: &Defaults,
    out: &mut impl std::io::Write,
) -> Result<bool> {
    let mut all_ok = true;
    let mut seen: std::collections::HashMap<CheckKey, String> = Default::default();
    let mut say = |line: String| {
        let _ = writeln!(out, "{line}");
    };
    for path in paths {
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                say(format!("{name}: {e}"));
                all_ok = false;
                continue;
            }
        };
        let (docs, errors) = match parse_file(&name, &text, |_| Vec::new()) {
            Ok(v) => v,
            Err(e) => {
                say(format!("{name}: {e}"));
                all_ok = false;
                continue;
            }
        };
        for e in errors {
            say(format!("{name}: {e}"));
            all_ok = false;
        }
        for (index, d) in docs {
            let key = CheckKey::of(&d.check);
            let result = match (validate::validate(&d.check, defaults), &d.load_error) {
                (_, Some(e)) => Err(e.to_string()),
                (Err(e), None) => Err(e.to_string()),
                (Ok(_), None) => Ok(()),
            };
            if let Some(other) = seen.insert(key.clone(), name.clone()) {
                say(format!(
                    "{name}: document {index}: {key} is also defined in {other}"
                ));
                all_ok = false;
            }
            match result {
                Ok(()) => say(format!("{name}: document {index}: {key}: valid")),
                Err(e) => {
                    all_ok = false;
                    say(format!("{name}: document {index}: {key}: {e}"));
                }
            }
        }
    }
    Ok(all_ok)
}
