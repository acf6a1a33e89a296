//! `POST /check` (and v2's `/externalCheckStatus`): the report protocol of Kuberhealthy's check
//! clients. 400 means "never retry" to those clients, so it is used only for reports that can
//! never succeed.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::HashMap;
use uuid::Uuid;

use super::AppState;
use crate::api::protocol::run_id;
pub use crate::api::protocol::UUID_HEADER;
use crate::api::Outcome;
use crate::engine::Rejection;
/// Largest report body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// A report's verdict, from a body with case-insensitive `ok` and `errors` keys.
pub fn parse_body(body: &[u8]) -> Result<(bool, Vec<String>), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("body must be a JSON object like {\"OK\":true,\"Errors\":[]}".into());
    };
    let mut ok = None;
    let mut errors = None;
    for (k, v) in map {
        if k.eq_ignore_ascii_case("ok") {
            match v {
                Value::Bool(b) => ok = Some(b),
                other => return Err(format!("\"{k}\" must be true or false, not {other}")),
            }
        } else if k.eq_ignore_ascii_case("errors") {
            match v {
                Value::Null => errors = Some(Vec::new()),
                Value::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.into_iter().enumerate() {
                        match item {
                            Value::String(s) => out.push(s),
                            other => {
                                return Err(format!("\"{k}\"[{i}] must be a string, not {other}"))
                            }
                        }
                    }
                    errors = Some(out);
                }
                other => return Err(format!("\"{k}\" must be a list of strings, not {other}")),
            }
        }
    }
    let ok = ok.ok_or("body has no \"OK\" field")?;
    let errors = errors.unwrap_or_default();
    if ok && !errors.is_empty() {
        return Err(
            "\"OK\" is true but \"Errors\" is not empty; send OK:false to report errors".into(),
        );
    }
    if !ok && errors.is_empty() {
        return Err("\"OK\" is false but \"Errors\" is empty; say what failed".into());
    }
    if !ok && errors.iter().any(|e| e.trim().is_empty()) {
        return Err("\"Errors\" has an empty message".into());
    }
    Ok((ok, errors))
}

fn refuse(code: StatusCode, reason: impl Into<String>) -> Response {
    let mut reason = reason.into();
    reason.push('\n');
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        reason,
    )
        .into_response()
}

pub async fn report(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    // Counted by the router's layer (`server::count_reports`), with the refusals made before
    // this handler runs.
    handle(&st, &headers, &query, &body).await
}

async fn handle(
    st: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Response {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type must be application/json, not {ct:?}"),
            );
        }
    }
    let from_header = headers
        .get(UUID_HEADER)
        .map(|v| v.to_str().unwrap_or("").trim().to_string());
    let from_url = query.get(UUID_HEADER).map(|v| v.trim().to_string());
    let raw = match (from_header, from_url) {
        (Some(h), Some(u)) if !h.eq_ignore_ascii_case(&u) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("the {UUID_HEADER} header {h:?} disagrees with the reporting URL's {u:?}"),
            )
        }
        (Some(h), _) => h,
        (None, Some(u)) => u,
        (None, None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("missing {UUID_HEADER} header (use the KH_RUN_UUID of the run)"),
            )
        }
    };
    let Ok(credential) = Uuid::parse_str(&raw) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("{UUID_HEADER} {raw:?} is not a UUID"),
        );
    };
    // Runs are known by their public id; only the holder of the credential can name it here.
    let uuid = run_id(credential);
    let (ok, errors) = match parse_body(body) {
        Ok(v) => v,
        Err(reason) => return refuse(StatusCode::BAD_REQUEST, reason),
    };
    match st.engine.report(uuid, ok, errors).await {
        Ok(()) => StatusCode::OK.into_response(),
        // The verdict already recorded, sent again: a client whose answer was lost retried.
        // It is done, so it gets 200 (Kuberhealthy's clients retry until they see one); the
        // run counts once. A different verdict is still refused.
        Err(Rejection::AlreadyReported { outcome, .. }) if (outcome == Outcome::Success) == ok => {
            (StatusCode::OK, "already recorded\n").into_response()
        }
        Err(r) => refuse(status_of(&r), r.to_string()),
    }
}

/// What a refusal means to Kuberhealthy's clients: 400 never retry, 410 too late, 5xx retry.
pub fn status_of(r: &Rejection) -> StatusCode {
    match r {
        Rejection::Unknown { .. }
        | Rejection::AlreadyReported { .. }
        | Rejection::AlreadyEnded { .. }
        | Rejection::Deleted { .. } => StatusCode::BAD_REQUEST,
        Rejection::TimedOut { .. } | Rejection::PastDeadline { .. } => StatusCode::GONE,
        Rejection::ShuttingDown | Rejection::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        Rejection::NotStored(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_body_validation_table() {
        let ok = |b: &str| parse_body(b.as_bytes());
        assert_eq!(ok(r#"{"OK":true,"Errors":[]}"#), Ok((true, vec![])));
        assert_eq!(ok(r#"{"ok":true}"#), Ok((true, vec![])));
        assert_eq!(ok(r#"{"Ok":true,"errors":null}"#), Ok((true, vec![])));
        assert_eq!(
            ok(r#"{"OK":false,"Errors":["boom"]}"#),
            Ok((false, vec!["boom".into()]))
        );
        // Unknown keys (the Go client sends more) are ignored.
        assert_eq!(
            ok(r#"{"OK":true,"Errors":[],"Node":"n1","extra":{"a":1}}"#),
            Ok((true, vec![]))
        );
        let refused = [
            ("", "not JSON"),
            ("[]", "JSON object"),
            (r#"{"Errors":[]}"#, "no \"OK\""),
            (r#"{"OK":"true"}"#, "must be true or false"),
            (r#"{"OK":false,"Errors":[]}"#, "say what failed"),
            (r#"{"OK":false}"#, "say what failed"),
            (r#"{"OK":false,"Errors":["a",""]}"#, "empty message"),
            (r#"{"OK":true,"Errors":["a"]}"#, "OK:false"),
            (r#"{"OK":false,"Errors":"boom"}"#, "list of strings"),
            (r#"{"OK":false,"Errors":[1]}"#, "[0] must be a string"),
        ];
        for (body, want) in refused {
            let err = ok(body).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }
}
