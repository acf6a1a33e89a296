//! `POST /api/run?namespace=&healthcheck=`: run a check now. Off unless a bearer token is
//! configured (Kuberhealthy's admin API had no authentication at all). Any replica takes the
//! request; how it reaches the scheduler is the backend's business.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::api::CheckKey;
use crate::engine::{RunRefused, RunRequests};

/// Manual runs: the token callers must present, and where requests go.
#[derive(Clone)]
pub struct ManualRuns {
    pub token: Arc<str>,
    pub backend: Arc<dyn RunRequests>,
}

impl std::fmt::Debug for ManualRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManualRuns")
    }
}

/// 404 for a check nobody knows, 503 when the request could not be handed on (retry), 409
/// for a check that cannot run now.
fn status_of(r: &RunRefused) -> StatusCode {
    match r {
        RunRefused::NoCheck(_) => StatusCode::NOT_FOUND,
        RunRefused::NotRecorded(_) | RunRefused::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        RunRefused::Invalid { .. }
        | RunRefused::InFlight(_)
        | RunRefused::ShuttingDown
        | RunRefused::NotLeader => StatusCode::CONFLICT,
    }
}

#[derive(Debug, Deserialize)]
pub struct RunQuery {
    namespace: Option<String>,
    healthcheck: Option<String>,
}

/// Compares in time that depends only on the length of what was presented, never on the token
/// or on where the first difference is.
fn same(presented: &[u8], token: &[u8]) -> bool {
    if token.is_empty() {
        return false;
    }
    let mut diff = (presented.len() != token.len()) as u8;
    for (i, x) in presented.iter().enumerate() {
        diff |= x ^ token[i % token.len()];
    }
    diff == 0
}

/// The credentials of an `Authorization: Bearer ...` header; the scheme is case-insensitive
/// (RFC 9110).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(credentials.trim())
}

fn say(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (code, body).into_response()
}

pub async fn run(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RunQuery>,
) -> Response {
    let Some(manual) = &st.manual else {
        return say(
            StatusCode::NOT_FOUND,
            "manual runs are off: start probity with --run-token (PROBITY_RUN_TOKEN)",
        );
    };
    match bearer(&headers) {
        Some(t) if same(t.as_bytes(), manual.token.as_bytes()) => {}
        _ => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a valid bearer token is required\n",
            )
                .into_response()
        }
    }
    let (Some(ns), Some(name)) = (
        q.namespace.filter(|s| !s.is_empty()),
        q.healthcheck.filter(|s| !s.is_empty()),
    ) else {
        return say(
            StatusCode::BAD_REQUEST,
            "both query parameters are required: namespace and healthcheck",
        );
    };
    let key = CheckKey::new(&ns, &name);
    match manual.backend.request(key.clone()).await {
        Ok(()) => say(StatusCode::ACCEPTED, format!("run of {key} requested")),
        Err(r) => say(status_of(&r), r.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly_and_the_scheme_is_case_insensitive() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cre", b"s3cret"), "a prefix");
        assert!(!same(b"s3crets3cret", b"s3cret"), "a repetition");
        assert!(!same(b"", b"s3cret"));
        assert!(!same(b"x", b""), "no token never matches");
        let mut h = HeaderMap::new();
        for v in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret "] {
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            assert_eq!(bearer(&h), Some("s3cret"), "{v}");
        }
        h.insert(header::AUTHORIZATION, "Basic czNjcmV0".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
