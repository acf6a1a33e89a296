//! Built-in probes, with Kubernetes' field names so a kubelet probe can be copied in.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::resource_probe::{Autoscaler, KnativeProbe, ResourceProbe};

/// Exactly one method must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcProbe>,
    /// Any resource's status conditions, read from the API server (no pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceProbe>,
    /// A Knative Service and its revision, read from the API server: idle is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knative: Option<KnativeProbe>,
    /// A DNS query: the answer's rcode and records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsProbe>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DnsProbe {
    /// The name asked for, as written (no search domains).
    pub name: String,
    /// A (default), AAAA, CNAME, MX, TXT or SRV.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// `IP` or `IP:port` (default: the first nameserver of /etc/resolv.conf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The expected rcode: NOERROR (default), NXDOMAIN, SERVFAIL, REFUSED, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    /// The expected records of the type asked for; without it, NOERROR needs at least one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<DnsAnswers>,
}

/// Records as text: `10.0.0.1`, `web.example.com`, `10 mail.example.com` (MX),
/// `10 5 8080 web.example.com` (SRV: priority, weight, port, target), a TXT's text.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DnsAnswers {
    /// Each of these is among the records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<Vec<String>>,
    /// The records are exactly these (in any order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Vec<String>>,
}

/// The record types a DNS probe asks for: (name, code).
pub const DNS_RECORD_TYPES: [(&str, u16); 6] = [
    ("A", 1),
    ("AAAA", 28),
    ("CNAME", 5),
    ("MX", 15),
    ("TXT", 16),
    ("SRV", 33),
];

/// DNS response codes by number.
pub const DNS_RCODES: [&str; 6] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
];

/// `10.0.0.1`, `10.0.0.1:5353`, `[::1]:53`: where a DNS probe sends its query.
pub fn dns_server_addr(s: &str) -> Option<std::net::SocketAddr> {
    s.parse::<std::net::SocketAddr>().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| std::net::SocketAddr::new(ip, 53))
    })
}

impl DnsProbe {
    /// The record type asked for, by name and code (A when unset or unknown: validation
    /// refuses unknown ones).
    pub fn record_type(&self) -> (&'static str, u16) {
        let want = self.type_.as_deref().unwrap_or("A");
        DNS_RECORD_TYPES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(want))
            .copied()
            .unwrap_or(DNS_RECORD_TYPES[0])
    }

    pub fn expected_rcode(&self) -> u8 {
        let want = self.rcode.as_deref().unwrap_or("NOERROR");
        DNS_RCODES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(want))
            .unwrap_or(0) as u8
    }

    fn problems(&self) -> Vec<Problem> {
        let f = "spec.probe.dns";
        let mut out = Vec::new();
        let name = self.name.trim_end_matches('.');
        let labels_ok = !name.is_empty()
            && name.len() <= 253
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.is_ascii());
        if !labels_ok {
            out.push(Problem {
                field: format!("{f}.name"),
                message: format!("{:?} is not a DNS name", self.name),
            });
        }
        if let Some(t) = &self.type_ {
            if !DNS_RECORD_TYPES
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(t))
            {
                out.push(Problem {
                    field: format!("{f}.type"),
                    message: format!("{t:?} must be one of A, AAAA, CNAME, MX, TXT, SRV"),
                });
            }
        }
        if let Some(s) = &self.server {
            if dns_server_addr(s).is_none() {
                out.push(Problem {
                    field: format!("{f}.server"),
                    message: format!("{s:?} must be an IP address, or IP:port"),
                });
            }
        }
        if let Some(r) = &self.rcode {
            if !DNS_RCODES.iter().any(|n| n.eq_ignore_ascii_case(r)) {
                out.push(Problem {
                    field: format!("{f}.rcode"),
                    message: format!("{r:?} must be one of {}", DNS_RCODES.join(", ")),
                });
            }
        }
        if let Some(a) = &self.answers {
            match (&a.contains, &a.equals) {
                (Some(_), Some(_)) => out.push(Problem {
                    field: format!("{f}.answers"),
                    message: "set either contains or equals, not both".into(),
                }),
                (None, None) => out.push(Problem {
                    field: format!("{f}.answers"),
                    message: "set contains or equals".into(),
                }),
                (Some(v), None) if v.is_empty() => out.push(Problem {
                    field: format!("{f}.answers.contains"),
                    message: "names no record".into(),
                }),
                _ => {}
            }
        }
        out
    }
}

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
    /// Verify the server certificate (HTTPS); off by default, as kubelet.
    #[serde(default, rename = "verifyTLS", skip_serializing_if = "Option::is_none")]
    pub verify_tls: Option<bool>,
    /// PEM file of CA certificates to verify against (implies verifyTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
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

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TcpSocketProbe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub port: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecProbe {
    pub command: Vec<String>,
    /// Kubernetes backend: run inside a pod matching these labels (in the check's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<BTreeMap<String, String>>,
    /// Kubernetes backend: the container to exec in (default: the pod's first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct GrpcProbe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub port: i32,
    /// The service name sent in the health request (empty: the server as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// The built-in probe methods: the one list metrics, messages and validation name them from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    HttpGet,
    TcpSocket,
    Exec,
    Grpc,
    Resource,
    Knative,
    Dns,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 7] = [
        ProbeKind::HttpGet,
        ProbeKind::TcpSocket,
        ProbeKind::Exec,
        ProbeKind::Grpc,
        ProbeKind::Resource,
        ProbeKind::Knative,
        ProbeKind::Dns,
    ];

    /// The field name, as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::HttpGet => "httpGet",
            ProbeKind::TcpSocket => "tcpSocket",
            ProbeKind::Exec => "exec",
            ProbeKind::Grpc => "grpc",
            ProbeKind::Resource => "resource",
            ProbeKind::Knative => "knative",
            ProbeKind::Dns => "dns",
        }
    }
}

