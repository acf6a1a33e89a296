//! The engine's only source of time. Production uses the wall clock; tests use tokio's clock,
//! which `tokio::time::pause` freezes and auto-advances, so schedules run in milliseconds.

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that follows tokio's (pausable) clock from a fixed starting point.
#[derive(Debug, Clone)]
pub struct TokioClock {
    base_wall: DateTime<Utc>,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base_wall: DateTime<Utc>) -> Self {
        TokioClock {
            base_wall,
            base: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.base;
        self.base_wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}
