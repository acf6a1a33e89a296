//! Manual run requests (`POST /api/run`): the seam between the admin API and whoever schedules.
//! One process hands them straight to its engine; a cluster records them on the HealthCheck for
//! the leader (`kube::controller`).

use std::future::Future;
use std::pin::Pin;

use super::{EngineHandle, RunRefused};
use crate::api::CheckKey;

pub type RequestFuture = Pin<Box<dyn Future<Output = Result<(), RunRefused>> + Send>>;

/// Hands a manual run request to whoever schedules.
pub trait RunRequests: Send + Sync + 'static {
    fn request(&self, key: CheckKey) -> RequestFuture;
}

/// One process is the scheduler: straight to the engine.
pub struct EngineRuns(pub EngineHandle);

impl RunRequests for EngineRuns {
    fn request(&self, key: CheckKey) -> RequestFuture {
        let engine = self.0.clone();
        Box::pin(async move { engine.run_now(key).await })
    }
}
