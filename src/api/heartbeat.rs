//! Heartbeat checks: no pod, no probe. A job pings `POST /api/heartbeat/NAMESPACE/NAME`
//! (`/start` when it begins, `/fail` when it failed); silence for `period` + `grace` fails the
//! check. The job proves itself with a token whose SHA-256 the check holds (`tokenHash`), so
//! probity never reads a Secret: the job mounts one, probity keeps only the hash.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration;
use super::validate::Problem;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatSpec {
    /// How often the job pings (`1h`, `1d`).
    pub period: String,
    /// How late a ping may come before the check fails (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<String>,
    /// `sha256:` and the hex SHA-256 of the token the job sends as `Authorization: Bearer
    /// TOKEN` (`probity heartbeat-token` makes a token and its hash).
    pub token_hash: String,
}

/// The grace when none is given.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);

/// The shortest period: pings more often than this are a probe's job.
pub const MIN_PERIOD: Duration = Duration::from_secs(10);

/// What a ping says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beat {
    /// The job began (its duration is measured to the next ping).
    Start,
    /// The job ran and succeeded.
    Success,
    /// The job ran and failed, with what it said (may be empty).
    Fail(String),
}

impl Beat {
    pub fn as_str(&self) -> &'static str {
        match self {
            Beat::Start => "start",
            Beat::Success => "success",
            Beat::Fail(_) => "fail",
        }
    }
}

/// `sha256:HEX` of a token.
pub fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl HeartbeatSpec {
    /// Whether `token` is the one this check's hash was made from. Compared in constant time.
    pub fn admits(&self, token: &str) -> bool {
        let got = token_hash(token);
        let want = self.token_hash.trim().to_ascii_lowercase();
        got.len() == want.len()
            && got
                .bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    pub fn grace(&self) -> Duration {
        self.grace
            .as_deref()
            .and_then(|g| duration::parse(g).ok())
            .unwrap_or(DEFAULT_GRACE)
    }

    pub(super) fn problems(&self) -> (Option<Duration>, Vec<Problem>) {
        let f = "spec.heartbeat";
        let mut out = Vec::new();
        let period = match duration::parse(&self.period) {
            Ok(p) if p < MIN_PERIOD => {
                out.push(Problem {
                    field: format!("{f}.period"),
                    message: format!("{:?} is under 10s", self.period),
                });
                None
            }
            Ok(p) => Some(p),
            Err(e) => {
                out.push(Problem {
                    field: format!("{f}.period"),
                    message: e.to_string(),
                });
                None
            }
        };
        if let Some(Err(e)) = self.grace.as_deref().map(duration::parse) {
            out.push(Problem {
                field: format!("{f}.grace"),
                message: e.to_string(),
            });
        }
        let hash = self.token_hash.trim();
        let hex_ok = hash
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !hex_ok {
            out.push(Problem {
                field: format!("{f}.tokenHash"),
                message: "must be sha256: and 64 hex digits (`probity heartbeat-token` makes one)"
                    .into(),
            });
        }
        (period, out)
    }
}

/// A new random token: 32 bytes, hex.
pub fn new_token() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{}{}", a.simple(), b.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_admitted_by_its_hash_only() {
        let token = new_token();
        let spec = HeartbeatSpec {
            period: "1h".into(),
            grace: None,
            token_hash: token_hash(&token),
        };
        assert!(spec.admits(&token));
        assert!(spec.admits(&format!("{token}\n")), "a file's newline");
        assert!(!spec.admits(&new_token()));
        assert!(!spec.admits(""));
        assert_eq!(
            token_hash("secret"),
            "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        let (period, problems) = spec.problems();
        assert_eq!(
            (period, problems.len()),
            (Some(Duration::from_secs(3600)), 0)
        );
        let bad = HeartbeatSpec {
            period: "5s".into(),
            grace: Some("soon".into()),
            token_hash: "md5:abc".into(),
        };
        let said: Vec<String> = bad
            .problems()
            .1
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        assert_eq!(said.len(), 3, "{said:?}");
        assert_eq!(said[0], "spec.heartbeat.period: \"5s\" is under 10s");
        assert!(said[1].starts_with("spec.heartbeat.grace: \"soon\""));
        assert!(said[2].starts_with("spec.heartbeat.tokenHash: must be sha256:"));
    }
}
