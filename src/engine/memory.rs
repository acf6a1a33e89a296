//! A store that keeps nothing, for one-off runs (`probity run`) and tests.

use crate::api::{CheckKey, HealthCheckStatus};
use crate::engine::{SaveFuture, StatusStore};

#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStore;

impl StatusStore for MemoryStore {
    fn save(&self, _key: &CheckKey, _status: &std::sync::Arc<HealthCheckStatus>) -> SaveFuture {
        Box::pin(async { Ok(()) })
    }
    fn forget(&self, _key: &CheckKey) {}
}
