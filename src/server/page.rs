//! What the status page reads: `GET /api/checks`, one page of checks filtered and searched on
//! the server (the browser never holds 10,000 of them), with each check's last runs for its
//! strip; and the HTML of the list and of a check's own page.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::api::aggregate::{self, Uptime};
use crate::api::{duration, truncate, CheckKey, Outcome};
use crate::engine::{Board, CheckView};

/// Checks per page unless asked otherwise, and at most.
const PAGE: usize = 100;
const MAX_PAGE: usize = 500;
/// What a row carries of the check's errors.
const ROW_ERRORS: usize = 3;
const ROW_ERROR_LEN: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    #[default]
    All,
    Failing,
    /// Any run in the strip (the last 20) that did not pass.
    Unstable,
    Suspended,
    Invalid,
    /// Passing, but failing what is marked `severity: warning`.
    Degraded,
}

#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    /// Part of `namespace/name`, any case.
    #[serde(default)]
    q: String,
    #[serde(default)]
    filter: Filter,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

#[derive(Debug, Serialize, Default, PartialEq, Eq)]
struct Counts {
    total: usize,
    failing: usize,
    unstable: usize,
    suspended: usize,
    invalid: usize,
    pending: usize,
    running: usize,
    degraded: usize,
}

/// One run in a check's strip: start (unix s), duration (ms), outcome letter, first error.
type Bar = (i64, i64, &'static str, Option<String>);

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    namespace: String,
    name: String,
    /// ok, degraded, failing, pending or invalid.
    state: &'static str,
    running: bool,
    suspended: bool,
    /// Why its notifications are held (flapping), if they are.
    held: Option<String>,
    /// While failing: target or runner.
    cause: Option<&'static str>,
    /// Passing, and its target is idle (scaled to zero).
    idle: bool,
    last_run: Option<i64>,
    next_run: Option<i64>,
    every: Option<String>,
    uptime: Uptime,
    errors: Vec<String>,
    failing_since: Option<i64>,
    /// Oldest first.
    runs: Vec<Bar>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct List {
    ok: bool,
    leader: String,
    identity: String,
    /// Problems not tied to a check (a checks file that is not YAML).
    errors: Vec<String>,
    /// probity's own troubles (a notification receiver that is down).
    warnings: Vec<String>,
    counts: Counts,
    matched: usize,
    offset: usize,
    limit: usize,
    checks: Vec<Row>,
}

fn state(v: &CheckView) -> &'static str {
    if v.invalid.is_some() {
        "invalid"
    } else if !v.status.ok {
        "failing"
    } else if v.status.is_pending() {
        "pending"
    } else if v.status.degraded() {
        "degraded"
    } else {
        "ok"
    }
}

fn unstable(v: &CheckView) -> bool {
    v.status
        .history
        .iter()
        .any(|h| h.outcome.is_some_and(|o| !o.is_success()))
}

fn letter(o: Option<Outcome>, degraded: bool) -> &'static str {
    match o {
        Some(Outcome::Success) if degraded => "D",
        Some(Outcome::Success) => "S",
        Some(Outcome::Failure) => "F",
        Some(Outcome::Timeout) => "T",
        Some(Outcome::StartFailure) => "X",
        Some(Outcome::Crash) => "C",
        None => "?",
    }
}

/// Why a check's notifications are held, as the list shows it: a maintenance window, blocked
/// by what, or flapping.
fn held(v: &CheckView, windows: &aggregate::Windows, board: &Board) -> Option<String> {
    if let Some(m) = board.maintenance(&v.key) {
        return Some(format!("maintenance: {m}"));
    }
    let blocked = board.blocked_by(v);
    if !blocked.is_empty() {
        let names: Vec<&str> = blocked.iter().map(CheckKey::as_str).collect();
        return Some(format!("blocked by {}", names.join(", ")));
    }
    v.status
        .flapping(windows.now_unix, crate::api::Flap::DEFAULT)
        .then(|| "flapping".to_string())
}

fn row(v: &CheckView, windows: &aggregate::Windows, board: &Board) -> Row {
    let st = &v.status;
    Row {
        namespace: v.key.namespace().to_string(),
        name: v.key.name().to_string(),
        state: state(v),
        running: !st.current_uuid.is_empty(),
        suspended: v.suspended,
        held: held(v, windows, board),
        cause: st.cause().map(|c| c.as_str()),
        idle: st.ok && st.standing == Some(crate::api::Standing::Idle),
        last_run: (st.last_run_unix > 0).then_some(st.last_run_unix),
        next_run: st.next_run_unix,
        every: v
            .run_interval
            .map(duration::human)
            .or_else(|| v.schedule.clone()),
        uptime: windows.uptime(st),
        errors: if v.effective_ok() && st.degraded() {
            st.warnings.clone()
        } else {
            v.effective_errors()
        }
        .iter()
        .take(ROW_ERRORS)
        .map(|e| truncate(e, ROW_ERROR_LEN))
        .collect(),
        failing_since: st.failing_since(),
        runs: st
            .history
            .iter()
            .rev()
            .map(|h| {
                (
                    h.start_unix,
                    h.run_duration / 1_000_000,
                    letter(
                        h.outcome,
                        h.standing == Some(crate::api::Standing::Degraded),
                    ),
                    h.errors.first().map(|e| truncate(e, ROW_ERROR_LEN)),
                )
            })
            .collect(),
    }
}

