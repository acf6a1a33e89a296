//! Maintenance windows: times when checks still run and are recorded but notify no one. From
//! the alerting configuration (`maintenance:`, by schedule or fixed times, for the checks its
//! namespaces and labels select) and from a check's own annotation
//! `probity.dev/maintenance-until: <RFC 3339 time>`. At a window's end the state is told as it
//! is then (`decide::Hold::Maintenance`), so a check still failing notifies once.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::config::{ConfigError, Selector};
use crate::api::protocol::MAINTENANCE_ANNOTATION;
use crate::api::validate::CronSchedule;
use crate::api::{duration, HealthCheck};

/// A window as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceConfig {
    pub name: String,
    /// Cron (5 fields, or 6 with seconds first): when each window opens...
    #[serde(default)]
    pub schedule: Option<String>,
    /// ...in this IANA zone (default UTC)...
    #[serde(default)]
    pub time_zone: Option<String>,
    /// ...and for how long.
    #[serde(default)]
    pub duration: Option<String>,
    /// Or one window, from `start` to `end` (RFC 3339).
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    /// The checks' namespaces; empty for all.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Labels a check must carry, with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
enum When {
    Every {
        cron: std::sync::Arc<CronSchedule>,
        length: chrono::Duration,
    },
    Once {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
}

/// A window, checked.
#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    when: When,
    pub selector: Selector,
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.selector == other.selector
            && match (&self.when, &other.when) {
                (When::Every { cron: a, length: x }, When::Every { cron: b, length: y }) => {
                    a.expr == b.expr && x == y
                }
                (When::Once { start: a, end: x }, When::Once { start: b, end: y }) => {
                    a == b && x == y
                }
                _ => false,
            }
    }
}

impl MaintenanceConfig {
    pub(super) fn check(self, at: &str) -> Result<Window, ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::at(format!("{at}.name"), "must not be empty"));
        }
        let when = match (&self.schedule, &self.start) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::at(
                    at.to_string(),
                    "give schedule and duration, or start and end, not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::at(
                    at.to_string(),
                    "give schedule and duration, or start and end",
                ))
            }
            (Some(expr), None) => {
                let cron = CronSchedule::parse(expr, self.time_zone.as_deref()).map_err(|p| {
                    let field = if p.field.ends_with("timeZone") {
                        "timeZone"
                    } else {
                        "schedule"
                    };
                    ConfigError::at(format!("{at}.{field}"), p.message)
                })?;
                let Some(d) = &self.duration else {
                    return Err(ConfigError::at(
                        format!("{at}.duration"),
                        "is required with schedule",
                    ));
                };
                let length =
                    duration::parse(d).map_err(|e| ConfigError::at(format!("{at}.duration"), e))?;
                if length.is_zero() || length > Duration::from_secs(366 * 86_400) {
                    return Err(ConfigError::at(
                        format!("{at}.duration"),
                        format!("{d} is not between 1s and 366d"),
                    ));
                }
                if self.end.is_some() {
                    return Err(ConfigError::at(
                        format!("{at}.end"),
                        "goes with start, not schedule",
                    ));
                }
                When::Every {
                    cron: std::sync::Arc::new(cron),
                    length: chrono::Duration::from_std(length).expect("at most 366d"),
                }
            }
            (None, Some(start)) => {
                let time = |field: &str, v: &str| {
                    DateTime::parse_from_rfc3339(v)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|e| {
                            ConfigError::at(
                                format!("{at}.{field}"),
                                format!("{v:?} is not an RFC 3339 time: {e}"),
                            )
                        })
                };
                let start = time("start", start)?;
                let Some(end) = &self.end else {
                    return Err(ConfigError::at(
                        format!("{at}.end"),
                        "is required with start",
                    ));
                };
                let end = time("end", end)?;
                if end <= start {
                    return Err(ConfigError::at(format!("{at}.end"), "is not after start"));
                }
                if self.duration.is_some() || self.time_zone.is_some() {
                    return Err(ConfigError::at(
                        at.to_string(),
                        "duration and timeZone go with schedule, not start and end",
                    ));
                }
                When::Once { start, end }
            }
        };
        Ok(Window {
            name: self.name,
            when,
            selector: Selector {
                namespaces: self.namespaces,
                match_labels: self.match_labels,
            },
        })
    }
}

impl Window {
    /// When the window open at `now` closes, if one is open.
    pub fn open_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.when {
            When::Once { start, end } => (*start <= now && now < *end).then_some(*end),
            When::Every { cron, length } => {
                let opened = cron.last_at_or_before(now)?;
                let end = opened + *length;
                (now < end).then_some(end)
            }
        }
    }
}

/// A maintenance a check is in: which, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InMaintenance {
    pub name: String,
    pub until: DateTime<Utc>,
}

impl std::fmt::Display for InMaintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} until {}",
            self.name,
            self.until
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// The windows open now, each with its end: worked out once a scan, not per check.
pub fn open(windows: &[Window], now: DateTime<Utc>) -> Vec<(&Window, DateTime<Utc>)> {
    windows
        .iter()
        .filter_map(|w| w.open_until(now).map(|end| (w, end)))
        .collect()
}

