//! A stand-in API server for the backend's unit tests: an in-process tower service behind a
//! real `kube::Client`, so requests go through kube's own URL building and (de)serialization.
//! It records every request and answers with what the test's `answer` function says. Nothing
//! touches the network, so tests may run on a paused clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use kube::Client;
use serde_json::Value;
use tokio::sync::Notify;

/// One request as the API server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub body: Option<Value>,
}

type Answer = dyn Fn(&Seen, usize) -> (u16, Value) + Send + Sync;

#[derive(Clone)]
pub struct StandIn {
    seen: Arc<Mutex<Vec<Seen>>>,
    arrived: Arc<Notify>,
}

impl StandIn {
    /// A client whose requests `answer` replies to; it also gets how many requests came before.
    pub fn start(
        answer: impl Fn(&Seen, usize) -> (u16, Value) + Send + Sync + 'static,
    ) -> (Self, Client) {
        let me = StandIn {
            seen: Arc::default(),
            arrived: Arc::default(),
        };
        let answer: Arc<Answer> = Arc::new(answer);
        let this = me.clone();
        let service = tower::service_fn(move |req: hyper::Request<kube::client::Body>| {
            let (this, answer) = (this.clone(), answer.clone());
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await?.to_bytes();
                let seen = Seen {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    body: serde_json::from_slice(&bytes).ok(),
                };
                let n = {
                    let mut all = this.seen.lock().unwrap();
                    all.push(seen.clone());
                    all.len() - 1
                };
                this.arrived.notify_waiters();
                let (code, value) = answer(&seen, n);
                let resp = hyper::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(value.to_string())))
                    .unwrap();
                Ok::<_, kube::Error>(resp)
            }
        });
        (me, Client::new(service, "default"))
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `n` requests have come (work the client does on tasks of its own).
    pub async fn until(&self, n: usize) -> Vec<Seen> {
        let wait = async {
            loop {
                let notified = self.arrived.notified();
                if self.seen.lock().unwrap().len() >= n {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .is_err()
        {
            panic!("expected {n} requests, saw {:#?}", self.seen());
        }
        self.seen()
    }
}

/// A Kubernetes `Status` answer (what the API server sends with an error code).
pub fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("stand-in says {reason}"), "reason": reason, "code": code
        }),
    )
}
