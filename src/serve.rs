//! The one serve skeleton: the engine on its driver, the HTTP server, metrics, notifications,
//! leadership and shutdown, wired once for every backend. A backend (`kube`, `local`, and
//! `probity run`) brings only what differs, as [`Parts`]: its runner, its store, its watchers,
//! and how its runs and leadership end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::alert;
use crate::api::validate::Defaults;
use crate::engine::clock::SystemClock;
use crate::engine::{
    Board, Driver, Engine, EngineConfig, EngineHandle, EngineRuns, Leadership, Observer, Plans,
    RunRequests, Runner, StatusStore,
};
use crate::metrics::{Metrics, MetricsConfig};
use crate::server::admin::ManualRuns;
use crate::server::logs::CheckLogs;
use crate::server::{self, AppState};
use crate::{Error, Result};

/// The settings every backend shares (the flags of `probity serve` that are not a backend's).
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen_address: String,
    /// This replica's name, shown as AuthoritativePod and CurrentMaster.
    pub identity: String,
    pub defaults: Defaults,
    /// Most runs in flight at once, 0 for no limit.
    pub max_concurrent_runs: usize,
    /// Checks that never ran start within this window after start-up.
    pub first_run_window: Duration,
    pub metrics: MetricsConfig,
    /// Bearer token for `POST /api/run`; None leaves it off.
    pub run_token: Option<String>,
    pub http: server::Limits,
    /// Receivers and routes of notifications; None sends none. Only the leader sends.
    pub alerting: Option<alert::reload::Source>,
}

/// Who leads: this process alone, or whoever an elector says.
#[derive(Debug, Clone)]
pub enum Leading {
    Solo,
    Elected(Leadership),
}

/// What a backend is given to build its [`Parts`] from.
pub struct Shared {
    pub engine: EngineHandle,
    pub board: Arc<Board>,
    pub metrics: Arc<Metrics>,
    pub leadership: Leadership,
    /// Where the server listens (locally, checks report here).
    pub local_addr: SocketAddr,
    pub shutdown: watch::Receiver<bool>,
}

/// Awaited once the scheduler has stopped, before the server does; told whether the scheduler
/// died (a bug), when a lease should be left to expire rather than handed over.
pub type Finish = Box<dyn FnOnce(bool) -> BoxFuture<'static, ()> + Send>;

/// What differs between backends.
pub struct Parts<R, S> {
    pub runner: Arc<R>,
    pub store: Arc<S>,
    /// How long runs in flight may go on after a stop signal (zero in a cluster, where the next
    /// leader adopts them).
    pub grace: Duration,
    /// Watchers of runs besides metrics (Kubernetes Events, `probity run`'s results).
    pub observers: Vec<Arc<dyn Observer>>,
    /// A run starts only once its start is stored (a cluster: a deposed leader's write fails).
    pub fenced: bool,
    /// How long a report for a run this replica has not heard of waits for the watch.
    pub park_reports: Duration,
    /// Where manual runs are asked for; None: straight to this engine.
    pub manual: Option<Arc<dyn RunRequests>>,
    /// The plans the backend validates into off the engine's task (see `Plans`); None: the
    /// engine validates on its own.
    pub plans: Option<Arc<Plans>>,
    /// Where the check page reads runs' output; None: it shows none.
    pub logs: Option<Arc<dyn CheckLogs>>,
    /// Descriptors one run holds, kept free of HTTP connections (see `Limits::fitted`).
    pub fds_per_run: u64,
    /// The backend's own tasks (watches), aborted once the scheduler has stopped.
    pub tasks: Vec<JoinHandle<()>>,
    pub finish: Option<Finish>,
    /// The engine keeps a deleted check with open alerts until they are resolved, and then
    /// removes it (see `EngineConfig::keep_departed`): the local backend, when notifications
    /// are configured.
    pub keep_departed: bool,
}

impl<R, S> Parts<R, S> {
    /// A runner and a store, with the defaults of a process that leads alone.
    pub fn new(runner: Arc<R>, store: Arc<S>) -> Self {
        Parts {
            runner,
            store,
            grace: Duration::from_secs(10),
            observers: Vec::new(),
            fenced: false,
            park_reports: Duration::ZERO,
            manual: None,
            plans: None,
            logs: None,
            fds_per_run: 0,
            tasks: Vec::new(),
            finish: None,
            keep_departed: false,
        }
    }
}

/// A served engine: its handle, and the task that ends when it has shut down.
pub struct Running {
    pub engine: EngineHandle,
    done: JoinHandle<Result<()>>,
}

