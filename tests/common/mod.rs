//! Starts the real `probity` binary on a free loopback port and talks to it over HTTP.
#![allow(dead_code)]

pub mod capture;
pub mod need;
pub mod webdriver;

#[allow(unused_imports)]
pub use need::{available, has_tool, need_root, need_tool};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Probity {
    child: Child,
    pub base: String,
    pub checks: PathBuf,
    pub state: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Upper bound for anything to happen; generous so a loaded CI machine does not flake.
pub const PATIENCE: Duration = Duration::from_secs(30);

impl Probity {
    pub fn start(checks: &Path, state: &Path, extra: &[&str]) -> Probity {
        Self::start_on("127.0.0.1:0", checks, state, extra)
    }

    /// A fixed address, for restarts that orphaned checks must find again.
    pub fn start_on(listen: &str, checks: &Path, state: &Path, extra: &[&str]) -> Probity {
        Self::serve(listen, checks, state, extra, None)
    }

    /// `start`, with the open-files limit (soft and hard) set to `nofile`.
    pub fn start_limited(checks: &Path, state: &Path, extra: &[&str], nofile: u64) -> Probity {
        Self::serve("127.0.0.1:0", checks, state, extra, Some(nofile))
    }

    fn serve(
        listen: &str,
        checks: &Path,
        state: &Path,
        extra: &[&str],
        nofile: Option<u64>,
    ) -> Probity {
        let mut args: Vec<String> = [
            "serve",
            "--listen-address",
            listen,
            "--watch-interval",
            "100ms",
        ]
        .map(String::from)
        .to_vec();
        args.extend(["--checks".into(), checks.display().to_string()]);
        args.extend(["--state-dir".into(), state.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut p = Self::spawn_with(&args, &[], nofile);
        p.checks = checks.to_path_buf();
        p.state = state.to_path_buf();
        p
    }

    /// `probity ARGS...` with extra environment; returns once it listens.
    pub fn spawn(args: &[String], envs: &[(&str, &str)]) -> Probity {
        Self::spawn_with(args, envs, None)
    }

    fn spawn_with(args: &[String], envs: &[(&str, &str)], nofile: Option<u64>) -> Probity {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_probity"));
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: setrlimit is async-signal-safe and only touches the child.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .args(args)
            .envs(envs.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("PROBITY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start probity");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split(';').next().unwrap().trim().to_string();
                    let _ = tx.send(addr);
                }
                log2.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("probity did not start: {:?}", log.lock().unwrap()));
        Probity {
            child,
            base: format!("http://{addr}"),
            checks: PathBuf::new(),
            state: PathBuf::new(),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM` for the peak).
    pub fn mem_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The status code of a GET of `path`, on a new connection.
    pub async fn status_of(&self, path: &str) -> u16 {
        reqwest::get(self.url(path))
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn json(&self) -> Value {
        self.get_json("/json").await
    }

    /// A JSON document the server serves at `path`.
    pub async fn get_json(&self, path: &str) -> Value {
        reqwest::get(self.url(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls `/json` until `done` holds for it.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let doc = self.json().await;
            if done(&doc) {
                return doc;
            }
            if start.elapsed() > PATIENCE {
                panic!(
                    "timed out waiting for {what}; last /json: {doc:#}\nlog: {:#?}",
                    self.log.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_ready(&self) {
        let start = Instant::now();
        while reqwest::get(self.url("/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .ok()
            != Some(200)
        {
            assert!(start.elapsed() < PATIENCE, "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `sig` (SIGSTOP to freeze, SIGCONT to thaw).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Probity {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Check processes outlive probity by design (a restarted probity adopts them), each in
        // a process group of its own; the test's end is theirs.
        end_runs_reporting_to(&self.base);
    }
}

/// Kills the process group of every process whose `KH_REPORTING_URL` is at `base`: the runs of
/// one probity, whatever became of it.
pub fn end_runs_reporting_to(base: &str) {
    let want = format!("KH_REPORTING_URL={base}/");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    // SAFETY: plain syscalls on process ids read from /proc; a stale id fails harmlessly.
    let own = unsafe { libc::getpgrp() };
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let ours = env
            .split(|b| *b == 0)
            .any(|kv| kv.starts_with(want.as_bytes()));
        if ours {
            let pgid = unsafe { libc::getpgid(pid) };
            if pgid > 0 && pgid != own {
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            } else {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// A temporary directory with an empty `checks/` in it, and the path a `state/` would have.
pub fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let checks = tmp.path().join("checks");
    let state = tmp.path().join("state");
    std::fs::create_dir(&checks).unwrap();
    (tmp, checks, state)
}

pub fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A HealthCheck running `script` with `sh -c`, in namespace `it`.
pub fn shell_check(name: &str, spec: &str, script: &str) -> String {
    let script = script.replace('\'', "''");
    format!(
        "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata:\n  name: {name}\n  namespace: it\nspec:\n{spec}  podSpec:\n    spec:\n      containers:\n        - name: check\n          image: busybox\n          command: [\"/bin/sh\", \"-c\", '{script}']\n"
    )
}

pub fn detail<'a>(doc: &'a Value, key: &str) -> &'a Value {
    &doc["CheckDetails"][key]
}

pub fn count(doc: &Value, key: &str, field: &str) -> i64 {
    detail(doc, key)[field].as_i64().unwrap_or(-1)
}

/// Polls `f` until it gives a value, for at most `limit`; the panic names `what`.
pub async fn wait_up_to<T>(
    limit: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes an alerting configuration into `dir`; its path, for `--alerting-config`.
pub fn alerting_config(dir: &Path, yaml: &str) -> String {
    let path = dir.join("alerting.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI.
pub fn make_certs(dir: &std::path::Path) {
    let run = |args: &str| {
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && openssl {args}", dir.display()))
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    run("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=probity-test-ca");
    run("req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1");
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext");
}
