//! The one-shot commands behind the CLI: `probity run FILE` (every check of a file once, on
//! the local backend, nothing saved) and `probity validate FILE...`. `main.rs` parses flags and
//! calls these.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::api::validate::{validate_with, Defaults, Invalid};
use crate::api::{duration, CheckKey, RunResult};
use crate::engine::{Desired, Engine, EngineConfig, Finished, MemoryStore, Plans, RunRefused};
use crate::local::{local_problems, parse_file, report_base, LocalRunner};
use crate::serve::{self, Leading, Parts, Settings};
use crate::server;
use crate::{Error, Result};

/// Why `probity run` did not run a check.
#[derive(Debug, thiserror::Error)]
pub enum NotRun {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Refused(#[from] RunRefused),
}

/// One check's result from `probity run`: how its run ended and how long it took.
#[derive(Debug)]
pub struct Verdict {
    pub key: CheckKey,
    pub outcome: Result<(RunResult, Duration), NotRun>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        matches!(&self.outcome, Ok((r, _)) if r.passed_ok())
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Ok((r, d)) if r.passed_ok() => {
                write!(f, "PASS {} ({})", self.key, duration::format(*d))
            }
            Ok((r, d)) => write!(
                f,
                "FAIL {} ({}, {}): {}",
                self.key,
                duration::format(*d),
                r.outcome.as_str(),
                r.message()
            ),
            Err(e) => write!(f, "INVALID {}: {e}", self.key),
        }
    }
}

/// `probity run FILE`: every check in the file once, at the same time, with nothing saved.
pub async fn run_file(
    path: &Path,
    defaults: Defaults,
    identity: &str,
) -> Result<(Vec<Verdict>, Vec<String>)> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let plans = Arc::new(Plans::new(defaults.clone()));
    let (docs, file_errors) = parse_file(&name, &text, local_problems, None)?;
    let file_errors: Vec<String> = file_errors
        .into_iter()
        .map(|e| format!("{name}: {e}"))
        .collect();

    let (stop_tx, stop_rx) = watch::channel(false);
    let (observer, mut obs_rx) = mpsc::unbounded_channel::<Finished>();
    let settings = Settings {
        listen_address: "127.0.0.1:0".into(),
        identity: identity.to_string(),
        defaults: defaults.clone(),
        max_concurrent_runs: 0,
        first_run_window: Duration::ZERO,
        metrics: Default::default(),
        run_token: None,
        http: server::Limits::default(),
        alerting: None,
    };
    let running = serve::start(settings, Leading::Solo, stop_rx, |shared| {
        let base = report_base(shared.local_addr);
        let runner = LocalRunner::new(shared.engine.clone(), base);
        let mut parts = Parts::new(Arc::new(runner), Arc::new(MemoryStore));
        parts.grace = Duration::from_secs(5);
        parts.observers.push(Arc::new(observer));
        parts.plans = Some(plans.clone());
        Ok(parts)
    })
    .await?;
    let handle = running.engine.clone();
    handle.loaded().await;

    let mut verdicts = Vec::new();
    let mut waiting = HashSet::new();
    for (_, d) in docs {
        let key = CheckKey::of(&d.check);
        // Suspended: the scheduler leaves it alone and only the manual run below starts it.
        // Validated as it is run, once: the engine finds this plan kept.
        let mut check = (*d.check).clone();
        check.spec.suspend = Some(true);
        let d = Desired::new(Arc::new(check), d.load_error);
        if let Err(e) = &*plans.plan(&key, &d) {
            verdicts.push(Verdict {
                key,
                outcome: Err(e.clone().into()),
            });
            continue;
        }
        handle.upsert(d, None).await;
        match handle.run_now(key.clone()).await {
            Ok(()) => {
                waiting.insert(key);
            }
            Err(e) => verdicts.push(Verdict {
                key,
                outcome: Err(e.into()),
            }),
        }
    }
    while !waiting.is_empty() {
        let Some(f) = obs_rx.recv().await else { break };
        if waiting.remove(&f.key) {
            verdicts.push(Verdict {
                key: f.key,
                outcome: Ok((f.result, f.duration)),
            });
        }
    }
    let _ = stop_tx.send(true);
    let _ = running.wait().await;
    verdicts.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((verdicts, file_errors))
}

/// `probity validate FILE...`: one line per check and per problem; true when all are valid.
pub fn validate_files(
    paths: &[PathBuf],
    defaults: &Defaults,
    out: &mut impl std::io::Write,
) -> Result<bool> {
    let mut all_ok = true;
    let mut seen: std::collections::HashMap<CheckKey, String> = Default::default();
    let mut checks = Vec::new();
    let mut everything = Engine::new(EngineConfig {
        defaults: defaults.clone(),
        ..EngineConfig::new("validate")
    });
    let now = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let mut say = |line: String| {
        let _ = writeln!(out, "{line}");
    };
    for path in paths {
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                say(format!("{name}: {e}"));
                all_ok = false;
                continue;
            }
        };
        let (docs, errors) = match parse_file(&name, &text, |_| Vec::new(), None) {
            Ok(v) => v,
            Err(e) => {
                say(e.to_string());
                all_ok = false;
                continue;
            }
        };
        for e in errors {
            say(format!("{name}: {e}"));
            all_ok = false;
        }
        for (index, d) in docs {
            let key = CheckKey::of(&d.check);
            let result = validate_with(&d.check, defaults, d.load_error.as_ref()).map(|_| ());
            if let Some(other) = seen.insert(key.clone(), name.clone()) {
                say(format!(
                    "{name}: document {index}: {key} is also defined in {other}"
                ));
                all_ok = false;
            }
            checks.push((name.clone(), index, key, result));
            everything.upsert(now, Desired::new(d.check, None), None);
        }
    }
    // What only the whole set shows (`spec.dependsOn` naming no check, or a cycle), by the
    // engine's own rules.
    for (name, index, key, result) in checks {
        let result =
            result
                .map_err(|e| e.to_string())
                .and_then(|()| match everything.view(&key).invalid {
                    Some(e) => Err(e),
                    None => Ok(()),
                });
        match result {
            Ok(()) => say(format!("{name}: document {index}: {key}: valid")),
            Err(e) => {
                all_ok = false;
                say(format!("{name}: document {index}: {key}: {e}"));
            }
        }
    }
    Ok(all_ok)
}
