//! `POST /api/heartbeat/NAMESPACE/NAME` (and `/start`, `/fail`): a heartbeat check's job says
//! it ran. The token is checked here against the check's `tokenHash` before anything is
//! recorded; 200 only once the ping is durable.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::api::heartbeat::Beat;
use crate::api::{truncate, CheckKey};
use crate::engine::Rejection;

/// What a failing job's body may say, at most (the rest is cut).
const FAIL_TEXT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("no heartbeat check {0}")]
    NoCheck(CheckKey),
    #[error("{0} is not a heartbeat check (it has no spec.heartbeat)")]
    NotHeartbeat(CheckKey),
    #[error("the token is missing or wrong: send Authorization: Bearer TOKEN, the token whose hash is the check's spec.heartbeat.tokenHash")]
    Unauthorized,
    #[error("{0:?} is not a ping: POST .../NAME, .../NAME/start or .../NAME/fail")]
    UnknownBeat(String),
    #[error("{0}")]
    Refused(#[from] Rejection),
}

impl IntoResponse for HeartbeatError {
    fn into_response(self) -> Response {
        let code = match &self {
            HeartbeatError::NoCheck(_) | HeartbeatError::NotHeartbeat(_) => StatusCode::NOT_FOUND,
            HeartbeatError::UnknownBeat(_) => StatusCode::NOT_FOUND,
            HeartbeatError::Unauthorized => {
                let mut r = super::plain(StatusCode::UNAUTHORIZED, self.to_string());
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return r;
            }
            HeartbeatError::Refused(r) => super::report::refusal_status(r),
        };
        super::plain(code, self.to_string())
    }
}

pub async fn ping(
    State(st): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HeartbeatError> {
    let _ = body;
    beat(
        &st,
        CheckKey::new(&namespace, &name),
        Beat::Success,
        &headers,
    )
    .await
}

pub async fn ping_as(
    State(st): State<AppState>,
    Path((namespace, name, kind)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HeartbeatError> {
    let beat_of = match kind.as_str() {
        "start" => Beat::Start,
        "fail" => Beat::Fail(truncate(&String::from_utf8_lossy(&body), FAIL_TEXT)),
        "success" => Beat::Success,
        _ => return Err(HeartbeatError::UnknownBeat(kind)),
    };
    beat(&st, CheckKey::new(&namespace, &name), beat_of, &headers).await
}

async fn beat(
    st: &AppState,
    key: CheckKey,
    beat: Beat,
    headers: &HeaderMap,
) -> Result<Response, HeartbeatError> {
    let view = st
        .board
        .get(&key)
        .ok_or_else(|| HeartbeatError::NoCheck(key.clone()))?;
    let Some(spec) = view.resource.spec.heartbeat.as_ref() else {
        return Err(HeartbeatError::NotHeartbeat(key));
    };
    // Checked before anything is recorded: a wrong token changes nothing.
    let token = super::admin::bearer(headers).unwrap_or("");
    if token.is_empty() || !spec.admits(token) {
        return Err(HeartbeatError::Unauthorized);
    }
    let said = beat.as_str();
    st.engine.heartbeat(key, beat).await?;
    Ok((StatusCode::OK, format!("recorded: {said}\n")).into_response())
}
