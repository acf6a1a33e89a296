//! The local backend's runner: a pod's first container as a local process, or a built-in probe.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::logbook::LogBook;
use super::process::ProcessRunner;
use crate::api::{CheckKey, HealthCheck, RunId};
use crate::engine::{EngineHandle, Runner, StartRun, StopReason};
use crate::probe::ProbeRunner;

/// The local backend's runner: probes run in probity, pods as processes.
#[derive(Debug, Clone)]
pub struct LocalRunner {
    processes: ProcessRunner,
    probes: ProbeRunner,
}

impl LocalRunner {
    pub fn new(engine: EngineHandle, report_base: impl Into<String>) -> Self {
        LocalRunner {
            processes: ProcessRunner::new(engine.clone(), report_base),
            probes: ProbeRunner::new(engine),
        }
    }

    /// Resource probes read the cluster of this kubeconfig (None: as kubectl finds it).
    pub fn reading_cluster(mut self, kubeconfig: Option<std::path::PathBuf>) -> Self {
        self.probes = self.probes.with_kubeconfig(kubeconfig);
        self
    }

    /// Keeps each process run's output in `book`.
    pub fn keeping_logs(mut self, book: LogBook) -> Self {
        self.processes = self.processes.keeping_logs(book);
        self
    }
}

impl Runner for LocalRunner {
    fn start(&self, run: StartRun) {
        if run.check.spec.probe.is_some() {
            self.probes.start(run)
        } else {
            self.processes.start(run)
        }
    }

    fn adopt(&self, key: CheckKey, uuid: RunId, deadline: DateTime<Utc>, check: Arc<HealthCheck>) {
        // Only a process can outlive probity; a probe in flight ended with it.
        if check.spec.probe.is_some() {
            self.probes.adopt(key, uuid, deadline, check)
        } else {
            self.processes.adopt(key, uuid, deadline, check)
        }
    }

    fn stop(&self, key: &CheckKey, uuid: RunId, reason: StopReason) {
        if !self.probes.stop(key, uuid, reason) {
            self.processes.stop(key, uuid, reason);
        }
    }
}
