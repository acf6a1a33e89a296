//! `probity check http`: requests to a URL, passing when enough of them answer as expected.
//! Kuberhealthy's http-check settings, with its defects fixed: an unset `COUNT` makes one
//! request (its default of 0 made none and passed), and `COUNT=0` is an error, not a pass.

use std::time::Duration;

use tokio::time::Instant;

use super::number;
use crate::checks::Problem;

/// The settings, from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `CHECK_URL` (required, http or https).
    pub url: String,
    /// `COUNT`: requests to make (default 1).
    pub count: u32,
    /// `SECONDS`: pause between requests (default 0).
    pub pause: Duration,
    /// `PASSING_PERCENT`: share of requests that must pass (default 100).
    pub passing_percent: u32,
    /// `REQUEST_TYPE` (default GET).
    pub method: reqwest::Method,
    /// `REQUEST_BODY` (default `{}`, sent with methods other than GET and HEAD).
    pub body: String,
    /// `EXPECTED_STATUS_CODE` (default 200).
    pub status: u16,
    /// `EXPECTED_BODY`: a substring of the body, or a regex written `/.../` (default: any).
    pub expect_body: Option<BodyMatch>,
}

#[derive(Debug, Clone)]
pub enum BodyMatch {
    Contains(String),
    Regex(regex::Regex),
}

impl PartialEq for BodyMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (BodyMatch::Contains(a), BodyMatch::Contains(b)) => a == b,
            (BodyMatch::Regex(a), BodyMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl BodyMatch {
    fn matches(&self, body: &str) -> bool {
        match self {
            BodyMatch::Contains(s) => body.contains(s.as_str()),
            BodyMatch::Regex(r) => r.is_match(body),
        }
    }
}

impl std::fmt::Display for BodyMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyMatch::Contains(s) => write!(f, "{s:?}"),
            BodyMatch::Regex(r) => write!(f, "/{}/", r.as_str()),
        }
    }
}

/// At most this much of a body is read, to match and to quote.
const BODY_LIMIT: usize = 64 * 1024;

impl Config {
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        Self::parse(&env).map_err(|e| vec![e.0])
    }

    fn parse(env: &impl Fn(&str) -> Option<String>) -> Result<Self, Problem> {
        let url = env("CHECK_URL").unwrap_or_default();
        if url.trim().is_empty() {
            return Err("CHECK_URL is not set: the URL to request".into());
        }
        let parsed =
            url::Url::parse(url.trim()).map_err(|e| Problem(format!("CHECK_URL={url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Problem(format!(
                "CHECK_URL={url:?}: only http and https URLs"
            )));
        }
        let count = number(env, "COUNT", 1u32)?;
        if count == 0 {
            return Err(
                "COUNT=0 makes no request, so it could prove nothing: set 1 or more".into(),
            );
        }
        let passing_percent = number(env, "PASSING_PERCENT", 100u32)?;
        if passing_percent == 0 || passing_percent > 100 {
            return Err(Problem(format!(
                "PASSING_PERCENT={passing_percent} is not a percentage from 1 to 100"
            )));
        }
        let method = env("REQUEST_TYPE")
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| "GET".into());
        let method = reqwest::Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| Problem(format!("REQUEST_TYPE={method:?} is not an HTTP method")))?;
        let status = number(env, "EXPECTED_STATUS_CODE", 200u16)?;
        if !(100..=599).contains(&status) {
            return Err(Problem(format!(
                "EXPECTED_STATUS_CODE={status} is not an HTTP status"
            )));
        }
        let expect_body = match env("EXPECTED_BODY").filter(|b| !b.is_empty()) {
            None => None,
            Some(b) if b.len() > 2 && b.starts_with('/') && b.ends_with('/') => Some(
                regex::Regex::new(&b[1..b.len() - 1])
                    .map(BodyMatch::Regex)
                    .map_err(|e| {
                        Problem(format!("EXPECTED_BODY={b:?} is not a valid regex: {e}"))
                    })?,
            ),
            Some(b) => Some(BodyMatch::Contains(b)),
        };
        Ok(Config {
            url: url.trim().to_string(),
            count,
            pause: Duration::from_secs(number(env, "SECONDS", 0u64)?),
            passing_percent,
            method,
            body: env("REQUEST_BODY").unwrap_or_else(|| "{}".into()),
            status,
            expect_body,
        })
    }

    /// Makes the requests within `budget` and judges them.
    pub async fn run(&self, budget: Duration) -> Result<(), Vec<String>> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| vec![format!("an HTTP client: {e}")])?;
        let end = Instant::now() + budget;
        let mut failures: Vec<String> = Vec::new();
        let mut passed = 0u32;
        for i in 0..self.count {
            if i > 0 && !self.pause.is_zero() {
                tokio::time::sleep_until((Instant::now() + self.pause).min(end)).await;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                failures.push(format!(
                    "ran out of time after {i} of {} requests",
                    self.count
                ));
                break;
            }
            match self.one(&client, left).await {
                Ok(()) => passed += 1,
                Err(e) => failures.push(e.0),
            }
        }
        // Requests not made (out of time) count as failed.
        if passed * 100 >= self.passing_percent * self.count {
            return Ok(());
        }
        let mut errors = vec![format!(
            "{} {}: {passed} of {} requests passed, {}% needed",
            self.method, self.url, self.count, self.passing_percent
        )];
        // The distinct reasons, in order, each once.
        let mut seen = std::collections::BTreeSet::new();
        errors.extend(
            failures
                .into_iter()
                .filter(|f| seen.insert(f.clone()))
                .take(5),
        );
        Err(errors)
    }

    async fn one(&self, client: &reqwest::Client, left: Duration) -> Result<(), Problem> {
        let mut req = client
            .request(self.method.clone(), &self.url)
            .timeout(left.min(Duration::from_secs(30)));
        if self.method != reqwest::Method::GET && self.method != reqwest::Method::HEAD {
            req = req
                .header("content-type", "application/json")
                .body(self.body.clone());
        }
        let mut resp = req.send().await.map_err(|e| Problem(describe(&e)))?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= BODY_LIMIT {
                break;
            }
        }
        if status != self.status {
            return Err(Problem(format!(
                "status {status}, expected {}",
                self.status
            )));
        }
        if let Some(want) = &self.expect_body {
            let text = String::from_utf8_lossy(&body);
            if !want.matches(&text) {
                let quote: String = text.chars().take(100).collect();
                return Err(Problem(format!("body does not match {want}: {quote:?}")));
            }
        }
        Ok(())
    }
}

