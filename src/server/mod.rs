//! The HTTP surface every replica serves: reports, the status page and dashboard, metrics,
//! health. Handlers read the board and talk to the engine through its handle; none of them
//! lists anything from a backend.

pub mod admin;
pub mod badge;
pub mod dashboard;
pub mod heartbeat;
pub mod listen;
pub mod logs;
pub mod page;
pub mod report;
pub mod status;

pub use listen::Limits;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::engine::{Board, EngineHandle};
use crate::metrics::Metrics;

/// How long the scheduler loop may go without a round before `/healthz` fails. It goes round at
/// least once a second when healthy.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

/// What every handler shares; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub board: Arc<Board>,
    pub engine: EngineHandle,
    pub metrics: Arc<Metrics>,
    /// None: `POST /api/run` is off.
    pub manual: Option<admin::ManualRuns>,
    /// Requests being handled (health probes aside), against `Limits::max_requests`.
    pub requests: Arc<tokio::sync::Semaphore>,
    /// Where the output of runs is kept; None: the check page shows none.
    pub logs: Option<Arc<dyn logs::CheckLogs>>,
}

impl AppState {
    pub fn new(
        board: Arc<Board>,
        engine: EngineHandle,
        metrics: Arc<Metrics>,
        manual: Option<admin::ManualRuns>,
        limits: &Limits,
    ) -> Self {
        AppState {
            board,
            engine,
            metrics,
            manual,
            requests: Arc::new(tokio::sync::Semaphore::new(limits.max_requests.max(1))),
            logs: None,
        }
    }

    pub fn with_logs(mut self, logs: Arc<dyn logs::CheckLogs>) -> Self {
        self.logs = Some(logs);
        self
    }
}

/// A one-line plain-text answer: what every refusal here looks like to curl and to clients.
pub(crate) fn plain(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

pub fn router(state: AppState) -> Router {
    let reports = post(report::report).layer(axum::middleware::from_fn_with_state(
        state.clone(),
        count_reports,
    ));
    Router::new()
        .route("/check", reports.clone())
        .route("/externalCheckStatus", reports)
        .route("/json", get(status::json))
        .route("/", get(status::root))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/run", post(admin::run))
        .route("/api/heartbeat/{namespace}/{name}", post(heartbeat::ping))
        .route(
            "/api/heartbeat/{namespace}/{name}/{beat}",
            post(heartbeat::ping_as),
        )
        .route("/api/checks", get(page::list))
        .route("/api/checks/{namespace}/{name}", get(status::check))
        .route("/api/checks/{namespace}/{name}/logs", get(logs::logs))
        .route("/checks/{namespace}/{name}", get(page::check_page))
        .route("/api/badges/{namespace}/{name}/status", get(badge::status))
        .route(
            "/api/badges/{namespace}/{name}/uptime/{window}",
            get(badge::uptime),
        )
        .layer(DefaultBodyLimit::max(report::MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_requests,
        ))
        // A plain map of the response: no boxed future per request on the report path.
        .layer(tower::util::MapResponseLayer::new(security_headers))
        .with_state(state)
}

/// Every answer is `nosniff` (JSON, SVG, text are what they say); an HTML page also carries its
/// content security policy, cannot be framed by another site (clickjacking the Run now button),
/// and sends no referrer off this origin. Outermost, so refusals made by other layers carry them
/// too.
fn security_headers(mut resp: Response) -> Response {
    use axum::http::HeaderValue;
    let headers = resp.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html"));
    if html {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(dashboard::content_security_policy()),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    resp
}

/// Sheds requests beyond `Limits::max_requests` with a 503 (every client retries that) rather
/// than queueing them without bound. Health probes are never shed: they are cheap, and a
/// kubelet that cannot get an answer restarts a replica that is merely busy.
async fn limit_requests(
    State(st): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if matches!(req.uri().path(), "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let Ok(_permit) = st.requests.clone().try_acquire_owned() else {
        st.metrics.request_shed();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "server busy: too many requests in flight; retry\n",
        )
            .into_response();
    };
    next.run(req).await
}

/// Counts every answer on the report endpoints by its status, the router's own included (405
/// for another method, 413 from the body limit), so refused reports show in metrics.
async fn count_reports(
    State(st): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    st.metrics.count_report(resp.status().as_u16());
    resp
}

async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            st.metrics.encode_openmetrics(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            st.metrics.encode_text(),
        )
            .into_response()
    }
}

