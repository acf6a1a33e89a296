//! Built-in checks, run as check pods (`command: [probity, check, NAME]`): each reads its
//! settings from the environment (the names and defaults of its Kuberhealthy counterpart where
//! one exists), works until the run's deadline less a margin, and reports through
//! [`crate::client`] like any check. A setting that is wrong is reported as the failure, naming
//! the variable, so it shows on the status page rather than only in the pod's log.

pub mod http;
pub mod network;
pub mod pods;
pub mod quota;

use std::time::Duration;

use chrono::Utc;

use crate::client::{self, ReportTarget};
use crate::Result;

/// Kept free before the deadline for the report itself.
pub const MARGIN: Duration = Duration::from_secs(5);

/// The built-in checks, by the name `probity check` takes.
pub const NAMES: &[&str] = &[
    "http",
    "network",
    "pod-restarts",
    "pod-status",
    "resource-quota",
];

/// Runs the check `name` for this run and reports its verdict. Ok(passed) once the report is
/// accepted.
pub async fn run(name: &str) -> Result<bool> {
    let target = client::this_run()?;
    let verdict = judge(name, &target, |k| std::env::var(k).ok()).await;
    let passed = verdict.is_ok();
    let errors = verdict.err().unwrap_or_default();
    client::send(&target, passed, &errors).await?;
    Ok(passed)
}

/// The verdict of check `name` with settings from `env`, within the run's time.
pub async fn judge(
    name: &str,
    target: &ReportTarget,
    env: impl Fn(&str) -> Option<String>,
) -> std::result::Result<(), Vec<String>> {
    let budget = target
        .time_left(MARGIN, Utc::now())
        .unwrap_or(Duration::from_secs(60));
    match name {
        "http" => http::Config::from_env(env)?.run(budget).await,
        "network" => network::Config::from_env(env)?.run(budget).await,
        "pod-restarts" => pods::Restarts::from_env(env)?.run().await,
        "pod-status" => pods::Status::from_env(env)?.run().await,
        "resource-quota" => quota::Config::from_env(env)?.run().await,
        other => Err(vec![format!(
            "no built-in check named {other:?} (there are: {})",
            NAMES.join(", ")
        )]),
    }
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
