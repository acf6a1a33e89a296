//! The alerting configuration file (`--alerting-config`): receivers, routes from checks to
//! them by namespace, labels and cause, and maintenance windows. A mistake is an error naming
//! the file and the field: at start-up probity does not start with it; later (`reload`) the
//! last good configuration stays in use.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::maintenance::{MaintenanceConfig, Window};
use super::receivers::{http_url, Receiver};
pub use super::receivers::{BadUrl, Kind};
use crate::api::{duration, Cause, Flap, HealthCheck, TRANSITIONS_LEN};
use crate::{Error, Result};

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertingConfig {
    /// Base URL of probity's status page, for the links notifications carry.
    #[serde(default, rename = "externalURL")]
    pub external_url: Option<String>,
    pub receivers: Vec<Receiver>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// When checks notify no one (they still run and are recorded).
    #[serde(default)]
    pub maintenance: Vec<MaintenanceConfig>,
}

/// Which checks notify a receiver. Every route that matches a check notifies its receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    pub receiver: String,
    /// The checks' namespaces; empty for all.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Labels a check must carry, with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Also notify when a check recovers (default true).
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// Remind while a check stays failing, this often; unset: no reminders.
    #[serde(default)]
    pub repeat_interval: Option<String>,
    /// When a check counts as flapping (one notice, then quiet until it is stable).
    #[serde(default)]
    pub flapping: Option<Flapping>,
    /// The causes of failure this route is told of: `target` (the check found a fault in
    /// what it checks), `runner` (its pod could not run or never reported). Default: both.
    #[serde(default)]
    pub causes: Option<Vec<Cause>>,
    /// Also tell this receiver when a check is degraded (passes, but fails what is marked
    /// `severity: warning`), and when it is no longer. Default false.
    #[serde(default)]
    pub degraded: bool,
}

/// Flap detection for a route: `changes` verdict changes within `window` (default 5 in 10m);
/// `changes: 0` turns it off.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Flapping {
    #[serde(default)]
    pub window: Option<String>,
    #[serde(default)]
    pub changes: Option<usize>,
}

fn yes() -> bool {
    true
}

/// Which checks a route or a maintenance window applies to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    /// Empty for all.
    pub namespaces: Vec<String>,
    pub match_labels: BTreeMap<String, String>,
}

impl Selector {
    pub fn matches(&self, check: &HealthCheck) -> bool {
        let ns = check.metadata.namespace.as_deref().unwrap_or_default();
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == ns) {
            return false;
        }
        let labels = check.metadata.labels.as_ref();
        self.match_labels
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    }
}

/// A route, checked: what it matches and how it notifies.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub receiver: usize,
    pub selector: Selector,
    pub send_resolved: bool,
    pub repeat: Option<Duration>,
    pub flap: Flap,
    pub causes: Vec<Cause>,
    pub degraded: bool,
}

impl Rule {
    pub fn matches(&self, check: &HealthCheck) -> bool {
        self.selector.matches(check)
    }
}

/// The configuration, checked and ready to use.
#[derive(Debug, Clone, PartialEq)]
pub struct Alerting {
    pub external_url: Option<String>,
    /// Receivers by index; names are unique.
    pub receivers: Vec<(String, Kind)>,
    pub rules: Vec<Rule>,
    pub maintenance: Vec<Window>,
}

impl Alerting {
    pub fn load(path: &Path) -> Result<Alerting> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Alerting::parse(&text).map_err(|e| Error::Parse {
            file: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Parses and checks the text of a configuration; the error names the field.
    pub fn parse(text: &str) -> std::result::Result<Alerting, ConfigError> {
        let options = serde_saphyr::options! { strict_booleans: true };
        let value: Value = serde_saphyr::from_str_with_options(text, options)
            .map_err(|e| ConfigError::Yaml(e.to_string()))?;
        let raw: AlertingConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::at(path, e.into_inner())
        })?;
        raw.check()
    }
}

