//! What a receiver is: each kind as written in the alerting configuration, and checked (a
//! mistake names the field).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::config::ConfigError;
use super::mail::{Account, Security};
use super::template::check_template;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Receiver {
    pub name: String,
    #[serde(default)]
    pub webhook: Option<Webhook>,
    #[serde(default)]
    pub slack: Option<Slack>,
    #[serde(default)]
    pub pagerduty: Option<PagerDuty>,
    #[serde(default)]
    pub alertmanager: Option<Alertmanager>,
    #[serde(default)]
    pub teams: Option<Teams>,
    #[serde(default)]
    pub opsgenie: Option<Opsgenie>,
    #[serde(default)]
    pub email: Option<Email>,
}

/// A POST of a JSON body, by default probity's own document, or `body` with its placeholders
/// filled in.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A template: `{{check}}`, `{{namespace}}`, `{{state}}`, `{{since}}`, `{{errors}}`,
    /// `{{link}}`, `{{summary}}` (one line, no errors), `{{text}}` (the summary and the errors,
    /// one a line), `{{id}}`, each replaced by its JSON value (strings quoted, errors an
    /// array), so the result is JSON whatever the values hold.
    #[serde(default)]
    pub body: Option<String>,
}

/// A Slack incoming webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Slack {
    pub url: String,
    /// Overrides the webhook's channel (legacy webhooks only honour it).
    #[serde(default)]
    pub channel: Option<String>,
}

/// PagerDuty Events API v2.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PagerDuty {
    pub routing_key: String,
    #[serde(default = "PagerDuty::default_url")]
    pub url: String,
    /// critical, error, warning or info.
    #[serde(default = "PagerDuty::default_severity")]
    pub severity: String,
}

impl PagerDuty {
    fn default_url() -> String {
        "https://events.pagerduty.com/v2/enqueue".into()
    }
    fn default_severity() -> String {
        "critical".into()
    }
}

/// Prometheus Alertmanager's v2 API, at its base URL (`http://alertmanager:9093`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Alertmanager {
    pub url: String,
}

/// A Microsoft Teams channel's Workflows webhook ("post to a channel when a webhook request is
/// received"), posted an Adaptive Card.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Teams {
    pub url: String,
}

/// Opsgenie's Alerts API: one alert per check (its alias), closed on resolve.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Opsgenie {
    pub api_key: String,
    /// `https://api.opsgenie.com`, or `https://api.eu.opsgenie.com` for the EU instance.
    #[serde(default = "Opsgenie::default_url")]
    pub url: String,
    /// P1 (critical) to P5.
    #[serde(default = "Opsgenie::default_priority")]
    pub priority: String,
}

impl Opsgenie {
    fn default_url() -> String {
        "https://api.opsgenie.com".into()
    }
    fn default_priority() -> String {
        "P3".into()
    }
}

/// Mail, over SMTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Email {
    /// `host:port` of the mail server (587 is submission with STARTTLS).
    pub smarthost: String,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The password, read from this file (a mounted Secret) each time the configuration is.
    #[serde(default)]
    pub password_file: Option<String>,
    /// `starttls` (the default: the session is upgraded before anything is sent, or nothing
    /// is) or `none` (plain text; for a relay on the same host).
    #[serde(default = "Email::default_tls")]
    pub tls: String,
    /// Verify the server against this CA file instead of the Mozilla roots built into probity.
    #[serde(default)]
    pub ca_file: Option<String>,
}

impl Email {
    fn default_tls() -> String {
        "starttls".into()
    }
}

/// What a receiver is, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Webhook {
        url: url::Url,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: Option<String>,
    },
    Slack {
        url: url::Url,
        channel: Option<String>,
    },
    PagerDuty {
        url: url::Url,
        routing_key: String,
        severity: String,
    },
    Alertmanager {
        url: url::Url,
    },
    Teams {
        url: url::Url,
    },
    Opsgenie {
        /// The API's base URL.
        url: url::Url,
        api_key: String,
        priority: String,
    },
    Email(Account),
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Webhook { .. } => "webhook",
            Kind::Slack { .. } => "slack",
            Kind::PagerDuty { .. } => "pagerduty",
            Kind::Alertmanager { .. } => "alertmanager",
            Kind::Teams { .. } => "teams",
            Kind::Opsgenie { .. } => "opsgenie",
            Kind::Email(_) => "email",
        }
    }
}

