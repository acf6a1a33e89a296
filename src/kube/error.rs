//! The kubernetes backend's errors: the API server's answers, and the status writer's refusals
//! a caller must tell apart (a conflict from an outage, a deleted check from a deposed leader).

use std::sync::Arc;
use std::time::Duration;

use crate::api::CheckKey;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{what}: {source}")]
    Api {
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
    Shared(Arc<KubeError>),
    #[error(
        "leader election timings must satisfy 0 < retry period ({retry:?}) < renew deadline ({renew:?}) < lease duration ({lease:?})"
    )]
    LeaseTimings {
        retry: Duration,
        renew: Duration,
        lease: Duration,
    },
}

impl KubeError {
    /// The failure itself, through any sharing.
    pub fn root(&self) -> &KubeError {
        match self {
            KubeError::Shared(e) => e.root(),
            e => e,
        }
    }
}
