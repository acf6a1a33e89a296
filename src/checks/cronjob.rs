//! `probity check cronjob`: CronJobs start their jobs on schedule. For each CronJob that is not
//! suspended, the last time its schedule fired (at least `TOLERANCE` ago, in its time zone) is
//! compared with its `status.lastScheduleTime`; one that is older (or missing) means the
//! controller missed a start: the job could not be created (a quota, an admission webhook), a
//! `concurrencyPolicy: Forbid` run is stuck, or the controller is down. Like Kuberhealthy's
//! `cronjob-checker` v2: `NAMESPACE` (the check pod's own when unset; `*` for all), plus
//! `TOLERANCE` (1m; its ±30 s flagged a busy controller). Reads batch/v1, else batch/v1beta1
//! (Kubernetes before 1.21).

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};

use super::workload::api_error;
use crate::api::validate::CronSchedule;
use crate::api::RunResult;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// None: the pod's own; Some("*"): all.
    pub namespace: Option<String>,
    pub tolerance: Duration,
}

impl Config {
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let tolerance =
            super::duration(&env, "TOLERANCE", Duration::from_secs(60)).map_err(|e| vec![e.0])?;
        Ok(Config {
            namespace: env("NAMESPACE")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            tolerance,
        })
    }

    /// The CronJobs (as served) that missed their schedule at `now`, one line each.
    pub fn judge(&self, cronjobs: &[DynamicObject], now: DateTime<Utc>) -> RunResult {
        let mut bad = Vec::new();
        for cj in cronjobs {
            if let Some(problem) = self.late(cj, now) {
                bad.push(problem);
            }
        }
        if bad.is_empty() {
            return RunResult::passed();
        }
        let mut out = vec![format!("{} CronJobs missed their schedule", bad.len())];
        out.extend(bad.into_iter().take(20));
        RunResult::failed(out)
    }

    fn late(&self, cj: &DynamicObject, now: DateTime<Utc>) -> Option<String> {
        let name = format!(
            "{}/{}",
            cj.metadata.namespace.as_deref().unwrap_or(""),
            cj.metadata.name.as_deref().unwrap_or("")
        );
        let spec = &cj.data["spec"];
        if spec["suspend"].as_bool() == Some(true) {
            return None;
        }
        let raw = spec["schedule"].as_str().unwrap_or("").trim();
        // `CRON_TZ=Zone expr` (or `TZ=`) before spec.timeZone existed.
        let (tz, expr) = match raw.split_once(' ') {
            Some((pre, rest)) if pre.starts_with("CRON_TZ=") || pre.starts_with("TZ=") => {
                (pre.split_once('=').map(|p| p.1.to_string()), rest.trim())
            }
            _ => (spec["timeZone"].as_str().map(str::to_string), raw),
        };
        let schedule = match CronSchedule::parse(expr, tz.as_deref()) {
            Ok(s) => s,
            Err(p) => return Some(format!("{name}: {}", p.message)),
        };
        let cutoff = now - chrono::Duration::from_std(self.tolerance).unwrap_or_default();
        let fired = schedule.last_at_or_before(cutoff)?;
        let created = cj
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| DateTime::from_timestamp_millis(t.0.as_millisecond()));
        if created.is_some_and(|c| c > fired) {
            return None;
        }
        let last = cj.data["status"]["lastScheduleTime"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let ago = |t: DateTime<Utc>| {
            let s = (now - t).num_seconds().max(0);
            if s >= 3600 {
                format!("{}h{}m ago", s / 3600, s % 3600 / 60)
            } else {
                format!("{}m{}s ago", s / 60, s % 60)
            }
        };
        let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        match last {
            Some(l) if l >= fired => None,
            Some(l) => Some(format!(
                "{name}: schedule {raw:?} fired at {} ({}), but its last job was scheduled at {} ({})",
                fmt(fired),
                ago(fired),
                fmt(l),
                ago(l)
            )),
            None => Some(format!(
                "{name}: schedule {raw:?} fired at {} ({}), but it has never scheduled a job",
                fmt(fired),
                ago(fired)
            )),
        }
    }

    pub async fn run(&self) -> RunResult {
        match self.list().await {
            Ok(cronjobs) => self.judge(&cronjobs, Utc::now()),
            Err(e) => RunResult::failed(e),
        }
    }

    /// The CronJobs in scope, as batch/v1 serves them, else batch/v1beta1.
    async fn list(&self) -> Result<Vec<DynamicObject>, Vec<String>> {
        let client = super::kube_client("cronjob").await?;
        let ns = match self.namespace.as_deref() {
            Some("*") => None,
            Some(n) => Some(n.to_string()),
            None => Some(client.default_namespace().to_string()),
        };
        let mut last_err = String::new();
        for version in ["v1", "v1beta1"] {
            let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("batch", version, "CronJob"));
            let api: Api<DynamicObject> = match &ns {
                Some(n) => Api::namespaced_with(client.clone(), n, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            match api.list(&ListParams::default()).await {
                Ok(list) => return Ok(list.items),
                // Not served at this version: try the older one.
                Err(kube::Error::Api(s)) if s.code == 404 => last_err = s.message.clone(),
                Err(e) => return Err(vec![format!("listing cronjobs: {}", api_error(&e))]),
            }
        }
        Err(vec![format!(
            "listing cronjobs: neither batch/v1 nor batch/v1beta1 is served ({last_err})"
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_env as env;
    use serde_json::{json, Value};

    fn cj(name: &str, created: &str, spec: Value, status: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": "n", "creationTimestamp": created},
            "spec": spec, "status": status
        }))
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn settings() {
        let c = Config::from_env(env(&[])).unwrap();
        assert_eq!((c.namespace, c.tolerance), (None, Duration::from_secs(60)));
        assert_eq!(
            Config::from_env(env(&[("TOLERANCE", "soon")])).unwrap_err()[0],
            format!(
                "TOLERANCE=\"soon\": {}",
                crate::api::duration::parse("soon").unwrap_err()
            )
        );
    }

    #[test]
    fn a_cronjob_is_late_when_its_last_start_is_before_the_last_firing_past_the_tolerance() {
        let c = Config::from_env(env(&[("TOLERANCE", "30s")])).unwrap();
        let now = at("2026-12-03T14:10:20Z");
        let every5 = json!({"schedule": "*/5 * * * *"});
        let list = vec![
            cj(
                "on-time",
                "2026-12-01T00:00:00Z",
                every5.clone(),
                json!({"lastScheduleTime": "2026-12-03T14:05:00Z"}),
            ),
            // 14:10 fired 20 s ago, within the tolerance: 14:05 is what counts.
            cj(
                "late",
                "2026-12-01T00:00:00Z",
                every5.clone(),
                json!({"lastScheduleTime": "2026-12-03T14:00:00Z"}),
            ),
            cj("never", "2026-12-03T13:00:00Z", every5.clone(), json!({})),
            cj("new", "2026-12-03T14:06:00Z", every5.clone(), json!({})),
            cj(
                "paused",
                "2026-12-01T00:00:00Z",
                json!({"schedule": "*/5 * * * *", "suspend": true}),
                json!({}),
            ),
            cj(
                "berlin",
                "2026-12-01T00:00:00Z",
                json!({"schedule": "0 15 * * *", "timeZone": "Europe/Berlin"}),
                json!({"lastScheduleTime": "2026-12-03T14:00:00Z"}),
            ),
            cj(
                "tz-prefix",
                "2026-12-01T00:00:00Z",
                json!({"schedule": "CRON_TZ=Europe/Berlin 0 15 * * *"}),
                json!({"lastScheduleTime": "2026-12-02T14:00:00Z"}),
            ),
            cj(
                "typo",
                "2026-12-01T00:00:00Z",
                json!({"schedule": "*/5 * * *"}),
                json!({}),
            ),
        ];
        let e = c.judge(&list, now).errors;
        assert_eq!(
            e,
            vec![
                "4 CronJobs missed their schedule",
                "n/late: schedule \"*/5 * * * *\" fired at 2026-12-03 14:05:00 UTC (5m20s ago), but its last job was scheduled at 2026-12-03 14:00:00 UTC (10m20s ago)",
                "n/never: schedule \"*/5 * * * *\" fired at 2026-12-03 14:05:00 UTC (5m20s ago), but it has never scheduled a job",
                "n/tz-prefix: schedule \"CRON_TZ=Europe/Berlin 0 15 * * *\" fired at 2026-12-03 14:00:00 UTC (10m20s ago), but its last job was scheduled at 2026-12-02 14:00:00 UTC (24h10m ago)",
                "n/typo: \"*/5 * * *\" has 4 fields; expected 5 (minute hour day month weekday) or 6 (seconds first)",
            ]
        );
        assert_eq!(c.judge(&list[..1], now), RunResult::passed());
    }
}
