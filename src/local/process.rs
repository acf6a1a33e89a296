//! Runs a check's first container as a local process: its `command` + `args`, its `env` (with
//! `fieldRef` to the pod's namespace and name), and the four `KH_*` variables. Each run gets its
//! own process group, so the whole group is killed at the deadline and nothing it started
//! outlives the run.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tracing::debug;

use super::logbook::{Capture, LogBook};
use crate::api::protocol::{pod_name, SOURCE_ANNOTATION};
use crate::api::validate::Problem;
use crate::api::{CheckKey, HealthCheck, RunCredential, RunId};
use crate::engine::{own_limit, EngineHandle, RunEnd, Runner, StartRun, StopReason};

/// How much of a process's output is kept for the failure message.
const TAIL_BYTES: usize = 2048;
const TAIL_LINES: usize = 10;
/// The longest line of output kept; the rest of a longer one is read and dropped.
const MAX_LINE: usize = 4096;
// The message's tail is read from the end of the captured output, which must hold it whole.
const _: () = assert!(TAIL_LINES * MAX_LINE <= super::logbook::MAX_BYTES);
/// How often an adopted process (not our child, so not waitable) is checked for exit.
const ADOPT_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
struct Proc {
    pgid: Option<i32>,
    stop: bool,
}

/// Why a check's pod spec gives no command to run here.
#[derive(Debug, thiserror::Error)]
pub enum NoCommand {
    #[error("the check has no podSpec")]
    NoPodSpec,
    #[error(transparent)]
    PodSpec(#[from] crate::api::validate::Invalid),
    #[error("the pod spec has no container")]
    NoContainer,
    #[error("containers[0].command is empty")]
    EmptyCommand,
    #[error("env {0} cannot be resolved in local mode")]
    Env(String),
}

#[derive(Debug, Clone)]
pub struct ProcessRunner {
    engine: EngineHandle,
    /// Base of `KH_REPORTING_URL`, e.g. `http://127.0.0.1:8080`.
    report_base: String,
    procs: Arc<Mutex<HashMap<RunId, Proc>>>,
    /// Put in front of `PATH`, so checks can call `probity report`.
    path_prefix: Option<PathBuf>,
    /// Where each run's output is kept for the check's page.
    logbook: Option<LogBook>,
}

/// What the local backend cannot run, found when the check is loaded rather than at each run.
pub fn local_problems(hc: &HealthCheck) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(exec) = hc.spec.probe.as_ref().and_then(|p| p.exec.as_ref()) {
        if exec.pod_selector.is_some() || exec.container.is_some() {
            out.push(Problem {
                field: "spec.probe.exec.podSelector".into(),
                message: "runs the command in a pod, which needs the kubernetes backend; without it the command runs locally".into(),
            });
        }
    }
    // A pod spec that does not parse is reported by validation.
    let Some(Ok(pod)) = hc.spec.pod_spec.as_ref().map(|p| p.pod_spec()) else {
        return out;
    };
    let Some(c) = pod.containers.first() else {
        return out;
    };
    let has_command = c.command.as_ref().is_some_and(|v| !v.is_empty());
    if !has_command {
        out.push(Problem {
            field: "spec.podSpec.spec.containers[0].command".into(),
            message: "is required in local mode (there is no image entrypoint to run)".into(),
        });
    }
    for (i, e) in c.env.iter().flatten().enumerate() {
        if let Some(from) = &e.value_from {
            let field = from.field_ref.as_ref().map(|f| f.field_path.as_str());
            if !matches!(field, Some("metadata.namespace" | "metadata.name")) {
                out.push(Problem {
                    field: format!("spec.podSpec.spec.containers[0].env[{i}].valueFrom"),
                    message: format!(
                        "{} cannot be resolved in local mode (only fieldRef metadata.namespace and metadata.name)",
                        e.name
                    ),
                });
            }
        }
    }
    out
}

impl ProcessRunner {
    pub fn new(engine: EngineHandle, report_base: impl Into<String>) -> Self {
        let path_prefix = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        ProcessRunner {
            engine,
            report_base: report_base.into().trim_end_matches('/').to_string(),
            procs: Arc::default(),
            path_prefix,
            logbook: None,
        }
    }

    /// Keeps each run's output in `book`.
    pub fn keeping_logs(mut self, book: LogBook) -> Self {
        self.logbook = Some(book);
        self
    }

