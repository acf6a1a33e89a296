//! Receivers on loopback for notification tests: one that keeps every POST (and can answer 503
//! a few times first), and an HTTP target a probe check passes or fails against on demand.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

use super::PATIENCE;

#[derive(Debug, Clone)]
pub struct Received {
    /// The request's path without its leading slash, percent-decoded.
    pub path: String,
    pub id: String,
    pub authorization: String,
    pub body: Value,
}

/// A receiver on loopback that keeps every POST, and answers 503 to the first `fail` of them.
#[derive(Clone, Default)]
pub struct Capture {
    got: Arc<Mutex<Vec<Received>>>,
    fail: Arc<Mutex<usize>>,
}

impl Capture {
    pub async fn start(fail: usize) -> (Capture, String) {
        let cap = Capture::default();
        *cap.fail.lock().unwrap() = fail;
        async fn take(
            State(cap): State<Capture>,
            UrlPath(path): UrlPath<String>,
            headers: HeaderMap,
            body: String,
        ) -> StatusCode {
            {
                let mut fail = cap.fail.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
            }
            cap.got.lock().unwrap().push(Received {
                path,
                id: headers
                    .get("x-probity-notification-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                authorization: headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body: serde_json::from_str(&body).expect("a JSON body"),
            });
            StatusCode::ACCEPTED
        }
        let app = Router::new()
            .route("/{*path}", post(take))
            .with_state(cap.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (cap, base)
    }

    /// Answers 503 to the next `n` POSTs (0: accept again).
    pub fn fail_next(&self, n: usize) {
        *self.fail.lock().unwrap() = n;
    }

    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn at(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub async fn wait(&self, what: &str, done: impl Fn(&Capture) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}; received: {:#?}",
                self.got.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `GET /` answers 200 while healthy, 500 otherwise.
#[derive(Clone)]
pub struct Toggle {
    healthy: Arc<AtomicBool>,
    pub url: String,
}

impl Toggle {
    /// Listens on `addr` (a loopback address for host processes, or one pods reach).
    pub async fn start(addr: &str, healthy: bool) -> Toggle {
        let flag = Arc::new(AtomicBool::new(healthy));
        let f = flag.clone();
        let app = Router::new().route(
            "/",
            get(move || {
                let f = f.clone();
                async move {
                    if f.load(Ordering::SeqCst) {
                        StatusCode::OK
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Toggle { healthy: flag, url }
    }

    pub fn set(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}
