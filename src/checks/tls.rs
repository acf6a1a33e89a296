//! `probity check tls`: a TLS endpoint's certificates are not about to expire, and (unless told
//! not to) its handshake verifies against a CA bundle. Every certificate the server presents is
//! judged, and every certificate of a custom `CA_BUNDLE` (the internal root the chain ends in),
//! not only the leaf. Settings of Kuberhealthy's `ssl-expiry-check` and `ssl-handshake-check`:
//! `DOMAIN_NAME`, `PORT` (443), `DAYS` (60), `INSECURE` (false: expiry only, no verification),
//! `SELF_SIGNED` (true: the bundle is /etc/ssl/selfsign/certificate.crt, as there), and
//! `CA_BUNDLE` (a PEM file; the Mozilla roots built into probity when unset).

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use rustls::pki_types::{CertificateDer, ServerName};

use super::{flag, number};
use crate::api::RunResult;
use crate::checks::Problem;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub days: i64,
    pub verify: bool,
    pub ca_bundle: Option<String>,
}

const SELF_SIGNED_BUNDLE: &str = "/etc/ssl/selfsign/certificate.crt";

impl Config {
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        Self::parse(&env).map_err(|e| vec![e.0])
    }

    fn parse(env: &impl Fn(&str) -> Option<String>) -> Result<Self, Problem> {
        let host = env("DOMAIN_NAME")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        if host.is_empty() {
            return Err("DOMAIN_NAME is not set: the host whose certificate to check".into());
        }
        if host.contains('/') || (host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err())
        {
            return Err(Problem(format!(
                "DOMAIN_NAME={host:?} is a host name or address, not a URL (PORT is separate)"
            )));
        }
        let port = number(env, "PORT", 443u16)?;
        let days = number(env, "DAYS", 60i64)?;
        if days < 0 {
            return Err(Problem(format!("DAYS={days} is not a number of days")));
        }
        let insecure = flag(env, "INSECURE", false)?;
        let self_signed = flag(env, "SELF_SIGNED", false)?;
        let ca_bundle = env("CA_BUNDLE")
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .or_else(|| self_signed.then(|| SELF_SIGNED_BUNDLE.to_string()));
        Ok(Config {
            host,
            port,
            days,
            verify: !insecure,
            ca_bundle,
        })
    }

    pub async fn run(&self, budget: Duration) -> RunResult {
        match self.certificates(budget).await {
            Ok(certs) => self.judge(&certs, Utc::now()),
            Err(e) => RunResult::failed(e),
        }
    }

    /// The certificates to judge: the chain the server presents, and a custom bundle's.
    async fn certificates(
        &self,
        budget: Duration,
    ) -> Result<Vec<(String, CertificateDer<'static>)>, Vec<String>> {
        // A custom bundle is read once: it is trusted for the handshake and judged for expiry.
        let bundle = match (self.verify, &self.ca_bundle) {
            (true, Some(path)) => Some((path, read_bundle(path).map_err(|e| vec![e.0])?)),
            _ => None,
        };
        let config = match &bundle {
            _ if !self.verify => crate::tls::insecure(),
            None => crate::tls::verifying(None).map_err(|e| vec![e.to_string()])?,
            Some((path, certs)) => crate::tls::verifying(Some(certs.clone()))
                .map_err(|e| vec![format!("CA_BUNDLE {path}: {e}")])?,
        };
        let target = format!("{}:{}", self.host, self.port);
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| vec![format!("DOMAIN_NAME={:?}: {e}", self.host)])?;
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| Problem(format!("connecting to {target}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| Problem(format!("TLS handshake with {target}: {e}")))?;
            let chain: Vec<CertificateDer<'static>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .unwrap_or_default()
                .iter()
                .map(|c| c.clone().into_owned())
                .collect();
            Ok::<_, Problem>(chain)
        };
        let chain = tokio::time::timeout(budget, handshake)
            .await
            .map_err(|_| {
                vec![format!(
                    "no TLS handshake with {target} in {}s",
                    budget.as_secs()
                )]
            })?
            .map_err(|e| vec![e.0])?;
        let mut certs: Vec<(String, CertificateDer<'static>)> = chain
            .into_iter()
            .map(|c| (format!("{target} presents"), c))
            .collect();
        if let Some((path, bundle)) = bundle {
            certs.extend(
                bundle
                    .into_iter()
                    .map(|c| (format!("CA_BUNDLE {path} holds"), c)),
            );
        }
        Ok(certs)
    }

    /// Each certificate that expires within `DAYS` (or has), named by where it came from and its
    /// subject.
    pub fn judge(&self, certs: &[(String, CertificateDer<'_>)], now: DateTime<Utc>) -> RunResult {
        if certs.is_empty() {
            return RunResult::failure(format!(
                "{}:{} presented no certificate",
                self.host, self.port
            ));
        }
        let mut bad = Vec::new();
        for (source, der) in certs {
            let Some(info) = CertInfo::parse(der) else {
                bad.push(format!("{source} a certificate that could not be read"));
                continue;
            };
            let left = info.not_after - now;
            let when = info.not_after.format("%Y-%m-%d %H:%M UTC");
            if left <= chrono::Duration::zero() {
                bad.push(format!("{source} {:?}, which expired {when}", info.subject));
            } else if left < chrono::Duration::days(self.days) {
                bad.push(format!(
                    "{source} {:?}, which expires {when}, in {} days (DAYS={})",
                    info.subject,
                    left.num_days(),
                    self.days
                ));
            }
        }
        RunResult::judged(bad)
    }
}

fn read_bundle(path: &str) -> Result<Vec<CertificateDer<'static>>, Problem> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Problem(format!("CA_BUNDLE {path}: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem(format!("CA_BUNDLE {path}: {e}")))?;
    if certs.is_empty() {
        return Err(Problem(format!("CA_BUNDLE {path} holds no certificate")));
    }
    Ok(certs)
}

/// What the check needs of a certificate, read from its DER.
#[derive(Debug, Clone, PartialEq)]
pub struct CertInfo {
    /// The subject's common name, else the whole subject in hex-free form ("(no CN)").
    pub subject: String,
    pub not_after: DateTime<Utc>,
}

/// One DER element at the start of `b`: (tag, contents, rest).
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)? as usize;
    let (len, head) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7F;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let body = b.get(head..head + len)?;
    Some((tag, body, &b[head + len..]))
}

