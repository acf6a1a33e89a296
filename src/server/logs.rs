//! `GET /api/checks/{namespace}/{name}/logs`: the output of a check's retained runs, from
//! whichever backend keeps it (the retained check pods' logs through the API server; the local
//! backend's captured process output).

use std::future::Future;
use std::pin::Pin;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use crate::api::{CheckKey, RunLog};

pub type LogsFuture = Pin<Box<dyn Future<Output = Result<Vec<RunLog>, LogsError>> + Send>>;

/// The kept output could not be read; answered 502 with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct LogsError {
    pub what: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl IntoResponse for LogsError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
    }
}

/// Where a backend keeps the output of runs; newest first.
pub trait CheckLogs: Send + Sync + std::fmt::Debug + 'static {
    fn logs(&self, key: CheckKey) -> LogsFuture;
}

#[derive(Serialize)]
struct Logs {
    logs: Vec<RunLog>,
}

pub async fn logs(
    State(st): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let key = CheckKey::new(&namespace, &name);
    if st.board.get(&key).is_none() {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": format!("no check {namespace}/{name}")})),
        )
            .into_response();
    }
    let Some(backend) = &st.logs else {
        return axum::Json(Logs { logs: Vec::new() }).into_response();
    };
    match backend.logs(key).await {
        Ok(logs) => axum::Json(Logs { logs }).into_response(),
        Err(e) => e.into_response(),
    }
}
