//! The check author's side: the report client behind `probity report` (what a shell check calls
//! instead of curl) and the library API for checks written in Rust. It reads the run's `KH_*`
//! variables, retries what may succeed later (connection errors, 5xx, 503 while the server
//! restarts) until the run's deadline, and stops at once on a refusal.
//!
//! A check in Rust, inside a check pod or process:
//!
//! ```no_run
//! # async fn check() -> probity::Result<()> {
//! use probity::client;
//! // Work to the run's deadline, less a margin to report in.
//! let budget = client::time_left(std::time::Duration::from_secs(5))?;
//! match do_the_check(budget).await {
//!     Ok(()) => client::report_ok().await,
//!     Err(why) => client::report_failure(vec![why]).await,
//! }
//! # }
//! # async fn do_the_check(_: Option<std::time::Duration>) -> Result<(), String> { Ok(()) }
//! ```

use std::time::Duration;

use chrono::{TimeZone, Utc};

use crate::api::protocol::UUID_HEADER;
use crate::api::RunResult;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct ReportTarget {
    pub url: String,
    pub uuid: String,
    /// Unix seconds; retries stop here.
    pub deadline: Option<i64>,
}

/// Why a check could not report: a variable of its run that is missing or malformed, or an
/// answer (or none) from probity.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A variable a check run gets (`KH_*`) that is missing or malformed.
    #[error("{var} {problem}")]
    RunEnv { var: &'static str, problem: String },
    /// The server answered a report with a refusal that a retry cannot change.
    #[error("report refused: {status} {reason}")]
    ReportRefused { status: u16, reason: String },
    /// The report could not be delivered by the run's deadline.
    #[error("report failed: {0}")]
    ReportFailed(String),
}

/// How long to keep retrying when the run's deadline is unknown.
const NO_DEADLINE_RETRY: Duration = Duration::from_secs(30);

impl ReportTarget {
    /// From `KH_REPORTING_URL`, `KH_RUN_UUID` and `KH_CHECK_RUN_DEADLINE`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let need = |var: &'static str| {
            get(var)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ClientError::RunEnv {
                    var,
                    problem: "is not set: `probity report` runs inside a check run".into(),
                })
        };
        let url = need("KH_REPORTING_URL")?;
        let uuid = need("KH_RUN_UUID")?;
        let deadline = match get("KH_CHECK_RUN_DEADLINE").filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(v.trim().parse().map_err(|_| ClientError::RunEnv {
                var: "KH_CHECK_RUN_DEADLINE",
                problem: format!("{v:?} is not unix seconds"),
            })?),
        };
        Ok(ReportTarget {
            url,
            uuid,
            deadline,
        })
    }
}

/// This run's target, from the process environment.
pub fn this_run() -> Result<ReportTarget> {
    ReportTarget::from_env(|k| std::env::var(k).ok())
}

/// Reports that the check passed (retrying as [`send`] does).
pub async fn report_ok() -> Result<()> {
    send(&this_run()?, &RunResult::passed()).await
}

/// Reports that the check failed, with `errors` saying why (at least one; an empty list is sent
/// as one generic error, since a failure without a reason helps nobody).
pub async fn report_failure(errors: Vec<String>) -> Result<()> {
    let errors = if errors.is_empty() {
        vec!["the check failed and gave no reason".to_string()]
    } else {
        errors
    };
    send(&this_run()?, &RunResult::failed(errors)).await
}

/// The run's deadline (`KH_CHECK_RUN_DEADLINE`), None when the run has none.
pub fn deadline() -> Result<Option<chrono::DateTime<Utc>>> {
    Ok(this_run()?.deadline_at())
}

/// How long the check may still work: to the deadline less `margin` (for the report itself),
/// zero once past it, None when the run has no deadline.
pub fn time_left(margin: Duration) -> Result<Option<Duration>> {
    Ok(this_run()?.time_left(margin, Utc::now()))
}

impl ReportTarget {
    /// The deadline as a time.
    pub fn deadline_at(&self) -> Option<chrono::DateTime<Utc>> {
        self.deadline.and_then(|d| Utc.timestamp_opt(d, 0).single())
    }

    /// Time from `now` to the deadline less `margin`; zero once past it.
    pub fn time_left(&self, margin: Duration, now: chrono::DateTime<Utc>) -> Option<Duration> {
        let left = (self.deadline_at()? - now).to_std().unwrap_or_default();
        Some(left.saturating_sub(margin))
    }
}

/// Sends one report. Ok once accepted; `ReportRefused` when the server says it never will be.
pub async fn send(target: &ReportTarget, result: &RunResult) -> Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(Error::HttpClient)?;
    // The edge where a result becomes Kuberhealthy's report.
    let mut body = serde_json::json!({ "OK": result.passed_ok(), "Errors": result.errors });
    if !result.values.is_empty() {
        body["Values"] = serde_json::json!(result.values);
    }
    let give_up = match target
        .deadline
        .and_then(|d| Utc.timestamp_opt(d, 0).single())
    {
        Some(d) => tokio::time::Instant::now() + (d - Utc::now()).to_std().unwrap_or_default(),
        None => tokio::time::Instant::now() + NO_DEADLINE_RETRY,
    };
    let request = || {
        client
            .post(&target.url)
            .header(UUID_HEADER, &target.uuid)
            .json(&body)
    };
    deliver(request, give_up, "the run's deadline").await
}

