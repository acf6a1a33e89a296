//! Reports for runs this replica has not heard of yet, waiting for the watch to catch up: a
//! follower can get a report before the leader's status write reaches it. Bounded in number,
//! and each event costs O(1): a report waits under its run's id, and expiry reads a queue in
//! arrival order.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::api::{RunId, RunResult};
use crate::engine::Rejection;

/// Most reports waiting at once; beyond it a report is answered 503 (retry) at once.
pub(super) const MAX_PARKED: usize = 10_000;

pub(super) struct Parked {
    pub uuid: RunId,
    /// Boxed: a parked report is rare, and the queue's entries stay small.
    pub result: Box<RunResult>,
    pub reply: oneshot::Sender<Result<(), Rejection>>,
    pub until: Instant,
}

#[derive(Default)]
pub(super) struct ParkedReports {
    by_run: HashMap<RunId, Vec<Parked>>,
    /// When each parked report expires, oldest first; entries whose reports were taken
    /// already are skipped when reached.
    expiry: VecDeque<(Instant, RunId)>,
    len: usize,
}

impl ParkedReports {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Parks `p`, or hands it back when `MAX_PARKED` are waiting.
    pub fn park(&mut self, p: Parked) -> Result<(), Parked> {
        if self.len >= MAX_PARKED {
            return Err(p);
        }
        self.expiry.push_back((p.until, p.uuid));
        self.by_run.entry(p.uuid).or_default().push(p);
        self.len += 1;
        Ok(())
    }

    /// The reports waiting for run `uuid`.
    pub fn take_run(&mut self, uuid: RunId) -> Vec<Parked> {
        let taken = self.by_run.remove(&uuid).unwrap_or_default();
        self.len -= taken.len();
        taken
    }

    /// The reports whose wait is over at `now`.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Parked> {
        let mut out = Vec::new();
        while let Some(&(until, uuid)) = self.expiry.front() {
            if until > now {
                break;
            }
            self.expiry.pop_front();
            if let Some(waiting) = self.by_run.get_mut(&uuid) {
                let (due, keep): (Vec<Parked>, Vec<Parked>) = std::mem::take(waiting)
                    .into_iter()
                    .partition(|p| p.until <= now);
                self.len -= due.len();
                out.extend(due);
                if keep.is_empty() {
                    self.by_run.remove(&uuid);
                } else {
                    *waiting = keep;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parked(uuid: RunId, until: Instant) -> Parked {
        let (reply, _) = oneshot::channel();
        Parked {
            uuid,
            result: Box::new(RunResult::passed()),
            reply,
            until,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reports_wait_by_run_expire_in_order_and_are_capped() {
        let t = Instant::now();
        let (a, b) = (RunId::random(), RunId::random());
        let mut p = ParkedReports::default();
        p.park(parked(a, t + Duration::from_secs(5))).ok().unwrap();
        p.park(parked(b, t + Duration::from_secs(6))).ok().unwrap();
        p.park(parked(a, t + Duration::from_secs(7))).ok().unwrap();
        assert_eq!(p.len(), 3);
        assert!(p.take_expired(t + Duration::from_secs(4)).is_empty());
        // a's first report expires; its second still waits.
        let due = p.take_expired(t + Duration::from_secs(5));
        assert_eq!(due.iter().map(|d| d.uuid).collect::<Vec<_>>(), [a]);
        assert_eq!(p.len(), 2);
        // b's run becomes known: its report is taken, and its expiry entry is skipped later.
        assert_eq!(p.take_run(b).len(), 1);
        assert!(p.take_run(b).is_empty());
        let due = p.take_expired(t + Duration::from_secs(60));
        assert_eq!(due.iter().map(|d| d.uuid).collect::<Vec<_>>(), [a]);
        assert!(p.is_empty());

        for _ in 0..MAX_PARKED {
            p.park(parked(RunId::random(), t)).ok().unwrap();
        }
        assert!(p.park(parked(a, t)).is_err(), "full: handed back");
        assert_eq!(p.take_expired(t).len(), MAX_PARKED);
        assert!(p.is_empty());
    }
}