fn der_time(tag: u8, body: &[u8]) -> Option<DateTime<Utc>> {
    let s = std::str::from_utf8(body).ok()?.strip_suffix('Z')?;
    let full = match tag {
        // UTCTime: two-digit years, 50..99 are 19xx (RFC 5280).
        0x17 => {
            let yy: u32 = s.get(..2)?.parse().ok()?;
            format!("{}{s}", if yy >= 50 { "19" } else { "20" })
        }
        0x18 => s.to_string(),
        _ => return None,
    };
    NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

/// The common name in a Name (SEQUENCE of SETs of AttributeTypeAndValue).
fn common_name(mut name: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    while let Some((_, set, rest)) = der(name) {
        let (_, atv, _) = der(set)?;
        let (_, oid, value) = der(atv)?;
        if oid == CN {
            let (_, v, _) = der(value)?;
            return String::from_utf8(v.to_vec()).ok();
        }
        name = rest;
    }
    None
}

impl CertInfo {
    pub fn parse(cert: &[u8]) -> Option<Self> {
        let (_, cert, _) = der(cert)?;
        let (_, tbs, _) = der(cert)?;
        let mut rest = tbs;
        // version [0] is optional
        if rest.first() == Some(&0xA0) {
            rest = der(rest)?.2;
        }
        let (_, _serial, rest) = der(rest)?;
        let (_, _sig, rest) = der(rest)?;
        let (_, _issuer, rest) = der(rest)?;
        let (_, validity, rest) = der(rest)?;
        let (_, subject, _) = der(rest)?;
        let (_, _, after) = der(validity)?;
        let (tag, body, _) = der(after)?;
        Some(CertInfo {
            subject: common_name(subject).unwrap_or_else(|| "(no CN)".into()),
            not_after: der_time(tag, body)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::checks::test_env as env;
    use rustls::pki_types::pem::PemObject;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

    fn pem(name: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(format!("{FIXTURES}/{name}")).unwrap()
    }

    #[test]
    fn settings_and_their_errors() {
        let c = Config::from_env(env(&[("DOMAIN_NAME", "example.com")])).unwrap();
        assert_eq!(
            (c.port, c.days, c.verify, c.ca_bundle.as_deref()),
            (443, 60, true, None)
        );
        let c = Config::from_env(env(&[
            ("DOMAIN_NAME", "a"),
            ("SELF_SIGNED", "true"),
            ("INSECURE", "1"),
        ]))
        .unwrap();
        assert_eq!(
            (c.verify, c.ca_bundle.as_deref()),
            (false, Some(SELF_SIGNED_BUNDLE))
        );
        let err = |p: &[(&str, &str)]| Config::from_env(env(p)).unwrap_err().join("; ");
        assert_eq!(
            err(&[]),
            "DOMAIN_NAME is not set: the host whose certificate to check"
        );
        assert!(err(&[("DOMAIN_NAME", "https://example.com")]).contains("not a URL"));
        assert_eq!(
            err(&[("DOMAIN_NAME", "a"), ("DAYS", "-1")]),
            "DAYS=-1 is not a number of days"
        );
        assert!(Config::from_env(env(&[("DOMAIN_NAME", "::1")])).is_ok());
    }

    /// Both time encodings: UTCTime (before 2050) and GeneralizedTime (from 2050), as the
    /// openssl CLI wrote them (`openssl x509 -noout -enddate` says Nov 30 2036 and Nov 9 2126).
    #[test]
    fn expiry_and_subject_are_read_from_the_der() {
        let server = CertInfo::parse(&pem("server.crt")).unwrap();
        assert_eq!(server.subject, "probity-test-server");
        assert_eq!(server.not_after.to_rfc3339(), "2036-11-30T14:46:44+00:00");
        let ca = CertInfo::parse(&pem("ca.crt")).unwrap();
        assert_eq!(ca.subject, "probity-test-ca");
        assert_eq!(ca.not_after.to_rfc3339(), "2126-11-09T14:46:44+00:00");
        assert_eq!(CertInfo::parse(b"\x30\x03\x02\x01"), None);
    }

    #[test]
    fn judge_names_each_certificate_close_to_or_past_expiry() {
        let c = Config::from_env(env(&[("DOMAIN_NAME", "h"), ("DAYS", "30")])).unwrap();
        let certs = vec![
            ("h:443 presents".to_string(), pem("server.crt")),
            ("CA_BUNDLE x holds".into(), pem("ca.crt")),
        ];
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            c.judge(&certs, at("2030-01-01T00:00:00Z")),
            RunResult::passed()
        );
        assert_eq!(
            c.judge(&certs, at("2036-11-20T14:46:44Z")),
            RunResult::failed(vec![
                "h:443 presents \"probity-test-server\", which expires 2036-11-30 14:46 UTC, in 10 days (DAYS=30)"
                    .to_string()
            ])
        );
        assert_eq!(
            c.judge(&certs, at("2037-01-01T00:00:00Z")),
            RunResult::failed(vec![
                "h:443 presents \"probity-test-server\", which expired 2036-11-30 14:46 UTC"
                    .to_string()
            ])
        );
        assert!(
            !c.judge(&[], at("2030-01-01T00:00:00Z")).passed_ok(),
            "no certificate proves nothing"
        );
    }

    /// A real handshake over loopback with a server whose certificate the fixture CA signed.
    #[tokio::test]
    async fn handshake_verifies_against_the_bundle_and_judges_the_whole_chain() {
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(format!("{FIXTURES}/server.key"))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pem("server.crt")], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        let ca = format!("{FIXTURES}/ca.crt");
        let check = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("DOMAIN_NAME", "127.0.0.1"), ("PORT", port.as_str())];
            pairs.extend_from_slice(extra);
            Config::from_env(env(&pairs)).unwrap()
        };
        let budget = Duration::from_secs(10);
        let r = check(&[("CA_BUNDLE", &ca), ("DAYS", "7")])
            .run(budget)
            .await;
        assert!(r.passed_ok(), "{r:?}");
        let e = check(&[("CA_BUNDLE", &ca), ("DAYS", "100000")])
            .run(budget)
            .await
            .errors;
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with(&format!(
                "127.0.0.1:{port} presents \"probity-test-server\", which expires "
            )),
            "{e:?}"
        );
        assert!(
            e[1].starts_with(&format!(
                "CA_BUNDLE {ca} holds \"probity-test-ca\", which expires "
            )),
            "{e:?}"
        );
        // The built-in roots do not know the fixture CA: the handshake fails, saying why.
        let e = check(&[]).run(budget).await.errors;
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(&format!(
                "TLS handshake with 127.0.0.1:{port}: invalid peer certificate: UnknownIssuer"
            )),
            "{e:?}"
        );
        // INSECURE: no verification, expiry still judged.
        let r = check(&[("INSECURE", "true"), ("DAYS", "7")])
            .run(budget)
            .await;
        assert!(r.passed_ok(), "{r:?}");
    }
}
