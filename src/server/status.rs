//! The status page: Kuberhealthy v2's document (`OK`, `Errors`, `CheckDetails` keyed
//! `namespace/name`, `JobDetails`, `CurrentMaster`) plus our own PascalCase fields per check.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::api::aggregate::{self, Uptime};
use crate::api::duration;
use crate::api::protocol::namespace_list;
use crate::engine::{Board, CheckView};

/// What Go prints for a zero `time.Time`; v2 clients parse it where a check never ran.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDetail {
    #[serde(rename = "OK")]
    pub ok: bool,
    pub errors: Vec<String>,
    /// Go duration syntax, e.g. "3.359431829s".
    pub run_duration: String,
    pub namespace: String,
    /// Start of the last run, RFC 3339.
    pub last_run: String,
    pub authoritative_pod: String,
    #[serde(rename = "uuid")]
    pub uuid: String,
    // Ours.
    pub name: String,
    /// No run has finished yet.
    pub pending: bool,
    /// Why the check cannot run, when it is invalid.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub invalid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_outcome: Option<String>,
    /// A run is in flight.
    pub running: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub run_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timeout: Option<String>,
    pub suspended: bool,
    /// The verdict changed too often lately (5 times within 10 minutes): notifications about
    /// it are held until it is stable.
    #[serde(default)]
    pub flapping: bool,
    /// While failing: `target` (the check found a fault in what it checks) or `runner` (its
    /// pod or process could not run, or ended without a report).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cause: Option<String>,
    /// While failing: the checks it depends on (`spec.dependsOn`) that fail too. Its failure
    /// is blocked by theirs and notifies no one.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub blocked_by: Vec<String>,
    /// The maintenance window it is in ("nightly until 2026-12-07T03:00:00Z"): it runs and is
    /// recorded, and notifies no one until then.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub maintenance: Option<String>,
    /// What the last run found besides passing: `Idle` (healthy, scaled to zero, and not
    /// woken by the check) or `Degraded`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub standing: Option<String>,
    /// Passing (`OK` true), but the last run failed what was marked `severity: warning`.
    #[serde(default)]
    pub degraded: bool,
    /// While degraded: what the last run found that was marked `severity: warning`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
    pub consecutive_failures: i64,
    pub success_count: i64,
    pub failure_count: i64,
    /// Share of runs that passed over the last 24 h, 7 d and 30 d (null without runs).
    #[serde(default)]
    pub uptime: Uptime,
}

