//! One request to a Knative Service, timed: to its first byte, and (from zero) until its revision
//! is Active again, seen through a watch of the revision.

use std::time::Duration;

use kube::api::{Api, DynamicObject};
use tokio::time::Instant;

use crate::api::duration::human;
use crate::api::{RunResult, TimingName};

/// How much of an answer is read: the time that matters is the first byte.
const BODY_LIMIT: usize = 64 * 1024;

/// Sends the request and times it; from zero, also waits (within `budget`) for the revision's
/// Active to turn True.
pub async fn measure(
    http: &reqwest::Client,
    url: &str,
    cold: bool,
    revisions: Api<DynamicObject>,
    revision: &str,
    budget: Duration,
) -> RunResult {
    let what = if cold { "cold start" } else { "warm request" };
    let start = Instant::now();
    let active = async {
        if !cold {
            return None;
        }
        let cond = |o: Option<&DynamicObject>| {
            o.is_some_and(|o| {
                o.data["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Active" && c["status"] == "True")
            })
        };
        kube::runtime::wait::await_condition(revisions, revision, cond)
            .await
            .ok()
            .map(|_| start.elapsed())
    };
    let request = async {
        let resp = http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{what}: GET {url}: {}", chain(&e)))?;
        let first_byte = start.elapsed();
        let status = resp.status();
        let mut resp = resp;
        let mut read = 0;
        while read < BODY_LIMIT {
            match resp.chunk().await {
                Ok(Some(c)) => read += c.len(),
                Ok(None) => break,
                Err(e) => {
                    return Err(format!(
                        "{what}: GET {url}: reading the answer: {}",
                        chain(&e)
                    ))
                }
            }
        }
        if !(status.is_success() || status.is_redirection()) {
            return Err(format!(
                "{what}: GET {url}: {status} after {}",
                human(first_byte)
            ));
        }
        Ok(first_byte)
    };
    // Each bounded on its own: an answer without the revision turning Active (yet) is a
    // measured first byte and a warning, not a lost run.
    let (answer, active) = tokio::join!(
        tokio::time::timeout(budget, request),
        tokio::time::timeout(budget, active)
    );
    let Ok(answer) = answer else {
        return RunResult::failure(format!(
            "{what}: GET {url}: no answer within {}",
            human(budget)
        ));
    };
    match answer {
        Err(e) => RunResult::failure(e),
        Ok(first_byte) => {
            let name = if cold {
                TimingName::ColdStartFirstByte
            } else {
                TimingName::WarmFirstByte
            };
            let result = RunResult::passed().with_timing(name, first_byte);
            match active {
                Ok(Some(active)) => result.with_timing(TimingName::ColdStartActive, active),
                Ok(None) if !cold => result,
                _ => result.with_warning(format!(
                    "{what}: revision {revision} was not seen Active within {}",
                    human(budget)
                )),
            }
        }
    }
}

/// An error and its sources in one line: reqwest's own text leaves out why.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}
