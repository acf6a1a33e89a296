//! The kubernetes backend: checks from a watch of HealthChecks (`controller`), state in
//! `HealthCheck.status` (`status`), runs as pods (`pods`), leadership from a Lease (`lease`),
//! Events on checks (`events`), one HTTP server per replica. This file wires them together.

pub mod controller;
pub mod events;
pub mod lease;
pub mod logs;
pub mod pods;
#[cfg(test)]
mod standin;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use kube::{Api, Client, Resource};
use tokio::sync::{oneshot, watch};
use tracing::info;

use crate::alert::{self, Alerting};
use crate::api::protocol::namespace_list;
use crate::api::validate::{Defaults, Problem};
use crate::api::HealthCheck;
use crate::engine::clock::SystemClock;
use crate::engine::{Board, Driver, Engine, EngineConfig, EngineHandle, Leadership};
use crate::metrics::{Metrics, MetricsConfig};
use crate::server::admin::ManualRuns;
use crate::server::{self, AppState};
use crate::{Error, Result};
use controller::{AnnotateRuns, Controller};
use events::Events;
pub use lease::{Elector, LeaseConfig};
use pods::PodRunner;
pub use pods::Retention;
use status::StatusWriter;

/// How long a report for a run this replica has not heard of waits for the watch to bring it.
const REPORT_PARK: Duration = Duration::from_secs(5);

/// Which namespaces to watch: all, or the listed ones.
#[derive(Debug, Clone, Default)]
pub struct Namespaces(pub Vec<String>);

impl Namespaces {
    /// From `--namespace a,b` (empty: all).
    pub fn parse(s: &str) -> Self {
        Namespaces(namespace_list(s))
    }

    /// One Api per watched namespace, or one for all.
    pub fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        if self.0.is_empty() {
            vec![Api::all(client.clone())]
        } else {
            self.0
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect()
        }
    }
}

/// What the kubernetes backend cannot run that validation of the spec alone does not see.
pub fn cluster_problems(hc: &HealthCheck) -> Vec<Problem> {
    match hc.spec.probe.as_ref().and_then(|p| p.exec.as_ref()) {
        Some(e) if crate::probe::podexec::selector(e).is_none() => vec![Problem {
            field: "spec.probe.exec.podSelector".into(),
            message: "is required in a cluster: the command runs in a pod that matches it".into(),
        }],
        _ => Vec::new(),
    }
}

#[derive(Debug, Clone)]
pub struct KubeConfig {
    pub listen_address: String,
    /// Base URL check pods report to.
    pub report_url: String,
    pub identity: String,
    pub namespaces: Namespaces,
    pub defaults: Defaults,
    pub max_concurrent_runs: usize,
    /// Checks that never ran start within this window after start-up.
    pub first_run_window: Duration,
    pub metrics: MetricsConfig,
    pub lease: LeaseConfig,
    pub retention: Retention,
    /// Bearer token for `POST /api/run`; None leaves it off.
    pub run_token: Option<String>,
    pub http: server::Limits,
    /// Receivers and routes of notifications; None sends none. Only the leader sends.
    pub alerting: Option<Arc<Alerting>>,
}

/// The report URL check pods get when none is configured: the `probity` Service of this
/// namespace, by the ClusterIP and port Kubernetes puts in every pod's environment
/// (`PROBITY_SERVICE_HOST`/`_PORT`), so a report needs no cluster DNS (a DNS check must be able to
/// say DNS is down); by its DNS name when those are missing (the Service was created after the
/// pod, or is named otherwise). `var` is `std::env::var` outside tests.
pub fn default_report_url(namespace: &str, var: impl Fn(&str) -> Option<String>) -> String {
    let host = var("PROBITY_SERVICE_HOST").filter(|h| !h.is_empty());
    let port = var("PROBITY_SERVICE_PORT").filter(|p| p.parse::<u16>().is_ok());
    match (host, port) {
        (Some(h), Some(p)) if h.contains(':') => format!("http://[{h}]:{p}"),
        (Some(h), Some(p)) => format!("http://{h}:{p}"),
        _ => format!("http://probity.{namespace}.svc.cluster.local"),
    }
}

/// A client from the in-cluster or kubeconfig configuration that names itself `probity/<version>`
/// in its User-Agent, so audit logs and the API server's own metrics tell probity's requests apart.
async fn client() -> Result<Client> {
    use http::{header::USER_AGENT, HeaderValue};
    let what = || "connecting to the API server".to_string();
    let mut config = kube::Config::infer().await.map_err(|e| Error::Kube {
        what: what(),
        source: kube::Error::InferConfig(e),
    })?;
    let agent = concat!("probity/", env!("CARGO_PKG_VERSION"));
    config
        .headers
        .push((USER_AGENT, HeaderValue::from_static(agent)));
    Client::try_from(config).map_err(|source| Error::Kube {
        what: what(),
        source,
    })
}