    fn command(&self, run: &StartRun) -> Result<Command, NoCommand> {
        let pod = run
            .check
            .spec
            .pod_spec
            .as_ref()
            .ok_or(NoCommand::NoPodSpec)?
            .pod_spec()?;
        let c = pod.containers.first().ok_or(NoCommand::NoContainer)?;
        let argv: Vec<String> = c
            .command
            .iter()
            .flatten()
            .chain(c.args.iter().flatten())
            .cloned()
            .collect();
        let program = argv.first().ok_or(NoCommand::EmptyCommand)?;
        let namespace = run.key.namespace();
        let pod = pod_name(&run.key, run.uuid);

        let mut cmd = Command::new(program);
        cmd.args(&argv[1..]);
        for e in c.env.iter().flatten() {
            let value = match &e.value_from {
                None => e.value.clone().unwrap_or_default(),
                Some(from) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                    Some("metadata.namespace") => namespace.to_string(),
                    Some("metadata.name") => pod.clone(),
                    _ => return Err(NoCommand::Env(e.name.clone())),
                },
            };
            cmd.env(&e.name, value);
        }
        cmd.env(
            "KH_REPORTING_URL",
            format!(
                "{}/check?kh-run-uuid={}",
                self.report_base,
                run.credential.expose()
            ),
        );
        cmd.env("KH_RUN_UUID", run.credential.expose());
        cmd.env(
            "KH_CHECK_RUN_DEADLINE",
            run.deadline.timestamp().to_string(),
        );
        cmd.env("KH_POD_NAMESPACE", namespace);
        if let Some(prefix) = &self.path_prefix {
            let mut path = OsString::from(prefix);
            if let Some(old) = std::env::var_os("PATH") {
                path.push(":");
                path.push(old);
            }
            cmd.env("PATH", path);
        }
        let source_dir = run
            .check
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE_ANNOTATION))
            .and_then(|f| Path::new(f).parent().map(Path::to_path_buf));
        let workdir = match (&c.working_dir, source_dir) {
            (Some(w), Some(src)) => Some(src.join(w)),
            (Some(w), None) => Some(PathBuf::from(w)),
            (None, src) => src,
        };
        if let Some(w) = workdir {
            cmd.current_dir(w);
        }
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        Ok(cmd)
    }

    async fn execute(self, run: StartRun) {
        let uuid = run.uuid;
        let end = self.execute_inner(&run).await;
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uuid);
        self.engine.released(uuid, end).await;
    }

    async fn execute_inner(&self, run: &StartRun) -> RunEnd {
        let mut cmd = match self.command(run) {
            Ok(c) => c,
            Err(m) => return RunEnd::start_failed(m.to_string()),
        };
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if own_limit(&e) => return RunEnd::Deferred(format!("start {program:?}: {e}")),
            Err(e) => return RunEnd::start_failed(format!("start {program:?}: {e}")),
        };
        let pgid = child.id().map(|p| p as i32);
        {
            let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
            let p = procs.entry(run.uuid).or_default();
            p.pgid = pgid;
            if p.stop {
                kill_group(pgid);
            }
        }
        // One buffer of the output: the log book keeps it, and the message of a run that ends
        // without reporting quotes its last lines.
        let capture = Arc::new(Mutex::new(Capture::default()));
        let mut readers = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let capture = capture.clone();
            let key = run.key.clone();
            readers.push(tokio::spawn(async move {
                capped_lines(stream, MAX_LINE, |line| {
                    debug!(check = %key, "{line}");
                    capture.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                })
                .await
            }));
        }
        let status = child.wait().await;
        // Anything the check left running in its group goes with it.
        kill_group(pgid);
        // Output still buffered in the pipes is wanted for the message, but a grandchild that
        // kept a pipe open must not hold the run.
        for r in readers {
            let _ = tokio::time::timeout(Duration::from_millis(200), r).await;
        }
        let capture = std::mem::take(&mut *capture.lock().unwrap_or_else(|e| e.into_inner()));
        // The tail keeps at most its last lines, so those are all it needs to be given.
        let mut tail = Tail::default();
        for line in capture.last_lines(TAIL_LINES) {
            tail.push(line.to_string());
        }
        let output = tail.render();
        if let Some(book) = &self.logbook {
            book.keep(&run.key, run.uuid, run.started.timestamp(), &capture)
                .await;
        }
        let how = match &status {
            Err(e) => format!("waiting for the process failed: {e}"),
            Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(s)) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "ended".to_string(),
            },
        };
        let message = if output.is_empty() {
            format!("{how} without reporting")
        } else {
            format!("{how} without reporting; last output: {output}")
        };
        RunEnd::crashed(message)
    }

    async fn watch_adopted(self, uuid: RunId) {
        let found = tokio::task::spawn_blocking(move || find_run_group(uuid))
            .await
            .ok()
            .flatten();
        let end = match found {
            None => RunEnd::crashed(
                "the run's process was gone when probity restarted, and it had not reported",
            ),
            Some((pid, pgid)) => {
                {
                    let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
                    let p = procs.entry(uuid).or_default();
                    p.pgid = Some(pgid);
                    if p.stop {
                        kill_group(Some(pgid));
                    }
                }
                while alive(pid) {
                    tokio::time::sleep(ADOPT_POLL).await;
                }
                kill_group(Some(pgid));
                RunEnd::crashed("the run's process ended without reporting (adopted after a restart; exit status unknown)"
                        )
            }
        };
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uuid);
        self.engine.released(uuid, end).await;
    }
}

