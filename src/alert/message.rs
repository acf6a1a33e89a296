//! What a notice says, whatever receives it: the check, the notice, its spell, the errors
//! (capped), the link to the check's page, and the lines people read first.

use serde_json::{json, Value};

use super::decide::Notice;
use crate::api::{Cause, CheckKey};

/// Everything a notice says.
#[derive(Debug, Clone)]
pub struct Message {
    pub key: CheckKey,
    pub notice: Notice,
    /// The failing (or degraded) spell's start, unix seconds.
    pub since: i64,
    /// The spell is a degraded one: the check passes, failing only what is marked
    /// `severity: warning` (`errors` are those warnings).
    pub degraded: bool,
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
    pub(super) fn since_rfc3339(&self) -> String {
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
    pub(super) fn headline(&self, check: &str) -> String {
        match self.notice {
            Notice::Firing => format!("{check} is {}", self.state()),
            Notice::Reminder => format!(
                "{check} is still {}, for {}",
                self.state(),
                spell(self.now - self.since)
            ),
            Notice::Resolved => match &self.reason {
                Some(why) => format!("{check} no longer alerts: {why}"),
                None => format!(
                    "{check} recovered after {} for {}",
                    if self.degraded {
                        "being degraded"
                    } else {
                        "failing"
                    },
                    spell(self.now - self.since)
                ),
            },
            Notice::Flapping => match &self.reason {
                Some(why) => format!("{check} is flapping: {why}"),
                None => format!("{check} is flapping"),
            },
        }
    }

    pub(super) fn state(&self) -> &'static str {
        match self.notice {
            Notice::Resolved => "resolved",
            Notice::Flapping => "flapping",
            _ if self.degraded => "degraded",
            _ => "failing",
        }
    }

    pub(super) fn placeholders(&self) -> Value {
        json!({
            "check": self.key.name(),
            "namespace": self.key.namespace(),
            "state": self.state(),
            "since": self.since_rfc3339(),
            "errors": self.errors,
            "link": self.link,
            "summary": self.summary(),
            "text": self.text(),
            "brief": cut(&self.text(), BRIEF_CHARS),
            "id": self.id(),
            "reason": self.reason,
            "cause": self.cause.filter(|_| self.notice != Notice::Resolved).map(Cause::as_str),
        })
    }
}

pub(super) use crate::api::duration::rfc3339;
use crate::api::duration::spell;

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

/// `{{brief}}`: the text cut to fit chat messages (Discord's content takes 2,000 characters).
pub const BRIEF_CHARS: usize = 1_900;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
