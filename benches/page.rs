//! The status page and the alerts at scale (issue 12's benchmark):
//!
//!     cargo bench --bench page
//!
//! 10,000 checks, each with 30 days of aggregates of a check that runs every minute and its last
//! 20 runs, served by the real router on loopback: the status size per check, `/json` and the
//! page's API (latency, bytes), and the page in Debian's headless Chromium (first contentful
//! paint, and the first list drawn: the page's own `probity:drawn` mark). Then 1,000 checks
//! failing at once, told by the real notifier to a webhook on loopback: notifications a second.
//! Figures go to docs/benchmarks.md.

#[path = "../tests/common/webdriver.rs"]
#[allow(dead_code)]
mod webdriver;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use probity::alert::{Alerting, Notifier};
use probity::api::{aggregate, CheckKey, HealthCheck, HealthCheckStatus, Outcome, RunRecord};
use probity::engine::clock::SystemClock;
use probity::engine::{Board, CheckView, EngineHandle};
use probity::metrics::Metrics;
use probity::server::{self, AppState};

const CHECKS: usize = 10_000;
const FAILING_AT_ONCE: usize = 1_000;

/// 30 days of a check every minute, ending now: one failure in 97, durations over a few
/// buckets; and its last 20 runs.
fn thirty_days() -> HealthCheckStatus {
    let mut st = HealthCheckStatus {
        ok: true,
        ..Default::default()
    };
    let now = Utc::now();
    let start = now - chrono::Duration::days(30);
    for m in 0..(30 * 24 * 60) {
        let t = start + chrono::Duration::minutes(m);
        let outcome = if m % 97 == 0 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        aggregate::record(
            &mut st,
            outcome,
            t,
            Duration::from_millis(200 + (m % 13) as u64 * 100),
        );
        st.ok = outcome.is_success();
        aggregate::settle(&mut st, t);
    }
    st.ok = true;
    st.success_count = 42_755;
    st.failure_count = 445;
    st.last_run_unix = now.timestamp() - 30;
    st.next_run_unix = Some(now.timestamp() + 30);
    st.last_outcome = Some(Outcome::Success);
    st.history = (0..20)
        .map(|i| RunRecord {
            uuid: Some(probity::api::RunCredential::new().run_id()),
            start_unix: now.timestamp() - 60 * i,
            run_duration: 250_000_000 + i * 10_000_000,
            outcome: Some(if i == 7 {
                Outcome::Failure
            } else {
                Outcome::Success
            }),
            cause: (i == 7).then_some(probity::api::Cause::Target),
            errors: if i == 7 {
                vec!["GET http://web.default.svc:8080/healthz: 503 Service Unavailable".into()]
            } else {
                vec![]
            },
            ..Default::default()
        })
        .collect();
    st
}

fn view(i: usize, template: &HealthCheckStatus, failing: bool) -> CheckView {
    let key = CheckKey::new(&format!("team-{:03}", i % 200), &format!("check-{i:05}"));
    let mut st = template.clone();
    st.namespace = key.namespace().to_string();
    if failing {
        st.ok = false;
        st.errors = vec![format!(
            "connect 10.0.{}.{}:5432: connection refused",
            i / 256 % 256,
            i % 256
        )];
        st.failing_since_unix = Some(Utc::now().timestamp() - 120);
    }
    let mut hc = HealthCheck::default();
    hc.metadata.name = Some(key.name().to_string());
    hc.metadata.namespace = Some(key.namespace().to_string());
    CheckView {
        key,
        resource: Arc::new(hc),
        status: Arc::new(st),
        invalid: None,
        run_interval: Some(Duration::from_secs(60)),
        schedule: None,
        timeout: Some(Duration::from_secs(30)),
        single_run: false,
        suspended: false,
        severity: None,
        category: None,
        depends_on: Vec::new(),
        departed: None,
        memo: Default::default(),
    }
}

