//! Who leads, as one value: the current claim (holder, valid until), written by the elector
//! alone and read at the instant of acting by whoever acts (driver, pod runner, controller,
//! board, metrics). A process that was frozen (SIGSTOP, a stalled VM) wakes with timers and
//! tasks firing in any order; reading the claim's validity then does not depend on the elector
//! having run first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The lease as this replica last knew it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claim {
    /// Who holds it; empty while unknown.
    pub holder: String,
    /// Until when the holder may act, by this process's clock: for this replica, its last
    /// renewal plus the renew deadline. None: for good (one process, no election).
    pub valid_until: Option<Instant>,
}

/// A reader of the claim; cheap to clone.
#[derive(Debug, Clone)]
pub struct Leadership {
    identity: Arc<str>,
    rx: watch::Receiver<Claim>,
}

/// The one writer of the claim: the elector.
#[derive(Debug)]
pub struct ClaimWriter {
    identity: Arc<str>,
    tx: watch::Sender<Claim>,
}

impl Leadership {
    /// One process that always leads (the local backend, `probity run`).
    pub fn solo(identity: &str) -> Self {
        let (_, rx) = watch::channel(Claim {
            holder: identity.to_string(),
            valid_until: None,
        });
        Leadership {
            identity: identity.into(),
            rx,
        }
    }

    /// A replica that leads only while its elector says so; nobody is known to lead yet.
    pub fn elected(identity: &str) -> (ClaimWriter, Leadership) {
        let (tx, rx) = watch::channel(Claim::default());
        let identity: Arc<str> = identity.into();
        (
            ClaimWriter {
                identity: identity.clone(),
                tx,
            },
            Leadership { identity, rx },
        )
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The holder as last seen (`CurrentMaster`).
    pub fn holder(&self) -> String {
        self.rx.borrow().holder.clone()
    }

    /// Whether this replica may act as leader at this instant.
    pub fn is_current(&self) -> bool {
        let claim = self.rx.borrow();
        *claim.holder == *self.identity && claim.valid_until.is_none_or(|t| Instant::now() < t)
    }

    /// Resolves when the claim is written again (a renewal, a change of holder). Never, when
    /// nothing writes it.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl ClaimWriter {
    /// This replica holds the lease: good until `renew_deadline` after `asked`, the moment
    /// the renewal was asked for (the API server may have written it at once).
    pub fn renewed(&self, asked: Instant, renew_deadline: Duration) {
        self.tx.send_replace(Claim {
            holder: self.identity.to_string(),
            valid_until: Some(asked + renew_deadline),
        });
    }

    /// Someone else holds it.
    pub fn held_by(&self, holder: &str) {
        self.tx.send_if_modified(|c| {
            let next = Claim {
                holder: holder.to_string(),
                valid_until: None,
            };
            std::mem::replace(c, next.clone()) != next
        });
    }

    /// This replica may no longer act as leader (renew deadline passed, shutdown), whoever
    /// the lease names now.
    pub fn revoke(&self) {
        self.tx.send_if_modified(|c| {
            let mine = *c.holder == *self.identity;
            let lapsed = Some(Instant::now());
            if mine && c.valid_until.is_none_or(|t| t > Instant::now()) {
                c.valid_until = lapsed;
                return true;
            }
            false
        });
    }

    pub fn is_current(&self) -> bool {
        let claim = self.tx.borrow();
        *claim.holder == *self.identity && claim.valid_until.is_some_and(|t| Instant::now() < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_holds_for_the_renew_deadline_after_a_renewal_and_not_after_a_loss() {
        let (w, l) = Leadership::elected("me");
        assert!(!l.is_current(), "never renewed");
        w.renewed(Instant::now(), Duration::from_secs(10));
        assert!(l.is_current());
        assert_eq!(l.holder(), "me");
        w.revoke();
        assert!(!l.is_current());
        // A renewal asked for longer ago than the deadline (a process frozen since) is no good.
        let long_ago = Instant::now() - Duration::from_secs(11);
        w.renewed(long_ago, Duration::from_secs(10));
        assert!(!l.is_current());
        w.renewed(Instant::now(), Duration::from_secs(10));
        w.held_by("other");
        assert!(!l.is_current());
        assert_eq!(l.holder(), "other");
    }

    #[test]
    fn a_solo_process_always_leads() {
        let l = Leadership::solo("me");
        assert!(l.is_current());
        assert_eq!(l.holder(), "me");
    }
}
