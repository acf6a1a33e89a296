//! Backend-neutral scheduling: when runs start, how they end, what the results mean.
//!
//! [`core::Engine`] is a synchronous state machine: callers pass the time in and get [`Effect`]s
//! back. [`driver`] runs it against a [`Runner`] and a [`StatusStore`] with an injectable
//! [`clock::Clock`], reading who leads from one [`Leadership`] handle and telling
//! [`Observer`]s what happened. Nothing here calls the API server, spawns a process or serves
//! HTTP; this folder imports only `api` and the crate's error type.

pub mod board;
pub mod clock;
pub mod core;
pub mod driver;
pub mod leadership;
pub mod manual;
pub mod memory;
pub mod observe;
pub mod plans;
pub mod refusal;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::validate::Invalid;
use crate::api::{
    CheckKey, HealthCheck, HealthCheckStatus, ProbeKind, RunCredential, RunId, RunResult,
};

pub use board::{Board, CheckView};
pub use core::{Engine, EngineConfig};
pub use driver::{Driver, EngineHandle, Event};
pub use leadership::{Claim, ClaimWriter, Leadership};
pub use manual::{EngineRuns, RequestFuture, RunRequests};
pub use memory::MemoryStore;
pub use observe::{Finished, Observer};
pub use plans::Plans;
pub use refusal::{Rejection, RunRefused};

/// A check as a backend sees it: the resource, and a problem found while loading it (for
/// example an unknown field) that validation of the typed spec cannot see. Its plan is worked
/// out (and kept) by [`Plans`].
#[derive(Debug, Clone)]
pub struct Desired {
    pub check: Arc<HealthCheck>,
    pub load_error: Option<Invalid>,
    /// The check is leaving (a HealthCheck being deleted, held by probity's finalizer; a
    /// deleted file whose state says receivers have open alerts): why. It runs no more; it is
    /// kept until its receivers are told it is resolved.
    pub departed: Option<String>,
}

impl Desired {
    pub fn new(check: Arc<HealthCheck>, load_error: Option<Invalid>) -> Self {
        Desired {
            check,
            load_error,
            departed: None,
        }
    }

    /// A check that is leaving, for `reason`.
    pub fn departing(check: Arc<HealthCheck>, reason: impl Into<String>) -> Self {
        Desired {
            check,
            load_error: None,
            departed: Some(reason.into()),
        }
    }
}

/// Why a check left, as notices say it.
pub const DELETED: &str = "the check was deleted";

/// Everything a runner needs to start one run.
#[derive(Debug, Clone)]
pub struct StartRun {
    pub key: CheckKey,
    /// The run's public id: in status, labels, logs.
    pub uuid: RunId,
    /// The run's `KH_RUN_UUID`, which its reports must carry; given to the pod or process
    /// only (see `RunCredential::run_id`).
    pub credential: RunCredential,
    pub check: Arc<HealthCheck>,
    pub started: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub timeout: Duration,
    /// When the run was due; `started - due` is the scheduler's lag.
    pub due: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The deadline passed.
    Timeout,
    /// The check was deleted.
    Removed,
}

/// How the pod or process of a run went away, as the runner saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// It could not be started for a reason of probity's own, not the check's (the process ran
    /// out of file descriptors or processes): no outcome is recorded and the run is tried again
    /// shortly.
    Deferred(String),
    /// It is gone, and this is what the run ended as unless a verdict came first: a start
    /// failure, a crash (exit code, signal, last output), or a probe's own result.
    Ended(RunResult),
}

impl RunEnd {
    pub fn start_failed(why: impl Into<String>) -> Self {
        RunEnd::Ended(RunResult::start_failed(why))
    }
    pub fn crashed(why: impl Into<String>) -> Self {
        RunEnd::Ended(RunResult::crashed(why))
    }
}

/// What the engine asks its backends to do, in order.
#[derive(Debug, Clone)]
pub enum Effect {
    Start(StartRun),
    /// The runner should make a run it did not start (found in saved state) its own.
    Adopt {
        key: CheckKey,
        uuid: RunId,
        deadline: DateTime<Utc>,
        check: Arc<HealthCheck>,
    },
    Stop {
        key: CheckKey,
        uuid: RunId,
        reason: StopReason,
    },
    /// Leadership was lost: the runner lets go of the run without stopping it (the next leader
    /// adopts it) and sends no `Released` for it.
    Disown {
        key: CheckKey,
        uuid: RunId,
    },
    /// Publish this state of a check, and persist it when `persist` (it changed).
    Save {
        key: CheckKey,
        view: Arc<CheckView>,
        persist: bool,
    },
    /// The check is gone: drop its saved state and published view.
    Forget {
        key: CheckKey,
    },
    /// A run reached its outcome (for metrics and logs).
    Finished {
        key: CheckKey,
        uuid: RunId,
        result: RunResult,
        duration: Duration,
        /// The probe method, for a probe check.
        probe: Option<ProbeKind>,
    },
    /// How late a run started against its due time (for the lag metric).
    Started {
        key: CheckKey,
        lag: Duration,
    },
    /// A run could not start for probity's own reasons and is tried again at `retry`.
    Deferred {
        key: CheckKey,
        reason: String,
        retry: DateTime<Utc>,
    },
}

/// Whether starting something failed because of this process's own limits (open files,
/// processes, memory) rather than anything the check asked for.
pub fn own_limit(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM)
    )
}

/// Starts, stops and watches runs. Every run it is given must end in exactly one
/// `Event::Released` for its UUID, whether it exited, failed to start, or was stopped.
pub trait Runner: Send + Sync + 'static {
    fn start(&self, run: StartRun);
    fn adopt(&self, key: CheckKey, uuid: RunId, deadline: DateTime<Utc>, check: Arc<HealthCheck>);
    fn stop(&self, key: &CheckKey, uuid: RunId, reason: StopReason);
    /// Forget the run without stopping it (leadership lost). The local runner is never a
    /// follower, so it has nothing to do.
    fn disown(&self, _key: &CheckKey, _uuid: RunId) {}
    /// What the run's pod or process is doing, when that explains a timeout (still pending,
    /// unschedulable); read at the deadline.
    fn describe(&self, _uuid: RunId) -> Option<String> {
        None
    }
}

/// Resolves once a status write is durable.
pub type SaveFuture = Pin<Box<dyn Future<Output = crate::Result<()>> + Send>>;

/// Where check state lives. `save` resolves once the state is durable.
pub trait StatusStore: Send + Sync + 'static {
    /// The write is ordered when `save` is called; the future resolves when it is durable.
    fn save(&self, key: &CheckKey, status: &Arc<HealthCheckStatus>) -> SaveFuture;
    fn forget(&self, key: &CheckKey);

    /// A save no one waits for: its failure must still be said. By default a task awaits it
    /// and logs a failure; a store that logs its own failures drops it instead (a task and a
    /// wake-up fewer per run, which at 1,000 runs a second is a good part of the CPU).
    fn detach(&self, save: SaveFuture) {
        tokio::spawn(async move {
            if let Err(e) = save.await {
                tracing::error!("saving check state: {e}");
            }
        });
    }

    /// A save no one waits for that may also wait a moment for others to share its write: the
    /// state of a probe, whose runs live and die with this process, so a crash loses at most
    /// its latest record and no one was told it was kept. By default the same as `detach`.
    fn linger(&self, save: SaveFuture) {
        self.detach(save)
    }
}