async fn serve(board: Arc<Board>) -> String {
    let (engine, events) = EngineHandle::channel();
    // Nothing here reaches the engine; the channel is kept open for the server's lifetime.
    std::mem::forget(events);
    let metrics = Arc::new(Metrics::new(Default::default(), board.clone()));
    let listener = server::listen::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let limits = server::Limits::default();
    tokio::spawn(server::serve(
        listener,
        AppState::new(board, engine, metrics, None, &limits),
        limits,
        std::future::pending(),
    ));
    base
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// p50, p99 and the body size of `n` GETs of `url`.
async fn latency(client: &reqwest::Client, url: &str, n: usize) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let body = client.get(url).send().await.unwrap().bytes().await.unwrap();
        times.push(t.elapsed());
        bytes = body.len();
    }
    times.sort();
    (pct(&times, 0.5), pct(&times, 0.99), bytes)
}

/// p50 and p99 of `n` GETs of `url` read to the last byte as it arrives, not kept: the
/// server's time to send the document, without the client's growing of a 5 MB buffer.
async fn latency_streamed(client: &reqwest::Client, url: &str, n: usize) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut r = client.get(url).send().await.unwrap();
        while r.chunk().await.unwrap().is_some() {}
        times.push(t.elapsed());
    }
    times.sort();
    (pct(&times, 0.5), pct(&times, 0.99))
}

fn rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap()
        / 1024.0
}

