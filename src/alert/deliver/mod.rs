//! What each kind of receiver is sent: the request for one notice, built as a pure function so
//! its shape is tested without a network, and the POST that delivers it.

use std::time::Duration;

use serde_json::{json, Value};

use super::config::Kind;
use super::decide::Notice;
use super::mail::{self, Mail};
use super::message::{cut, rfc3339, Message};
use super::template::fill;
use crate::api::Cause;

/// How long one delivery may take before it counts as failed (and is retried).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A request ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub url: url::Url,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: Value,
}

/// How `kind` is told of `m`.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Http(Request),
    Mail(Box<Mail>),
}

pub fn delivery(kind: &Kind, m: &Message) -> Delivery {
    match kind {
        Kind::Email(account) => Delivery::Mail(Box::new(Mail {
            account: account.clone(),
            subject: format!("[probity] {}", m.summary()),
            body: mail_body(m),
            id: m.id(),
        })),
        k => Delivery::Http(request(k, m)),
    }
}

/// A mail's text: the summary and errors, then why, the cause, the link and the id.
fn mail_body(m: &Message) -> String {
    let mut b = m.text();
    b.push('\n');
    if let Some(c) = m.cause.filter(|_| m.notice.is_firing()) {
        b.push_str(&format!("\nCause: {}", c.as_str()));
    }
    if let Some(link) = &m.link {
        b.push_str(&format!("\nStatus page: {link}"));
    }
    b.push_str(&format!("\nNotification id: {}\n", m.id()));
    b
}

/// A Teams message: one Adaptive Card (Teams refuses messages above 28 KB: at most ten
/// errors).
fn teams_card(m: &Message) -> Value {
    let color = match m.notice {
        Notice::Resolved => "Good",
        Notice::Flapping => "Warning",
        _ => "Attention",
    };
    let mut body = vec![json!({
        "type": "TextBlock", "text": m.summary(), "weight": "Bolder", "size": "Medium",
        "wrap": true, "color": color,
    })];
    if m.notice.is_firing() {
        if let Some(c) = m.cause {
            body.push(json!({"type": "TextBlock", "text": format!("Cause: {}", c.as_str()), "isSubtle": true, "wrap": true}));
        }
        for e in m.errors.iter().take(10) {
            body.push(
                json!({"type": "TextBlock", "text": e, "wrap": true, "fontType": "Monospace"}),
            );
        }
        if m.errors.len() > 10 {
            body.push(json!({"type": "TextBlock", "text": format!("and {} more errors", m.errors.len() - 10), "isSubtle": true}));
        }
    }
    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if let Some(link) = &m.link {
        content["actions"] =
            json!([{"type": "Action.OpenUrl", "title": "Status page", "url": link}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": content,
        }],
    })
}

/// Opsgenie: one alert per check (alias `probity/NAMESPACE/NAME`), created (or, again, counted)
/// while failing and closed on resolve.
fn opsgenie(
    base: &url::Url,
    api_key: &str,
    priority: &str,
    m: &Message,
    id_header: (http::HeaderName, http::HeaderValue),
) -> Request {
    let alias = format!("probity/{}", m.key.as_str());
    let mut url = base.clone();
    let auth = (
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("GenieKey {api_key}"))
            .unwrap_or(http::HeaderValue::from_static("")),
    );
    let body = if m.notice == Notice::Resolved {
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().extend(["v2", "alerts", &alias, "close"]);
        }
        url.query_pairs_mut().append_pair("identifierType", "alias");
        json!({"source": "probity", "note": m.summary()})
    } else {
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().extend(["v2", "alerts"]);
        }
        let mut details = json!({
            "namespace": m.key.namespace(),
            "check": m.key.name(),
            "since": rfc3339(m.since),
        });
        if let Some(c) = m.cause {
            details["cause"] = json!(c.as_str());
        }
        if let Some(link) = &m.link {
            details["link"] = json!(link);
        }
        let mut tags = vec!["probity".to_string()];
        tags.extend(m.cause.map(|c| c.as_str().to_string()));
        json!({
            // Opsgenie's limits: 130 characters of message, 15,000 of description.
            "message": cut_plain(&m.summary(), 130),
            "alias": alias,
            "description": cut_plain(&m.errors.join("\n"), 15_000),
            "source": "probity",
            "priority": priority,
            "details": details,
            "tags": tags,
        })
    };
    Request {
        url,
        headers: vec![auth, id_header],
        body,
    }
}

/// `s` cut to `max` characters, the cut marked by an ellipsis.
fn cut_plain(s: &str, max: usize) -> String {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if s.chars().count() > max => format!("{}…", &s[..at]),
        _ => s.to_string(),
    }
}

/// The request that tells `kind` of `m` (an HTTP receiver's).
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
                    // `text` and `brief` are for templates; the document has the errors in
                    // `errors`.
                    if let Some(o) = doc.as_object_mut() {
                        o.remove("text");
                        o.remove("brief");
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
                        "severity": if m.degraded { "warning" } else { m.severity.as_deref().filter(|s| ["critical", "error", "warning", "info"].contains(s)).unwrap_or(severity) },
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
                "alertname": if m.degraded { "ProbityCheckDegraded" } else { "ProbityCheckFailing" },
                "namespace": m.key.namespace(),
                "check": m.key.name(),
            });
            if m.degraded {
                labels["severity"] = json!("warning");
            } else if let Some(s) = &m.severity {
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
        Kind::Teams { url } => Request {
            url: url.clone(),
            headers: vec![id_header],
            body: teams_card(m),
        },
        Kind::Opsgenie {
            url,
            api_key,
            priority,
        } => opsgenie(url, api_key, priority, m, id_header),
        Kind::Email(_) => unreachable!("mail is sent by delivery(), not as a request"),
    }
}

/// A Slack message shows at most this many errors...
const SLACK_ERRORS: usize = 5;
/// (each cut at `MAX_ERROR_CHARS` where the message is made) under a check name cut at this
/// many.
const SLACK_NAME_CHARS: usize = 300;
/// Slack reads `&`, `<` and `>` as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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

/// Delivers `d`, within `TIMEOUT`.
pub async fn deliver(client: &reqwest::Client, d: &Delivery) -> Result<(), DeliveryError> {
    match d {
        Delivery::Http(req) => send(client, req).await,
        Delivery::Mail(m) => {
            let what = format!("SMTP {}:{}", m.account.host, m.account.port);
            match tokio::time::timeout(TIMEOUT, mail::send(m)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(reason)) => Err(DeliveryError::NoAnswer { what, reason }),
                Err(_) => Err(DeliveryError::NoAnswer {
                    what,
                    reason: format!("no answer within {}s", TIMEOUT.as_secs()),
                }),
            }
        }
    }
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
mod tests;