/// `GET /api/checks?q=&filter=&offset=&limit=`: the counts over every check, and one page of
/// those that match, sorted by namespace and name.
pub async fn list(State(st): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let snapshot = st.board.snapshot();
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let needle = q.q.trim().to_lowercase();
    let mut counts = Counts {
        total: snapshot.len(),
        ..Counts::default()
    };
    let windows = aggregate::Windows::at(Utc::now());
    let mut matched = 0;
    let mut rows = Vec::new();
    let mut all_ok = true;
    for v in &snapshot {
        let s = state(v);
        let unstable = unstable(v);
        all_ok &= v.effective_ok();
        // Invalid checks fail too (their verdict says so); the chip and the filter agree.
        counts.failing += usize::from(s == "failing" || s == "invalid");
        counts.invalid += usize::from(s == "invalid");
        counts.pending += usize::from(s == "pending");
        counts.unstable += usize::from(unstable);
        counts.suspended += usize::from(v.suspended);
        counts.running += usize::from(!v.status.current_uuid.is_empty());
        counts.degraded += usize::from(s == "degraded");
        let wanted = match q.filter {
            Filter::All => true,
            Filter::Failing => s == "failing" || s == "invalid",
            Filter::Unstable => unstable,
            Filter::Suspended => v.suspended,
            Filter::Invalid => s == "invalid",
            Filter::Degraded => s == "degraded",
        };
        if !wanted || !matches(&needle, &v.key) {
            continue;
        }
        if matched >= q.offset && rows.len() < limit {
            rows.push(row(v, &windows, &st.board));
        }
        matched += 1;
    }
    let errors = st.board.source_errors();
    let list = List {
        ok: all_ok && errors.is_empty(),
        leader: st.board.leader(),
        identity: st.board.identity().to_string(),
        errors,
        warnings: st.board.warnings(),
        counts,
        matched,
        offset: q.offset,
        limit,
        checks: rows,
    };
    ([(header::CACHE_CONTROL, "no-cache")], axum::Json(list)).into_response()
}