/// The maintenance `check` is in at `now`: its own annotation, or an open window that selects
/// it (the one that ends last); an annotation that is not a time is an error naming it.
pub fn of(
    check: &HealthCheck,
    open: &[(&Window, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> (Option<InMaintenance>, Option<String>) {
    let mut found: Option<InMaintenance> = None;
    let mut problem = None;
    if let Some(v) = check
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MAINTENANCE_ANNOTATION))
    {
        match DateTime::parse_from_rfc3339(v.trim()) {
            Ok(t) if t.with_timezone(&Utc) > now => {
                found = Some(InMaintenance {
                    name: MAINTENANCE_ANNOTATION.to_string(),
                    until: t.with_timezone(&Utc),
                })
            }
            Ok(_) => {}
            Err(e) => {
                problem = Some(format!(
                    "{MAINTENANCE_ANNOTATION}: {v:?} is not an RFC 3339 time ({e}); the check is not in maintenance"
                ))
            }
        }
    }
    for (w, end) in open {
        if w.selector.matches(check) && found.as_ref().is_none_or(|f| f.until < *end) {
            found = Some(InMaintenance {
                name: w.name.clone(),
                until: *end,
            });
        }
    }
    (found, problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::config::Alerting;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn check(ns: &str, labels: &[(&str, &str)], until: Option<&str>) -> HealthCheck {
        let mut hc = HealthCheck::default();
        hc.metadata.namespace = Some(ns.into());
        hc.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        if let Some(u) = until {
            hc.metadata.annotations = Some(
                [(MAINTENANCE_ANNOTATION.to_string(), u.to_string())]
                    .into_iter()
                    .collect(),
            );
        }
        hc
    }

    const CFG: &str = r#"
receivers: []
maintenance:
  - name: nightly
    schedule: "0 2 * * *"
    timeZone: Europe/Berlin
    duration: 2h
    namespaces: [prod]
  - name: migration
    start: 2026-12-10T20:00:00Z
    end: 2026-12-10T23:00:00Z
    matchLabels: {team: db}
"#;

    #[test]
    fn windows_open_by_schedule_in_their_zone_and_by_fixed_times() {
        let a = Alerting::parse(CFG).unwrap();
        let w = &a.maintenance;
        // 02:00 in Berlin is 01:00 UTC in winter.
        assert_eq!(w[0].open_until(at("2026-12-06T00:59:59Z")), None);
        assert_eq!(
            w[0].open_until(at("2026-12-06T01:00:00Z")),
            Some(at("2026-12-06T03:00:00Z"))
        );
        assert_eq!(
            w[0].open_until(at("2026-12-06T02:59:59Z")),
            Some(at("2026-12-06T03:00:00Z"))
        );
        assert_eq!(w[0].open_until(at("2026-12-06T03:00:00Z")), None);
        assert_eq!(w[1].open_until(at("2026-12-10T19:59:59Z")), None);
        assert_eq!(
            w[1].open_until(at("2026-12-10T20:00:00Z")),
            Some(at("2026-12-10T23:00:00Z"))
        );
        assert_eq!(w[1].open_until(at("2026-12-10T23:00:00Z")), None);
    }

    #[test]
    fn a_check_is_in_the_windows_that_select_it_or_its_own_annotation() {
        let a = Alerting::parse(CFG).unwrap();
        let now = at("2026-12-10T21:30:00Z");
        let open = open(&a.maintenance, now);
        assert_eq!(open.len(), 1, "only the migration is open");
        let (m, p) = of(&check("prod", &[("team", "db")], None), &open, now);
        assert_eq!(
            m.unwrap().to_string(),
            "migration until 2026-12-10T23:00:00Z"
        );
        assert!(p.is_none());
        assert_eq!(
            of(&check("prod", &[("team", "web")], None), &open, now).0,
            None
        );
        // The annotation: until its time, and the later of it and a window wins.
        let own = check("dev", &[], Some("2026-12-11T00:00:00+01:00"));
        let (m, _) = of(&own, &open, now);
        assert_eq!(
            m.unwrap().to_string(),
            "probity.dev/maintenance-until until 2026-12-10T23:00:00Z"
        );
        let past = check("dev", &[], Some("2026-12-10T21:00:00Z"));
        assert_eq!(of(&past, &open, now).0, None);
        let bad = check("dev", &[], Some("tomorrow"));
        let (m, p) = of(&bad, &open, now);
        assert_eq!(m, None);
        assert!(p
            .unwrap()
            .starts_with("probity.dev/maintenance-until: \"tomorrow\" is not an RFC 3339 time"),);
    }

    #[test]
    fn mistakes_name_the_field() {
        for (text, want) in [
            ("receivers: []\nmaintenance:\n  - name: x\n", "maintenance[0]: give schedule and duration, or start and end"),
            ("receivers: []\nmaintenance:\n  - name: x\n    schedule: '0 2 * * *'\n", "maintenance[0].duration: is required with schedule"),
            ("receivers: []\nmaintenance:\n  - name: x\n    schedule: '0 2 * *'\n    duration: 1h\n", "maintenance[0].schedule: \"0 2 * *\" has 4 fields"),
            ("receivers: []\nmaintenance:\n  - name: x\n    schedule: '0 2 * * *'\n    timeZone: Mars/Base\n    duration: 1h\n", "maintenance[0].timeZone: \"Mars/Base\" is not a known IANA time zone"),
            ("receivers: []\nmaintenance:\n  - name: x\n    start: 2026-12-10T20:00:00Z\n    end: 2026-12-10T19:00:00Z\n", "maintenance[0].end: is not after start"),
            ("receivers: []\nmaintenance:\n  - name: x\n    start: soon\n    end: 2026-12-10T19:00:00Z\n", "maintenance[0].start: \"soon\" is not an RFC 3339 time"),
            ("receivers: []\nmaintenance:\n  - name: x\n    start: 2026-12-10T20:00:00Z\n    end: 2026-12-10T21:00:00Z\n    when: now\n", "maintenance[0].when: unknown field"),
        ] {
            let e = Alerting::parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}\n  gave: {e}\n  want: {want}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
