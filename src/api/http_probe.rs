//! `httpGet`: kubelet's HTTP probe fields, and what probity adds: method, body, expected
//! statuses, redirects, and assertions on the body, headers, response time and certificate.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::probe::{host_problem, port_problem};
use super::validate::Problem;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetProbe {
    /// Shorthand for scheme, host, port and path together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// HTTP (default) or HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_headers: Option<Vec<HttpHeader>>,
    /// GET (default), HEAD, POST, PUT, PATCH, DELETE or OPTIONS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The request's body (not with HEAD); set its Content-Type in httpHeaders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Statuses that count as success instead of 200-399: codes (`204`), classes (`"2xx"`)
    /// or ranges (`"200-299"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<Vec<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>>,
    /// `sameHost` (default, as kubelet: followed on the same host, a redirect elsewhere is a
    /// success), `follow` (any host, 10 at most) or `none` (the redirect is the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirects: Option<String>,
    /// The body (first 10 KiB) must contain this text, or match it as a regex when written `/re/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
    /// Verify the server's certificate chain and name (HTTPS). Default: on for `url`, off
    /// for kubelet's host/port/scheme fields (as kubelet, which never verifies).
    #[serde(default, rename = "verifyTLS", skip_serializing_if = "Option::is_none")]
    pub verify_tls: Option<bool>,
    /// PEM file of CA certificates to verify against (implies verifyTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// What the response must satisfy besides its status; each miss is named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assertions: Vec<HttpAssertion>,
}

impl HttpGetProbe {
    /// Whether the certificate is verified: asked, a CA file given, or the `url` form.
    pub fn verifies_tls(&self) -> bool {
        self.ca_file.is_some() || self.verify_tls.unwrap_or(self.url.is_some())
    }
}

/// One assertion on the response: a subject (exactly one of `jsonPath`, `header`, `body`,
/// `responseTimeUnder`, `certificateValidFor`) and, for `jsonPath` and `header`, comparisons
/// (all must hold; none: the value must exist).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpAssertion {
    /// The values at this JSONPath (RFC 9535) in the JSON body (first 1 MiB): each must
    /// compare, and there must be one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// The response header of this name (any case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The body (first 1 MiB) contains this text, or matches it as a regex written `/.../`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The whole exchange (connect to the last byte) takes less than this (`300ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_time_under: Option<String>,
    /// The server's certificate stays valid at least this long (`14d`); HTTPS only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_valid_for: Option<String>,
    /// The value is this (text, or a number compared as one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    /// The value's text contains this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// The value's text matches this regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// The value is a number below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub less_than: Option<f64>,
    /// The value is a number above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greater_than: Option<f64>,
    /// `critical` (default): a miss fails the run; `warning`: a miss only degrades it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

pub const SEVERITIES: [&str; 2] = ["critical", "warning"];

impl HttpAssertion {
    /// A miss degrades rather than fails.
    pub fn is_warning(&self) -> bool {
        self.severity.as_deref() == Some("warning")
    }

