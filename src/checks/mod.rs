//! Built-in checks, run as check pods (`command: [probity, check, NAME]`): each reads its
//! settings from the environment (the names and defaults of its Kuberhealthy counterpart where
//! one exists), works until the run's deadline less a margin, and reports through
//! [`crate::client`] like any check. A setting that is wrong is reported as the failure, naming
//! the variable, so it shows on the status page rather than only in the pod's log.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod dns;
pub mod http;
pub mod network;
pub mod pods;
pub mod quota;
pub mod tls;
pub mod workload;

use std::time::Duration;

use chrono::Utc;

use crate::api::RunResult;
use crate::client::{self, ReportTarget};
use crate::Result;

/// What keeps a bundled check from its verdict: a setting that cannot be used (naming the
/// variable and its value) or a step that failed (naming what was asked and the answer). It is
/// one line of the run's errors, and nothing decides on it but the reader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Problem(pub String);

/// Compared as the line it reads as (tests assert the words).
impl PartialEq<String> for Problem {
    fn eq(&self, other: &String) -> bool {
        self.0 == *other
    }
}

impl PartialEq<&str> for Problem {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<String> for Problem {
    fn from(s: String) -> Self {
        Problem(s)
    }
}

impl From<&str> for Problem {
    fn from(s: &str) -> Self {
        Problem(s.to_string())
    }
}

impl From<Problem> for Vec<String> {
    fn from(p: Problem) -> Self {
        vec![p.0]
    }
}

/// Kept free before the deadline for the report itself.
pub const MARGIN: Duration = Duration::from_secs(5);

/// The built-in checks, by the name `probity check` takes.
pub const NAMES: &[&str] = &[
    "cronjob",
    "daemonset",
    "deployment",
    "dns",
    "http",
    "network",
    "pod-restarts",
    "pod-status",
    "resource-quota",
    "tls",
];

/// Runs the check `name` for this run and reports its verdict. Ok(passed) once the report is
/// accepted.
pub async fn run(name: &str) -> Result<bool> {
    let target = client::this_run()?;
    let result = judge(name, &target, |k| std::env::var(k).ok()).await;
    client::send(&target, &result).await?;
    Ok(result.passed_ok())
}

/// The verdict of check `name` with settings from `env`, within the run's time.
pub async fn judge(
    name: &str,
    target: &ReportTarget,
    env: impl Fn(&str) -> Option<String>,
) -> RunResult {
    let budget = target
        .time_left(MARGIN, Utc::now())
        .unwrap_or(Duration::from_secs(60));
    // Settings that cannot be used fail the run, naming the variable.
    settled(name, target, env, budget)
        .await
        .unwrap_or_else(RunResult::failed)
}

/// Check `name`'s settings read and its run made; `Err` are the settings' problems.
async fn settled(
    name: &str,
    target: &ReportTarget,
    env: impl Fn(&str) -> Option<String>,
    budget: Duration,
) -> std::result::Result<RunResult, Vec<String>> {
    Ok(match name {
        "cronjob" => cronjob::Config::from_env(env)?.run().await,
        "daemonset" => daemonset::Config::from_env(env)?
            .run(budget, &target.uuid)
            .await
            .into(),
        "deployment" => deployment::Config::from_env(env)?
            .run(budget, &target.uuid)
            .await
            .into(),
        "dns" => dns::Config::from_env(env)?.run(budget).await.into(),
        "http" => http::Config::from_env(env)?.run(budget).await.into(),
        "network" => network::Config::from_env(env)?.run(budget).await.into(),
        "pod-restarts" => pods::Restarts::from_env(env)?.run().await,
        "pod-status" => pods::Status::from_env(env)?.run().await,
        "resource-quota" => quota::Config::from_env(env)?.run().await,
        "tls" => tls::Config::from_env(env)?.run(budget).await,
        other => RunResult::failure(format!(
            "no built-in check named {other:?} (there are: {})",
            NAMES.join(", ")
        )),
    })
}

/// `var` as a number, `default` when unset or blank; the error names the variable.
pub(crate) fn number<T: std::str::FromStr>(
    env: &impl Fn(&str) -> Option<String>,
    var: &str,
    default: T,
) -> std::result::Result<T, Problem> {
    match env(var).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| Problem(format!("{var}={v:?} is not a whole number"))),
    }
}

/// `var` as a duration (`30s`, `1m`, `1h30m`), `default` when unset or blank.
pub(crate) fn duration(
    env: &impl Fn(&str) -> Option<String>,
    var: &str,
    default: Duration,
) -> std::result::Result<Duration, Problem> {
    match env(var).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => {
            crate::api::duration::parse(v.trim()).map_err(|e| Problem(format!("{var}={v:?}: {e}")))
        }
    }
}

/// `var` as a boolean the way Go's `strconv.ParseBool` reads one (what Kuberhealthy's checks
/// used), `default` when unset or blank.
pub(crate) fn flag(
    env: &impl Fn(&str) -> Option<String>,
    var: &str,
    default: bool,
) -> std::result::Result<bool, Problem> {
    match env(var).as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(Problem(format!("{var}={v:?} is not true or false"))),
    }
}

/// `var` as comma-separated `key=value` pairs (NODE_SELECTOR, ADDITIONAL_ENV_VARS).
pub(crate) fn pairs(
    env: &impl Fn(&str) -> Option<String>,
    var: &str,
) -> std::result::Result<Vec<(String, String)>, Problem> {
    let mut out = Vec::new();
    for item in env(var).unwrap_or_default().split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.push((k.trim().to_string(), v.trim().to_string()))
            }
            _ => return Err(Problem(format!("{var}: {item:?} is not key=value"))),
        }
    }
    Ok(out)
}

/// A client from the pod's service account (or a kubeconfig) whose User-Agent names the check,
/// so audit logs tell a bundled check's requests apart from probity's own.
pub(crate) async fn kube_client(check: &str) -> std::result::Result<kube::Client, Vec<String>> {
    use ::http::{header::USER_AGENT, HeaderValue};
    let fail = |e: String| vec![format!("connecting to the API server: {e}")];
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let agent = format!("probity-check/{} ({check})", env!("CARGO_PKG_VERSION"));
    if let Ok(v) = HeaderValue::from_str(&agent) {
        config.headers.push((USER_AGENT, v));
    }
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}

/// Settings for tests: an environment of `pairs` only.
#[cfg(test)]
pub(crate) fn test_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}