/// Posts until accepted: retries what may succeed later (connection errors, 5xx, 408, 429)
/// with backoff until `give_up`; a refusal (another 4xx) ends it at once.
async fn deliver(
    request: impl Fn() -> reqwest::RequestBuilder,
    give_up: tokio::time::Instant,
    until: &str,
) -> Result<()> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = request().timeout(Duration::from_secs(10)).send().await;
        let retryable = match attempt {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    return Ok(());
                }
                let text = resp.text().await.unwrap_or_default();
                let reason = text.trim().to_string();
                if status.is_client_error() && status.as_u16() != 429 && status.as_u16() != 408 {
                    return Err(ClientError::ReportRefused {
                        status: status.as_u16(),
                        reason,
                    }
                    .into());
                }
                format!("{} {reason}", status.as_u16())
            }
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() + backoff > give_up {
            return Err(
                ClientError::ReportFailed(format!("giving up at {until}: {retryable}")).into(),
            );
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Pings heartbeat check `check` (`NAMESPACE/NAME`) of the probity at `base`: `start`,
/// `success` or `fail` (with `message`), proving itself with `token`. Retried for 30 s.
pub async fn heartbeat(
    base: &str,
    check: &str,
    beat: &crate::api::heartbeat::Beat,
    token: &str,
) -> Result<()> {
    use crate::api::heartbeat::Beat;
    let (namespace, name) = check
        .split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| ClientError::RunEnv {
            var: "--heartbeat",
            problem: format!("{check:?} is not NAMESPACE/NAME"),
        })?;
    let mut url = url::Url::parse(base).map_err(|e| ClientError::RunEnv {
        var: "--url",
        problem: format!("{base:?} is not a URL: {e}"),
    })?;
    url.path_segments_mut()
        .map_err(|_| ClientError::RunEnv {
            var: "--url",
            problem: format!("{base:?} cannot take a path"),
        })?
        .pop_if_empty()
        .extend(["api", "heartbeat", namespace, name]);
    let body = match beat {
        Beat::Start => {
            url.path_segments_mut().expect("checked").push("start");
            String::new()
        }
        Beat::Fail(said) => {
            url.path_segments_mut().expect("checked").push("fail");
            said.clone()
        }
        Beat::Success => String::new(),
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(Error::HttpClient)?;
    let request = || {
        client
            .post(url.clone())
            .bearer_auth(token.trim())
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.clone())
    };
    let give_up = tokio::time::Instant::now() + NO_DEADLINE_RETRY;
    deliver(request, give_up, "30s").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A report endpoint that answers `codes` in turn (then 200), counting requests.
    async fn endpoint(codes: Vec<u16>) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().route(
            "/check",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let n = h.fetch_add(1, Ordering::SeqCst);
                let code = codes.get(n).copied().unwrap_or(200);
                async move {
                    assert_eq!(headers[UUID_HEADER], "run-1");
                    assert_eq!(body, r#"{"Errors":["disk full"],"OK":false}"#);
                    (axum::http::StatusCode::from_u16(code).unwrap(), "because\n")
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/check", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (url, hits)
    }

    fn target(url: &str, deadline_in: i64) -> ReportTarget {
        ReportTarget {
            url: url.to_string(),
            uuid: "run-1".into(),
            deadline: Some(Utc::now().timestamp() + deadline_in),
        }
    }

    #[tokio::test]
    async fn retries_server_errors_until_accepted() {
        let (url, hits) = endpoint(vec![503, 500]).await;
        send(&target(&url, 30), &RunResult::failure("disk full"))
            .await
            .unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_400_is_final() {
        let (url, hits) = endpoint(vec![400]).await;
        let err = send(&target(&url, 30), &RunResult::failure("disk full"))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "report refused: 400 because");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let (url, _) = endpoint(vec![503; 100]).await;
        let err = send(&target(&url, 1), &RunResult::failure("disk full"))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("report failed: giving up at the run's deadline: 503"),
            "{err}"
        );
    }

    #[test]
    fn target_from_env_names_what_is_missing() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let err = ReportTarget::from_env(env(&[])).unwrap_err().to_string();
        assert!(err.contains("KH_REPORTING_URL"), "{err}");
        let err = ReportTarget::from_env(env(&[("KH_REPORTING_URL", "http://x/check")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("KH_RUN_UUID"), "{err}");
        let err = ReportTarget::from_env(env(&[
            ("KH_REPORTING_URL", "http://x/check"),
            ("KH_RUN_UUID", "u"),
            ("KH_CHECK_RUN_DEADLINE", "soon"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"soon\""), "{err}");
        let t = ReportTarget::from_env(env(&[
            ("KH_REPORTING_URL", "http://x/check"),
            ("KH_RUN_UUID", "u"),
            ("KH_CHECK_RUN_DEADLINE", "1700000000"),
        ]))
        .unwrap();
        assert_eq!(t.deadline, Some(1_700_000_000));
        let at = |s: i64| Utc.timestamp_opt(s, 0).single().unwrap();
        let margin = Duration::from_secs(5);
        assert_eq!(
            t.time_left(margin, at(1_699_999_900)),
            Some(Duration::from_secs(95))
        );
        assert_eq!(t.time_left(margin, at(1_699_999_998)), Some(Duration::ZERO));
        assert_eq!(t.time_left(margin, at(1_700_000_100)), Some(Duration::ZERO));
        let none = ReportTarget {
            deadline: None,
            ..t
        };
        assert_eq!(none.time_left(margin, at(0)), None);
    }
}
