//! Alerts at scale (issue 23's benchmark):
//!
//!     cargo bench --bench alerting            # PROBITY_BENCH_SECS=120 for a longer run
//!
//! 10,000 checks on the real notifier: 10% flapping (passing and failing by turns, every
//! second), 5% failing behind a failing dependency, one upstream failing, the rest passing;
//! two receivers, one a webhook on loopback, the other accepting connections and never
//! answering. The notifier's records are applied to the published state as the engine would.
//! Printed: notices per receiver, what a naive alerter (one notice per verdict change per
//! receiver) would have sent, the queue's size, the memory grown and the CPU used. Figures go
//! to docs/benchmarks.md.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use probity::alert::{Alerting, Notifier};
use probity::api::{CheckKey, HealthCheck, HealthCheckStatus};
use probity::engine::clock::SystemClock;
use probity::engine::{Board, CheckView, EngineHandle, Event};
use probity::metrics::Metrics;

const CHECKS: usize = 10_000;
const FLAPPING: usize = CHECKS / 10;
const BLOCKED: usize = CHECKS / 20;

fn view(key: CheckKey, st: HealthCheckStatus, depends_on: Vec<CheckKey>) -> Arc<CheckView> {
    let mut hc = HealthCheck::default();
    hc.metadata.name = Some(key.name().to_string());
    hc.metadata.namespace = Some(key.namespace().to_string());
    Arc::new(CheckView {
        key,
        resource: Arc::new(hc),
        status: Arc::new(st),
        invalid: None,
        run_interval: Some(Duration::from_secs(1)),
        schedule: None,
        timeout: Some(Duration::from_secs(1)),
        single_run: false,
        suspended: false,
        severity: None,
        category: None,
        depends_on,
        departed: None,
        memo: Default::default(),
    })
}

fn failing(since: i64) -> HealthCheckStatus {
    let mut st = HealthCheckStatus {
        ok: false,
        errors: vec!["connect 10.0.0.5:5432: connection refused".into()],
        ..Default::default()
    };
    st.track_failing_since(since);
    st
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn cpu_secs() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills a struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: u64 = std::env::var("PROBITY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    // The healthy receiver counts; the stuck one holds every connection and never answers.
    let received = Arc::new(AtomicUsize::new(0));
    let r = received.clone();
    let app = axum::Router::new().route(
        "/ok",
        axum::routing::post(move |_body: String| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ok = format!("http://{}/ok", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let stuck_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stuck = format!("http://{}/stuck", stuck_listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = stuck_listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });

    let board = Arc::new(Board::new("bench"));
    let now = Utc::now().timestamp();
    let upstream = CheckKey::new("infra", "dns");
    board.put(view(upstream.clone(), failing(now), Vec::new()));
    let mut flappers = Vec::new();
    for i in 0..CHECKS - 1 {
        let key = CheckKey::new(&format!("team-{:03}", i % 200), &format!("check-{i:05}"));
        if i < FLAPPING {
            flappers.push(key.clone());
            let mut st = HealthCheckStatus {
                ok: true,
                ..Default::default()
            };
            st.track_failing_since(now);
            board.put(view(key, st, Vec::new()));
        } else if i < FLAPPING + BLOCKED {
            board.put(view(key, failing(now), vec![upstream.clone()]));
        } else {
            board.put(view(
                key,
                HealthCheckStatus {
                    ok: true,
                    ..Default::default()
                },
                Vec::new(),
            ));
        }
    }

    let cfg = Alerting::parse(&format!(
        "receivers:\n  - name: ok\n    webhook: {{url: \"{ok}\"}}\n  - name: stuck\n    webhook: {{url: \"{stuck}\"}}\nroutes:\n  - receiver: ok\n  - receiver: stuck\n"
    ))
    .unwrap();
    let (engine, mut events) = EngineHandle::channel();
    // The engine's part: each delivery's record goes into the published status.
    let b = board.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let Event::Notified { key, record } = ev {
                let Some(v) = b.get(&key) else { continue };
                let mut v = (*v).clone();
                let st = Arc::make_mut(&mut v.status);
                match st.alerts.iter_mut().find(|a| a.receiver == record.receiver) {
                    Some(a) => *a = record,
                    None => st.alerts.push(record),
                }
                b.put(Arc::new(v));
            }
        }
    });
    let metrics = Arc::new(Metrics::new(Default::default(), board.clone()));
    let notifier = Notifier::new(
        Arc::new(cfg),
        board.clone(),
        engine,
        Arc::new(SystemClock),
        metrics.clone(),
    )
    .unwrap();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let (rss0, cpu0) = (rss_mb(), cpu_secs());
    tokio::spawn(notifier.run(shutdown));

    // Every second each flapping check changes its verdict.
    let mut transitions = 0;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut peak_queue = 0f64;
    while start.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let t = Utc::now().timestamp();
        for key in &flappers {
            let Some(v) = board.get(key) else { continue };
            let mut v = (*v).clone();
            let st = Arc::make_mut(&mut v.status);
            st.ok = !st.ok;
            st.errors = if st.ok {
                Vec::new()
            } else {
                vec!["flap".into()]
            };
            st.track_failing_since(t);
            board.put(Arc::new(v));
            transitions += 1;
        }
        let m = metrics.encode_text();
        let queued = m
            .lines()
            .find_map(|l| l.strip_prefix("probity_notifications_queued{receiver=\"stuck\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        peak_queue = peak_queue.max(queued);
    }
    let (rss1, cpu1) = (rss_mb(), cpu_secs());
    // What a naive alerter sends: a notice per verdict change, per receiver (the upstream's
    // and the blocked checks' failures are one change each).
    let naive = 2 * (transitions + 1 + BLOCKED);
    let told = received.load(Ordering::SeqCst);
    println!(
        "{CHECKS} checks, {FLAPPING} flapping every second, {BLOCKED} failing behind a failing dependency, one receiver hanging; {secs} s:"
    );
    println!(
        "  healthy receiver: {told} notices ({:.0}/s); stuck receiver: {} connections held (8 at a time, each 10 s); a naive per-transition alerter: {naive} notices ({} per receiver)",
        told as f64 / secs as f64,
        accepted.load(Ordering::SeqCst),
        naive / 2
    );
    println!(
        "  stuck receiver's queue: at most {peak_queue:.0} notices held; memory grown {:.1} MB; CPU {:.2} s over {secs} s ({:.1}% of a core, including this harness's flapping of 1,000 statuses a second)",
        rss1 - rss0,
        cpu1 - cpu0,
        (cpu1 - cpu0) / secs as f64 * 100.0
    );
}
