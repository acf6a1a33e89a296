//! Built-in probes, run by probity itself with Kubernetes' probe semantics
//! (reference: kubelet's prober). Each probe is one run like any other: its result goes to the
//! engine as a report, so status, history, thresholds and metrics treat probes and pods alike.

pub mod dns;
pub mod exec;
pub mod grpc;
pub mod http;
pub mod http1;
pub mod http_assert;
pub mod podexec;
pub mod resource;
pub mod tcp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::task::AbortHandle;
use tracing::warn;

pub use crate::api::RunResult;
use crate::api::{CheckKey, HealthCheck, Probe, RunId};
use crate::engine::{EngineHandle, RunEnd, StartRun, StopReason};

/// Why a probe got no answer to judge. Each reads as one line of the run's errors, naming what
/// was asked: `connect 10.0.0.5:5432: connection refused`, `dns: no such host "x"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// What the probe names is not something to ask: a URL, a header, a pattern.
    #[error("{0}")]
    Target(String),
    #[error("dns: no such host {0:?}")]
    NoSuchHost(String),
    #[error("dns: no address for {0:?}")]
    NoAddress(String),
    #[error("dns: {host:?}: {reason}")]
    Dns { host: String, reason: String },
    #[error("connect {addr}: {reason}")]
    Connect {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("TLS name {host:?}: {reason}")]
    TlsName { host: String, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    /// The exchange after connecting (HTTP, HTTP/2, gRPC) failed, as the protocol says.
    #[error("{0}")]
    Exchange(String),
}

/// `after 3ms`, `after 1.2s`: how long a failed attempt took, for messages.
pub(crate) fn after(start: Instant) -> String {
    let took = start.elapsed();
    if took < Duration::from_millis(1) {
        return "after <1ms".into();
    }
    format!(
        "after {}",
        crate::api::duration::human(Duration::from_millis(took.as_millis() as u64))
    )
}

/// Runs one probe. The caller bounds it with the check's timeout.
pub async fn probe(p: &Probe) -> RunResult {
    if let Some(h) = &p.http_get {
        http::probe(h).await
    } else if let Some(t) = &p.tcp_socket {
        tcp::probe(t).await
    } else if let Some(e) = &p.exec {
        exec::probe(e).await
    } else if let Some(g) = &p.grpc {
        grpc::probe(g).await
    } else if let Some(d) = &p.dns {
        dns::probe(d, dns::QUERY_LIMIT).await
    } else if p.resource.is_some() || p.knative.is_some() {
        RunResult::failure("resource probes are run by a ProbeRunner, which knows the cluster")
    } else {
        RunResult::failure("the probe has no method")
    }
}

/// Runs probe checks for any backend: starts each run as a task, reports its verdict to the
/// engine, and cancels it when the engine stops the run (at its deadline).
#[derive(Clone)]
pub struct ProbeRunner {
    engine: EngineHandle,
    tasks: Arc<Mutex<HashMap<RunId, AbortHandle>>>,
    /// Set in a cluster: exec probes run in pods through pods/exec.
    cluster: Option<kube::Client>,
    /// What resource and Knative probes read: the backend's cluster, or a kubeconfig.
    resources: Arc<resource::Cluster>,
}

impl std::fmt::Debug for ProbeRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeRunner")
            .field("in_cluster", &self.cluster.is_some())
            .finish_non_exhaustive()
    }
}

impl ProbeRunner {
    pub fn new(engine: EngineHandle) -> Self {
        ProbeRunner {
            engine,
            tasks: Arc::default(),
            cluster: None,
            resources: resource::Cluster::from_kubeconfig(None),
        }
    }

    /// Run exec probes in pods of the cluster (through pods/exec), not as local processes,
    /// and read resources there.
    pub fn in_cluster(mut self, client: kube::Client) -> Self {
        self.resources = resource::Cluster::of(client.clone());
        self.cluster = Some(client);
        self
    }

    /// Locally: resource probes read the cluster of this kubeconfig (else KUBECONFIG or
    /// ~/.kube/config), connected when the first one runs.
    pub fn with_kubeconfig(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.resources = resource::Cluster::from_kubeconfig(path);
        self
    }

    pub fn start(&self, run: StartRun) {
        let engine = self.engine.clone();
        let tasks = self.tasks.clone();
        let uuid = run.uuid;
        // Registered before the task can finish, so its own removal always finds it.
        let mut guard = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let cluster = self.cluster.clone();
        let resources = self.resources.clone();
        let handle = tokio::spawn(async move {
            let Some(p) = run.check.spec.probe.as_ref() else {
                return;
            };
            let result = match (&cluster, p) {
                (Some(client), Probe { exec: Some(e), .. }) => {
                    podexec::probe(client, run.key.namespace(), e).await
                }
                (
                    _,
                    Probe {
                        resource: Some(r), ..
                    },
                ) => resources.probe_resource(&run.key, r).await,
                (_, Probe { dns: Some(d), .. }) => dns::probe(d, run.timeout).await,
                (
                    _,
                    Probe {
                        knative: Some(k), ..
                    },
                ) => {
                    // Leave a moment of the run to report a request that took all it had.
                    let budget = run
                        .timeout
                        .saturating_sub(std::time::Duration::from_millis(500));
                    resources.probe_knative(&run.key, k, budget).await
                }
                _ => probe(p).await,
            };
            let result = if p.is_warning() {
                result.as_warning()
            } else {
                result
            };
            for w in &result.warnings {
                warn!(check = %run.key, "{w}");
            }
            tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uuid);
            engine.ended(uuid, result).await;
        });
        guard.insert(uuid, handle.abort_handle());
    }

    pub fn adopt(
        &self,
        _key: CheckKey,
        uuid: RunId,
        _deadline: DateTime<Utc>,
        _check: Arc<HealthCheck>,
    ) {
        // A probe in flight died with the process that ran it; say so and free the slot.
        self.release_later(uuid, "the probe was interrupted by a restart of probity");
    }

    /// Frees a run's slot from a synchronous caller.
    fn release_later(&self, uuid: RunId, message: &str) {
        let engine = self.engine.clone();
        let end = RunEnd::crashed(message);
        tokio::spawn(async move { engine.released(uuid, end).await });
    }

    /// Cancels the probe of run `uuid`; false when it is not a probe run of this runner.
    pub fn stop(&self, _key: &CheckKey, uuid: RunId, _reason: StopReason) -> bool {
        let task = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uuid);
        let found = task.is_some();
        if let Some(task) = task {
            task.abort();
            self.release_later(uuid, "stopped");
        }
        found
    }
}
