//! `POST /check` (and v2's `/externalCheckStatus`): the report protocol of Kuberhealthy's check
//! clients. 400 means "never retry" to those clients, so it is used only for reports that can
//! never succeed.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::AppState;
pub use crate::api::protocol::UUID_HEADER;
use crate::api::run::{value_name_problem, BadRunId, MAX_VALUES};
use crate::api::{RunCredential, RunResult, Values};
use crate::engine::Rejection;
/// Largest report body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Why a report body is not a verdict. Each says what to send instead, on one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadBody {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body must be a JSON object like {{\"OK\":true,\"Errors\":[]}}")]
    NotObject,
    #[error("\"{key}\" must be true or false, not {value}")]
    NotBool { key: String, value: String },
    #[error("\"{key}\" must be a list of strings, not {value}")]
    NotList { key: String, value: String },
    #[error("\"{key}\"[{index}] must be a string, not {value}")]
    NotString {
        key: String,
        index: usize,
        value: String,
    },
    #[error("body has no \"OK\" field")]
    NoOk,
    #[error("\"OK\" is true but \"Errors\" is not empty; send OK:false to report errors")]
    PassWithErrors,
    #[error("\"OK\" is false but \"Errors\" is empty; say what failed")]
    FailWithoutErrors,
    #[error("\"Errors\" has an empty message")]
    EmptyError,
    #[error("\"{key}\" must be an object of names to numbers, like {{\"queue_depth\": 12}}, not {value}")]
    NotValues { key: String, value: String },
    #[error("\"{key}\".{name} must be a number, not {value}")]
    NotNumber {
        key: String,
        name: String,
        value: String,
    },
    #[error("\"{key}\": {why}")]
    BadValueName { key: String, why: String },
    #[error("\"{key}\" has {count} values; at most {MAX_VALUES}")]
    TooManyValues { key: String, count: usize },
}

/// A report's verdict, from a body with case-insensitive `ok` and `errors` keys: the edge where
/// Kuberhealthy's `{"OK":bool,"Errors":[...]}` becomes a `RunResult`.
pub fn parse_body(body: &[u8]) -> Result<RunResult, BadBody> {
    let value: Value = serde_json::from_slice(body).map_err(|e| BadBody::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(BadBody::NotObject);
    };
    let mut ok = None;
    let mut errors = None;
    let mut values = Values::new();
    for (key, v) in map {
        if key.eq_ignore_ascii_case("ok") {
            match v {
                Value::Bool(b) => ok = Some(b),
                other => {
                    let value = other.to_string();
                    return Err(BadBody::NotBool { key, value });
                }
            }
        } else if key.eq_ignore_ascii_case("errors") {
            match v {
                Value::Null => errors = Some(Vec::new()),
                Value::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (index, item) in items.into_iter().enumerate() {
                        match item {
                            Value::String(s) => out.push(s),
                            other => {
                                let value = other.to_string();
                                return Err(BadBody::NotString { key, index, value });
                            }
                        }
                    }
                    errors = Some(out);
                }
                other => {
                    let value = other.to_string();
                    return Err(BadBody::NotList { key, value });
                }
            }
        } else if key.eq_ignore_ascii_case("values") {
            values = parse_values(key, v)?;
        }
    }
    let ok = ok.ok_or(BadBody::NoOk)?;
    let errors = errors.unwrap_or_default();
    if ok && !errors.is_empty() {
        return Err(BadBody::PassWithErrors);
    }
    if !ok && errors.is_empty() {
        return Err(BadBody::FailWithoutErrors);
    }
    if !ok && errors.iter().any(|e| e.trim().is_empty()) {
        return Err(BadBody::EmptyError);
    }
    Ok(RunResult::reported(ok, errors).with_values(values))
}

/// `"Values": {"name": number, ...}`: bounded, names checked, finite numbers only.
fn parse_values(key: String, v: Value) -> Result<Values, BadBody> {
    let map = match v {
        Value::Null => return Ok(Values::new()),
        Value::Object(map) => map,
        other => {
            let value = other.to_string();
            return Err(BadBody::NotValues { key, value });
        }
    };
    if map.len() > MAX_VALUES {
        let count = map.len();
        return Err(BadBody::TooManyValues { key, count });
    }
    let mut out = Values::new();
    for (name, n) in map {
        if let Some(why) = value_name_problem(&name) {
            return Err(BadBody::BadValueName { key, why });
        }
        match n.as_f64().filter(|f| f.is_finite()) {
            Some(f) => {
                out.insert(name, f);
            }
            None => {
                let value = n.to_string();
                return Err(BadBody::NotNumber { key, name, value });
            }
        }
    }
    Ok(out)
}

