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
use crate::api::CheckKey;

/// The output of one retained run.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunLog {
    /// The pod (or, locally, the run's process) it came from.
    pub source: String,
    /// The run's public id, when known.
    pub run: Option<String>,
    /// When the run started, unix seconds, when known.
    pub started: Option<i64>,
    pub text: String,
    /// Only the end of a longer output is kept.
    pub truncated: bool,
}

pub type LogsFuture = Pin<Box<dyn Future<Output = Result<Vec<RunLog>, String>> + Send>>;

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
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            axum::Json(serde_json::json!({ "error": e })),
        )
            .into_response(),
    }
}