impl Probe {
    /// The methods that are set, for "exactly one" checks and messages.
    pub fn kinds(&self) -> Vec<ProbeKind> {
        let set = [
            self.http_get.is_some(),
            self.tcp_socket.is_some(),
            self.exec.is_some(),
            self.grpc.is_some(),
            self.resource.is_some(),
            self.knative.is_some(),
            self.dns.is_some(),
        ];
        ProbeKind::ALL
            .into_iter()
            .zip(set)
            .filter_map(|(k, on)| on.then_some(k))
            .collect()
    }

    /// The method of a valid probe (exactly one set); read on every finished probe run, so
    /// it allocates nothing.
    pub fn kind(&self) -> Option<ProbeKind> {
        if self.http_get.is_some() {
            Some(ProbeKind::HttpGet)
        } else if self.tcp_socket.is_some() {
            Some(ProbeKind::TcpSocket)
        } else if self.exec.is_some() {
            Some(ProbeKind::Exec)
        } else if self.grpc.is_some() {
            Some(ProbeKind::Grpc)
        } else if self.resource.is_some() {
            Some(ProbeKind::Resource)
        } else if self.knative.is_some() {
            Some(ProbeKind::Knative)
        } else if self.dns.is_some() {
            Some(ProbeKind::Dns)
        } else {
            None
        }
    }
}

use super::validate::Problem;

fn port_problem(field: &str, port: i32) -> Option<Problem> {
    (!(1..=65535).contains(&port)).then(|| Problem {
        field: field.to_string(),
        message: format!("{port} is not a port (1-65535)"),
    })
}

fn host_problem(field: &str, host: &Option<String>) -> Option<Problem> {
    match host.as_deref() {
        None | Some("") => Some(Problem {
            field: field.to_string(),
            message: "is required (a built-in probe has no pod IP to default to)".into(),
        }),
        _ => None,
    }
}

impl Probe {
    /// How long a run may take when the check does not say: Kubernetes' probe timeout, or
    /// longer for probes that read the API server or wait for a cold start.
    pub fn default_timeout(&self) -> std::time::Duration {
        use super::resource_probe::{LATENCY_TIMEOUT, RESOURCE_TIMEOUT};
        match (&self.resource, &self.knative) {
            (_, Some(k)) if k.latency().is_some() => LATENCY_TIMEOUT,
            (Some(_), _) | (_, Some(_)) => RESOURCE_TIMEOUT,
            _ => super::validate::PROBE_TIMEOUT,
        }
    }

    /// Problems with the one method that is set (the caller checks that exactly one is);
    /// `knative` is the autoscaler a cold start's frequency is checked against.
    pub fn problems(&self, knative: &Autoscaler) -> Vec<Problem> {
        let mut out = Vec::new();
        if let Some(h) = &self.http_get {
            let f = "spec.probe.httpGet";
            if let Some(u) = &h.url {
                if h.host.is_some() || h.port.is_some() || h.path.is_some() || h.scheme.is_some() {
                    out.push(Problem {
                        field: format!("{f}.url"),
                        message: "set either url or host/port/path/scheme, not both".into(),
                    });
                }
                match url::Url::parse(u) {
                    Ok(parsed)
                        if matches!(parsed.scheme(), "http" | "https")
                            && parsed.host().is_some() => {}
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
                if hdr.name.is_empty()
                    || !hdr.name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                {
                    out.push(Problem {
                        field: format!("{f}.httpHeaders[{i}].name"),
                        message: format!("{:?} is not a valid header name", hdr.name),
                    });
                }
            }
        }
        if let Some(t) = &self.tcp_socket {
            out.extend(host_problem("spec.probe.tcpSocket.host", &t.host));
            out.extend(port_problem("spec.probe.tcpSocket.port", t.port));
        }
        if let Some(e) = &self.exec {
            if e.command.is_empty() || e.command[0].is_empty() {
                out.push(Problem {
                    field: "spec.probe.exec.command".into(),
                    message: "needs at least the program to run".into(),
                });
            }
        }
        if let Some(g) = &self.grpc {
            out.extend(host_problem("spec.probe.grpc.host", &g.host));
            out.extend(port_problem("spec.probe.grpc.port", g.port));
        }
        if let Some(r) = &self.resource {
            out.extend(r.problems());
        }
        if let Some(k) = &self.knative {
            out.extend(k.problems(knative));
        }
        if let Some(d) = &self.dns {
            out.extend(d.problems());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