#[tokio::main]
async fn main() {
    // As `probity serve` does: large buffers (a /json document) are returned when freed.
    probity::tune_allocator();
    let rss_before = rss_mb();
    let template = thirty_days();
    let status_bytes = serde_json::to_vec(&template).unwrap().len();
    let board = Arc::new(Board::new("bench"));
    for i in 0..CHECKS {
        board.put(Arc::new(view(i, &template, i % 50 == 0)));
    }
    board.set_ready();
    println!("status of one check with 30 days and 20 runs: {status_bytes} bytes of JSON");
    println!(
        "RSS with {CHECKS} such checks on the board: {:.1} MB (before: {rss_before:.1} MB)",
        rss_mb()
    );
    let base = serve(board.clone()).await;
    let client = reqwest::Client::new();
    // Warm up the connection and the allocator.
    latency(&client, &format!("{base}/json"), 3).await;
    let (p50, p99, bytes) = latency(&client, &format!("{base}/json"), 30).await;
    println!(
        "GET /json: {} KiB; p50 {}, p99 {}",
        bytes / 1024,
        ms(p50),
        ms(p99)
    );
    let (p50, p99) = latency_streamed(&client, &format!("{base}/json"), 30).await;
    println!(
        "GET /json read as it arrives: p50 {}, p99 {}",
        ms(p50),
        ms(p99)
    );
    println!(
        "RSS after serving /json 63 times (each check's entry kept with it): {:.1} MB",
        rss_mb()
    );
    let (p50, p99, bytes) = latency(&client, &format!("{base}/api/checks"), 30).await;
    println!(
        "GET /api/checks (first page of 100): {} KiB; p50 {}, p99 {}",
        bytes / 1024,
        ms(p50),
        ms(p99)
    );
    let (p50, p99, bytes) = latency(
        &client,
        &format!("{base}/api/checks?q=team-042&filter=unstable"),
        30,
    )
    .await;
    println!(
        "GET /api/checks?q=team-042&filter=unstable: {} KiB; p50 {}, p99 {}",
        bytes / 1024,
        ms(p50),
        ms(p99)
    );
    let page = client
        .get(format!("{base}/"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    println!("GET / (the page): {page} bytes");

    // The page in headless Chromium, five loads.
    let b = webdriver::Browser::start().await;
    let mut fcp = Vec::new();
    let mut drawn = Vec::new();
    for _ in 0..5 {
        b.go(&format!(
            "{base}/?load={}",
            Instant::now().elapsed().as_nanos()
        ))
        .await;
        let t = b
            .until(
                "the list drawn",
                "const d = performance.getEntriesByName('probity:drawn')[0]; const p = performance.getEntriesByName('first-contentful-paint')[0]; return d && p && document.querySelectorAll('.row').length === 100 ? [p.startTime, d.startTime] : null",
            )
            .await;
        fcp.push(Duration::from_secs_f64(t[0].as_f64().unwrap() / 1000.0));
        drawn.push(Duration::from_secs_f64(t[1].as_f64().unwrap() / 1000.0));
    }
    fcp.sort();
    drawn.sort();
    let transferred = b
        .js("return performance.getEntriesByType('navigation')[0].transferSize + performance.getEntriesByType('resource').filter(r => r.name.includes('api/checks')).slice(0, 1).reduce((s, r) => s + r.transferSize, 0)")
        .await;
    println!(
        "page in headless Chromium (5 loads): first contentful paint median {}, list of 100 drawn median {} (max {}); bytes over the wire for the page and its first list: {}",
        ms(fcp[2]),
        ms(drawn[2]),
        ms(drawn[4]),
        transferred
    );
    assert!(b.errors().await.is_empty(), "{:?}", b.errors().await);
    drop(b);

    // 1,000 checks fail at once; the notifier tells a webhook on loopback.
    let received = Arc::new(AtomicUsize::new(0));
    let r = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |_body: String| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let failing = Arc::new(Board::new("bench"));
    let fresh = HealthCheckStatus {
        ok: true,
        ..Default::default()
    };
    for i in 0..FAILING_AT_ONCE {
        failing.put(Arc::new(view(i, &fresh, true)));
    }
    let cfg = Alerting::parse(&format!(
        "receivers:\n  - name: hook\n    webhook: {{url: \"{hook}\"}}\nroutes:\n  - receiver: hook\n"
    ))
    .unwrap();
    let (engine, mut events) = EngineHandle::channel();
    // The engine's side: take the records (nothing to persist here).
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let metrics = Arc::new(Metrics::new(Default::default(), failing.clone()));
    let notifier = Notifier::new(
        Arc::new(cfg),
        failing,
        engine,
        Arc::new(SystemClock),
        metrics,
    )
    .unwrap();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let t = Instant::now();
    tokio::spawn(notifier.run(shutdown));
    while received.load(Ordering::SeqCst) < FAILING_AT_ONCE {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "only {} told",
            received.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = t.elapsed();
    println!(
        "{FAILING_AT_ONCE} checks failing at once: all told in {} ({:.0} notifications/s)",
        ms(took),
        FAILING_AT_ONCE as f64 / took.as_secs_f64()
    );

    // The notifier's cost when nothing is due: 10,000 checks, every one already told of its
    // state (a record per check), two routes; the process's CPU time over 10 s of scans.
    let steady = Arc::new(Board::new("bench"));
    let now = Utc::now().timestamp();
    for i in 0..CHECKS {
        let failing = i % 50 == 0;
        let mut v = view(i, &template, failing);
        let st = Arc::make_mut(&mut v.status);
        st.alerts = vec![probity::api::AlertRecord {
            receiver: "hook".into(),
            since_unix: st.failing_since_unix.unwrap_or(now - 600),
            firing: failing,
            sent_unix: now - 60,
            flapping: false,
            degraded: false,
        }];
        steady.put(Arc::new(v));
    }
    let cfg = Alerting::parse(&format!(
        "receivers:\n  - name: hook\n    webhook: {{url: \"{hook}\"}}\nroutes:\n  - receiver: hook\n    namespaces: [team-001]\n  - receiver: hook\n"
    ))
    .unwrap();
    let (engine, mut events) = EngineHandle::channel();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let metrics = Arc::new(Metrics::new(Default::default(), steady.clone()));
    let notifier = Notifier::new(
        Arc::new(cfg),
        steady,
        engine,
        Arc::new(SystemClock),
        metrics,
    )
    .unwrap();
    let (_stop_steady, shutdown) = tokio::sync::watch::channel(false);
    let before = received.load(Ordering::SeqCst);
    let cpu = cpu_time();
    tokio::spawn(notifier.run(shutdown));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let used = cpu_time() - cpu;
    assert_eq!(received.load(Ordering::SeqCst), before, "nothing was due");
    println!(
        "notifier with nothing due, {CHECKS} checks told of their state, 2 routes: {} of CPU a second (one scan a second)",
        ms(used / 10)
    );
}

/// This process's CPU time, user and system.
fn cpu_time() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills a struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}