/// The key (`namespace/name`) holds `needle` (lower case), in any case. Neither side is
/// copied: this runs over every check on every search.
fn matches(needle: &str, key: &CheckKey) -> bool {
    let (hay, needle) = (key.as_str().as_bytes(), needle.as_bytes());
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// `GET /checks/{namespace}/{name}`: the check's own page (it reads the check API).
pub async fn check_page(
    State(st): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let found = st.board.get(&CheckKey::new(&namespace, &name)).is_some();
    let status = if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    (status, Html(super::dashboard::CHECK_PAGE)).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::api::{HealthCheckStatus, RunRecord};
    use crate::engine::{Board, EngineHandle};
    use crate::metrics::{Metrics, MetricsConfig};
    use crate::server::{router, Limits};

    fn view(ns: &str, name: &str, f: impl FnOnce(&mut CheckView)) -> Arc<CheckView> {
        let mut v = CheckView {
            key: CheckKey::new(ns, name),
            resource: Arc::default(),
            status: Arc::new(HealthCheckStatus {
                ok: true,
                last_run_unix: 100,
                success_count: 1,
                last_outcome: Some(Outcome::Success),
                history: vec![RunRecord {
                    uuid: Some(crate::api::RunCredential::new().run_id()),
                    start_unix: 100,
                    run_duration: 2_000_000,
                    outcome: Some(Outcome::Success),
                    cause: None,
                    errors: vec![],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            invalid: None,
            run_interval: Some(std::time::Duration::from_secs(60)),
            schedule: None,
            timeout: None,
            single_run: false,
            suspended: false,
            severity: None,
            category: None,
            depends_on: Vec::new(),
            departed: None,
            memo: Default::default(),
        };
        f(&mut v);
        Arc::new(v)
    }

    async fn get(board: Arc<Board>, query: &str) -> serde_json::Value {
        let (engine, _events) = EngineHandle::channel();
        let metrics = Arc::new(Metrics::new(MetricsConfig::default(), board.clone()));
        let app = router(super::super::AppState::new(
            board,
            engine,
            metrics,
            None,
            &Limits::default(),
        ));
        let resp = app
            .oneshot(
                axum::http::Request::get(format!("/api/checks?{query}"))
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    fn names(doc: &serde_json::Value) -> Vec<String> {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{}/{}",
                    c["namespace"].as_str().unwrap(),
                    c["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    fn board() -> Arc<Board> {
        let board = Arc::new(Board::new("me"));
        board.put(view("a", "db", |v| {
            let st = Arc::make_mut(&mut v.status);
            st.ok = false;
            st.errors = vec!["db down".into()];
            st.failing_since_unix = Some(90);
            st.history.insert(
                0,
                RunRecord {
                    uuid: Some(crate::api::RunCredential::new().run_id()),
                    start_unix: 110,
                    run_duration: 5_000_000,
                    outcome: Some(Outcome::Failure),
                    cause: Some(crate::api::Cause::Target),
                    errors: vec!["db down".into()],
                    ..Default::default()
                },
            );
        }));
        board.put(view("a", "web", |v| {
            Arc::make_mut(&mut v.status).history[0].outcome = Some(Outcome::Timeout);
        }));
        board.put(view("a", "old", |v| v.suspended = true));
        board.put(view("b", "bad", |v| {
            v.invalid = Some("spec.timeout: not a duration".into());
            Arc::make_mut(&mut v.status).ok = false;
        }));
        board.put(view("b", "new", |v| {
            let st = Arc::make_mut(&mut v.status);
            st.history.clear();
            st.last_outcome = None;
            st.last_run_unix = 0;
            st.success_count = 0;
        }));
        board.put(view("c", "slow", |v| {
            let st = Arc::make_mut(&mut v.status);
            st.standing = Some(crate::api::Standing::Degraded);
            st.warnings = vec!["response took 900ms, over 300ms".into()];
            st.history[0].standing = Some(crate::api::Standing::Degraded);
        }));
        board
    }

    #[tokio::test]
    async fn counts_cover_every_check_and_a_page_holds_the_matches() {
        let doc = get(board(), "limit=2").await;
        assert_eq!(
            doc["counts"],
            serde_json::json!({"total": 6, "failing": 2, "unstable": 2, "suspended": 1, "invalid": 1, "pending": 1, "running": 0, "degraded": 1})
        );
        assert_eq!(doc["matched"], 6);
        assert_eq!(names(&doc), ["a/db", "a/old"]);
        assert_eq!(doc["ok"], false);
        let next = get(board(), "limit=2&offset=4").await;
        assert_eq!(names(&next), ["b/new", "c/slow"]);
        assert_eq!(
            get(board(), "offset=99").await["checks"],
            serde_json::json!([])
        );
    }

    #[tokio::test]
    async fn filters_and_search_narrow_the_list() {
        let b = board();
        assert_eq!(
            names(&get(b.clone(), "filter=failing").await),
            ["a/db", "b/bad"]
        );
        assert_eq!(
            names(&get(b.clone(), "filter=unstable").await),
            ["a/db", "a/web"]
        );
        assert_eq!(names(&get(b.clone(), "filter=suspended").await), ["a/old"]);
        assert_eq!(names(&get(b.clone(), "filter=invalid").await), ["b/bad"]);
        assert_eq!(names(&get(b.clone(), "filter=degraded").await), ["c/slow"]);
        assert_eq!(names(&get(b.clone(), "q=WEB").await), ["a/web"]);
        assert_eq!(names(&get(b.clone(), "q=b/").await), ["b/bad", "b/new"]);
        assert_eq!(names(&get(b.clone(), "q=a/d").await), ["a/db"]);
        assert_eq!(names(&get(b, "q=nothing").await), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_row_carries_its_strip_state_and_errors() {
        let doc = get(board(), "q=a/db").await;
        let row = &doc["checks"][0];
        assert_eq!(row["state"], "failing");
        assert_eq!(row["failingSince"], 90);
        assert_eq!(row["errors"], serde_json::json!(["db down"]));
        assert_eq!(row["every"], "1m");
        // Oldest first: the success at 100, then the failure at 110.
        assert_eq!(
            row["runs"],
            serde_json::json!([[100, 2, "S", null], [110, 5, "F", "db down"]])
        );
        let doc = get(board(), "q=b/").await;
        assert_eq!(doc["checks"][0]["state"], "invalid");
        assert_eq!(doc["checks"][1]["state"], "pending");
        // Degraded: passing, its warnings shown, its run drawn as such.
        let doc = get(board(), "q=c/slow").await;
        let row = &doc["checks"][0];
        assert_eq!(row["state"], "degraded");
        assert_eq!(
            row["errors"],
            serde_json::json!(["response took 900ms, over 300ms"])
        );
        assert_eq!(row["runs"][0][2], "D");
    }
}
