//! Turns a `HealthCheck` spec into a `Plan` the engine can schedule, or an `Invalid` that names
//! every bad field and value. Defaults (flags, probe defaults) are applied here, in one place.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};

use super::{duration, CheckKey, HealthCheck, HealthCheckSpec, ProbeKind};

/// One problem with a check: the field's path, and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

/// Everything wrong with a check, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    pub problems: Vec<Problem>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", p.field, p.message)?;
        }
        Ok(())
    }
}

impl Invalid {
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            problems: vec![Problem {
                field: field.into(),
                message: message.into(),
            }],
        }
    }
}

/// Defaults that come from flags (Kuberhealthy's KH_DEFAULT_RUN_INTERVAL, KH_DEFAULT_CHECK_TIMEOUT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub run_interval: Duration,
    pub timeout: Duration,
    /// Knative's autoscaler settings, as the backend read them (Knative's defaults otherwise).
    pub knative: super::probe::Autoscaler,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            run_interval: Duration::from_secs(600),
            timeout: Duration::from_secs(30),
            knative: super::probe::Autoscaler::default(),
        }
    }
}

/// Kubernetes' probe defaults, used when a probe check leaves a field out.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
pub const PROBE_FAILURE_THRESHOLD: u32 = 3;

/// When a check's runs fall due.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// Start-to-start interval.
    Interval(Duration),
    Cron(Arc<CronSchedule>),
    /// No runs: pings are its runs; silence past `period` + `grace` is a failure, said again
    /// each `period` while it lasts.
    Heartbeat {
        period: Duration,
        grace: Duration,
    },
}

