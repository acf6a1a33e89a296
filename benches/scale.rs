//! Scale benchmark of the engine, the report endpoint and the status page at 10,000 checks.
//!
//!     cargo bench --bench scale
//!
//! Everything but the check processes is real: the driver on the wall clock, the file state
//! store, the HTTP server on loopback. Runs "complete instantly": the runner reports (or lets
//! the HTTP load generator report) the moment a run starts. Figures go to docs/benchmarks.md.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use probity::api::load::parse_documents;
use probity::api::CheckKey;
use probity::api::{RunCredential, RunId, RunResult};
use probity::engine::clock::SystemClock;
use probity::engine::driver::Driver;
use probity::engine::{
    Board, Desired, Engine, EngineConfig, EngineHandle, RunEnd, Runner, StartRun, StopReason,
};
use probity::local::FileStore;
use probity::metrics::Metrics;
use probity::server::{self, AppState};
use tokio::sync::watch;

const CHECKS: usize = 10_000;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Report in-process and exit at once.
    Instant,
    /// Leave the report to the HTTP load generator.
    Collect,
}

struct BenchRunner {
    engine: EngineHandle,
    mode: Mode,
    lags: Arc<Mutex<Vec<Duration>>>,
    started: Arc<Mutex<VecDeque<(RunId, RunCredential)>>>,
}

impl Runner for BenchRunner {
    fn start(&self, run: StartRun) {
        let lag = (Utc::now() - run.due).to_std().unwrap_or_default();
        self.lags.lock().unwrap().push(lag);
        match self.mode {
            Mode::Instant => {
                let engine = self.engine.clone();
                tokio::spawn(async move {
                    let _ = engine.report(run.uuid, RunResult::passed()).await;
                    engine
                        .released(run.uuid, RunEnd::crashed(String::new()))
                        .await;
                });
            }
            // Reports must carry the run's credential; the engine knows the run by its id.
            Mode::Collect => self
                .started
                .lock()
                .unwrap()
                .push_back((run.uuid, run.credential)),
        }
    }
    fn adopt(
        &self,
        _: CheckKey,
        _: probity::api::RunId,
        _: DateTime<Utc>,
        _: Arc<probity::api::HealthCheck>,
    ) {
    }
    fn stop(&self, _: &CheckKey, _: probity::api::RunId, _: StopReason) {}
}

fn check(i: usize, interval: &str) -> Desired {
    let text = format!(
        "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: check-{i:05}, namespace: ns-{}}}\nspec:\n  runInterval: {interval}\n  timeout: 5m\n  podSpec: {{spec: {{containers: [{{name: c, image: i, command: [x]}}]}}}}\n",
        i % 20
    );
    Desired::new(
        Arc::new(parse_documents(&text).unwrap().remove(0).check.unwrap()),
        None,
    )
}

struct Setup {
    handle: EngineHandle,
    lags: Arc<Mutex<Vec<Duration>>>,
    started: Arc<Mutex<VecDeque<(RunId, RunCredential)>>>,
    base: String,
    stop: watch::Sender<bool>,
    _state: tempfile::TempDir,
}