/// Why a report was not recorded, as Kuberhealthy's clients read the answer: 400 never retry,
/// 410 too late, 415 wrong type, 5xx retry.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("Content-Type must be application/json, not {0:?}")]
    ContentType(String),
    #[error("the {UUID_HEADER} header {header:?} disagrees with the reporting URL's {url:?}")]
    Disagree { header: String, url: String },
    #[error("missing {UUID_HEADER} header (use the KH_RUN_UUID of the run)")]
    NoCredential,
    #[error("{UUID_HEADER} {:?} is not a UUID", .0.0)]
    BadCredential(#[from] BadRunId),
    #[error(transparent)]
    Body(#[from] BadBody),
    #[error(transparent)]
    Refused(#[from] Rejection),
}

impl ReportError {
    fn status(&self) -> StatusCode {
        match self {
            ReportError::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ReportError::Disagree { .. }
            | ReportError::NoCredential
            | ReportError::BadCredential(_)
            | ReportError::Body(_) => StatusCode::BAD_REQUEST,
            ReportError::Refused(r) => refusal_status(r),
        }
    }
}

impl IntoResponse for ReportError {
    fn into_response(self) -> Response {
        super::plain(self.status(), self.to_string())
    }
}

/// What a refusal means to Kuberhealthy's clients: 400 never retry, 410 too late, 5xx retry.
pub(super) fn refusal_status(r: &Rejection) -> StatusCode {
    match r {
        Rejection::Unknown { .. }
        | Rejection::AlreadyReported { .. }
        | Rejection::AlreadyEnded { .. }
        | Rejection::Deleted { .. } => StatusCode::BAD_REQUEST,
        Rejection::NoHeartbeat { .. } => StatusCode::NOT_FOUND,
        Rejection::TimedOut { .. } | Rejection::PastDeadline { .. } => StatusCode::GONE,
        Rejection::ShuttingDown | Rejection::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        Rejection::NotStored(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub async fn report(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ReportError> {
    // Counted by the router's layer (`server::count_reports`), with the refusals made before
    // this handler runs.
    handle(&st, &headers, &query, &body).await
}

/// The run credential a report carries, in its header or its URL's query: parsed once, here.
fn credential(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<RunCredential, ReportError> {
    let from_header = headers
        .get(UUID_HEADER)
        .map(|v| v.to_str().unwrap_or("").trim().to_string());
    let from_url = query.get(UUID_HEADER).map(|v| v.trim().to_string());
    let raw = match (from_header, from_url) {
        (Some(header), Some(url)) if !header.eq_ignore_ascii_case(&url) => {
            return Err(ReportError::Disagree { header, url })
        }
        (Some(h), _) => h,
        (None, Some(u)) => u,
        (None, None) => return Err(ReportError::NoCredential),
    };
    Ok(raw.parse()?)
}

async fn handle(
    st: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, ReportError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ReportError::ContentType(ct.to_string()));
        }
    }
    // Runs are known by their public id; only the holder of the credential can name it here.
    let uuid = credential(headers, query)?.run_id();
    let result = parse_body(body)?;
    let ok = result.passed_ok();
    match st.engine.report(uuid, result).await {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        // The verdict already recorded, sent again: a client whose answer was lost retried.
        // It is done, so it gets 200 (Kuberhealthy's clients retry until they see one); the
        // run counts once. A different verdict is still refused.
        Err(Rejection::AlreadyReported { outcome, .. }) if outcome.is_success() == ok => {
            Ok((StatusCode::OK, "already recorded\n").into_response())
        }
        Err(r) => Err(r.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_body_validation_table() {
        let ok = |b: &str| parse_body(b.as_bytes());
        let pass = Ok(RunResult::passed());
        assert_eq!(ok(r#"{"OK":true,"Errors":[]}"#), pass);
        assert_eq!(ok(r#"{"ok":true}"#), pass);
        assert_eq!(ok(r#"{"Ok":true,"errors":null}"#), pass);
        // Values beside the verdict; without them, a report is as it always was.
        let with =
            ok(r#"{"OK":true,"Errors":[],"Values":{"queue_depth":12,"p99_ms":3.5}}"#).unwrap();
        assert_eq!(
            with.values,
            [
                ("p99_ms".to_string(), 3.5),
                ("queue_depth".to_string(), 12.0)
            ]
            .into()
        );
        let many: String = (0..17)
            .map(|i| format!("\"v{i}\":{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            ok(&format!(r#"{{"OK":true,"Values":{{{many}}}}}"#))
                .unwrap_err()
                .to_string(),
            "\"Values\" has 17 values; at most 16"
        );
        assert_eq!(
            ok(r#"{"OK":false,"Errors":["boom"]}"#),
            Ok(RunResult::failure("boom"))
        );
        // Unknown keys (the Go client sends more) are ignored.
        assert_eq!(
            ok(r#"{"OK":true,"Errors":[],"Node":"n1","extra":{"a":1}}"#),
            pass
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
            (
                r#"{"OK":true,"Values":[1]}"#,
                "must be an object of names to numbers",
            ),
            (
                r#"{"OK":true,"Values":{"depth":"12"}}"#,
                "\"Values\".depth must be a number, not \"12\"",
            ),
            (
                r#"{"OK":true,"Values":{"a-b":1}}"#,
                "\"a-b\" must be a letter",
            ),
        ];
        for (body, want) in refused {
            let err = ok(body).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }
}
