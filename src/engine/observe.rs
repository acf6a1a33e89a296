//! What the engine tells whoever watches it (metrics, events, `probity run`): runs starting and
//! finishing, checks going away. Observers only watch; none of them can change a decision.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::api::{CheckKey, ProbeKind, RunResult};

/// A finished run.
#[derive(Debug, Clone)]
pub struct Finished {
    pub key: CheckKey,
    pub result: RunResult,
    pub duration: Duration,
    /// The probe method, for a probe check.
    pub probe: Option<ProbeKind>,
}

pub trait Observer: Send + Sync + 'static {
    /// A run started, `lag` after it was due.
    fn started(&self, _key: &CheckKey, _lag: Duration) {}
    /// A run reached its outcome (recorded by this replica).
    fn finished(&self, _run: &Finished) {}
    /// The check is gone: drop what is kept about it.
    fn forgotten(&self, _key: &CheckKey) {}
    /// A run could not start for probity's own reasons and will be tried again.
    fn deferred(&self, _key: &CheckKey) {}
}

/// Finished runs down a channel (`probity run`, tests, the cluster's failure events).
impl Observer for mpsc::UnboundedSender<Finished> {
    fn finished(&self, run: &Finished) {
        let _ = self.send(run.clone());
    }
}