/// `probity serve` in a cluster. Returns when `shutdown` flips. Runs in flight are left to
/// their pods: the next leader adopts them.
pub async fn serve(cfg: KubeConfig, shutdown: watch::Receiver<bool>) -> Result<()> {
    cfg.lease.check()?;
    let client = client().await?;
    let listener = crate::server::listen::bind(&cfg.listen_address)
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

    // The one leadership handle: the elector writes it, everyone else reads it when acting.
    let (claim, leadership) = Leadership::elected(&cfg.identity);
    let board = Arc::new(Board::led_by(leadership.clone()));
    let metrics = Arc::new(Metrics::new(cfg.metrics.clone(), board.clone()));
    let (handle, events) = EngineHandle::channel();
    let status = StatusWriter::new(client.clone());
    let runner = PodRunner::new(
        client.clone(),
        handle.clone(),
        cfg.report_url.clone(),
        cfg.retention.clone(),
        leadership.clone(),
    );
    let engine = Engine::new(EngineConfig {
        identity: cfg.identity.clone(),
        max_concurrent_runs: cfg.max_concurrent_runs,
        defaults: cfg.defaults.clone(),
        first_run_window: cfg.first_run_window,
    });
    let kube_events = Events::new(client.clone(), &cfg.identity);
    let driver = Driver::new(
        engine,
        Arc::new(runner.clone()),
        Arc::new(status.clone()),
        SystemClock,
        events,
        board.clone(),
    )
    .led_by(leadership.clone())
    .observed_by_shared(metrics.clone())
    .observed_by(kube_events.clone())
    .stopping_on(shutdown.clone())
    .grace(Duration::ZERO)
    .fencing(handle.clone())
    .parking_reports(REPORT_PARK);
    let controller = Controller {
        client: client.clone(),
        namespaces: cfg.namespaces.clone(),
        status,
        engine: handle.clone(),
        board: board.clone(),
        defaults: cfg.defaults.clone(),
        events: kube_events,
        leadership,
    };

    let driver = tokio::spawn(driver.run());
    let notifier = alert::spawn(
        cfg.alerting.as_ref(),
        &board,
        &handle,
        &metrics,
        shutdown.clone(),
    )?;
    let pods = tokio::spawn(
        runner
            .clone()
            .watch(cfg.namespaces.clone(), shutdown.clone()),
    );
    let checks = tokio::spawn(controller.run(shutdown.clone()));
    let elector =
        tokio::spawn(Elector::new(client.clone(), cfg.lease.clone(), claim).run(shutdown));
    let client_for_logs = client.clone();
    let (stop_server, server_stop) = oneshot::channel::<()>();
    let manual = cfg.run_token.clone().map(|token| ManualRuns {
        token: token.into(),
        backend: Arc::new(AnnotateRuns { client }),
    });
    // Only probes hold a descriptor (their socket); pods share the API server's connections.
    let limits = cfg.http.clone().fitted(cfg.max_concurrent_runs, 1);
    let state = AppState::new(board, handle, metrics, manual, &limits).with_logs(Arc::new(
        logs::PodLogs::new(client_for_logs, runner.clone()),
    ));
    let server = tokio::spawn(server::serve(listener, state, limits, async move {
        let _ = server_stop.await;
    }));
    // Ends at shutdown, or when the scheduler died (a bug): then the process must exit non-zero
    // so the Deployment restarts it; its lease is left to expire.
    let driven = driver.await;
    if driven.is_err() {
        elector.abort();
    }
    let _ = elector.await;
    if let Some(n) = notifier {
        n.abort();
    }
    pods.abort();
    checks.abort();
    let _ = stop_server.send(());
    crate::error::serve_outcome(server.await, driven)
}

/// The check page reads the retained pods' logs.
impl server::logs::CheckLogs for logs::PodLogs {
    fn logs(&self, key: crate::api::CheckKey) -> server::logs::LogsFuture {
        let reader = self.clone();
        Box::pin(async move { Ok(reader.read(&key).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::default_report_url;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_report_url_uses_the_service_address_kubernetes_gives_the_pod() {
        let svc = [
            ("PROBITY_SERVICE_HOST", "10.0.0.17"),
            ("PROBITY_SERVICE_PORT", "80"),
        ];
        assert_eq!(default_report_url("mon", env(&svc)), "http://10.0.0.17:80");
        let v6 = [
            ("PROBITY_SERVICE_HOST", "fd00::17"),
            ("PROBITY_SERVICE_PORT", "80"),
        ];
        assert_eq!(default_report_url("mon", env(&v6)), "http://[fd00::17]:80");
        // Without both (or with a port that is not one), the DNS name.
        let dns = "http://probity.mon.svc.cluster.local";
        assert_eq!(default_report_url("mon", env(&[])), dns);
        assert_eq!(default_report_url("mon", env(&svc[..1])), dns);
        let bad = [
            ("PROBITY_SERVICE_HOST", "10.0.0.17"),
            ("PROBITY_SERVICE_PORT", "tcp://x"),
        ];
        assert_eq!(default_report_url("mon", env(&bad)), dns);
    }
}
