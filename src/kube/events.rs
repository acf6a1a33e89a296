//! Kubernetes Events on checks: invalid specs (from the controller) and failed runs (an
//! observer of the engine). Repeats of one event become a series on one object (the recorder's
//! own dedup), so a failing check is no storm.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Client, Resource};
use tracing::warn;

use crate::api::{truncate, CheckKey, HealthCheck};
use crate::engine::{Finished, Observer};

/// Posts the Kubernetes Events of checks.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: Client, identity: &str) -> Self {
        Events {
            recorder: Recorder::new(
                client,
                kube::runtime::events::Reporter {
                    controller: "probity".into(),
                    instance: Some(identity.to_string()),
                },
            ),
        }
    }

    pub async fn warn(&self, check: &HealthCheck, reason: &str, note: String) {
        self.post(&CheckKey::of(check), check.object_ref(&()), reason, note)
            .await
    }

    /// The same, for a check known by its key.
    pub async fn warn_key(&self, key: &CheckKey, reason: &str, note: String) {
        let reference = ObjectReference {
            api_version: Some(HealthCheck::api_version(&()).into_owned()),
            kind: Some(HealthCheck::kind(&()).into_owned()),
            name: Some(key.name().to_string()),
            namespace: Some(key.namespace().to_string()),
            ..Default::default()
        };
        self.post(key, reference, reason, note).await
    }

    async fn post(&self, key: &CheckKey, reference: ObjectReference, reason: &str, note: String) {
        let ev = KubeEvent {
            type_: EventType::Warning,
            reason: reason.into(),
            // The API server refuses notes over 1 KiB (the ellipsis is 3 bytes).
            note: Some(truncate(&note, 997)),
            action: "Run".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            warn!(check = %key, "posting an event: {e}");
        }
    }
}

/// A Warning event on the check for every run that failed (recorded by this replica).
impl Observer for Events {
    fn finished(&self, run: &Finished) {
        let result = &run.result;
        if result.passed_ok() {
            return;
        }
        let (events, key) = (self.clone(), run.key.clone());
        let reason = format!("Run{}", result.outcome.as_str());
        let note = format!("{}: {}", result.outcome.as_str(), result.message());
        tokio::spawn(async move { events.warn_key(&key, &reason, note).await });
    }
}