fn rfc3339(unix: i64) -> Option<String> {
    Utc.timestamp_opt(unix, 0)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

impl CheckDetail {
    pub fn of(v: &CheckView, board: &Board) -> Self {
        Self::within(v, &aggregate::Windows::at(Utc::now()), board)
    }

    /// The entry, its uptime over `windows` (one set for a whole document).
    pub fn within(v: &CheckView, windows: &aggregate::Windows, board: &Board) -> Self {
        let st = &v.status;
        let uuid = if st.current_uuid.is_empty() {
            st.history
                .first()
                .and_then(|h| h.uuid)
                .map(|u| u.to_string())
                .unwrap_or_default()
        } else {
            st.current_uuid.clone()
        };
        CheckDetail {
            ok: v.effective_ok(),
            errors: v.effective_errors(),
            run_duration: duration::format(std::time::Duration::from_nanos(
                st.run_duration.max(0) as u64
            )),
            namespace: v.key.namespace().to_string(),
            last_run: match st.last_run_unix {
                0 => GO_ZERO_TIME.to_string(),
                t => rfc3339(t).unwrap_or_else(|| GO_ZERO_TIME.to_string()),
            },
            authoritative_pod: st.authoritative_pod.clone(),
            uuid,
            name: v.key.name().to_string(),
            pending: st.is_pending(),
            invalid: v.invalid.clone(),
            last_outcome: st.last_outcome.map(|o| o.as_str().to_string()),
            running: !st.current_uuid.is_empty(),
            next_run: st.next_run_unix.and_then(rfc3339),
            run_interval: v.run_interval.map(duration::human),
            schedule: v.schedule.clone(),
            timeout: v.timeout.map(duration::human),
            suspended: v.suspended,
            flapping: st.flapping(windows.now_unix, crate::api::Flap::DEFAULT),
            cause: st.cause().map(|c| c.as_str().to_string()),
            blocked_by: board
                .blocked_by(v)
                .iter()
                .map(|k| k.as_str().to_string())
                .collect(),
            maintenance: board.maintenance(&v.key),
            standing: st.standing.map(|s| s.as_str().to_string()),
            degraded: v.effective_ok() && st.degraded(),
            warnings: if v.effective_ok() && st.degraded() {
                st.warnings.clone()
            } else {
                Vec::new()
            },
            consecutive_failures: st.consecutive_failures,
            success_count: st.success_count,
            failure_count: st.failure_count,
            uptime: windows.uptime(st),
        }
    }
}

/// The document over a snapshot of the board, written as it is sent: in chunks of about
/// `CHUNK` bytes, so at 10,000 checks neither a second copy of every check nor one 5 MB buffer
/// is built (a buffer that size is a fresh mapping each time, and its page faults were a third
/// of a request's time).
pub struct Document {
    /// Checks, then jobs (`singleRunOnly`): the two maps of the document.
    checks: Vec<Arc<CheckView>>,
    jobs: Vec<Arc<CheckView>>,
    ok: bool,
    errors: Vec<String>,
    /// probity's own troubles (a receiver that is down); the checks' verdict stays `ok`.
    warnings: Vec<String>,
    leader: String,
    board: Arc<Board>,
    windows: aggregate::Windows,
    /// Where writing is: 0 the head, 1 checks, 2 jobs, 3 the tail, 4 done; `at` within a map.
    part: u8,
    at: usize,
}

/// About how much of the document each chunk holds.
const CHUNK: usize = 64 * 1024;

impl Document {
    pub fn new(st: &AppState, snapshot: Vec<Arc<CheckView>>, namespaces: Option<&[&str]>) -> Self {
        let (jobs, checks): (Vec<_>, Vec<_>) = snapshot
            .into_iter()
            .filter(|v| namespaces.is_none_or(|ns| ns.contains(&v.key.namespace())))
            .partition(|v| v.single_run);
        let mut errors = Vec::new();
        let mut ok = true;
        for v in checks.iter().chain(&jobs) {
            if !v.effective_ok() {
                ok = false;
                errors.extend(v.effective_errors());
            }
        }
        if namespaces.is_none() {
            let source_errors = st.board.source_errors();
            if !source_errors.is_empty() {
                ok = false;
                errors.extend(source_errors);
            }
        }
        Document {
            checks,
            jobs,
            ok,
            errors,
            warnings: st.board.warnings(),
            leader: st.board.leader(),
            board: st.board.clone(),
            windows: aggregate::Windows::at(Utc::now()),
            part: 0,
            at: 0,
        }
    }

    /// The whole document at once (tests; the handler streams it).
    pub fn to_json(self) -> Vec<u8> {
        self.flat_map(|c| c.to_vec()).collect()
    }

    /// Writes the next part of the document into `out`, until `out` holds `CHUNK` bytes or
    /// the document ends. Each check's entry is kept with its published view (`Memo`) and made
    /// again only when the view changes or the hour turns (its uptime windows); an entry that
    /// depends on more than its view (a recent change: flapping is read at this instant; a
    /// failing dependency; a maintenance window) is made afresh. At 10,000 checks a request
    /// then copies entries instead of formatting them.
    fn write_some(&mut self, out: &mut Vec<u8>) {
        while out.len() < CHUNK && self.part < 4 {
            match self.part {
                0 => {
                    out.extend_from_slice(b"{\"OK\":");
                    out.extend_from_slice(if self.ok { b"true" } else { b"false" });
                    out.extend_from_slice(b",\"Errors\":");
                    write_json(out, &self.errors);
                    out.extend_from_slice(b",\"CheckDetails\":{");
                    self.part = 1;
                }
                1 | 2 => {
                    let map = if self.part == 1 {
                        &self.checks
                    } else {
                        &self.jobs
                    };
                    match map.get(self.at) {
                        Some(v) => {
                            if self.at > 0 {
                                out.push(b',');
                            }
                            write_json(out, v.key.as_str());
                            out.push(b':');
                            self.entry(v, out);
                            self.at += 1;
                        }
                        None => {
                            out.extend_from_slice(if self.part == 1 {
                                b"},\"JobDetails\":{"
                            } else {
                                b"}"
                            });
                            self.part += 1;
                            self.at = 0;
                        }
                    }
                }
                _ => {
                    out.extend_from_slice(b",\"CurrentMaster\":");
                    write_json(out, &self.leader);
                    if !self.warnings.is_empty() {
                        out.extend_from_slice(b",\"Warnings\":");
                        write_json(out, &self.warnings);
                    }
                    out.push(b'}');
                    self.part = 4;
                }
            }
        }
    }

    fn entry(&self, v: &CheckView, out: &mut Vec<u8>) {
        let windows = &self.windows;
        let quiet =
            v.status.transitions.first().is_none_or(|t| {
                t.at_unix <= windows.now_unix - crate::api::Flap::DEFAULT.window_secs
            });
        let alone = quiet
            && self.board.blocked_by(v).is_empty()
            && self.board.maintenance(&v.key).is_none();
        let make = || {
            let mut entry = Vec::with_capacity(640);
            write_json(&mut entry, &CheckDetail::within(v, windows, &self.board));
            entry
        };
        if alone {
            out.extend_from_slice(&v.memo.get_or_make(windows.hour_stamp(), make));
        } else {
            out.extend_from_slice(&make());
        }
    }
}

/// The document in chunks, as the response body sends them.
impl Iterator for Document {
    type Item = axum::body::Bytes;

    fn next(&mut self) -> Option<Self::Item> {
        if self.part >= 4 {
            return None;
        }
        let mut out = Vec::with_capacity(CHUNK + 1024);
        self.write_some(&mut out);
        Some(out.into())
    }
}

/// Writes `value`'s JSON; nothing here can fail to serialize (string keys only).
fn write_json(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    let _ = serde_json::to_writer(&mut *out, value);
}

#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    namespace: Option<String>,
}

