//! `probity check dns`: names resolve, through the pod's resolver configuration (its
//! nameservers, search domains and ndots, as a pod's own lookups go) or against every endpoint
//! of the cluster DNS Service directly, so one bad replica behind the Service is found. The
//! queries are made here (UDP, A then AAAA) rather than through the C library, so a failure can
//! name the server that answered and what it said.
//!
//! Kuberhealthy's `dns-resolution-check` settings: `HOSTNAME` (the names, comma-separated:
//! Kubernetes sets `HOSTNAME` to the pod's own name when the manifest does not, so that value
//! means unset, and `kubernetes.default` is resolved), `DNS_POD_SELECTOR` and `NAMESPACE`
//! (kube-system): when a selector is given, the endpoints of the Services in `NAMESPACE` with
//! those labels (the kube-dns Service carries its pods' `k8s-app=kube-dns`) are each asked.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use kube::api::{Api, ListParams};
use tokio::time::Instant;

use super::workload::api_error;
use crate::checks::Problem;
use crate::probe::dns::{encode_name, query, rcode_name, QTYPE_A, QTYPE_AAAA};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub names: Vec<String>,
    /// `DNS_POD_SELECTOR`: ask each endpoint of the matching Services.
    pub selector: Option<String>,
    /// `NAMESPACE` (kube-system): where those Services are.
    pub namespace: String,
    /// How long one server gets to answer one query.
    pub query_timeout: Duration,
}

/// What /etc/resolv.conf says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resolver {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
    pub ndots: usize,
}

impl Resolver {
    pub fn parse(text: &str) -> Self {
        let mut r = Resolver {
            ndots: 1,
            ..Resolver::default()
        };
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                        r.nameservers.push(SocketAddr::new(ip, 53));
                    }
                }
                Some("search") | Some("domain") => {
                    r.search = words.map(|w| w.trim_end_matches('.').to_string()).collect()
                }
                Some("options") => {
                    for w in words {
                        if let Some(n) = w.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                            r.ndots = n;
                        }
                    }
                }
                _ => {}
            }
        }
        r
    }

    /// The names a lookup of `name` tries, in order (what glibc's resolver does).
    pub fn candidates(&self, name: &str) -> Vec<String> {
        if let Some(abs) = name.strip_suffix('.') {
            return vec![abs.to_string()];
        }
        let searched = self.search.iter().map(|d| format!("{name}.{d}"));
        if name.matches('.').count() >= self.ndots {
            std::iter::once(name.to_string()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(name.to_string())).collect()
        }
    }
}

