//! The crate's one error type. Every variant says what broke and carries its source, so a
//! caller can tell a conflict from an outage without reading the message.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::api::validate::Invalid;
use crate::api::CheckKey;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// A file that is not YAML as a whole.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("serializing {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// A setting given on the command line or in the environment that cannot be used.
    #[error("{setting}: {source}")]
    Setting {
        setting: &'static str,
        #[source]
        source: Box<Error>,
    },
    /// A variable a check run gets (`KH_*`) that is missing or malformed.
    #[error("{var} {problem}")]
    RunEnv { var: &'static str, problem: String },
    #[error(
        "leader election timings must satisfy 0 < retry period ({retry:?}) < renew deadline ({renew:?}) < lease duration ({lease:?})"
    )]
    LeaseTimings {
        retry: Duration,
        renew: Duration,
        lease: Duration,
    },
    /// The server answered a report with a refusal that a retry cannot change.
    #[error("report refused: {status} {reason}")]
    ReportRefused { status: u16, reason: String },
    /// The report could not be delivered by the run's deadline.
    #[error("report failed: {0}")]
    ReportFailed(String),
    #[error("building the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The check went from the API server while a write for it was pending.
    #[error("{check} was deleted")]
    CheckDeleted { check: CheckKey },
    /// A write before the watch has shown the object: it could not be fenced.
    #[error("{check} is not known yet")]
    NotObserved { check: CheckKey },
    /// Another writer changed the status this write was based on (a new leader, a report on
    /// another replica): its state stands, ours is dropped.
    #[error("the status of {check} was changed by another writer")]
    Superseded { check: CheckKey },
    #[error("the status of {check} keeps changing under this writer")]
    Contended { check: CheckKey },
    #[error("the status writer stopped")]
    WriterStopped,
    /// One failure handed to several waiters (coalesced writes).
    #[error(transparent)]
    Shared(Arc<Error>),
    #[error("the {task} task stopped: {source}")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The failure itself, through any sharing.
    pub fn root(&self) -> &Error {
        match self {
            Error::Shared(e) => e.root(),
            e => e,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How `serve` ends, once its tasks are joined: the HTTP server's own result, unless the server
/// or the scheduler task died (a bug), which must make the process exit non-zero so its
/// supervisor restarts it rather than leave a page that no longer changes.
pub(crate) fn serve_outcome(
    server: std::result::Result<Result<()>, tokio::task::JoinError>,
    scheduler: std::result::Result<(), tokio::task::JoinError>,
) -> Result<()> {
    let served = server.map_err(|source| Error::Task {
        task: "HTTP server",
        source,
    })?;
    scheduler.map_err(|source| Error::Task {
        task: "scheduler",
        source,
    })?;
    served
}