pub async fn json(State(st): State<AppState>, Query(q): Query<StatusQuery>) -> Response {
    let listed: Option<Vec<String>> = q
        .namespace
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(namespace_list);
    let filter: Option<Vec<&str>> = listed
        .as_ref()
        .map(|l| l.iter().map(String::as_str).collect());
    let doc = Document::new(&st, st.board.snapshot(), filter.as_deref());
    let chunks = futures::stream::iter(doc.map(Ok::<_, std::convert::Infallible>));
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

/// `/`: the dashboard for browsers, the JSON document for everything else (curl, old clients).
pub async fn root(
    state: State<AppState>,
    headers: HeaderMap,
    query: Query<StatusQuery>,
) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        Html(super::dashboard::PAGE).into_response()
    } else {
        json(state, query).await
    }
}

/// `GET /api/checks/{namespace}/{name}`: one check in full: its `/json` entry, the uptime, and its
/// status with the run history and the per-day and per-hour aggregates.
pub async fn check(
    State(st): State<AppState>,
    axum::extract::Path((namespace, name)): axum::extract::Path<(String, String)>,
) -> Response {
    let key = crate::api::CheckKey::new(&namespace, &name);
    let Some(v) = st.board.get(&key) else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": format!("no check {namespace}/{name}")})),
        )
            .into_response();
    };
    // Serialized as it is written, not through an intermediate `Value` of the whole status.
    #[derive(Serialize)]
    struct Check<'a> {
        namespace: &'a str,
        name: &'a str,
        detail: CheckDetail,
        brief: Brief<'a>,
        /// The pod of each run in `status.history`, for a check that runs pods.
        pods: Vec<String>,
        status: &'a crate::api::HealthCheckStatus,
    }
    let pods = if v.resource.spec.probe.is_some() {
        Vec::new()
    } else {
        v.status
            .history
            .iter()
            .map(|h| {
                h.run_id()
                    .map(|u| crate::api::protocol::pod_name(&key, u))
                    .unwrap_or_default()
            })
            .collect()
    };
    axum::Json(Check {
        namespace: &namespace,
        name: &name,
        detail: CheckDetail::of(&v, &st.board),
        brief: Brief::of(&v.resource.spec),
        pods,
        status: &v.status,
    })
    .into_response()
}