    fn subjects(&self) -> Vec<&'static str> {
        [
            ("jsonPath", self.json_path.is_some()),
            ("header", self.header.is_some()),
            ("body", self.body.is_some()),
            ("responseTimeUnder", self.response_time_under.is_some()),
            ("certificateValidFor", self.certificate_valid_for.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect()
    }

    fn comparisons(&self) -> Vec<&'static str> {
        [
            ("equals", self.equals.is_some()),
            ("contains", self.contains.is_some()),
            ("matches", self.matches.is_some()),
            ("lessThan", self.less_than.is_some()),
            ("greaterThan", self.greater_than.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect()
    }

    fn problems(&self, f: &str, https: Option<bool>) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut say = |field: &str, message: String| {
            out.push(Problem {
                field: format!("{f}{field}"),
                message,
            })
        };
        let subjects = self.subjects();
        match subjects.len() {
            0 => say(
                "",
                "names no subject: give jsonPath, header, body, responseTimeUnder or certificateValidFor".into(),
            ),
            1 => {}
            _ => say("", format!("names {} subjects: give one", subjects.join(" and "))),
        }
        let compared = self.comparisons();
        if !compared.is_empty() && self.json_path.is_none() && self.header.is_none() {
            say(
                &format!(".{}", compared[0]),
                "compares the value of jsonPath or header; this assertion has neither".into(),
            );
        }
        if let Some(path) = &self.json_path {
            if let Err(e) = jsonpath_rust::parser::parse_json_path(path) {
                let why = e.to_string();
                say(
                    ".jsonPath",
                    format!(
                        "{path:?} is not a JSONPath: {}",
                        why.lines().next().unwrap_or("")
                    ),
                );
            }
        }
        if let Some(h) = &self.header {
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                say(".header", format!("{h:?} is not a header name"));
            }
        }
        for (field, re) in [
            (".matches", self.matches.as_deref()),
            (".body", self.body.as_deref().and_then(slashed)),
        ] {
            if let Some(re) = re {
                if let Err(e) = regex::Regex::new(re) {
                    let why = e.to_string();
                    say(
                        field,
                        format!(
                            "/{re}/ is not a valid regex: {}",
                            why.lines().last().unwrap_or("")
                        ),
                    );
                }
            }
        }
        for (field, d) in [
            (".responseTimeUnder", &self.response_time_under),
            (".certificateValidFor", &self.certificate_valid_for),
        ] {
            if let Some(Err(e)) = d.as_deref().map(super::duration::parse) {
                say(field, e.to_string());
            }
        }
        if self.certificate_valid_for.is_some() && https == Some(false) {
            say(
                ".certificateValidFor",
                "needs an https URL (or scheme: HTTPS)".into(),
            );
        }
        for (field, n) in [
            (".lessThan", self.less_than),
            (".greaterThan", self.greater_than),
        ] {
            if n.is_some_and(|n| !n.is_finite()) {
                say(field, "must be a finite number".into());
            }
        }
        if let Some(s) = &self.severity {
            if !SEVERITIES.contains(&s.as_str()) {
                say(".severity", format!("{s:?} must be critical or warning"));
            }
        }
        out
    }
}

/// The pattern of a text written `/.../`, if it is one.
pub fn slashed(s: &str) -> Option<&str> {
    (s.len() >= 2 && s.starts_with('/') && s.ends_with('/')).then(|| &s[1..s.len() - 1])
}

pub const HTTP_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
pub const REDIRECT_POLICIES: [&str; 3] = ["sameHost", "follow", "none"];

/// One entry of `expectStatus`: the statuses it accepts, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange(pub u16, pub u16);

impl StatusRange {
    pub fn parse(
        v: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
    ) -> Result<Self, String> {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let code = |n: i64| -> Result<u16, String> {
            if (100..=599).contains(&n) {
                Ok(n as u16)
            } else {
                Err(format!("{n} is not an HTTP status (100-599)"))
            }
        };
        match v {
            IntOrString::Int(n) => code(i64::from(*n)).map(|c| StatusRange(c, c)),
            IntOrString::String(s) => {
                let t = s.trim();
                let bad = || {
                    format!(
                        "{s:?} must be a status (204), a class (\"2xx\") or a range (\"200-299\")"
                    )
                };
                if let Some(class) = t.strip_suffix("xx").or_else(|| t.strip_suffix("XX")) {
                    let c: i64 = class.parse().map_err(|_| bad())?;
                    let lo = code(c * 100)?;
                    return Ok(StatusRange(lo, lo + 99));
                }
                if let Some((a, b)) = t.split_once('-') {
                    let (a, b): (i64, i64) = (
                        a.trim().parse().map_err(|_| bad())?,
                        b.trim().parse().map_err(|_| bad())?,
                    );
                    let (lo, hi) = (code(a)?, code(b)?);
                    if lo > hi {
                        return Err(format!("{s:?}: the range ends before it starts"));
                    }
                    return Ok(StatusRange(lo, hi));
                }
                let n: i64 = t.parse().map_err(|_| bad())?;
                code(n).map(|c| StatusRange(c, c))
            }
        }
    }

    pub fn contains(&self, status: u16) -> bool {
        (self.0..=self.1).contains(&status)
    }
}