impl Runner for ProcessRunner {
    fn start(&self, run: StartRun) {
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.uuid, Proc::default());
        tokio::spawn(self.clone().execute(run));
    }

    fn adopt(
        &self,
        _key: CheckKey,
        uuid: RunId,
        _deadline: DateTime<Utc>,
        _check: Arc<HealthCheck>,
    ) {
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uuid, Proc::default());
        tokio::spawn(self.clone().watch_adopted(uuid));
    }

    fn stop(&self, key: &CheckKey, uuid: RunId, reason: StopReason) {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        match procs.get_mut(&uuid) {
            Some(p) => {
                p.stop = true;
                if p.pgid.is_some() {
                    debug!(check = %key, %uuid, ?reason, "killing process group");
                    kill_group(p.pgid);
                }
            }
            None => {
                // Already gone (its release is on the way) or never ours.
                debug!(check = %key, %uuid, "asked to stop a run with no process");
            }
        }
    }
}

fn kill_group(pgid: Option<i32>) {
    if let Some(pgid) = pgid.filter(|p| *p > 1) {
        // SAFETY: kill(2) has no memory-safety preconditions; a gone group gives ESRCH.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and
/// parentheses): state, ppid, pgrp, ...
fn stat_fields(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.trim_start().to_string())
}

fn alive(pid: i32) -> bool {
    // A zombie still "exists" for kill(0); /proc's state tells it apart.
    stat_fields(pid).is_some_and(|f| !f.starts_with('Z'))
}

/// Finds the process group of a run by the `KH_RUN_UUID` in its processes' environment (the
/// credential, whose public id is `uuid`), which no other process has: safe against PID reuse,
/// and needs nothing saved beyond the run's id. The group is the run's only if its leader is
/// one of them (each run starts its own group), or, with the leader gone, if every process left
/// in it carries the run's credential: a group some other program took is never killed.
fn find_run_group(uuid: RunId) -> Option<(i32, i32)> {
    let mut ours: Vec<(i32, i32)> = Vec::new();
    let mut others: Vec<i32> = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Some(pgid) = process_group(pid) else {
            continue;
        };
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let carries = env
            .split(|b| *b == 0)
            .filter_map(|kv| kv.strip_prefix(b"KH_RUN_UUID="))
            .filter_map(|v| std::str::from_utf8(v).ok())
            .filter_map(|v| v.parse::<RunCredential>().ok())
            .any(|c| c.run_id() == uuid);
        if carries {
            ours.push((pid, pgid));
        } else {
            others.push(pgid);
        }
    }
    if let Some(&(pid, pgid)) = ours.iter().find(|(pid, pgid)| pid == pgid) {
        return Some((pid, pgid));
    }
    let &(pid, pgid) = ours.first()?;
    let one_group = ours.iter().all(|(_, g)| *g == pgid) && !others.contains(&pgid);
    one_group.then_some((pid, pgid))
}

/// The process group of `pid`, from `/proc/<pid>/stat` (the fifth field).
fn process_group(pid: i32) -> Option<i32> {
    stat_fields(pid)?.split_whitespace().nth(2)?.parse().ok()
}

/// Reads `stream` to its end a line at a time, handing on at most `max` bytes of each (a longer
/// line is cut, marked with `…`, and the rest of it drained), so a check that prints without
/// newlines cannot grow probity's memory.
async fn capped_lines<R: tokio::io::AsyncRead + Unpin>(
    stream: R,
    max: usize,
    mut line: impl FnMut(String),
) {
    let mut r = BufReader::new(stream);
    let mut cur: Vec<u8> = Vec::new();
    let mut cut = false;
    let emit = |cur: &mut Vec<u8>, cut: &mut bool, line: &mut dyn FnMut(String)| {
        let mut s = String::from_utf8_lossy(cur).into_owned();
        if std::mem::take(cut) {
            s.push('…');
        }
        cur.clear();
        line(s);
    };
    loop {
        let buf = match r.fill_buf().await {
            Ok(b) if !b.is_empty() => b,
            _ => break,
        };
        let end = buf.iter().position(|b| *b == b'\n');
        let part = &buf[..end.unwrap_or(buf.len())];
        let room = max.saturating_sub(cur.len());
        cut |= part.len() > room;
        cur.extend_from_slice(&part[..part.len().min(room)]);
        let used = end.map_or(buf.len(), |i| i + 1);
        r.consume(used);
        if end.is_some() {
            emit(&mut cur, &mut cut, &mut line);
        }
    }
    if !cur.is_empty() || cut {
        emit(&mut cur, &mut cut, &mut line);
    }
}

