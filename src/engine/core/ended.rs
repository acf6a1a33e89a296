//! The memory of ended runs: enough to answer a late or repeated report with why it is refused
//! (already reported, timed out, check deleted) instead of "unknown". Bounded: the oldest are
//! forgotten first.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};

use crate::api::{CheckKey, Outcome, RunId};
use crate::engine::Rejection;

/// How many ended runs are remembered to tell "already reported" and "late" from "unknown".
const ENDED_MEMORY: usize = 100_000;

#[derive(Debug, Clone)]
pub(super) enum EndedBy {
    Outcome(Outcome),
    Deleted,
}

#[derive(Debug, Clone)]
struct Ended {
    key: CheckKey,
    by: EndedBy,
    deadline: DateTime<Utc>,
}

#[derive(Debug)]
pub(super) struct EndedRuns {
    runs: HashMap<RunId, Ended>,
    order: VecDeque<RunId>,
    limit: usize,
}

impl Default for EndedRuns {
    fn default() -> Self {
        EndedRuns::with_limit(ENDED_MEMORY)
    }
}

impl EndedRuns {
    fn with_limit(limit: usize) -> Self {
        EndedRuns {
            runs: HashMap::new(),
            order: VecDeque::new(),
            limit,
        }
    }

    pub(super) fn remember(
        &mut self,
        uuid: RunId,
        key: CheckKey,
        by: EndedBy,
        deadline: DateTime<Utc>,
    ) {
        self.runs.insert(uuid, Ended { key, by, deadline });
        self.order.push_back(uuid);
        while self.order.len() > self.limit {
            if let Some(old) = self.order.pop_front() {
                self.runs.remove(&old);
            }
        }
    }

    pub(super) fn key_of(&self, uuid: &RunId) -> Option<&CheckKey> {
        self.runs.get(uuid).map(|e| &e.key)
    }

    pub(super) fn contains(&self, uuid: &RunId) -> bool {
        self.runs.contains_key(uuid)
    }

    /// Why a report for `uuid`, which holds no slot, is refused.
    pub(super) fn explain(&self, uuid: RunId) -> Rejection {
        let Some(e) = self.runs.get(&uuid) else {
            return Rejection::Unknown { uuid };
        };
        let key = e.key.clone();
        match &e.by {
            EndedBy::Outcome(Outcome::Timeout) => Rejection::TimedOut {
                uuid,
                key,
                deadline: e.deadline,
            },
            EndedBy::Outcome(outcome @ (Outcome::Success | Outcome::Failure)) => {
                Rejection::AlreadyReported {
                    uuid,
                    key,
                    outcome: *outcome,
                }
            }
            EndedBy::Outcome(outcome) => Rejection::AlreadyEnded {
                uuid,
                key,
                outcome: *outcome,
            },
            EndedBy::Deleted => Rejection::Deleted { uuid, key },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_way_of_ending_is_explained_and_the_oldest_are_forgotten_first() {
        let mut m = EndedRuns::with_limit(2);
        let key = CheckKey::new("ns", "a");
        let t = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let (a, b, c) = (RunId::random(), RunId::random(), RunId::random());
        m.remember(a, key.clone(), EndedBy::Outcome(Outcome::Success), t);
        m.remember(b, key.clone(), EndedBy::Outcome(Outcome::Timeout), t);
        assert!(matches!(m.explain(a), Rejection::AlreadyReported { .. }));
        assert!(matches!(m.explain(b), Rejection::TimedOut { .. }));
        m.remember(c, key.clone(), EndedBy::Deleted, t);
        assert!(!m.contains(&a), "the oldest went first");
        assert!(matches!(m.explain(a), Rejection::Unknown { .. }));
        assert!(matches!(m.explain(c), Rejection::Deleted { .. }));
        m.remember(a, key, EndedBy::Outcome(Outcome::Crash), t);
        assert!(matches!(m.explain(a), Rejection::AlreadyEnded { .. }));
    }
}