impl Running {
    /// Resolves once the stop signal has been acted on and everything has ended.
    pub async fn wait(self) -> Result<()> {
        self.done.await.map_err(|source| Error::Task {
            task: "serve",
            source,
        })?
    }
}

/// Binds `addr`; the error names it.
pub async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr)> {
    let listen = |source| Error::Listen {
        addr: addr.to_string(),
        source,
    };
    let listener = server::listen::bind(addr).await.map_err(listen)?;
    let local = listener.local_addr().map_err(listen)?;
    Ok((listener, local))
}

/// Serves until `shutdown` flips and everything has ended.
pub async fn serve<R: Runner, S: StatusStore>(
    settings: Settings,
    leading: Leading,
    shutdown: watch::Receiver<bool>,
    build: impl FnOnce(&Shared) -> Result<Parts<R, S>>,
) -> Result<()> {
    start(settings, leading, shutdown, build)
        .await?
        .wait()
        .await
}

/// Binds, wires and starts everything; `build` gets the shared pieces and returns the
/// backend's. Returns once serving; [`Running::wait`] for the end.
pub async fn start<R: Runner, S: StatusStore>(
    settings: Settings,
    leading: Leading,
    shutdown: watch::Receiver<bool>,
    build: impl FnOnce(&Shared) -> Result<Parts<R, S>>,
) -> Result<Running> {
    let (listener, local_addr) = bind(&settings.listen_address).await?;
    let leadership = match &leading {
        Leading::Solo => Leadership::solo(&settings.identity),
        Leading::Elected(l) => l.clone(),
    };
    let board = Arc::new(Board::led_by(leadership.clone()));
    let metrics = Arc::new(Metrics::new(settings.metrics.clone(), board.clone()));
    let (handle, events) = EngineHandle::channel();
    let shared = Shared {
        engine: handle.clone(),
        board: board.clone(),
        metrics: metrics.clone(),
        leadership,
        local_addr,
        shutdown: shutdown.clone(),
    };
    let parts = build(&shared)?;

    let mut engine = Engine::new(EngineConfig {
        identity: settings.identity.clone(),
        max_concurrent_runs: settings.max_concurrent_runs,
        defaults: settings.defaults.clone(),
        first_run_window: settings.first_run_window,
        keep_departed: parts.keep_departed,
    });
    if let Some(plans) = parts.plans {
        engine = engine.sharing_plans(plans);
    }
    let mut driver = Driver::new(
        engine,
        parts.runner,
        parts.store,
        SystemClock,
        events,
        board.clone(),
    )
    .observed_by_shared(metrics.clone())
    .stopping_on(shutdown.clone())
    .grace(parts.grace)
    .parking_reports(parts.park_reports);
    // A process that leads alone has no claim to follow.
    if let Leading::Elected(l) = leading {
        driver = driver.led_by(l);
    }
    if parts.fenced {
        driver = driver.fencing(handle.clone());
    }
    for o in parts.observers {
        driver = driver.observed_by_shared(o);
    }
    let driver = tokio::spawn(driver.run());
    let notifier = alert::spawn(
        settings.alerting.as_ref(),
        &board,
        &handle,
        &metrics,
        shutdown,
    )?;

    let manual = settings.run_token.clone().map(|token| ManualRuns {
        token: token.into(),
        backend: parts
            .manual
            .unwrap_or_else(|| Arc::new(EngineRuns(handle.clone()))),
    });
    let limits = settings
        .http
        .clone()
        .fitted(settings.max_concurrent_runs, parts.fds_per_run);
    let mut state = AppState::new(board.clone(), handle.clone(), metrics, manual, &limits);
    if let Some(logs) = parts.logs {
        state = state.with_logs(logs);
    }
    let (stop_server, server_stop) = oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(listener, state, limits, async move {
        let _ = server_stop.await;
    }));
    let (tasks, finish) = (parts.tasks, parts.finish);
    let done = tokio::spawn(async move {
        // The server outlives the scheduler so reports of runs in flight still land while it
        // drains. The scheduler ends at the stop signal, or when it died (a bug): then the
        // process must exit non-zero so its supervisor restarts it, not go on serving a page
        // that no longer changes.
        let driven = driver.await;
        for t in tasks.iter().chain(notifier.as_ref()) {
            t.abort();
        }
        if let Some(finish) = finish {
            finish(driven.is_err()).await;
        }
        let _ = stop_server.send(());
        crate::error::serve_outcome(server.await, driven)
    });
    Ok(Running {
        engine: handle,
        done,
    })
}
