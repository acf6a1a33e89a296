//! probity: a synthetic check runner that speaks Kuberhealthy's API.
//!
//! The engine decides when checks run and what their results mean; backends (the local process
//! runner and file store here, Kubernetes elsewhere) carry those decisions out.

pub mod api;
pub mod client;
pub mod cluster;
pub mod engine;
pub mod kubernetes;
pub mod local;
pub mod metrics;
pub mod runner;
pub mod server;
pub mod store;

use std::path::PathBuf;

/// Every failure the library reports. Variants carry their source so callers can say what broke.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] api::validate::Invalid),
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
    #[error("report refused: {0}")]
    ReportRefused(String),
    #[error("report failed: {0}")]
    ReportFailed(String),
    #[error("{0}")]
    Config(String),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// A write lost to another writer, or its object is gone.
    #[error("{0}")]
    Conflict(String),
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

/// Makes large buffers (a 10,000-check `/metrics` or `/json` body) come from and go back to the
/// OS directly. glibc otherwise raises its mmap threshold after the first such buffer is freed
/// and keeps the later ones in its heap, so each scrape ratchets the RSS up.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; it is called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
