//! Leader election on a Lease, with client-go's rules: a lease is expired when its record has
//! not changed for `lease_duration` by this replica's own clock (never by comparing clocks across
//! machines); the holder renews every `retry_period` and steps down when it has not renewed for
//! `renew_deadline`, which is shorter than the lease, so it stops scheduling before anyone else
//! can take over. Losing is never final: every replica keeps contending.
//!
//! The elector is the one writer of the [`Leadership`](crate::engine::Leadership) claim that
//! everyone else reads at the instant of acting.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::KubeError;
use crate::engine::ClaimWriter;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The timings must nest: retry < renew deadline < lease duration.
    pub fn check(&self) -> Result<(), KubeError> {
        if self.retry_period.is_zero()
            || self.retry_period >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            return Err(KubeError::LeaseTimings {
                retry: self.retry_period,
                renew: self.renew_deadline,
                lease: self.lease_duration,
            });
        }
        Ok(())
    }
}

/// The lease duration as the Lease records it, in whole seconds rounded up: rounded down, a
/// 1.5 s lease would tell the others it expires before our renew deadline has passed.
fn lease_seconds(d: Duration) -> i32 {
    d.as_millis().div_ceil(1000).clamp(1, i32::MAX as u128) as i32
}

/// What a look at the lease found.
#[derive(Debug, PartialEq)]
enum Seen {
    /// We hold it (acquired or renewed just now).
    Ours,
    /// Someone else holds it (their name, if any).
    Theirs(Option<String>),
}

pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The last record seen and when (by our clock) it last changed.
    observed: Option<(String, Instant)>,
    /// The lease as we last wrote it while holding it: a renewal is then one PUT, no GET.
    held: Option<Lease>,
    claim: ClaimWriter,
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Elector {
    /// An elector that writes what it finds to `claim`.
    pub fn new(client: Client, cfg: LeaseConfig, claim: ClaimWriter) -> Self {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
            held: None,
            claim,
        }
    }

    fn record_id(l: &Lease) -> String {
        let s = l.spec.as_ref();
        format!(
            "{}|{:?}|{:?}",
            s.and_then(|s| s.holder_identity.clone())
                .unwrap_or_default(),
            s.and_then(|s| s.renew_time.as_ref().map(|t| t.0)),
            s.and_then(|s| s.lease_transitions)
        )
    }

    /// Writes the lease (a compare-and-swap on its resourceVersion) and remembers it as ours.
    async fn put(&mut self, lease: &Lease) -> Result<(), kube::Error> {
        let l = self
            .api
            .replace(&self.cfg.name, &PostParams::default(), lease)
            .await?;
        self.observed = Some((Self::record_id(&l), Instant::now()));
        self.held = Some(l);
        Ok(())
    }

    async fn try_once(&mut self) -> Result<Seen, kube::Error> {
        let me = self.cfg.identity.clone();
        let secs = lease_seconds(self.cfg.lease_duration);
        if let Some(mut lease) = self.held.take() {
            // Renew from our own copy; a conflict means someone else wrote it: read it then.
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(now_micro());
            }
            match self.put(&lease).await {
                Ok(()) => return Ok(Seen::Ours),
                Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now_micro()),
                    renew_time: Some(now_micro()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(l) => {
                    self.held = Some(l);
                    Ok(Seen::Ours)
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(Seen::Theirs(None)),
                Err(e) => Err(e),
            };
        };
        let id = Self::record_id(&lease);
        let now = Instant::now();
        let changed_at = match &self.observed {
            Some((seen, at)) if *seen == id => *at,
            _ => now,
        };
        self.observed = Some((id, changed_at));
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let duration = spec
            .lease_duration_seconds
            .map_or(self.cfg.lease_duration, |s| {
                Duration::from_secs(s.max(0) as u64)
            });
        let ours = holder.as_deref() == Some(me.as_str());
        let expired = holder.is_none() || now.duration_since(changed_at) >= duration;
        if !ours && !expired {
            return Ok(Seen::Theirs(holder));
        }
        if !ours {
            spec.acquire_time = Some(now_micro());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(me.clone());
        }
        spec.renew_time = Some(now_micro());
        spec.lease_duration_seconds = Some(secs);
        // The resourceVersion from the read makes this a compare-and-swap: of two replicas
        // taking an expired lease at once, one gets a conflict.
        match self.put(&lease).await {
            Ok(()) => Ok(Seen::Ours),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(Seen::Theirs(holder)),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (on shutdown), so another replica need not wait for it to expire.
    async fn release(&mut self) {
        self.held = None;
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now_micro());
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!("released the leader lease"),
            Err(e) => warn!("releasing the leader lease: {e}"),
        }
    }

    /// Contends for and holds the lease until `shutdown`, writing the claim on every renewal
    /// (so a scheduler that stepped down by itself when the claim lapsed takes it up again)
    /// and whenever the holder changes.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut last_renew: Option<Instant> = None;
        let retry = self.cfg.retry_period;
        loop {
            let asked = std::time::Instant::now();
            let attempt = tokio::time::timeout(retry, self.try_once());
            let result = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                r = attempt => r,
            };
            let was = self.claim.is_current();
            match result {
                Ok(Ok(Seen::Ours)) => {
                    last_renew = Some(Instant::now());
                    // Counted from before the request: the API server may have written it at once.
                    self.claim.renewed(asked, self.cfg.renew_deadline);
                }
                Ok(Ok(Seen::Theirs(holder))) => match holder {
                    Some(h) => self.claim.held_by(&h),
                    None => self.claim.revoke(),
                },
                Ok(Err(e)) => debug!("leader lease: {e}"),
                Err(_) => debug!("leader lease: the API server did not answer in time"),
            }
            // Without a renewal for the renew deadline, step down before the lease can expire.
            if self.claim.is_current()
                && last_renew.is_none_or(|t| t.elapsed() >= self.cfg.renew_deadline)
            {
                warn!("could not renew the leader lease in time; stepping down");
                self.claim.revoke();
            }
            let now_leading = self.claim.is_current();
            if now_leading != was {
                if now_leading {
                    info!(lease = %self.cfg.name, "became leader");
                } else {
                    info!(lease = %self.cfg.name, "no longer leader");
                }
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(retry) => {}
            }
        }
        let leading = self.claim.is_current();
        self.claim.revoke();
        if leading {
            // An unreachable API server must not hold up the shutdown; the lease then expires.
            let _ = tokio::time::timeout(self.cfg.renew_deadline, self.release()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_duration_is_written_rounded_up() {
        assert_eq!(lease_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(lease_seconds(Duration::from_secs(15)), 15);
        assert_eq!(lease_seconds(Duration::from_millis(1)), 1);
        assert_eq!(lease_seconds(Duration::from_secs(u64::MAX)), i32::MAX);
    }

    #[test]
    fn timings_must_nest() {
        let cfg = |l, r, p| LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(l),
            renew_deadline: Duration::from_secs(r),
            retry_period: Duration::from_secs(p),
        };
        assert!(cfg(15, 10, 2).check().is_ok());
        let e = cfg(10, 10, 2).check().unwrap_err().to_string();
        assert!(e.contains("renew deadline"), "{e}");
        assert!(cfg(15, 10, 0).check().is_err());
    }
}