impl AlertingConfig {
    fn check(self) -> std::result::Result<Alerting, ConfigError> {
        let mut receivers: Vec<(String, Kind)> = Vec::new();
        for (i, r) in self.receivers.into_iter().enumerate() {
            let at = format!("receivers[{i}]");
            if receivers.iter().any(|(n, _)| *n == r.name) {
                return Err(ConfigError::at(
                    format!("{at}.name"),
                    format!("{:?} names two receivers", r.name),
                ));
            }
            receivers.push(r.check(&at)?);
        }
        let mut rules = Vec::new();
        for (i, r) in self.routes.into_iter().enumerate() {
            let at = format!("routes[{i}]");
            let receiver = receivers
                .iter()
                .position(|(n, _)| *n == r.receiver)
                .ok_or_else(|| {
                    ConfigError::at(
                        format!("{at}.receiver"),
                        format!("no receiver is named {:?}", r.receiver),
                    )
                })?;
            let repeat = match &r.repeat_interval {
                None => None,
                Some(s) => {
                    let d = duration::parse(s)
                        .map_err(|e| ConfigError::at(format!("{at}.repeatInterval"), e))?;
                    if d < Duration::from_secs(60) {
                        return Err(ConfigError::at(
                            format!("{at}.repeatInterval"),
                            format!("{s} is under a minute; reminders that often are noise"),
                        ));
                    }
                    Some(d)
                }
            };
            let mut flap = Flap::DEFAULT;
            if let Some(f) = &r.flapping {
                if let Some(w) = &f.window {
                    let d = duration::parse(w)
                        .map_err(|e| ConfigError::at(format!("{at}.flapping.window"), e))?;
                    if d < Duration::from_secs(10) {
                        return Err(ConfigError::at(
                            format!("{at}.flapping.window"),
                            format!("{w} is under 10s"),
                        ));
                    }
                    flap.window_secs = d.as_secs() as i64;
                }
                if let Some(c) = f.changes {
                    // A status keeps its last TRANSITIONS_LEN changes: more cannot be counted.
                    if c == 1 || c > TRANSITIONS_LEN {
                        return Err(ConfigError::at(
                            format!("{at}.flapping.changes"),
                            format!("{c} is not 0 (off) or 2 to {TRANSITIONS_LEN}"),
                        ));
                    }
                    flap.changes = c;
                }
            }
            let causes = match r.causes {
                None => vec![Cause::Target, Cause::Runner],
                Some(c) if c.is_empty() => {
                    return Err(ConfigError::at(
                        format!("{at}.causes"),
                        "is empty: give target, runner or both (or leave it out for both)",
                    ))
                }
                Some(c) => c,
            };
            rules.push(Rule {
                receiver,
                causes,
                selector: Selector {
                    namespaces: r.namespaces,
                    match_labels: r.match_labels,
                },
                send_resolved: r.send_resolved,
                repeat,
                flap,
                degraded: r.degraded,
            });
        }
        let external_url = match self.external_url {
            Some(u) => Some(
                http_url(&u)
                    .map_err(|e| ConfigError::at("externalURL".to_string(), e))?
                    .as_str()
                    .trim_end_matches('/')
                    .to_string(),
            ),
            None => None,
        };
        let mut maintenance = Vec::new();
        for (i, m) in self.maintenance.into_iter().enumerate() {
            maintenance.push(m.check(&format!("maintenance[{i}]"))?);
        }
        Ok(Alerting {
            external_url,
            receivers,
            rules,
            maintenance,
        })
    }
}

/// Why an alerting configuration cannot be used; each names the field (or says it is not YAML).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Yaml(String),
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
}

