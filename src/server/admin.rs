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

/// Why a manual run was not asked for.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("manual runs are off: start probity with --run-token (PROBITY_RUN_TOKEN)")]
    Off,
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("both query parameters are required: namespace and healthcheck")]
    MissingParameter,
    #[error(transparent)]
    Refused(#[from] RunRefused),
}

impl IntoResponse for RunError {
    fn into_response(self) -> Response {
        // 404 for a check nobody knows, 503 when the request could not be handed on (retry),
        // 409 for a check that cannot run now.
        let code = match &self {
            RunError::Off | RunError::Refused(RunRefused::NoCheck(_)) => StatusCode::NOT_FOUND,
            RunError::Unauthorized => {
                let mut r = super::plain(StatusCode::UNAUTHORIZED, self.to_string());
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return r;
            }
            RunError::MissingParameter => StatusCode::BAD_REQUEST,
            RunError::Refused(RunRefused::NotRecorded(_) | RunRefused::Stopped) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RunError::Refused(
                RunRefused::Invalid { .. }
                | RunRefused::InFlight(_)
                | RunRefused::Heartbeat(_)
                | RunRefused::ShuttingDown
                | RunRefused::NotLeader,
            ) => StatusCode::CONFLICT,
        };
        super::plain(code, self.to_string())
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
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(credentials.trim())
}

pub async fn run(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RunQuery>,
) -> Result<Response, RunError> {
    let manual = st.manual.as_ref().ok_or(RunError::Off)?;
    match bearer(&headers) {
        Some(t) if same(t.as_bytes(), manual.token.as_bytes()) => {}
        _ => return Err(RunError::Unauthorized),
    }
    let (Some(ns), Some(name)) = (
        q.namespace.filter(|s| !s.is_empty()),
        q.healthcheck.filter(|s| !s.is_empty()),
    ) else {
        return Err(RunError::MissingParameter);
    };
    let key = CheckKey::new(&ns, &name);
    manual.backend.request(key.clone()).await?;
    Ok(super::plain(
        StatusCode::ACCEPTED,
        format!("run of {key} requested"),
    ))
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
