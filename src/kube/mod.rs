//! The kubernetes backend: checks from a watch of HealthChecks (`controller`), state in
//! `HealthCheck.status` (`status`), runs as pods (`pods`), leadership from a Lease (`lease`),
//! Events on checks (`events`), one HTTP server per replica. This file wires them together.

pub mod controller;
mod error;
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
use tokio::sync::watch;
use tracing::info;

use crate::api::protocol::namespace_list;
use crate::api::validate::Problem;
use crate::api::HealthCheck;
use crate::engine::{Leadership, Plans};
use crate::serve::{self, Leading, Parts, Settings};
use crate::server;
use crate::{Error, Result};
use controller::{AnnotateRuns, Controller};
pub use error::KubeError;
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

/// The kubernetes backend's own settings; the shared ones are `serve::Settings`.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// Base URL check pods report to.
    pub report_url: String,
    pub namespaces: Namespaces,
    pub lease: LeaseConfig,
    pub retention: Retention,
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
    let mut config = kube::Config::infer().await.map_err(|e| KubeError::Api {
        what: what(),
        source: kube::Error::InferConfig(e),
    })?;
    let agent = concat!("probity/", env!("CARGO_PKG_VERSION"));
    config
        .headers
        .push((USER_AGENT, HeaderValue::from_static(agent)));
    Client::try_from(config).map_err(|source| {
        Error::from(KubeError::Api {
            what: what(),
            source,
        })
    })
}

/// `probity serve` in a cluster. Returns when `shutdown` flips. Runs in flight are left to
/// their pods: the next leader adopts them.
pub async fn serve(
    settings: Settings,
    cfg: KubeConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    cfg.lease.check()?;
    let client = client().await?;
    // The one leadership handle: the elector writes it, everyone else reads it when acting.
    let (claim, leadership) = Leadership::elected(&settings.identity);
    let identity = settings.identity.clone();
    // A cold start's frequency is checked against the cluster's autoscaler when it can be
    // read (once, here: the probe checks again with the revision's own settings).
    let mut defaults = settings.defaults.clone();
    defaults.knative = crate::probe::resource::read_autoscaler(&client).await;
    let plans = Arc::new(Plans::new(defaults));
    let notifies = settings.alerting.is_some();
    let leading = Leading::Elected(leadership);
    serve::serve(settings, leading, shutdown, move |shared| {
        info!(
            identity = %identity,
            "kubernetes backend; listening on http://{}; checks report to {}/check",
            shared.local_addr,
            cfg.report_url.trim_end_matches('/')
        );
        let status = StatusWriter::new(client.clone());
        let runner = PodRunner::new(
            client.clone(),
            shared.engine.clone(),
            cfg.report_url.clone(),
            cfg.retention.clone(),
            shared.leadership.clone(),
        );
        let kube_events = Events::new(client.clone(), &identity);
        let controller = Controller {
            client: client.clone(),
            namespaces: cfg.namespaces.clone(),
            status: status.clone(),
            engine: shared.engine.clone(),
            board: shared.board.clone(),
            plans: plans.clone(),
            events: kube_events.clone(),
            leadership: shared.leadership.clone(),
            notifies,
        };
        let shutdown = shared.shutdown.clone();
        let pods = tokio::spawn(
            runner
                .clone()
                .watch(cfg.namespaces.clone(), shutdown.clone()),
        );
        let checks = tokio::spawn(controller.run(shutdown.clone()));
        let elector = tokio::spawn(Elector::new(client.clone(), cfg.lease, claim).run(shutdown));
        let logs = Arc::new(logs::PodLogs::new(client.clone(), runner.clone()));
        let mut parts = Parts::new(Arc::new(runner), Arc::new(status));
        // Runs in flight are the pods'; the next leader adopts them.
        parts.grace = Duration::ZERO;
        parts.observers.push(Arc::new(kube_events));
        parts.fenced = true;
        parts.plans = Some(plans);
        parts.park_reports = REPORT_PARK;
        parts.manual = Some(Arc::new(AnnotateRuns { client }));
        parts.logs = Some(logs);
        // Only probes hold a descriptor (their socket); pods share the API server's connections.
        parts.fds_per_run = 1;
        parts.tasks = vec![pods, checks];
        // A scheduler that died leaves its lease to expire; otherwise the elector hands it over.
        parts.finish = Some(Box::new(move |died| {
            Box::pin(async move {
                if died {
                    elector.abort();
                }
                let _ = elector.await;
            })
        }));
        Ok(parts)
    })
    .await
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