impl Config {
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let own = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        Self::parse(&env, own.trim()).map_err(|e| vec![e.0])
    }

    fn parse(env: &impl Fn(&str) -> Option<String>, own_hostname: &str) -> Result<Self, Problem> {
        let given = env("HOSTNAME").filter(|h| h.trim() != own_hostname || own_hostname.is_empty());
        let names: Vec<String> = given
            .unwrap_or_else(|| "kubernetes.default".into())
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Err("HOSTNAME names nothing to resolve".into());
        }
        for n in &names {
            if encode_name(n.trim_end_matches('.')).is_none() {
                return Err(Problem(format!("HOSTNAME: {n:?} is not a DNS name")));
            }
        }
        let selector = env("DNS_POD_SELECTOR")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Ok(Config {
            names,
            selector,
            namespace: env("NAMESPACE")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "kube-system".into()),
            query_timeout: Duration::from_secs(2),
        })
    }

    pub async fn run(&self, budget: Duration) -> Result<(), Vec<String>> {
        let until = Instant::now() + budget;
        let conf = std::fs::read_to_string("/etc/resolv.conf")
            .map_err(|e| vec![format!("reading /etc/resolv.conf: {e}")])?;
        let resolver = Resolver::parse(&conf);
        let mut errors = Vec::new();
        match &self.selector {
            None => {
                if resolver.nameservers.is_empty() {
                    return Err(vec!["/etc/resolv.conf names no nameserver".into()]);
                }
                for name in &self.names {
                    if let Err(e) = self.resolve_any(&resolver, name, until).await {
                        errors.push(e.0);
                    }
                }
            }
            Some(sel) => {
                let servers = self.endpoints(sel).await?;
                for server in &servers {
                    for name in &self.names {
                        if let Err(e) = self.resolve_at(&resolver, name, *server, until).await {
                            errors.push(format!("{e} (an endpoint of {}/{sel})", self.namespace));
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The addresses of the endpoints of the Services matching `selector` (their DNS port, 53
    /// when none is named).
    async fn endpoints(&self, selector: &str) -> Result<Vec<SocketAddr>, Vec<String>> {
        let client = super::kube_client("dns").await?;
        let list = Api::<Endpoints>::namespaced(client, &self.namespace)
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| {
                vec![format!(
                    "listing endpoints in {} with {selector}: {}",
                    self.namespace,
                    api_error(&e)
                )]
            })?;
        let servers = dns_endpoints(&list.items);
        if servers.is_empty() {
            return Err(vec![format!(
                "no ready DNS endpoint in namespace {} for services with {selector}",
                self.namespace
            )]);
        }
        Ok(servers)
    }

    /// Passes when one of the resolver's servers answers with an address (a server that says
    /// NXDOMAIN is believed; one that does not answer is skipped, as the C library does).
    async fn resolve_any(&self, r: &Resolver, name: &str, until: Instant) -> Result<(), Problem> {
        let mut why = Vec::new();
        for server in &r.nameservers {
            match self.resolve_at(r, name, *server, until).await {
                Ok(()) => return Ok(()),
                Err(e) if e.0.contains("NXDOMAIN") => return Err(e),
                Err(e) => why.push(e.0),
            }
        }
        Err(Problem(why.join("; ")))
    }

    /// Resolves `name` at `server`, trying the search domains as the resolver would.
    async fn resolve_at(
        &self,
        r: &Resolver,
        name: &str,
        server: SocketAddr,
        until: Instant,
    ) -> Result<(), Problem> {
        let tried = r.candidates(name);
        // What the server said for each name tried, when none had an address.
        let mut said: Vec<String> = Vec::new();
        for candidate in &tried {
            let mut answer = String::new();
            for qtype in [QTYPE_A, QTYPE_AAAA] {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Problem(format!(
                        "{name}: the run's time ran out before {server} answered"
                    )));
                }
                let answer_now = query(server, candidate, qtype, self.query_timeout.min(left))
                    .await
                    .map(|a| (a.rcode, a.addresses()));
                match answer_now {
                    Ok((0, addresses)) if !addresses.is_empty() => {
                        let shown: Vec<String> =
                            addresses.iter().map(ToString::to_string).collect();
                        tracing::info!("{name}: {} from {server} as {candidate}", shown.join(", "));
                        return Ok(());
                    }
                    Ok((0, _)) => answer = "no address (NOERROR, empty answer)".into(),
                    // No such name, or the server will not say (SERVFAIL, REFUSED): the next
                    // name of the search list, as the C library goes on.
                    Ok((rcode, _)) => {
                        answer = rcode_name(rcode);
                        break;
                    }
                    Err(e) => return Err(Problem(format!("{name}: {e} from {server}"))),
                }
            }
            said.push(answer);
        }
        if said.iter().all(|a| *a == said[0]) {
            return Err(Problem(format!(
                "{name}: {} from {server} (tried {})",
                said[0],
                tried.join(", ")
            )));
        }
        let each: Vec<String> = tried
            .iter()
            .zip(&said)
            .map(|(t, a)| format!("{t}: {a}"))
            .collect();
        Err(Problem(format!(
            "{name}: no address from {server} (tried {})",
            each.join(", ")
        )))
    }
}

/// Each ready address of `endpoints` with the port named `dns` (UDP), else 53.
pub fn dns_endpoints(endpoints: &[Endpoints]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for e in endpoints {
        for subset in e.subsets.iter().flatten() {
            let port = subset
                .ports
                .iter()
                .flatten()
                .find(|p| p.protocol.as_deref().unwrap_or("TCP") == "UDP")
                .map(|p| p.port as u16)
                .unwrap_or(53);
            for a in subset.addresses.iter().flatten() {
                if let Ok(ip) = a.ip.parse::<IpAddr>() {
                    let s = SocketAddr::new(ip, port);
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_env as env;
    use tokio::net::UdpSocket;

    #[test]
    fn hostname_set_by_kubernetes_means_unset_and_names_are_checked() {
        let c = Config::parse(&env(&[("HOSTNAME", "dns-check-7f9")]), "dns-check-7f9").unwrap();
        assert_eq!(c.names, vec!["kubernetes.default"]);
        let c = Config::parse(&env(&[("HOSTNAME", "a.example, b.example.")]), "pod").unwrap();
        assert_eq!(c.names, vec!["a.example", "b.example."]);
        assert_eq!(c.namespace, "kube-system");
        assert_eq!(
            Config::parse(&env(&[("HOSTNAME", "a..b")]), "pod").unwrap_err(),
            "HOSTNAME: \"a..b\" is not a DNS name"
        );
    }

    #[test]
    fn search_domains_and_ndots_order_the_candidates_like_the_c_library() {
        let r = Resolver::parse(
            "search probity.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.0.0.10\noptions ndots:5\n",
        );
        assert_eq!(r.nameservers, vec!["10.0.0.10:53".parse().unwrap()]);
        assert_eq!(
            r.candidates("kubernetes.default"),
            vec![
                "kubernetes.default.probity.svc.cluster.local",
                "kubernetes.default.svc.cluster.local",
                "kubernetes.default.cluster.local",
                "kubernetes.default",
            ]
        );
        assert_eq!(r.candidates("example.com."), vec!["example.com"]);
        let r = Resolver::parse("search a.b\nnameserver ::1\n");
        assert_eq!(r.candidates("x.y"), vec!["x.y", "x.y.a.b"]);
    }

    #[test]
    fn endpoints_give_each_ready_address_at_the_udp_port() {
        let eps: Vec<Endpoints> = serde_json::from_value(serde_json::json!([{
            "metadata": {"name": "kube-dns"},
            "subsets": [{"addresses": [{"ip": "10.202.0.5"}, {"ip": "10.202.0.6"}],
                         "notReadyAddresses": [{"ip": "10.202.0.7"}],
                         "ports": [{"name": "dns-tcp", "port": 5353, "protocol": "TCP"},
                                   {"name": "dns", "port": 1053, "protocol": "UDP"}]}]
        }]))
        .unwrap();
        assert_eq!(
            dns_endpoints(&eps),
            vec![
                "10.202.0.5:1053".parse::<SocketAddr>().unwrap(),
                "10.202.0.6:1053".parse().unwrap()
            ]
        );
    }

    /// A real exchange over loopback with a server that answers one name and refuses others.
    #[tokio::test]
    async fn resolve_at_a_server_names_it_and_its_answer() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let (n, from) = server.recv_from(&mut buf).await.unwrap();
                let mut a = buf[..n].to_vec();
                a[2] |= 0x80;
                let known = a[12..].starts_with(b"\x04good\x07example\x00") && a[n - 3] == 1;
                if known {
                    a[7] = 1;
                    a.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 7]);
                } else if a[13 + a[12] as usize] == 0 {
                    // A name of one label: this server, like dnsmasq, will not answer it.
                    a[3] = 5;
                } else if !a[12..].starts_with(b"\x04good\x07example\x00") {
                    a[3] = 3;
                }
                server.send_to(&a, from).await.unwrap();
            }
        });
        let c = Config::parse(&env(&[("HOSTNAME", "x")]), "pod").unwrap();
        let r = Resolver {
            nameservers: vec![addr],
            search: vec!["example".into()],
            ndots: 1,
        };
        let until = Instant::now() + Duration::from_secs(10);
        c.resolve_at(&r, "good", addr, until).await.unwrap();
        assert_eq!(
            c.resolve_at(&r, "nope.sub", addr, until).await.unwrap_err(),
            format!("nope.sub: NXDOMAIN from {addr} (tried nope.sub, nope.sub.example)")
        );
        // Answers that differ are listed name by name, and a refusal does not end the search.
        assert_eq!(
            c.resolve_at(&r, "nope", addr, until).await.unwrap_err(),
            format!("nope: no address from {addr} (tried nope.example: NXDOMAIN, nope: REFUSED)")
        );
        // Nothing listens: refused at once, named.
        let closed = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let e = c.resolve_at(&r, "good", closed, until).await.unwrap_err();
        assert_eq!(
            e,
            format!("good: refused (nothing listens there) from {closed}")
        );
    }
}