impl Receiver {
    /// The receiver, checked; `at` names it in errors (`receivers[2]`).
    pub(super) fn check(self, at: &str) -> Result<(String, Kind), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::at(format!("{at}.name"), "must not be empty"));
        }
        let kinds = [
            self.webhook.is_some(),
            self.slack.is_some(),
            self.pagerduty.is_some(),
            self.alertmanager.is_some(),
            self.teams.is_some(),
            self.opsgenie.is_some(),
            self.email.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(ConfigError::at(
                at.to_string(),
                "give exactly one of webhook, slack, pagerduty, alertmanager, teams, opsgenie, email",
            ));
        }
        let kind = if let Some(w) = self.webhook {
            let mut headers = Vec::new();
            for (k, v) in w.headers {
                let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                    ConfigError::at(format!("{at}.webhook.headers"), format!("{k:?}: {e}"))
                })?;
                let value = http::HeaderValue::from_str(&v)
                    .map_err(|e| ConfigError::at(format!("{at}.webhook.headers.{k}"), e))?;
                headers.push((name, value));
            }
            if let Some(body) = &w.body {
                check_template(body)
                    .map_err(|e| ConfigError::at(format!("{at}.webhook.body"), e))?;
            }
            Kind::Webhook {
                url: http_url(&w.url)
                    .map_err(|e| ConfigError::at(format!("{at}.webhook.url"), e))?,
                headers,
                body: w.body,
            }
        } else if let Some(s) = self.slack {
            Kind::Slack {
                url: http_url(&s.url).map_err(|e| ConfigError::at(format!("{at}.slack.url"), e))?,
                channel: s.channel,
            }
        } else if let Some(p) = self.pagerduty {
            if p.routing_key.trim().is_empty() {
                return Err(ConfigError::at(
                    format!("{at}.pagerduty.routingKey"),
                    "must not be empty",
                ));
            }
            if !["critical", "error", "warning", "info"].contains(&p.severity.as_str()) {
                return Err(ConfigError::at(
                    format!("{at}.pagerduty.severity"),
                    format!("{:?} is not critical, error, warning or info", p.severity),
                ));
            }
            Kind::PagerDuty {
                url: http_url(&p.url)
                    .map_err(|e| ConfigError::at(format!("{at}.pagerduty.url"), e))?,
                routing_key: p.routing_key,
                severity: p.severity,
            }
        } else if let Some(a) = self.alertmanager {
            Kind::Alertmanager {
                url: http_url(&a.url)
                    .map_err(|e| ConfigError::at(format!("{at}.alertmanager.url"), e))?,
            }
        } else if let Some(t) = self.teams {
            Kind::Teams {
                url: http_url(&t.url).map_err(|e| ConfigError::at(format!("{at}.teams.url"), e))?,
            }
        } else if let Some(o) = self.opsgenie {
            if o.api_key.trim().is_empty() {
                return Err(ConfigError::at(
                    format!("{at}.opsgenie.apiKey"),
                    "must not be empty",
                ));
            }
            if !["P1", "P2", "P3", "P4", "P5"].contains(&o.priority.as_str()) {
                return Err(ConfigError::at(
                    format!("{at}.opsgenie.priority"),
                    format!("{:?} is not P1, P2, P3, P4 or P5", o.priority),
                ));
            }
            Kind::Opsgenie {
                url: http_url(&o.url)
                    .map_err(|e| ConfigError::at(format!("{at}.opsgenie.url"), e))?,
                api_key: o.api_key,
                priority: o.priority,
            }
        } else if let Some(m) = self.email {
            Kind::Email(m.check(&format!("{at}.email"))?)
        } else {
            unreachable!("exactly one kind, checked above")
        };
        Ok((self.name, kind))
    }
}

impl Email {
    fn check(self, at: &str) -> Result<Account, ConfigError> {
        let (host, port) = self
            .smarthost
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| {
                ConfigError::at(
                    format!("{at}.smarthost"),
                    format!("{:?} is not host:port", self.smarthost),
                )
            })?;
        let address = |field: &str, a: &str| {
            let ok = a.contains('@') && !a.contains(['\r', '\n', '<', '>', ' ', ',']);
            if ok {
                Ok(a.to_string())
            } else {
                Err(ConfigError::at(
                    format!("{at}.{field}"),
                    format!("{a:?} is not a mail address"),
                ))
            }
        };
        let from = address("from", &self.from)?;
        if self.to.is_empty() {
            return Err(ConfigError::at(format!("{at}.to"), "names no address"));
        }
        let mut to = Vec::new();
        for (i, a) in self.to.iter().enumerate() {
            to.push(address(&format!("to[{i}]"), a)?);
        }
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::at(
                    at.to_string(),
                    "give password or passwordFile, not both",
                ))
            }
            (Some(p), None) => Some(p.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| {
                        ConfigError::at(format!("{at}.passwordFile"), format!("{f}: {e}"))
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        let auth = match (self.username, password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::at(
                    at.to_string(),
                    "username and a password go together",
                ))
            }
        };
        let security = match self.tls.as_str() {
            "starttls" => Security::StartTls {
                ca_file: self.ca_file,
            },
            "none" if self.ca_file.is_none() => {
                if auth.is_some() {
                    return Err(ConfigError::at(
                        format!("{at}.tls"),
                        "none would send the password in plain text",
                    ));
                }
                Security::None
            }
            "none" => {
                return Err(ConfigError::at(
                    format!("{at}.caFile"),
                    "goes with tls: starttls",
                ))
            }
            t => {
                return Err(ConfigError::at(
                    format!("{at}.tls"),
                    format!("{t:?} is not starttls or none"),
                ))
            }
        };
        Ok(Account {
            host: host.to_string(),
            port,
            from,
            to,
            auth,
            security,
        })
    }
}

/// A receiver's URL that is not one to POST to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadUrl {
    #[error("{text:?}: {reason}")]
    Parse {
        text: String,
        reason: url::ParseError,
    },
    #[error("{0:?} is not an http(s) URL")]
    NotHttp(String),
}

pub(super) fn http_url(s: &str) -> std::result::Result<url::Url, BadUrl> {
    let u = url::Url::parse(s).map_err(|reason| BadUrl::Parse {
        text: s.to_string(),
        reason,
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err(BadUrl::NotHttp(s.to_string()));
    }
    Ok(u)
}
