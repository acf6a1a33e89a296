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

/// Compares without an early exit, so the time taken says nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
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