/// A request error with its causes, without reqwest's URL repetition.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_env as env;

    fn err(pairs: &[(&str, &str)]) -> String {
        Config::from_env(env(pairs)).unwrap_err().join("; ")
    }

    #[test]
    fn settings_keep_kuberhealthys_names_and_defaults_and_name_what_is_wrong() {
        let c = Config::from_env(env(&[("CHECK_URL", "http://svc/healthz")])).unwrap();
        assert_eq!(
            (c.count, c.pause, c.passing_percent, c.status),
            (1, Duration::ZERO, 100, 200)
        );
        assert_eq!((c.method.as_str(), c.body.as_str()), ("GET", "{}"));
        let c = Config::from_env(env(&[
            ("CHECK_URL", "https://svc/api"),
            ("COUNT", "5"),
            ("SECONDS", "1"),
            ("PASSING_PERCENT", "80"),
            ("REQUEST_TYPE", "post"),
            ("REQUEST_BODY", r#"{"a":1}"#),
            ("EXPECTED_STATUS_CODE", "201"),
            ("EXPECTED_BODY", "/\"id\":\\s*\\d+/"),
        ]))
        .unwrap();
        assert_eq!((c.count, c.passing_percent, c.status), (5, 80, 201));
        assert_eq!(c.method, reqwest::Method::POST);
        assert!(matches!(c.expect_body, Some(BodyMatch::Regex(_))));

        assert!(err(&[]).contains("CHECK_URL is not set"));
        assert!(err(&[("CHECK_URL", "ftp://x")]).contains("only http and https"));
        assert!(err(&[("CHECK_URL", "http://x"), ("COUNT", "0")]).starts_with("COUNT=0"));
        assert!(err(&[("CHECK_URL", "http://x"), ("COUNT", "many")]).contains("COUNT=\"many\""));
        assert!(err(&[("CHECK_URL", "http://x"), ("PASSING_PERCENT", "0")])
            .contains("PASSING_PERCENT=0"));
        assert!(
            err(&[("CHECK_URL", "http://x"), ("EXPECTED_BODY", "/(/")]).contains("EXPECTED_BODY")
        );
    }

    /// A server on loopback answering the statuses in `codes` in turn, body `body`.
    async fn server(codes: Vec<u16>, body: &'static str) -> String {
        let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let app = axum::Router::new().fallback(move || {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let code = codes[i.min(codes.len() - 1)];
            async move { (axum::http::StatusCode::from_u16(code).unwrap(), body) }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        url
    }

    async fn verdict(url: &str, extra: &[(&str, &str)]) -> Result<(), Vec<String>> {
        let mut pairs = vec![("CHECK_URL", url)];
        pairs.extend_from_slice(extra);
        Config::from_env(env(&pairs))
            .unwrap()
            .run(Duration::from_secs(10))
            .await
    }

    #[tokio::test]
    async fn requests_pass_by_status_body_and_share() {
        let url = server(vec![200], "{\"id\": 7}").await;
        assert_eq!(verdict(&url, &[]).await, Ok(()));
        assert_eq!(
            verdict(&url, &[("EXPECTED_BODY", "/\"id\":\\s*\\d+/")]).await,
            Ok(())
        );
        let e = verdict(&url, &[("EXPECTED_BODY", "ready")])
            .await
            .unwrap_err();
        assert!(e[1].starts_with("body does not match \"ready\""), "{e:?}");

        // 4 of 5 pass: enough at 80%, not at 100%.
        let url = server(vec![500, 200], "ok").await;
        assert_eq!(
            verdict(&url, &[("COUNT", "5"), ("PASSING_PERCENT", "80")]).await,
            Ok(())
        );
        let url = server(vec![500, 200], "ok").await;
        let e = verdict(&url, &[("COUNT", "5")]).await.unwrap_err();
        assert_eq!(
            e,
            vec![
                format!("GET {url}: 4 of 5 requests passed, 100% needed"),
                "status 500, expected 200".to_string()
            ]
        );
    }

    #[tokio::test]
    async fn an_unreachable_url_and_running_out_of_time_fail_with_the_reason() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/", l.local_addr().unwrap())
        };
        let e = verdict(&closed, &[]).await.unwrap_err();
        assert!(e[1].starts_with("could not connect"), "{e:?}");
        let url = server(vec![200], "ok").await;
        let c = Config::from_env(env(&[
            ("CHECK_URL", &url),
            ("COUNT", "3"),
            ("SECONDS", "60"),
        ]))
        .unwrap();
        let e = c.run(Duration::from_millis(300)).await.unwrap_err();
        assert!(e[0].contains("1 of 3 requests passed"), "{e:?}");
        assert_eq!(e[1], "ran out of time after 1 of 3 requests");
    }
}
