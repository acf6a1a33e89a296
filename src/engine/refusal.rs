//! Why the engine said no, as values. The engine knows nothing of HTTP: `server/` alone turns
//! these into status codes (400 "never retry", 410 late, 500/503 retry).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::api::validate::Invalid;
use crate::api::{CheckKey, Outcome, RunId};

/// Why a report was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Rejection {
    #[error("unknown run UUID {uuid}: no run of any check has it")]
    Unknown { uuid: RunId },
    #[error("run {uuid} of {key} already reported ({}); a run reports once", .outcome.as_str())]
    AlreadyReported {
        uuid: RunId,
        key: CheckKey,
        outcome: Outcome,
    },
    /// Ended without a report (crash, start failure).
    #[error("run {uuid} of {key} already ended ({})", .outcome.as_str())]
    AlreadyEnded {
        uuid: RunId,
        key: CheckKey,
        outcome: Outcome,
    },
    #[error("run {uuid} belonged to {key}, which was deleted")]
    Deleted { uuid: RunId, key: CheckKey },
    /// The run timed out before the report came.
    #[error("run {uuid} of {key} timed out at {}; the report is too late", .deadline.to_rfc3339())]
    TimedOut {
        uuid: RunId,
        key: CheckKey,
        deadline: DateTime<Utc>,
    },
    /// The report came after the deadline; `recorded` when this report recorded the timeout
    /// (on a follower the leader does, so two writers do not count it twice).
    #[error("run {uuid} of {key} is past its deadline {}{}", .deadline.to_rfc3339(), if *.recorded { "; recorded as a timeout" } else { "" })]
    PastDeadline {
        uuid: RunId,
        key: CheckKey,
        deadline: DateTime<Utc>,
        recorded: bool,
    },
    #[error("the scheduler is shutting down; retry")]
    ShuttingDown,
    /// A ping for a check that is not (or no longer) a heartbeat check here.
    #[error("no heartbeat check {key}")]
    NoHeartbeat { key: CheckKey },
    /// Too many reports wait for runs this replica has not seen yet.
    #[error("too many reports are waiting for their runs to be known here; retry")]
    Overloaded,
    /// Accepted, but the outcome could not be made durable; nothing of it stands.
    #[error("the report was accepted but could not be stored: {0}")]
    NotStored(Arc<crate::Error>),
}

impl PartialEq for Rejection {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

/// Why a manual run was not started.
#[derive(Debug, thiserror::Error)]
pub enum RunRefused {
    #[error("no check {0}")]
    NoCheck(CheckKey),
    #[error("{key} is invalid: {invalid}")]
    Invalid { key: CheckKey, invalid: Invalid },
    #[error("{0} already has a run in flight")]
    InFlight(CheckKey),
    #[error("{0} is a heartbeat check: its job's pings are its runs")]
    Heartbeat(CheckKey),
    #[error("shutting down")]
    ShuttingDown,
    #[error("this replica is not the leader")]
    NotLeader,
    #[error("the scheduler has stopped")]
    Stopped,
    /// The request could not be handed to whoever schedules (the API server did not take it).
    #[error("{0}")]
    NotRecorded(crate::Error),
}
