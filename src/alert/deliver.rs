//! What each kind of receiver is sent: the request for one notice, built as a pure function so
//! its shape is tested without a network, and the POST that delivers it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::config::Kind;
use super::decide::Notice;
use crate::api::{Cause, CheckKey};

/// How long one delivery may take before it counts as failed (and is retried).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a notice says.
#[derive(Debug, Clone)]
pub struct Message {
    pub key: CheckKey,
    pub notice: Notice,
    /// The failing spell's start, unix seconds.
    pub since: i64,
    pub now: i64,
    pub errors: Vec<String>,
    /// The check's page on the status page, when `externalURL` is set.
    pub link: Option<String>,
    /// The check's `kuberhealthy.io/severity` label.
    pub severity: Option<String>,
    /// Why, where the notice is not the plain news of a verdict: why it is flapping, or why an
    /// alert is resolved while the check did not pass (deleted, suspended, turned off).
    pub reason: Option<String>,
    /// While failing, whose problem it is (`target` or `runner`).
    pub cause: Option<Cause>,
}

impl Message {
    fn since_rfc3339(&self) -> String {
        rfc3339(self.since)
    }

    /// Names the check, its spell and the notice: a receiver can drop a repeat by it.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.key.as_str(),
            self.since,
            match self.notice {
                Notice::Reminder => format!("reminder-{}", self.now),
                n => n.as_str().to_string(),
            }
        )
    }

    /// One line a person reads first: what happened, without the errors (every body carries
    /// those once, in a field of their own).
    pub fn summary(&self) -> String {
        self.headline(self.key.as_str())
    }

    /// The summary and then the errors, one a line: for receivers that show one text.
    pub fn text(&self) -> String {
        let mut t = self.summary();
        if self.notice.is_firing() {
            for e in &self.errors {
                t.push('\n');
                t.push_str(e);
            }
        }
        t
    }

    /// What happened to `check` (the check as the receiver shows it), without the errors.
    fn headline(&self, check: &str) -> String {
        match self.notice {
            Notice::Firing => format!("{check} is failing"),
            Notice::Reminder => format!(
                "{check} is still failing, for {}",
                spell(self.now - self.since)
            ),
            Notice::Resolved => match &self.reason {
                Some(why) => format!("{check} no longer alerts: {why}"),
                None => format!(
                    "{check} recovered after failing for {}",
                    spell(self.now - self.since)
                ),
            },
            Notice::Flapping => match &self.reason {
                Some(why) => format!("{check} is flapping: {why}"),
                None => format!("{check} is flapping"),
            },
        }
    }

    fn state(&self) -> &'static str {
        match self.notice {
            Notice::Resolved => "resolved",
            Notice::Flapping => "flapping",
            _ => "failing",
        }
    }

    fn placeholders(&self) -> Value {
        json!({
            "check": self.key.name(),
            "namespace": self.key.namespace(),
            "state": self.state(),
            "since": self.since_rfc3339(),
            "errors": self.errors,
            "link": self.link,
            "summary": self.summary(),
            "text": self.text(),
            "id": self.id(),
            "reason": self.reason,
            "cause": self.cause.filter(|_| self.notice != Notice::Resolved).map(Cause::as_str),
        })
    }
}