impl std::fmt::Display for StatusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0, self.1) {
            (a, b) if a == b => write!(f, "{a}"),
            (a, b) if a % 100 == 0 && b == a + 99 => write!(f, "{}xx", a / 100),
            (a, b) => write!(f, "{a}-{b}"),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HttpHeader {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

impl HttpGetProbe {
    pub(super) fn problems(&self) -> Vec<Problem> {
        let h = self;
        let f = "spec.probe.httpGet";
        let mut out = Vec::new();
        if let Some(u) = &h.url {
            if h.host.is_some() || h.port.is_some() || h.path.is_some() || h.scheme.is_some() {
                out.push(Problem {
                    field: format!("{f}.url"),
                    message: "set either url or host/port/path/scheme, not both".into(),
                });
            }
            match url::Url::parse(u) {
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {}
                Ok(_) => out.push(Problem {
                    field: format!("{f}.url"),
                    message: format!("{u:?} must be an http:// or https:// URL with a host"),
                }),
                Err(e) => out.push(Problem {
                    field: format!("{f}.url"),
                    message: format!("{u:?} is not a URL: {e}"),
                }),
            }
        } else {
            out.extend(host_problem(&format!("{f}.host"), &h.host));
            match h.port {
                None => out.push(Problem {
                    field: format!("{f}.port"),
                    message: "is required (or give url)".into(),
                }),
                Some(p) => out.extend(port_problem(&format!("{f}.port"), p)),
            }
            if let Some(s) = &h.scheme {
                if !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https") {
                    out.push(Problem {
                        field: format!("{f}.scheme"),
                        message: format!("{s:?} must be HTTP or HTTPS"),
                    });
                }
            }
            if let Some(p) = &h.path {
                if !p.is_empty() && !p.starts_with('/') {
                    out.push(Problem {
                        field: format!("{f}.path"),
                        message: format!("{p:?} must start with /"),
                    });
                }
            }
        }
        if let Some(want) = &h.expect_body {
            if want.len() >= 2 && want.starts_with('/') && want.ends_with('/') {
                if let Err(e) = regex::Regex::new(&want[1..want.len() - 1]) {
                    out.push(Problem {
                        field: format!("{f}.expectBody"),
                        message: format!(
                            "{want:?} is not a valid regex: {}",
                            e.to_string().lines().last().unwrap_or("")
                        ),
                    });
                }
            }
        }
        for (i, want) in h.expect_status.iter().flatten().enumerate() {
            if let Err(why) = StatusRange::parse(want) {
                out.push(Problem {
                    field: format!("{f}.expectStatus[{i}]"),
                    message: why,
                });
            }
        }
        let https = match (&h.url, &h.scheme) {
            (Some(u), _) => url::Url::parse(u).ok().map(|u| u.scheme() == "https"),
            (None, Some(s)) => Some(s.eq_ignore_ascii_case("https")),
            (None, None) => Some(false),
        };
        for (i, a) in h.assertions.iter().enumerate() {
            out.extend(a.problems(&format!("{f}.assertions[{i}]"), https));
        }
        let method = h.method.as_deref().unwrap_or("GET");
        if !HTTP_METHODS.contains(&method) {
            out.push(Problem {
                field: format!("{f}.method"),
                message: format!("{method:?} must be one of {}", HTTP_METHODS.join(", ")),
            });
        }
        if method == "HEAD" && h.body.is_some() {
            out.push(Problem {
                field: format!("{f}.body"),
                message: "a HEAD request has no body".into(),
            });
        }
        if let Some(r) = &h.redirects {
            if !REDIRECT_POLICIES.contains(&r.as_str()) {
                out.push(Problem {
                    field: format!("{f}.redirects"),
                    message: format!("{r:?} must be one of {}", REDIRECT_POLICIES.join(", ")),
                });
            }
        }
        for (i, hdr) in h.http_headers.iter().flatten().enumerate() {
            if hdr.name.is_empty() || !hdr.name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                out.push(Problem {
                    field: format!("{f}.httpHeaders[{i}].name"),
                    message: format!("{:?} is not a valid header name", hdr.name),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::probe::{Autoscaler, Probe};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn expected_statuses_are_codes_classes_or_ranges() {
        let parse = |v: IntOrString| StatusRange::parse(&v);
        assert_eq!(parse(IntOrString::Int(204)), Ok(StatusRange(204, 204)));
        assert_eq!(
            parse(IntOrString::String("2xx".into())),
            Ok(StatusRange(200, 299))
        );
        assert_eq!(
            parse(IntOrString::String("500-503".into())),
            Ok(StatusRange(500, 503))
        );
        assert_eq!(
            parse(IntOrString::String("418".into())),
            Ok(StatusRange(418, 418))
        );
        assert_eq!(
            parse(IntOrString::Int(99)).unwrap_err(),
            "99 is not an HTTP status (100-599)"
        );
        assert!(parse(IntOrString::String("9xx".into()))
            .unwrap_err()
            .contains("900 is not an HTTP status"));
        assert!(parse(IntOrString::String("503-500".into()))
            .unwrap_err()
            .contains("ends before it starts"));
        assert!(parse(IntOrString::String("ok".into()))
            .unwrap_err()
            .contains("must be a status (204), a class (\"2xx\") or a range (\"200-299\")"));
        let shown: Vec<String> = [
            StatusRange(201, 201),
            StatusRange(300, 399),
            StatusRange(500, 503),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(shown, ["201", "3xx", "500-503"]);
    }

    #[test]
    fn method_body_and_redirects_are_checked() {
        let probe: Probe = serde_saphyr::from_str(
            "{httpGet: {url: 'http://h/', method: FETCH, body: x, redirects: always, expectStatus: [200, '6xx']}}",
        )
        .unwrap();
        let said: Vec<String> = probe
            .problems(&Autoscaler::default())
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        assert_eq!(
            said,
            [
                "spec.probe.httpGet.expectStatus[1]: 600 is not an HTTP status (100-599)",
                "spec.probe.httpGet.method: \"FETCH\" must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
                "spec.probe.httpGet.redirects: \"always\" must be one of sameHost, follow, none",
            ]
        );
        let head: Probe =
            serde_saphyr::from_str("{httpGet: {url: 'http://h/', method: HEAD, body: x}}").unwrap();
        assert_eq!(
            head.problems(&Autoscaler::default())[0].message,
            "a HEAD request has no body"
        );
    }

    #[test]
    fn assertions_are_checked_naming_the_field() {
        let probe: Probe = serde_saphyr::from_str(
            r#"
httpGet:
  url: http://h/
  assertions:
    - {equals: UP}
    - {jsonPath: $.a, header: X}
    - {jsonPath: '$[', equals: 1}
    - {body: x, contains: y}
    - {header: 'a b'}
    - {jsonPath: $.a, matches: '('}
    - {responseTimeUnder: soon}
    - {certificateValidFor: 14d, severity: major}
"#,
        )
        .unwrap();
        let said: Vec<String> = probe
            .problems(&Autoscaler::default())
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        let f = "spec.probe.httpGet.assertions";
        let want = [
            format!("{f}[0]: names no subject: give jsonPath, header, body, responseTimeUnder or certificateValidFor"),
            format!("{f}[0].equals: compares the value of jsonPath or header; this assertion has neither"),
            format!("{f}[1]: names jsonPath and header subjects: give one"),
            format!("{f}[2].jsonPath: \"$[\" is not a JSONPath"),
            format!("{f}[3].contains: compares the value of jsonPath or header; this assertion has neither"),
            format!("{f}[4].header: \"a b\" is not a header name"),
            format!("{f}[5].matches: /(/ is not a valid regex"),
            format!("{f}[6].responseTimeUnder: \"soon\""),
            format!("{f}[7].certificateValidFor: needs an https URL (or scheme: HTTPS)"),
            format!("{f}[7].severity: \"major\" must be critical or warning"),
        ];
        assert_eq!(said.len(), want.len(), "{said:#?}");
        for (got, want) in said.iter().zip(&want) {
            assert!(got.starts_with(want.as_str()), "{got}\n  expected {want}");
        }
    }
}