impl ConfigError {
    pub(super) fn at(field: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        ConfigError::Field {
            field: field.into(),
            problem: problem.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
externalURL: http://probity.example:8080/
receivers:
  - name: hook
    webhook:
      url: http://127.0.0.1:9/hook
      headers: {Authorization: "Bearer t"}
      body: '{"text": {{summary}}, "errors": {{errors}}}'
  - name: chat
    slack: {url: "https://hooks.slack.com/services/T/B/X"}
  - name: pager
    pagerduty: {routingKey: abc}
  - name: am
    alertmanager: {url: "http://127.0.0.1:9093"}
routes:
  - receiver: pager
    namespaces: [prod]
    matchLabels: {team: db}
    repeatInterval: 4h
    causes: [target]
  - receiver: chat
    sendResolved: false
    flapping: {window: 30m, changes: 8}
"#;

    #[test]
    fn a_full_configuration_is_read_with_its_defaults() {
        let a = Alerting::parse(FULL).unwrap();
        assert_eq!(
            a.external_url.as_deref(),
            Some("http://probity.example:8080")
        );
        let names: Vec<_> = a
            .receivers
            .iter()
            .map(|(n, k)| (n.as_str(), k.name()))
            .collect();
        assert_eq!(
            names,
            [
                ("hook", "webhook"),
                ("chat", "slack"),
                ("pager", "pagerduty"),
                ("am", "alertmanager")
            ]
        );
        match &a.receivers[2].1 {
            Kind::PagerDuty { url, severity, .. } => {
                assert_eq!(url.as_str(), "https://events.pagerduty.com/v2/enqueue");
                assert_eq!(severity, "critical");
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(a.rules[0].receiver, 2);
        assert_eq!(a.rules[0].repeat, Some(Duration::from_secs(4 * 3600)));
        assert!(
            a.rules[0].send_resolved,
            "resolved notifications by default"
        );
        assert!(!a.rules[1].send_resolved);
        assert_eq!(a.rules[0].flap, Flap::DEFAULT);
        assert_eq!(a.rules[0].causes, [Cause::Target]);
        assert_eq!(a.rules[1].causes, [Cause::Target, Cause::Runner]);
        assert_eq!(
            a.rules[1].flap,
            Flap {
                window_secs: 1800,
                changes: 8
            }
        );
        assert!(a.rules[1].selector.namespaces.is_empty());
    }

    #[test]
    fn mistakes_name_the_field() {
        for (text, want) in [
            ("receivers: []\nroutes:\n  - receiver: x\n", "routes[0].receiver: no receiver is named \"x\""),
            ("receivers:\n  - name: a\n", "receivers[0]: give exactly one of"),
            (
                "receivers:\n  - name: a\n    slack: {url: x}\n    webhook: {url: x}\n",
                "receivers[0]: give exactly one of",
            ),
            ("receivers:\n  - name: a\n    slack: {url: 'ftp://x'}\n", "receivers[0].slack.url: \"ftp://x\" is not an http(s) URL"),
            (
                "receivers:\n  - name: a\n    slack: {url: 'http://x'}\n  - name: a\n    slack: {url: 'http://y'}\n",
                "receivers[1].name: \"a\" names two receivers",
            ),
            ("receivers:\n  - name: a\n    slak: {url: 'http://x'}\n", "receivers[0].slak: unknown field `slak`"),
            (
                "receivers:\n  - name: a\n    webhook: {url: 'http://x', body: '{{check}} {{nope}}'}\n",
                "receivers[0].webhook.body: unknown placeholder {{nope}}",
            ),
            (
                "receivers:\n  - name: a\n    webhook: {url: 'http://x', body: '{{check'}\n",
                "receivers[0].webhook.body: a {{ at byte 0 is never closed",
            ),
            (
                "receivers:\n  - name: a\n    pagerduty: {routingKey: k, severity: high}\n",
                "receivers[0].pagerduty.severity: \"high\" is not critical",
            ),
            (
                "receivers:\n  - name: a\n    slack: {url: 'http://x'}\nroutes:\n  - receiver: a\n    repeatInterval: 10s\n",
                "routes[0].repeatInterval: 10s is under a minute",
            ),
            (
                "receivers:\n  - name: a\n    slack: {url: 'http://x'}\nroutes:\n  - receiver: a\n    repeatInterval: soon\n",
                "routes[0].repeatInterval: ",
            ),
            ("receivers:\n  - name: a\n    slack: {url: 'http://x'}\nroutes:\n  - receiver: a\n    sendResolved: yes\n", "routes[0].sendResolved: "),
            ("receivers:\n  - name: a\n    slack: {url: 'http://x'}\nroutes:\n  - receiver: a\n    flapping: {changes: 50}\n", "routes[0].flapping.changes: 50 is not 0 (off) or 2 to 20"),
            ("receivers:\n  - name: a\n    slack: {url: 'http://x'}\nroutes:\n  - receiver: a\n    flapping: {window: 1s}\n", "routes[0].flapping.window: 1s is under 10s"),
            ("receivers:\n  - name: a\n    slack: {url: 'http://x'}\nroutes:\n  - receiver: a\n    flapping: {often: 3}\n", "routes[0].flapping.often: unknown field"),
            ("receivers:\n  - name: a\n    slack: {url: 'http://x'}\nroutes:\n  - receiver: a\n    causes: [node]\n", "routes[0].causes[0]: unknown variant `node`, expected `target` or `runner`"),
            ("receivers:\n  - name: a\n    slack: {url: 'http://x'}\nroutes:\n  - receiver: a\n    causes: []\n", "routes[0].causes: is empty"),
        ] {
            let e = Alerting::parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}\n  gave: {e}\n  want: {want}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn the_examples_in_the_readme_and_deploy_are_valid() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("```yaml\nexternalURL:")
            .expect("the README's alerting example")
            + "```yaml\n".len();
        let end = start + readme[start..].find("```").unwrap();
        let a = Alerting::parse(&readme[start..end]).unwrap();
        assert_eq!(a.receivers.len(), 4);
        assert_eq!(a.rules.len(), 3);
        // deploy/alerting.yaml: valid as shipped (nothing configured), and its commented
        // examples valid once uncommented.
        let cm: serde_json::Value =
            serde_saphyr::from_str(include_str!("../../deploy/alerting.yaml")).unwrap();
        let shipped = cm["data"]["alerting.yaml"].as_str().unwrap();
        assert!(Alerting::parse(shipped).unwrap().receivers.is_empty());
        let uncommented: String = shipped
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if !rest.starts_with(' ') => rest.to_string(),
                _ => l.strip_prefix('#').unwrap_or(l).replace(": []", ":"),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let examples =
            Alerting::parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert_eq!(examples.receivers.len(), 4);
        assert_eq!(examples.rules.len(), 3);
        assert!(examples.external_url.is_some());
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = Alerting::load(Path::new("/nonexistent/alerting.yaml")).unwrap_err();
        assert!(
            e.to_string().starts_with("/nonexistent/alerting.yaml: "),
            "{e}"
        );
    }

    #[test]
    fn routes_match_by_namespace_and_labels() {
        let a = Alerting::parse(FULL).unwrap();
        let check = |ns: &str, labels: &[(&str, &str)]| {
            let mut hc = HealthCheck::default();
            hc.metadata.namespace = Some(ns.into());
            hc.metadata.labels = Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            hc
        };
        let pager = &a.rules[0];
        assert!(pager.matches(&check("prod", &[("team", "db"), ("x", "y")])));
        assert!(!pager.matches(&check("prod", &[("team", "web")])));
        assert!(!pager.matches(&check("dev", &[("team", "db")])));
        assert!(a.rules[1].matches(&check("anything", &[])));
    }
}