fn rfc3339(unix: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A length of time as a person says it: "3m", "2h 5m", "1d 4h".
fn spell(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub url: url::Url,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: Value,
}

/// The request that tells `kind` of `m`.
pub fn request(kind: &Kind, m: &Message) -> Request {
    let id_header = (
        http::HeaderName::from_static("x-probity-notification-id"),
        http::HeaderValue::from_str(&m.id()).unwrap_or(http::HeaderValue::from_static("")),
    );
    match kind {
        Kind::Webhook { url, headers, body } => {
            let doc = m.placeholders();
            let body = match body {
                None => {
                    let mut doc = doc;
                    // `text` is for templates; the document has the errors in `errors`.
                    if let Some(o) = doc.as_object_mut() {
                        o.remove("text");
                        for k in ["reason", "cause"] {
                            if o.get(k).is_some_and(Value::is_null) {
                                o.remove(k);
                            }
                        }
                    }
                    doc["version"] = json!("1");
                    doc
                }
                Some(template) => {
                    let filled = fill(template, &doc);
                    // A template that does not give JSON is sent as a JSON string, not lost.
                    serde_json::from_str(&filled).unwrap_or(Value::String(filled))
                }
            };
            let mut hs = headers.clone();
            hs.push(id_header);
            Request {
                url: url.clone(),
                headers: hs,
                body,
            }
        }
        Kind::Slack { url, channel } => {
            let emoji = match m.notice {
                Notice::Resolved => ":large_green_circle:",
                Notice::Flapping => ":large_orange_circle:",
                _ => ":red_circle:",
            };
            // Everything from a check is text, never markup: a check named `<!channel>` must
            // not ping a channel. Slack refuses a text above 40,000 characters; this one stays
            // under 6,000 whatever the check holds.
            let name = slack_escape(&cut(m.key.as_str(), SLACK_NAME_CHARS));
            let mut text = format!("{emoji} {}", m.headline(&format!("*{name}*")));
            if m.notice.is_firing() {
                if m.cause == Some(Cause::Runner) {
                    text.push_str(
                        "\n_cause: runner (the check could not run or never reported; what it checks may be fine)_",
                    );
                }
                for e in m.errors.iter().take(SLACK_ERRORS) {
                    text.push_str("\n> ");
                    text.push_str(&slack_escape(e));
                }
                if m.errors.len() > SLACK_ERRORS {
                    text.push_str(&format!(
                        "\n> _and {} more errors_",
                        m.errors.len() - SLACK_ERRORS
                    ));
                }
            }
            if let Some(link) = &m.link {
                // The link is percent-encoded where it is made; `|` and `>` end it in Slack's
                // syntax, so they are encoded here too should a base URL carry them.
                let link = link.replace('|', "%7C").replace('>', "%3E");
                text.push_str(&format!("\n<{link}|status page>"));
            }
            let mut body = json!({ "text": text });
            if let Some(c) = channel {
                body["channel"] = json!(c);
            }
            Request {
                url: url.clone(),
                headers: vec![id_header],
                body,
            }
        }
        Kind::PagerDuty {
            url,
            routing_key,
            severity,
        } => {
            // One incident per check: a reminder is the same trigger again (PagerDuty keeps
            // one open incident per dedup key); a resolve closes it.
            let dedup = format!("probity/{}", m.key.as_str());
            let body = if m.notice == Notice::Resolved {
                json!({
                    "routing_key": routing_key,
                    "event_action": "resolve",
                    "dedup_key": dedup,
                })
            } else {
                let mut summary = m.summary();
                if summary.len() > 1024 {
                    let mut end = 1021;
                    while !summary.is_char_boundary(end) {
                        end -= 1;
                    }
                    summary.truncate(end);
                    summary.push_str("...");
                }
                let mut b = json!({
                    "routing_key": routing_key,
                    "event_action": "trigger",
                    "dedup_key": dedup,
                    "payload": {
                        "summary": summary,
                        "source": "probity",
                        "severity": m.severity.as_deref().filter(|s| ["critical", "error", "warning", "info"].contains(s)).unwrap_or(severity),
                        "timestamp": m.since_rfc3339(),
                        "component": m.key.name(),
                        "group": m.key.namespace(),
                        "custom_details": {
                            "errors": m.errors,
                            "since": m.since_rfc3339(),
                            "cause": m.cause.map(Cause::as_str),
                        },
                    },
                });
                if let Some(link) = &m.link {
                    b["links"] = json!([{ "href": link, "text": "probity status page" }]);
                }
                b
            };
            Request {
                url: url.clone(),
                headers: vec![id_header],
                body,
            }
        }
        Kind::Alertmanager { url } => {
            let mut labels = json!({
                "alertname": "ProbityCheckFailing",
                "namespace": m.key.namespace(),
                "check": m.key.name(),
            });
            if let Some(s) = &m.severity {
                labels["severity"] = json!(s);
            }
            let mut alert = json!({
                "labels": labels,
                "annotations": {
                    "summary": m.summary(),
                    "description": m.errors.join("\n"),
                },
                "startsAt": m.since_rfc3339(),
            });
            // An annotation, not a label: a spell's cause may change, its alert may not.
            if let (Some(c), true) = (m.cause, m.notice.is_firing()) {
                alert["annotations"]["cause"] = json!(c.as_str());
            }
            if m.notice == Notice::Resolved {
                alert["endsAt"] = json!(rfc3339(m.now));
            }
            if let Some(link) = &m.link {
                alert["generatorURL"] = json!(link);
            }
            let mut api = url.clone();
            api.set_path(&format!(
                "{}/api/v2/alerts",
                url.path().trim_end_matches('/')
            ));
            Request {
                url: api,
                headers: vec![id_header],
                body: json!([alert]),
            }
        }
    }
}

/// The check's page under the status page's `base` URL, each part of its name percent-encoded
/// (a local check's name is its file's, which may hold anything).
pub fn check_link(base: &str, key: &CheckKey) -> String {
    match url::Url::parse(base) {
        Ok(mut u) => {
            if let Ok(mut path) = u.path_segments_mut() {
                path.pop_if_empty()
                    .extend(["checks", key.namespace(), key.name()]);
            }
            u.to_string()
        }
        Err(_) => format!("{base}/checks/{}", key.as_str()),
    }
}

/// A Slack message shows at most this many errors...
const SLACK_ERRORS: usize = 5;
/// (each cut at `MAX_ERROR_CHARS` where the message is made) under a check name cut at this
/// many.
const SLACK_NAME_CHARS: usize = 300;
/// A notice carries at most this many of a check's errors...
pub const MAX_ERRORS: usize = 20;
/// ...each cut at this many characters (receivers refuse large bodies: Slack at 40,000
/// characters, Teams at 28 KB, PagerDuty at 512 KB).
pub const MAX_ERROR_CHARS: usize = 1_000;

/// `s` cut to `max` characters, saying how many were cut.
pub fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((at, _)) => format!(
            "{}… ({} more characters)",
            &s[..at],
            s[at..].chars().count()
        ),
    }
}