/// The spec in brief, for the check's page. Not the spec itself: the page is open to whoever
/// reaches it, and a pod spec's environment can hold secrets.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Brief<'a> {
    /// "pod", or the probe method.
    runs: &'static str,
    image: Option<&'a str>,
    run_interval: Option<&'a str>,
    schedule: Option<&'a str>,
    time_zone: Option<&'a str>,
    timeout: Option<&'a str>,
    failure_threshold: Option<i32>,
    success_threshold: Option<i32>,
    single_run_only: bool,
}

impl<'a> Brief<'a> {
    fn of(spec: &'a crate::api::HealthCheckSpec) -> Self {
        Brief {
            runs: match spec.probe.as_ref().and_then(|p| p.kind()) {
                Some(k) => k.as_str(),
                None => "pod",
            },
            image: spec
                .pod_spec
                .as_ref()
                .and_then(|p| p.spec.get("containers"))
                .and_then(|c| c.get(0))
                .and_then(|c| c.get("image"))
                .and_then(|i| i.as_str()),
            run_interval: spec.run_interval.as_deref(),
            schedule: spec.schedule.as_deref(),
            time_zone: spec.time_zone.as_deref(),
            timeout: spec.timeout.as_deref(),
            failure_threshold: spec.failure_threshold,
            success_threshold: spec.success_threshold,
            single_run_only: spec.single_run_only.unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CheckKey, HealthCheckStatus, Transition};
    use crate::engine::EngineHandle;
    use crate::metrics::{Metrics, MetricsConfig};

    fn view(errors: &[&str], transition_at: Option<i64>) -> Arc<CheckView> {
        Arc::new(CheckView {
            key: CheckKey::new("ns", "a"),
            resource: Arc::default(),
            status: Arc::new(HealthCheckStatus {
                ok: errors.is_empty(),
                errors: errors.iter().map(|e| e.to_string()).collect(),
                transitions: transition_at
                    .map(|t| Transition {
                        at_unix: t,
                        ok: true,
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            invalid: None,
            run_interval: None,
            schedule: None,
            timeout: None,
            single_run: false,
            suspended: false,
            severity: None,
            category: None,
            depends_on: Vec::new(),
            departed: None,
            memo: Default::default(),
        })
    }

    fn document(board: &Arc<Board>) -> serde_json::Value {
        let (engine, _events) = EngineHandle::channel();
        let metrics = Arc::new(Metrics::new(MetricsConfig::default(), board.clone()));
        let st = AppState::new(board.clone(), engine, metrics, None, &Default::default());
        serde_json::from_slice(&Document::new(&st, board.snapshot(), None).to_json()).unwrap()
    }

    #[test]
    fn an_entry_is_kept_with_its_view_and_made_again_when_the_view_changes() {
        let board = Arc::new(Board::new("me"));
        board.put(view(&[], None));
        let first = document(&board);
        assert_eq!(first["CheckDetails"]["ns/a"]["OK"], true);
        assert!(
            board.get(&CheckKey::new("ns", "a")).unwrap().memo.is_kept(),
            "kept with the view"
        );
        assert_eq!(
            document(&board),
            first,
            "the kept entry is the same document"
        );
        // A new view (the check failed): its entry is made from it, not the old one's.
        board.put(view(&["db down"], None));
        let d = document(&board);
        assert_eq!(d["CheckDetails"]["ns/a"]["OK"], false);
        assert_eq!(d["CheckDetails"]["ns/a"]["Errors"][0], "db down");
        assert_eq!(d["OK"], false);
        // A change within the flapping window: made afresh each time, not kept.
        board.put(view(&[], Some(Utc::now().timestamp())));
        let d = document(&board);
        assert_eq!(d["CheckDetails"]["ns/a"]["OK"], true);
        assert!(!board.get(&CheckKey::new("ns", "a")).unwrap().memo.is_kept());
    }
}