#[derive(Debug, Default)]
struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > TAIL_LINES || (self.bytes > TAIL_BYTES && self.lines.len() > 1) {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    fn render(&self) -> String {
        let joined = self
            .lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | ");
        if joined.len() > TAIL_BYTES {
            let mut start = joined.len() - TAIL_BYTES;
            while !joined.is_char_boundary(start) {
                start += 1;
            }
            format!("…{}", &joined[start..])
        } else {
            joined
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(credential: RunCredential, own_group: bool) -> std::process::Child {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30").env("KH_RUN_UUID", credential.expose());
        if own_group {
            cmd.process_group(0);
        }
        let child = cmd.spawn().unwrap();
        // spawn returns once the parent is released from the vfork, which the kernel does
        // before the new program's environment is in place: until then /proc shows an empty
        // one (CI once read it there). Wait for it, as an adopted run is long past that.
        let environ = format!("/proc/{}/environ", child.id());
        for _ in 0..1000 {
            let env = std::fs::read(&environ).unwrap_or_default();
            if env.windows(12).any(|w| w == b"KH_RUN_UUID=") {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    }

    #[test]
    fn an_adopted_run_is_found_by_its_credential_and_only_its_own_group_is_taken() {
        // A run's group: its leader carries the credential.
        let cred = RunCredential::new();
        let mut leader = sleeper(cred, true);
        let pid = leader.id() as i32;
        assert_eq!(find_run_group(cred.run_id()), Some((pid, pid)));
        // Found by the public id only: the credential itself names no run.
        let as_id: RunId = cred.expose().parse().unwrap();
        assert_eq!(find_run_group(as_id), None);
        let _ = leader.kill();
        let _ = leader.wait();

        // A process with the credential whose group is someone else's (here the test's own,
        // whose leader does not carry it): never adopted as a group to kill.
        let other = RunCredential::new();
        let mut stray = sleeper(other, false);
        assert_eq!(find_run_group(other.run_id()), None);
        let _ = stray.kill();
        let _ = stray.wait();
    }

    #[tokio::test]
    async fn output_lines_are_capped_and_the_rest_drained() {
        // The recipe of issue 9: output without a newline, which a line reader holds whole.
        let mut out = vec![b'x'; 1 << 20];
        out.extend_from_slice(b"\nok\nlast");
        let mut lines = Vec::new();
        capped_lines(&out[..], 4096, |l| lines.push(l)).await;
        assert_eq!(
            lines.len(),
            3,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(lines[0], format!("{}…", "x".repeat(4096)));
        assert_eq!(lines[1..], ["ok", "last"]);
    }

    #[test]
    fn tail_keeps_the_last_lines_within_bounds() {
        let mut t = Tail::default();
        for i in 0..100 {
            t.push(format!("line {i}"));
        }
        assert_eq!(
            t.render(),
            (90..100)
                .map(|i| format!("line {i}"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let mut t = Tail::default();
        t.push("x".repeat(10_000));
        assert!(t.render().len() <= TAIL_BYTES + 4);
    }

    #[test]
    fn the_tail_read_from_the_capture_is_the_tail_of_the_stream() {
        let mut streamed = Tail::default();
        let mut capture = Capture::default();
        for i in 0..5_000 {
            // Lines of every length up to the cap, so the byte bound is met as well.
            let line = format!("{i} {}", "x".repeat(i * 37 % MAX_LINE));
            streamed.push(line.clone());
            capture.push(line);
        }
        let mut from_capture = Tail::default();
        for l in capture.last_lines(TAIL_LINES) {
            from_capture.push(l.to_string());
        }
        assert_eq!(from_capture.render(), streamed.render());
    }

    #[test]
    fn local_mode_needs_a_command_and_resolvable_env() {
        let text = "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {name: a}\nspec:\n  podSpec:\n    spec:\n      containers:\n        - name: c\n          image: x\n          env:\n            - name: S\n              valueFrom: {secretKeyRef: {name: s, key: k}}\n";
        let hc = crate::api::load::parse_documents(text)
            .unwrap()
            .remove(0)
            .check
            .unwrap();
        let p = local_problems(&hc);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].field, "spec.podSpec.spec.containers[0].command");
        assert!(p[1].message.starts_with("S cannot be resolved"));
    }
}