/// A check's errors as a notice carries them: at most `MAX_ERRORS`, each cut at
/// `MAX_ERROR_CHARS`, with a last line saying how many were left out.
pub fn capped_errors(errors: &[String]) -> Vec<String> {
    let mut out: Vec<String> = errors
        .iter()
        .take(MAX_ERRORS)
        .map(|e| cut(e, MAX_ERROR_CHARS))
        .collect();
    if errors.len() > MAX_ERRORS {
        out.push(format!("… and {} more errors", errors.len() - MAX_ERRORS));
    }
    out
}

/// Slack reads `&`, `<` and `>` as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Replaces each `{{name}}` by the JSON of `values[name]`.
fn fill(template: &str, values: &Value) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let name = after[..end].trim();
        out.push_str(&values.get(name).unwrap_or(&Value::Null).to_string());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// A delivery that did not succeed, naming the receiver by its redacted URL (`what`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// No answer: refused, timed out, TLS; `reason` is the error with its sources.
    #[error("{what}: {reason}")]
    NoAnswer { what: String, reason: String },
    /// An answer that is not 2xx, with the start of its body.
    #[error("{what}: {status} {body}")]
    Refused {
        what: String,
        status: reqwest::StatusCode,
        body: String,
    },
}

/// Sends `req`; any answer but 2xx is a failure, named with its status and the start of the
/// body.
pub async fn send(client: &reqwest::Client, req: &Request) -> Result<(), DeliveryError> {
    let mut rb = client
        .post(req.url.clone())
        .timeout(TIMEOUT)
        .json(&req.body);
    for (k, v) in &req.headers {
        rb = rb.header(k, v);
    }
    let what = format!("POST {}", redacted(&req.url));
    let resp = rb.send().await.map_err(|e| {
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            reason.push_str(&format!(": {s}"));
            src = s.source();
        }
        DeliveryError::NoAnswer {
            what: what.clone(),
            reason,
        }
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(200).collect();
    Err(DeliveryError::Refused {
        what,
        status,
        body: body.trim().to_string(),
    })
}

/// A URL fit for logs and the status page: webhook URLs carry their secret in the path (Slack)
/// or the query, so only the scheme, host and port are shown.
pub fn redacted(u: &url::Url) -> String {
    let mut s = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(p) = u.port() {
        s.push_str(&format!(":{p}"));
    }
    s.push_str("/…");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::config::Alerting;

    fn message(notice: Notice) -> Message {
        Message {
            key: CheckKey::new("prod", "db"),
            notice,
            since: 1_700_000_000,
            now: 1_700_003_700,
            errors: vec!["connect 10.0.0.5:5432: refused <x>".into(), "second".into()],
            link: Some("http://probity.example/checks/prod/db".into()),
            severity: None,
            reason: None,
            cause: Some(Cause::Target),
        }
    }

    fn kinds() -> Vec<Kind> {
        Alerting::parse(
            r##"
receivers:
  - name: hook
    webhook:
      url: http://127.0.0.1:9/hook
      headers: {Authorization: "Bearer t"}
  - name: tpl
    webhook:
      url: http://127.0.0.1:9/hook
      body: '{"text": {{summary}}, "errs": {{errors}}, "n": {{namespace}}, "all": {{text}}}'
  - name: chat
    slack: {url: "https://hooks.slack.com/services/T/B/X", channel: "#ops"}
  - name: pager
    pagerduty: {routingKey: abc, severity: warning}
  - name: am
    alertmanager: {url: "http://127.0.0.1:9093/am/"}
"##,
        )
        .unwrap()
        .receivers
        .into_iter()
        .map(|(_, k)| k)
        .collect()
    }

    #[test]
    fn the_webhook_document_names_everything() {
        let k = &kinds()[0];
        let r = request(k, &message(Notice::Firing));
        assert_eq!(
            r.body,
            json!({
                "version": "1",
                "id": "prod/db/1700000000/firing",
                "check": "db",
                "namespace": "prod",
                "state": "failing",
                "since": "2023-11-14T22:13:20Z",
                "errors": ["connect 10.0.0.5:5432: refused <x>", "second"],
                "link": "http://probity.example/checks/prod/db",
                "summary": "prod/db is failing",
                "cause": "target",
            })
        );
        let names: Vec<_> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["authorization", "x-probity-notification-id"]);
        let r = request(k, &message(Notice::Resolved));
        assert_eq!(r.body["state"], "resolved");
        assert!(r.body.get("cause").is_none(), "a resolve has no cause");
        assert_eq!(
            r.body["summary"],
            "prod/db recovered after failing for 1h 1m"
        );
    }

    #[test]
    fn a_template_gets_json_values_whatever_they_hold() {
        let mut m = message(Notice::Firing);
        m.errors = vec!["quote \" and\nnewline".into()];
        let r = request(&kinds()[1], &m);
        assert_eq!(
            r.body,
            json!({
                "text": "prod/db is failing",
                "errs": ["quote \" and\nnewline"],
                "n": "prod",
                "all": "prod/db is failing\nquote \" and\nnewline",
            })
        );
    }

    #[test]
    fn slack_gets_text_with_the_errors_escaped() {
        let r = request(&kinds()[2], &message(Notice::Firing));
        assert_eq!(r.body["channel"], "#ops");
        assert_eq!(
            r.body["text"],
            ":red_circle: *prod/db* is failing\n> connect 10.0.0.5:5432: refused &lt;x&gt;\n> second\n<http://probity.example/checks/prod/db|status page>"
        );
        let r = request(&kinds()[2], &message(Notice::Resolved));
        assert!(r.body["text"]
            .as_str()
            .unwrap()
            .starts_with(":large_green_circle: *prod/db* recovered after failing for 1h 1m"));
    }

    #[test]
    fn pagerduty_triggers_and_resolves_one_incident_per_check() {
        let k = &kinds()[3];
        let t = request(k, &message(Notice::Firing));
        assert_eq!(t.url.as_str(), "https://events.pagerduty.com/v2/enqueue");
        assert_eq!(t.body["event_action"], "trigger");
        assert_eq!(t.body["dedup_key"], "probity/prod/db");
        assert_eq!(t.body["routing_key"], "abc");
        assert_eq!(t.body["payload"]["severity"], "warning");
        assert_eq!(t.body["payload"]["source"], "probity");
        assert_eq!(t.body["payload"]["custom_details"]["errors"][1], "second");
        assert_eq!(
            t.body["links"][0]["href"],
            "http://probity.example/checks/prod/db"
        );
        let again = request(k, &message(Notice::Reminder));
        assert_eq!(again.body["dedup_key"], t.body["dedup_key"]);
        let r = request(k, &message(Notice::Resolved));
        assert_eq!(
            r.body,
            json!({"routing_key": "abc", "event_action": "resolve", "dedup_key": "probity/prod/db"})
        );
        // The check's own severity label wins when PagerDuty knows it.
        let mut m = message(Notice::Firing);
        m.severity = Some("critical".into());
        assert_eq!(request(k, &m).body["payload"]["severity"], "critical");
        m.severity = Some("sev1".into());
        assert_eq!(request(k, &m).body["payload"]["severity"], "warning");
        // A long summary is cut to PagerDuty's 1024 characters.
        m.key = CheckKey::new("prod", &"é".repeat(2000));
        let s = request(k, &m).body["payload"]["summary"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(s.len() <= 1024 && s.ends_with("..."), "{}", s.len());
    }

    #[test]
    fn alertmanager_gets_one_alert_that_a_resolve_ends() {
        let k = &kinds()[4];
        let f = request(k, &message(Notice::Firing));
        assert_eq!(f.url.as_str(), "http://127.0.0.1:9093/am/api/v2/alerts");
        let a = &f.body[0];
        assert_eq!(
            a["labels"],
            json!({"alertname": "ProbityCheckFailing", "namespace": "prod", "check": "db"})
        );
        assert_eq!(a["startsAt"], "2023-11-14T22:13:20Z");
        assert!(a.get("endsAt").is_none());
        assert_eq!(a["generatorURL"], "http://probity.example/checks/prod/db");
        let r = request(k, &message(Notice::Resolved));
        assert_eq!(r.body[0]["labels"], a["labels"], "the same alert");
        assert_eq!(r.body[0]["endsAt"], "2023-11-14T23:15:00Z");
    }

    #[test]
    fn slack_shows_what_a_check_holds_as_text_and_within_its_limits() {
        let mut m = message(Notice::Firing);
        m.key = CheckKey::new("it", "<!channel> & <http://evil|click>");
        m.link = Some(check_link("http://probity.example/base", &m.key));
        m.errors = capped_errors(&["x".repeat(60_000), "<!here>".into()]);
        let text = request(&kinds()[2], &m).body["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            text.starts_with(":red_circle: *it/&lt;!channel&gt; &amp; &lt;http://evil|click&gt;* is failing\n> xxx"),
            "{text}"
        );
        assert!(text.contains("\n> &lt;!here&gt;\n"), "{text}");
        // The only markup left is the link probity made, its parts encoded.
        assert!(text.ends_with("\n<http://probity.example/base/checks/it/%3C!channel%3E%20&%20%3Chttp:%2F%2Fevil%7Cclick%3E|status page>"), "{text}");
        assert_eq!(text.matches('<').count(), 1, "{text}");
        assert!(text.chars().count() < 6_000, "{}", text.chars().count());
        assert!(
            text.contains("x… (59000 more characters)"),
            "the cut is said"
        );
        // More errors than shown are counted.
        m.errors = (0..9).map(|i| format!("e{i}")).collect();
        let text = request(&kinds()[2], &m).body["text"].to_string();
        assert!(text.contains("> e4\\n> _and 4 more errors_"), "{text}");
    }

    #[test]
    fn a_notice_carries_a_bounded_list_of_errors() {
        let many: Vec<String> = (0..30)
            .map(|i| format!("{i}{}", "é".repeat(5000)))
            .collect();
        let capped = capped_errors(&many);
        assert_eq!(capped.len(), MAX_ERRORS + 1);
        assert_eq!(capped[MAX_ERRORS], "… and 10 more errors");
        assert!(capped[0].starts_with('0') && capped[0].ends_with("… (4001 more characters)"));
        assert_eq!(cut("short", 10), "short");
    }

    #[test]
    fn every_body_states_the_errors_once() {
        let m = message(Notice::Firing);
        // (A template says what its author wrote.)
        for k in kinds()
            .into_iter()
            .filter(|k| !matches!(k, Kind::Webhook { body: Some(_), .. }))
        {
            let body = request(&k, &m).body.to_string();
            assert_eq!(body.matches("refused").count(), 1, "{}: {body}", k.name());
        }
    }

    #[test]
    fn urls_in_messages_keep_their_secrets() {
        let u = url::Url::parse("https://hooks.slack.com/services/T/B/SECRET?token=x").unwrap();
        assert_eq!(redacted(&u), "https://hooks.slack.com/…");
    }
}
