//! Built-in probes, with Kubernetes' field names so a kubelet probe can be copied in.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::http_probe::{HttpGetProbe, HttpHeader, StatusRange};
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
    /// `critical` (default) or `warning`: a failure the probe finds only degrades the check
    /// (it stays OK); a timeout still fails it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
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

pub(super) fn port_problem(field: &str, port: i32) -> Option<Problem> {
    (!(1..=65535).contains(&port)).then(|| Problem {
        field: field.to_string(),
        message: format!("{port} is not a port (1-65535)"),
    })
}

pub(super) fn host_problem(field: &str, host: &Option<String>) -> Option<Problem> {
    match host.as_deref() {
        None | Some("") => Some(Problem {
            field: field.to_string(),
            message: "is required (a built-in probe has no pod IP to default to)".into(),
        }),
        _ => None,
    }
}

impl Probe {
    /// A failure it finds degrades rather than fails.
    pub fn is_warning(&self) -> bool {
        self.severity.as_deref() == Some("warning")
    }

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
            out.extend(h.problems());
        }
        if let Some(s) = &self.severity {
            if !super::http_probe::SEVERITIES.contains(&s.as_str()) {
                out.push(Problem {
                    field: "spec.probe.severity".into(),
                    message: format!("{s:?} must be critical or warning"),
                });
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
