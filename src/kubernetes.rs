//! The kubernetes backend wired together: checks from a watch of HealthChecks, runs as pods,
//! state in `HealthCheck.status`, leadership from a Lease, one HTTP server per replica.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::Client;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::info;

use crate::api::validate::Defaults;
use crate::cluster::{Elector, LeaseConfig, LeaseGuard};
use crate::engine::clock::SystemClock;
use crate::engine::driver::{Driver, Finished};
use crate::engine::{Board, Engine, EngineConfig, EngineHandle};
use crate::metrics::{Metrics, MetricsConfig};
use crate::runner::pod::{PodRunner, Retention};
use crate::server::admin::ManualRuns;
use crate::server::{self, AppState};
use crate::store::kube::{watch_checks, AnnotateRuns, Events, KubeStore, Namespaces};
use crate::{Error, Result};

/// How long a report for a run this replica has not heard of waits for the watch to bring it.
const REPORT_PARK: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct KubeConfig {
    pub listen_address: String,
    /// Base URL check pods report to.
    pub report_url: String,
    pub identity: String,
    pub namespaces: Namespaces,
    pub defaults: Defaults,
    pub max_concurrent_runs: usize,
    pub metrics: MetricsConfig,
    pub lease: LeaseConfig,
    pub retention: Retention,
    /// Bearer token for `POST /api/run`; None leaves it off.
    pub run_token: Option<String>,
}

/// The report URL check pods get when none is configured: the Service in this namespace.
pub fn default_report_url(namespace: &str) -> String {
    format!("http://probity.{namespace}.svc.cluster.local")
}

/// `probity serve` in a cluster. Returns when `shutdown` flips. Runs in flight are left to
/// their pods: the next leader adopts them.
pub async fn serve(cfg: KubeConfig, shutdown: watch::Receiver<bool>) -> Result<()> {
    cfg.lease.check().map_err(Error::Config)?;
    let client = Client::try_default().await.map_err(|source| Error::Kube {
        what: "connecting to the API server".into(),
        source,
    })?;
    let listener = TcpListener::bind(&cfg.listen_address)
        .await
        .map_err(|source| Error::Listen {
            addr: cfg.listen_address.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Listen {
        addr: cfg.listen_address.clone(),
        source,
    })?;
    info!(
        identity = %cfg.identity,
        "kubernetes backend; listening on http://{local}; checks report to {}/check",
        cfg.report_url.trim_end_matches('/')
    );

    let board = Arc::new(Board::new(&cfg.identity));
    // Nobody is known to lead until the lease says so.
    board.set_leader("");
    let metrics = Arc::new(Metrics::new(cfg.metrics.clone(), board.clone()));
    let (handle, events) = EngineHandle::channel();
    let (leading_tx, leading) = watch::channel(false);
    let store = KubeStore::new(client.clone());
    let guard = LeaseGuard::default();
    let runner = PodRunner::new(
        client.clone(),
        handle.clone(),
        cfg.report_url.clone(),
        cfg.retention.clone(),
        leading.clone(),
    )
    .guarded_by(guard.clone());
    let mut engine = Engine::new(EngineConfig {
        identity: cfg.identity.clone(),
        max_concurrent_runs: cfg.max_concurrent_runs,
        defaults: cfg.defaults.clone(),
    });
    engine.set_leader(Utc::now(), false);
    let (finished_tx, finished) = mpsc::unbounded_channel();
    let driver = Driver::new(
        engine,
        Arc::new(runner.clone()),
        Arc::new(store.clone()),
        SystemClock,
        events,
    )
    .publishing(board.clone(), metrics.clone())
    .stopping_on(shutdown.clone())
    .grace(Duration::ZERO)
    .fencing(handle.clone())
    .parking_reports(REPORT_PARK)
    .leading_while({
        let guard = guard.clone();
        move || guard.valid()
    })
    .observed_by(finished_tx);
    let kube_events = Events::new(client.clone(), &cfg.identity);

    let driver = tokio::spawn(driver.run());
    let pods = tokio::spawn(runner.watch(cfg.namespaces.clone(), shutdown.clone()));
    let checks = tokio::spawn(watch_checks(
        client.clone(),
        cfg.namespaces.clone(),
        store,
        handle.clone(),
        board.clone(),
        cfg.defaults.clone(),
        kube_events.clone(),
        leading.clone(),
        shutdown.clone(),
    ));
    let failures = tokio::spawn(post_failures(kube_events, finished));
    let manual_client = client.clone();
    let elector = tokio::spawn(Elector::new(client, cfg.lease.clone()).guarding(guard).run(
        handle.clone(),
        board.clone(),
        leading_tx,
        shutdown.clone(),
    ));
    let (stop_server, server_stop) = oneshot::channel::<()>();
    let state = AppState {
        board,
        engine: handle,
        metrics,
        manual: cfg.run_token.clone().map(|token| ManualRuns {
            token: token.into(),
            backend: Arc::new(AnnotateRuns {
                client: manual_client,
            }),
        }),
    };
    let server = tokio::spawn(server::serve(listener, state, async move {
        let _ = server_stop.await;
    }));
    let _ = elector.await;
    let _ = driver.await;
    pods.abort();
    checks.abort();
    failures.abort();
    let _ = stop_server.send(());
    match server.await {
        Ok(r) => r,
        Err(e) => Err(Error::Config(format!("the HTTP server stopped: {e}"))),
    }
}

/// A Warning event on the check for every run that failed (recorded by this replica).
async fn post_failures(events: Events, mut finished: mpsc::UnboundedReceiver<Finished>) {
    while let Some(f) = finished.recv().await {
        if f.outcome.is_success() {
            continue;
        }
        let events = events.clone();
        tokio::spawn(async move {
            let note = format!("{}: {}", f.outcome.as_str(), f.errors.join("; "));
            events
                .warn_key(&f.key, &format!("Run{}", f.outcome.as_str()), note)
                .await
        });
    }
}