async fn healthz(State(st): State<AppState>) -> Response {
    match st.board.since_tick() {
        None => (StatusCode::SERVICE_UNAVAILABLE, "scheduler not started\n").into_response(),
        Some(d) if d > STALL_LIMIT => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("scheduler loop stalled: no round for {}s\n", d.as_secs()),
        )
            .into_response(),
        Some(_) => (StatusCode::OK, "ok\n").into_response(),
    }
}

async fn readyz(State(st): State<AppState>) -> Response {
    if st.board.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading checks\n").into_response()
    }
}

/// Serves until `stop` resolves, then finishes the requests in flight within `limits.drain`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: Limits,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let metrics = state.metrics.clone();
    listen::serve(listener, router(state), limits, metrics, stop).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricsConfig;

    async fn start(board: Arc<Board>) -> String {
        let (engine, _events) = EngineHandle::channel();
        // The receiver is dropped: these routes never reach the engine.
        let metrics = Arc::new(Metrics::new(MetricsConfig::default(), board.clone()));
        let state = AppState::new(board, engine, metrics, None, &Limits::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(
            listener,
            state,
            Limits::default(),
            std::future::pending(),
        ));
        base
    }

    async fn get(url: String) -> (u16, String) {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn healthz_fails_when_the_scheduler_loop_stalls() {
        let board = Arc::new(Board::new("me"));
        let base = start(board.clone()).await;
        assert_eq!(
            get(format!("{base}/healthz")).await,
            (503, "scheduler not started\n".into())
        );
        board.tick();
        assert_eq!(get(format!("{base}/healthz")).await.0, 200);
        tokio::time::advance(STALL_LIMIT + Duration::from_secs(1)).await;
        let (code, body) = get(format!("{base}/healthz")).await;
        assert_eq!(code, 503);
        assert!(
            body.starts_with("scheduler loop stalled: no round for 3"),
            "{body}"
        );
        board.tick();
        assert_eq!(get(format!("{base}/healthz")).await.0, 200);
    }

    #[tokio::test]
    async fn every_refused_report_is_counted_by_its_status() {
        let base = start(Arc::new(Board::new("me"))).await;
        let http = reqwest::Client::new();
        let check = format!("{base}/check");
        let codes = [
            http.get(&check).send().await.unwrap().status(),
            http.post(&check)
                .header("content-type", "application/json")
                .header("kh-run-uuid", crate::api::RunId::random().to_string())
                .body(vec![b' '; report::MAX_BODY + 1])
                .send()
                .await
                .unwrap()
                .status(),
            http.post(format!("{base}/externalCheckStatus"))
                .header("content-type", "text/plain")
                .body("{}")
                .send()
                .await
                .unwrap()
                .status(),
        ];
        assert_eq!(codes.map(|c| c.as_u16()), [405, 413, 415]);
        let (_, text) = get(format!("{base}/metrics")).await;
        for code in [405, 413, 415] {
            let line = format!("probity_reports_total{{code=\"{code}\"}} 1");
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[tokio::test]
    async fn requests_beyond_the_cap_are_shed_with_503_but_health_probes_never_are() {
        let board = Arc::new(Board::new("me"));
        board.tick();
        let (engine, _events) = EngineHandle::channel();
        let metrics = Arc::new(Metrics::new(MetricsConfig::default(), board.clone()));
        let mut state = AppState::new(board, engine, metrics, None, &Limits::default());
        // Every permit taken, as by requests in flight.
        state.requests = Arc::new(tokio::sync::Semaphore::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let metrics = state.metrics.clone();
        tokio::spawn(serve(
            listener,
            state,
            Limits::default(),
            std::future::pending(),
        ));
        let r = reqwest::get(format!("{base}/json")).await.unwrap();
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(get(format!("{base}/healthz")).await.0, 200);
        assert_eq!(
            get(format!("{base}/readyz")).await.0,
            503,
            "answered, not shed"
        );
        let text = metrics.encode_text();
        assert!(
            text.lines()
                .any(|l| l == "probity_http_requests_shed_total 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn readyz_waits_for_the_checks_to_load() {
        let board = Arc::new(Board::new("me"));
        let base = start(board.clone()).await;
        assert_eq!(
            get(format!("{base}/readyz")).await,
            (503, "loading checks\n".into())
        );
        board.set_ready();
        assert_eq!(get(format!("{base}/readyz")).await.0, 200);
    }
}