async fn setup(mode: Mode) -> Setup {
    let state = tempfile::tempdir().unwrap();
    let (handle, events) = EngineHandle::channel();
    let lags = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(Mutex::new(VecDeque::new()));
    let (stop, shutdown) = watch::channel(false);
    let runner = Arc::new(BenchRunner {
        engine: handle.clone(),
        mode,
        lags: lags.clone(),
        started: started.clone(),
    });
    let store = Arc::new(FileStore::open(state.path()).unwrap());
    let board = Arc::new(Board::new("bench"));
    let metrics = Arc::new(Metrics::new(Default::default(), board.clone()));
    let driver = Driver::new(
        Engine::new(EngineConfig::new("bench")),
        runner,
        store,
        SystemClock,
        events,
        board.clone(),
    )
    .observed_by_shared(metrics.clone())
    .stopping_on(shutdown.clone())
    .grace(Duration::from_secs(1));
    tokio::spawn(driver.run());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut sd = shutdown;
    let limits = server::Limits::default();
    tokio::spawn(server::serve(
        listener,
        AppState::new(board, handle.clone(), metrics, None, &limits),
        limits,
        async move {
            let _ = sd.changed().await;
        },
    ));
    Setup {
        handle,
        lags,
        started,
        base,
        stop,
        _state: state,
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn peak_rss_mb() -> f64 {
    rss_field("VmHWM:")
}

fn rss_mb() -> f64 {
    rss_field("VmRSS:")
}

fn rss_field(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

async fn get_latency(client: &reqwest::Client, url: &str, n: usize) -> (Duration, Duration, usize) {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        // Read the body in chunks and drop them, so the client adds nothing to the RSS measured.
        let mut resp = client.get(url).send().await.unwrap();
        bytes = 0;
        while let Some(chunk) = resp.chunk().await.unwrap() {
            bytes += chunk.len();
        }
        times.push(t.elapsed());
    }
    times.sort();
    (pct(&times, 0.5), pct(&times, 0.99), bytes)
}

/// Posts one OK report per UUID with 32 keep-alive clients in a child process.
fn load_gen(url: &str, uuids: &[RunCredential]) -> usize {
    use std::io::Write;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--load-gen", url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let list: String = uuids.iter().map(|u| format!("{}\n", u.expose())).collect();
    stdin.write_all(list.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn load_gen_child(url: String) {
    use std::io::Read;
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).unwrap();
    let queue: Vec<String> = input.lines().map(String::from).collect();
    let queue = Arc::new(Mutex::new(queue));
    let client = reqwest::Client::new();
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let queue = queue.clone();
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut ok = 0usize;
                loop {
                    let Some(uuid) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let r = client
                        .post(&url)
                        .header("kh-run-uuid", uuid)
                        .header("content-type", "application/json")
                        .body(r#"{"OK":true,"Errors":[]}"#)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    println!("{total}");
}

#[tokio::main]
async fn main() {
    probity::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--load-gen") {
        return load_gen_child(args[i + 1].clone()).await;
    }
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    println!(
        "# probity scale benchmark: {CHECKS} checks, {} cores",
        std::thread::available_parallelism().unwrap()
    );

    // 1. Scheduler lag: 10,000 checks at a 10 s interval, spread at start-up, so 1,000 runs fall
    //    due in every second.
    let s = setup(Mode::Instant).await;
    let t = Instant::now();
    for i in 0..CHECKS {
        s.handle.upsert(check(i, "10s"), None).await;
    }
    s.handle.loaded().await;
    println!(
        "loaded {CHECKS} checks in {} (RSS {:.1} MB)",
        ms(t.elapsed()),
        rss_mb()
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    println!("RSS after the lag run: {:.1} MB", rss_mb());
    let mut lags = std::mem::take(&mut *s.lags.lock().unwrap());
    lags.sort();
    println!(
        "scheduler lag over {seconds} s ({} runs, {:.0}/s): p50 {} p99 {} max {}",
        lags.len(),
        lags.len() as f64 / seconds as f64,
        ms(pct(&lags, 0.5)),
        ms(pct(&lags, 0.99)),
        ms(*lags.last().unwrap_or(&Duration::ZERO))
    );

    // 2. Status page and metrics at 10,000 checks, while the runs go on.
    let client = reqwest::Client::new();
    let (p50, p99, size) = get_latency(&client, &format!("{}/json", s.base), 50).await;
    println!(
        "GET /json ({} KiB): p50 {} p99 {}",
        size / 1024,
        ms(p50),
        ms(p99)
    );
    let (p50, p99, size) = get_latency(&client, &format!("{}/metrics", s.base), 50).await;
    println!(
        "GET /metrics ({} KiB): p50 {} p99 {}",
        size / 1024,
        ms(p50),
        ms(p99)
    );
    println!(
        "RSS after the scrapes: {:.1} MB (peak so far {:.1} MB)",
        rss_mb(),
        peak_rss_mb()
    );
    let _ = s.stop.send(true);
    drop(s);

    // 3. Reports over loopback HTTP: every check's run reported by a pool of keep-alive clients.
    let s = setup(Mode::Collect).await;
    let keys: Vec<CheckKey> = (0..CHECKS)
        .map(|i| CheckKey::new(&format!("ns-{}", i % 20), &format!("check-{i:05}")))
        .collect();
    // Loaded first: checks added after start-up run at once instead of being spread.
    s.handle.loaded().await;
    for i in 0..CHECKS {
        s.handle.upsert(check(i, "1h"), None).await;
    }
    let rounds = 5;
    let mut total = 0usize;
    let mut spent = Duration::ZERO;
    let url = format!("{}/check", s.base);
    for round in 0..rounds {
        if round > 0 {
            for k in &keys {
                s.handle.run_now(k.clone()).await.unwrap();
            }
        }
        while s.started.lock().unwrap().len() < CHECKS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let runs: Vec<(RunId, RunCredential)> = s.started.lock().unwrap().drain(..).collect();
        let credentials: Vec<RunCredential> = runs.iter().map(|(_, c)| *c).collect();
        // The load generator is another process, so the RSS below is probity's alone.
        let t = Instant::now();
        total += load_gen(&url, &credentials);
        spent += t.elapsed();
        for (u, _) in runs {
            s.handle.released(u, RunEnd::crashed(String::new())).await;
        }
    }
    println!(
        "reports over HTTP: {total} accepted in {:.2} s = {:.0}/s (32 keep-alive clients in another process; each report stored before its 200)",
        spent.as_secs_f64(),
        total as f64 / spent.as_secs_f64()
    );
    let _ = s.stop.send(true);
    println!(
        "peak RSS of the engine and server (load generator in its own process): {:.1} MB",
        peak_rss_mb()
    );
}