#[derive(Debug)]
pub struct CronSchedule {
    pub expr: String,
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl CronSchedule {
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, Problem> {
        let fields = expr.split_whitespace().count();
        let is_nickname = expr.trim_start().starts_with('@');
        if !(is_nickname || fields == 5 || fields == 6) {
            return Err(Problem {
                field: "spec.schedule".into(),
                message: format!(
                    "{expr:?} has {fields} fields; expected 5 (minute hour day month weekday) or 6 (seconds first)"
                ),
            });
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| Problem {
                field: "spec.schedule".into(),
                message: format!("{expr:?} is not a valid cron expression: {e}"),
            })?;
        let tz = match tz {
            None | Some("") => chrono_tz::UTC,
            Some(name) => chrono_tz::Tz::from_str(name).map_err(|_| Problem {
                field: "spec.timeZone".into(),
                message: format!(
                    "{name:?} is not a known IANA time zone (for example Europe/Berlin)"
                ),
            })?,
        };
        let s = CronSchedule {
            expr: expr.to_string(),
            cron,
            tz,
        };
        // A pattern such as "0 0 30 2 *" parses but never fires; say so now, not never.
        if s.next_after(Utc::now()).is_none() {
            return Err(Problem {
                field: "spec.schedule".into(),
                message: format!("{expr:?} never matches a date"),
            });
        }
        Ok(s)
    }

    /// The last scheduled time at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

/// What the engine needs to schedule a check; everything already defaulted and checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub trigger: Trigger,
    pub timeout: Duration,
    pub single_run: bool,
    pub suspend: bool,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    pub initial_delay: Duration,
    /// `spec.dependsOn`, each resolved against the check's namespace.
    pub depends_on: Vec<CheckKey>,
}

/// Validates a check as a backend runs it: the problems found while loading it or that the
/// backend cannot run (`found`, listed first), then those of the spec. The one place these
/// are merged, for the engine, the controller's events and the CLI alike.
pub fn validate_with(
    hc: &HealthCheck,
    defaults: &Defaults,
    found: Option<&Invalid>,
) -> Result<Plan, Invalid> {
    let found = found.filter(|f| !f.problems.is_empty());
    match (validate(hc, defaults), found) {
        (r, None) => r,
        (Ok(_), Some(f)) => Err(f.clone()),
        (Err(mut v), Some(f)) => {
            v.problems.splice(0..0, f.problems.iter().cloned());
            Err(v)
        }
    }
}

/// The longest interval, timeout or initial delay a check may have: a year and a day. Longer
/// ones are mistakes, and date arithmetic on them is where overflows hide.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

pub fn validate(hc: &HealthCheck, defaults: &Defaults) -> Result<Plan, Invalid> {
    let mut problems = Vec::new();
    let mut bad = |field: &str, message: String| {
        problems.push(Problem {
            field: field.to_string(),
            message,
        })
    };
    match hc.metadata.name.as_deref() {
        None | Some("") => bad("metadata.name", "is required".into()),
        Some(n) if !is_dns_subdomain(n) => bad(
            "metadata.name",
            format!("{n:?} must be lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"),
        ),
        _ => {}
    }
    if let Some(ns) = hc.metadata.namespace.as_deref() {
        if !is_dns_label(ns) {
            bad(
                "metadata.namespace",
                format!(
                    "{ns:?} must be a DNS label (lower-case letters, digits and '-', at most 63)"
                ),
            );
        }
    }
    let spec: &HealthCheckSpec = &hc.spec;
    let is_probe = spec.probe.is_some();
    let mut heartbeat = None;
    if let Some(h) = &spec.heartbeat {
        let (period, found) = h.problems();
        for p in found {
            problems_push(&mut bad, p);
        }
        heartbeat = period.map(|period| (period, h.grace()));
        for (set, field) in [
            (spec.pod_spec.is_some(), "spec.podSpec"),
            (spec.probe.is_some(), "spec.probe"),
            (spec.run_interval.is_some(), "spec.runInterval"),
            (spec.schedule.is_some(), "spec.schedule"),
        ] {
            if set {
                bad(
                    field,
                    "a heartbeat check has no runs of its own: its job pings it".into(),
                );
            }
        }
    }
    match (&spec.pod_spec, &spec.probe) {
        _ if spec.heartbeat.is_some() => {}
        (Some(_), Some(_)) => bad("spec", "set either podSpec or probe, not both".into()),
        (None, None) => bad(
            "spec",
            "one of podSpec, probe or heartbeat is required".into(),
        ),
        (Some(p), None) => match p.pod_spec() {
            Ok(ps) if ps.containers.is_empty() => bad(
                "spec.podSpec.spec.containers",
                "needs at least one container".into(),
            ),
            Ok(_) => {}
            Err(invalid) => {
                for p in invalid.problems {
                    problems_push(&mut bad, p);
                }
            }
        },
        (None, Some(probe)) => {
            let m: Vec<&str> = probe.kinds().into_iter().map(|k| k.as_str()).collect();
            if m.len() != 1 {
                bad(
                    "spec.probe",
                    format!(
                        "set exactly one of {} (found {})",
                        ProbeKind::ALL.map(|k| k.as_str()).join(", "),
                        if m.is_empty() {
                            "none".to_string()
                        } else {
                            m.join(", ")
                        }
                    ),
                );
            } else {
                for p in probe.problems(&defaults.knative) {
                    problems_push(&mut bad, p);
                }
            }
        }
    }

    let mut dur = |field: &str, v: &Option<String>, allow_zero: bool| -> Option<Duration> {
        let s = v.as_deref()?;
        match duration::parse(s) {
            Ok(d) if d.is_zero() && !allow_zero => {
                bad(field, format!("{s:?} must be greater than zero"));
                None
            }
            Ok(d) if d > MAX_DURATION => {
                bad(
                    field,
                    format!("{s:?} is longer than the most allowed, 366d"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                bad(field, e.to_string());
                None
            }
        }
    };
    let interval = dur("spec.runInterval", &spec.run_interval, false);
    let timeout = dur("spec.timeout", &spec.timeout, false);
    let initial_delay = dur("spec.initialDelay", &spec.initial_delay, true);

    let mut cron = None;
    match (&spec.run_interval, &spec.schedule) {
        (Some(_), Some(_)) => bad(
            "spec.schedule",
            "set either runInterval or schedule, not both".into(),
        ),
        (_, Some(expr)) => match CronSchedule::parse(expr, spec.time_zone.as_deref()) {
            Ok(c) => cron = Some(c),
            Err(p) => problems_push(&mut bad, p),
        },
        (_, None) => {
            if spec.time_zone.is_some() {
                bad("spec.timeZone", "only applies to spec.schedule".into());
            }
        }
    }
    let mut threshold = |field: &str, v: Option<i32>, default: u32| -> u32 {
        match v {
            None => default,
            Some(n) if n >= 1 => n as u32,
            Some(n) => {
                bad(field, format!("{n} must be at least 1"));
                default
            }
        }
    };
    let success_threshold = threshold("spec.successThreshold", spec.success_threshold, 1);
    let failure_threshold = threshold(
        "spec.failureThreshold",
        spec.failure_threshold,
        if is_probe { PROBE_FAILURE_THRESHOLD } else { 1 },
    );

    let own_ns = hc.metadata.namespace.as_deref().unwrap_or("default");
    let mut depends_on: Vec<CheckKey> = Vec::new();
    for (i, d) in spec.depends_on.iter().flatten().enumerate() {
        let field = format!("spec.dependsOn[{i}]");
        let (ns, name) = d.split_once('/').unwrap_or((own_ns, d.as_str()));
        if !is_dns_label(ns) || !is_dns_subdomain(name) {
            bad(
                &field,
                format!("{d:?} is not NAME or NAMESPACE/NAME of a check"),
            );
            continue;
        }
        let key = CheckKey::new(ns, name);
        if Some(name) == hc.metadata.name.as_deref() && ns == own_ns {
            bad(&field, format!("{d:?} is this check itself"));
        } else if depends_on.contains(&key) {
            bad(&field, format!("{d:?} is listed twice"));
        } else {
            depends_on.push(key);
        }
    }

    if !problems.is_empty() {
        return Err(Invalid { problems });
    }
    let trigger = match (cron, heartbeat) {
        (_, Some((period, grace))) => Trigger::Heartbeat { period, grace },
        (Some(c), None) => Trigger::Cron(Arc::new(c)),
        (None, None) => Trigger::Interval(interval.unwrap_or(if is_probe {
            PROBE_INTERVAL
        } else {
            defaults.run_interval
        })),
    };
    Ok(Plan {
        trigger,
        timeout: timeout.unwrap_or(match &spec.probe {
            Some(p) => p.default_timeout(),
            None => defaults.timeout,
        }),
        single_run: spec.single_run_only.unwrap_or(false),
        suspend: spec.suspend.unwrap_or(false),
        success_threshold,
        failure_threshold,
        initial_delay: initial_delay.unwrap_or_default(),
        depends_on,
    })
}

fn problems_push(bad: &mut impl FnMut(&str, String), p: Problem) {
    bad(&p.field, p.message)
}

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::load::parse_documents;

    fn check(spec: &str) -> HealthCheck {
        let text = format!(
            "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: a, namespace: ns}}\nspec:\n{spec}"
        );
        parse_documents(&text).unwrap().remove(0).check.unwrap()
    }

    const POD: &str = "  podSpec: {spec: {containers: [{name: c, image: i}]}}\n";

    fn problems(spec: &str) -> String {
        validate(&check(spec), &Defaults::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_are_kuberhealthys_and_kubernetes_probes() {
        let p = validate(&check(POD), &Defaults::default()).unwrap();
        assert!(matches!(p.trigger, Trigger::Interval(d) if d == Duration::from_secs(600)));
        assert_eq!(p.timeout, Duration::from_secs(30));
        assert_eq!((p.success_threshold, p.failure_threshold), (1, 1));
        let flags = Defaults {
            run_interval: Duration::from_secs(120),
            timeout: Duration::from_secs(5),
            ..Defaults::default()
        };
        let p = validate(&check(POD), &flags).unwrap();
        assert!(matches!(p.trigger, Trigger::Interval(d) if d == Duration::from_secs(120)));
        assert_eq!(p.timeout, Duration::from_secs(5));
        let p = validate(
            &check("  probe: {tcpSocket: {host: h, port: 5432}}\n"),
            &flags,
        )
        .unwrap();
        assert!(matches!(p.trigger, Trigger::Interval(d) if d == PROBE_INTERVAL));
        assert_eq!((p.timeout, p.failure_threshold), (PROBE_TIMEOUT, 3));
    }

    #[test]
    fn exactly_one_of_pod_spec_and_probe() {
        assert_eq!(
            problems("  runInterval: 1m\n"),
            "spec: one of podSpec, probe or heartbeat is required"
        );
        let hash = crate::api::heartbeat::token_hash("t");
        let beat = format!("  heartbeat: {{period: 1h, tokenHash: '{hash}'}}\n");
        let p = validate(&check(&beat), &Defaults::default()).unwrap();
        assert!(matches!(
            p.trigger,
            Trigger::Heartbeat { period, grace }
                if period == Duration::from_secs(3600) && grace == Duration::from_secs(300)
        ));
        assert_eq!(
            problems(&format!("{beat}{POD}  runInterval: 1m\n")),
            "spec.podSpec: a heartbeat check has no runs of its own: its job pings it; spec.runInterval: a heartbeat check has no runs of its own: its job pings it"
        );
        let both = format!("{POD}  probe: {{tcpSocket: {{host: h, port: 1}}}}\n");
        assert_eq!(
            problems(&both),
            "spec: set either podSpec or probe, not both"
        );
        assert_eq!(
            problems("  probe: {}\n"),
            "spec.probe: set exactly one of httpGet, tcpSocket, exec, grpc, resource, knative, dns (found none)"
        );
        assert_eq!(
            problems("  probe: {tcpSocket: {host: h, port: 1}, grpc: {host: h, port: 2}}\n"),
            "spec.probe: set exactly one of httpGet, tcpSocket, exec, grpc, resource, knative, dns (found tcpSocket, grpc)"
        );
        assert_eq!(
            problems("  probe: {tcpSocket: {port: 70000}}\n"),
            "spec.probe.tcpSocket.host: is required (a built-in probe has no pod IP to default to); spec.probe.tcpSocket.port: 70000 is not a port (1-65535)"
        );
    }

    #[test]
    fn durations_thresholds_and_schedules_name_field_and_value() {
        let cases = [
            (
                "  runInterval: 0s\n",
                "spec.runInterval: \"0s\" must be greater than zero",
            ),
            ("  timeout: -5s\n", "spec.timeout: \"-5s\" is negative"),
            (
                "  initialDelay: soon\n",
                "spec.initialDelay: \"soon\" is not a duration",
            ),
            (
                "  runInterval: 367d\n",
                "spec.runInterval: \"367d\" is longer than the most allowed, 366d",
            ),
            (
                "  successThreshold: 0\n",
                "spec.successThreshold: 0 must be at least 1",
            ),
            (
                "  runInterval: 1m\n  schedule: \"* * * * *\"\n",
                "spec.schedule: set either runInterval or schedule, not both",
            ),
            (
                "  schedule: \"* * *\"\n",
                "spec.schedule: \"* * *\" has 3 fields; expected 5",
            ),
            (
                "  schedule: \"61 * * * *\"\n",
                "spec.schedule: \"61 * * * *\" is not a valid cron expression",
            ),
            (
                "  schedule: \"* * * * *\"\n  timeZone: Mars/Olympus\n",
                "spec.timeZone: \"Mars/Olympus\" is not a known IANA time zone",
            ),
            (
                "  timeZone: UTC\n",
                "spec.timeZone: only applies to spec.schedule",
            ),
        ];
        for (spec, want) in cases {
            let got = problems(&format!("{POD}{spec}"));
            assert!(got.starts_with(want), "{spec}: {got}");
        }
    }

    #[test]
    fn pod_spec_problems_name_their_path() {
        let got = problems("  podSpec: {spec: {containers: [{name: c, image: i, comand: [x]}]}}\n");
        assert_eq!(got, "spec.podSpec.spec.containers[0].comand: unknown field");
        let got = problems("  podSpec: {spec: {containers: [{name: c, args: 5}]}}\n");
        assert!(
            got.starts_with("spec.podSpec.spec.containers[0].args: invalid type"),
            "{got}"
        );
        let got = problems("  podSpec: {spec: {containers: []}}\n");
        assert_eq!(
            got,
            "spec.podSpec.spec.containers: needs at least one container"
        );
    }

    #[test]
    fn cron_takes_five_or_six_fields() {
        let five = CronSchedule::parse("*/5 * * * *", None).unwrap();
        let t = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 1, 0, 1, 0).unwrap();
        assert_eq!(
            five.next_after(t).unwrap(),
            t + chrono::Duration::minutes(4)
        );
        let six = CronSchedule::parse("30 * * * * *", None).unwrap();
        assert_eq!(
            six.next_after(t).unwrap(),
            t + chrono::Duration::seconds(30)
        );
        assert!(CronSchedule::parse("0 0 30 2 *", None)
            .unwrap_err()
            .message
            .contains("never matches"));
    }

    #[test]
    fn names_must_be_kubernetes_names() {
        let mut hc = check(POD);
        hc.metadata.name = Some("Bad_Name".into());
        let err = validate(&hc, &Defaults::default()).unwrap_err().to_string();
        assert!(
            err.starts_with("metadata.name: \"Bad_Name\" must be lower-case"),
            "{err}"
        );
    }
}
