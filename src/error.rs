//! The crate's error type, which the components' own error types (`kube::KubeError`,
//! `client::ClientError`, and the handlers' and probes' errors) convert into where they meet.
//! Every variant says what broke and carries its source, so a caller can tell a conflict from an
//! outage without reading the message.

use std::path::PathBuf;

use crate::api::validate::Invalid;

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
    /// A check's side of the report protocol (`probity report`, `probity check`).
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error("building the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The kubernetes backend: the API server, the status writer, leader election.
    #[error(transparent)]
    Kube(#[from] crate::kube::KubeError),
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
