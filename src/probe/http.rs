//! `httpGet`: kubelet's HTTP probe. Success iff 200 <= status < 400 (or one of `expectStatus`:
//! codes, classes, ranges), and the body matches `expectBody` when given. Beyond kubelet: the
//! method, a request body, the redirect policy, and `assertions` (judged in `http_assert`).
//!
//! Not reqwest: a probe must open a fresh connection each time and reset it when done
//! (SO_LINGER 0); reqwest pools connections and gives no access to the socket, so at a thousand
//! probes a second the TIME-WAIT sockets it leaves would exhaust the ephemeral ports. The
//! exchange itself is `http1`'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use rustls::pki_types::ServerName;
use url::Url;

use super::tcp::connect;
use super::{after, http1, http_assert, ProbeError, RunResult};
use crate::api::probe::{HttpGetProbe, StatusRange};
use crate::tls::{insecure, verifying};

/// At most this much of a body is read, as kubelet.
pub const MAX_BODY: usize = 10 * 1024;
const MAX_REDIRECTS: usize = 10;

/// The URL a probe requests first.
pub fn target(p: &HttpGetProbe) -> Result<Url, ProbeError> {
    if let Some(u) = &p.url {
        return Url::parse(u).map_err(|e| ProbeError::Target(format!("{u:?} is not a URL: {e}")));
    }
    let scheme = p.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
    let host = p.host.as_deref().unwrap_or("localhost");
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let path = p.path.as_deref().unwrap_or("/");
    let port = p.port.unwrap_or(if scheme == "https" { 443 } else { 80 });
    Url::parse(&format!("{scheme}://{host}:{port}{path}"))
        .map_err(|e| ProbeError::Target(format!("bad URL: {e}")))
}

/// How the response body is judged.
#[derive(Debug)]
enum BodyCheck {
    Contains(String),
    Regex(regex::Regex),
}

fn body_check(p: &HttpGetProbe) -> Result<Option<BodyCheck>, ProbeError> {
    let Some(want) = &p.expect_body else {
        return Ok(None);
    };
    if want.len() >= 2 && want.starts_with('/') && want.ends_with('/') {
        let re = &want[1..want.len() - 1];
        return regex::Regex::new(re)
            .map(|r| Some(BodyCheck::Regex(r)))
            .map_err(|e| {
                ProbeError::Target(format!("expectBody {want:?} is not a valid regex: {e}"))
            });
    }
    Ok(Some(BodyCheck::Contains(want.clone())))
}

/// Problems with `expectBody` found when the check is loaded.
pub fn expect_body_problem(p: &HttpGetProbe) -> Option<String> {
    body_check(p).err().map(|e| e.to_string())
}

pub async fn probe(p: &HttpGetProbe) -> RunResult {
    let mut url = match target(p) {
        Ok(u) => u,
        Err(e) => return RunResult::failure(e.to_string()),
    };
    let check_body = match body_check(p) {
        Ok(c) => c,
        Err(e) => return RunResult::failure(e.to_string()),
    };
    let tls = match tls_config(p) {
        Ok(c) => c,
        Err(e) => return RunResult::failure(e.to_string()),
    };
    let expect: Vec<StatusRange> = p
        .expect_status
        .iter()
        .flatten()
        .filter_map(|v| StatusRange::parse(v).ok())
        .collect();
    let method = p.method.as_deref().unwrap_or("GET");
    let redirects = p.redirects.as_deref().unwrap_or("sameHost");
    let body_limit = match (http_assert::reads_body(&p.assertions), &check_body) {
        _ if method == "HEAD" => 0,
        (true, _) => http_assert::MAX_ASSERTED_BODY,
        (false, Some(_)) => MAX_BODY,
        (false, None) => 0,
    };
    let start = Instant::now();
    for _ in 0..=MAX_REDIRECTS {
        let shown = url.to_string();
        let resp = match get(&url, p, tls.as_ref(), body_limit).await {
            Ok(r) => r,
            Err(e) => return RunResult::failure(format!("{method} {shown}: {e} {}", after(start))),
        };
        let status = resp.status;
        if status.is_redirection() && redirects != "none" {
            if let Some(next) = resp.location.as_deref().and_then(|l| url.join(l).ok()) {
                if redirects == "follow" || same_host(&url, &next) {
                    url = next;
                    continue;
                }
                // kubelet: a redirect elsewhere is not followed, and counts as success.
                return RunResult::passed().with_warning(format!(
                    "{method} {shown}: status {}: redirect to another host {next} not followed",
                    status.as_u16()
                ));
            }
        }
        let expected = if expect.is_empty() {
            (200..400).contains(&status.as_u16())
        } else {
            expect.iter().any(|r| r.contains(status.as_u16()))
        };
        if !expected && expect.is_empty() {
            return RunResult::failure(format!("{method} {shown}: status {}", status.as_u16()));
        }
        if !expected {
            let wanted: Vec<String> = expect.iter().map(ToString::to_string).collect();
            return RunResult::failure(format!(
                "{method} {shown}: status {}, expected {}",
                status.as_u16(),
                wanted.join(", ")
            ));
        }
        let took = start.elapsed();
        // expectBody reads what kubelet would (10 KiB), whatever the assertions read.
        let body = String::from_utf8_lossy(&resp.body[..resp.body.len().min(MAX_BODY)]);
        let mut errors = match &check_body {
            Some(BodyCheck::Contains(s)) if !body.contains(s.as_str()) => {
                vec![format!("body does not contain {s:?}")]
            }
            Some(BodyCheck::Regex(r)) if !r.is_match(&body) => {
                vec![format!("body does not match /{}/", r.as_str())]
            }
            _ => Vec::new(),
        };
        let exchange = http_assert::Exchange {
            headers: &resp.headers,
            body: &resp.body,
            took,
            cert_not_after: resp.cert_not_after,
            now_unix: chrono::Utc::now().timestamp(),
        };
        let (failed, warned) = http_assert::judge(&p.assertions, &exchange);
        errors.extend(failed);
        let said = |m: String| format!("{method} {shown}: status {}: {m}", status.as_u16());
        return RunResult::graded(
            errors.into_iter().map(said).collect(),
            warned.into_iter().map(said).collect(),
        );
    }
    RunResult::failure(format!(
        "{method} {}: stopped after {MAX_REDIRECTS} redirects",
        target(p).map(|u| u.to_string()).unwrap_or_default()
    ))
}

fn same_host(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

struct Response {
    status: StatusCode,
    location: Option<String>,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
    /// The server certificate's `notAfter`, over HTTPS.
    cert_not_after: Option<i64>,
}

async fn get(
    url: &Url,
    p: &HttpGetProbe,
    tls: Option<&Arc<rustls::ClientConfig>>,
    body_limit: usize,
) -> Result<Response, ProbeError> {
    let target = |what: &str| ProbeError::Target(what.to_string());
    let host = url
        .host_str()
        .ok_or_else(|| target("the URL has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url
        .port_or_known_default()
        .ok_or_else(|| target("the URL has no port"))?;
    let tcp = connect(host, port).await?;
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or(host)),
        None => url.host_str().unwrap_or(host).to_string(),
    };
    let (method, headers) = request(&authority, p)?;
    let body = p.body.as_deref().unwrap_or("").as_bytes();
    let req = http1::encode(&method, &path, &headers, body);
    let head_only = method == Method::HEAD;
    if url.scheme() == "https" {
        // TLS writes its handshake's last flight and the request as separate records; a plain
        // request is one write, which Nagle's algorithm never holds back (a syscall saved).
        let _ = tcp.set_nodelay(true);
        let config = tls.cloned().unwrap_or_else(insecure);
        let name = ServerName::try_from(host.to_string()).map_err(|e| ProbeError::TlsName {
            host: host.to_string(),
            reason: e.to_string(),
        })?;
        let mut stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| ProbeError::Tls(super::tcp::io_reason(&e)))?;
        let not_after = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| crate::tls::not_after(c));
        let mut resp = exchange(&mut stream, &req, head_only, body_limit).await?;
        resp.cert_not_after = not_after;
        Ok(resp)
    } else {
        let mut tcp = tcp;
        exchange(&mut tcp, &req, head_only, body_limit).await
    }
    // Dropping the connection closes the socket with a reset (SO_LINGER 0): nothing lingers,
    // and no `Connection: close` was asked for, which would have made the server close first
    // and keep the socket in TIME-WAIT.
}

async fn exchange<S>(
    io: &mut S,
    req: &[u8],
    head_only: bool,
    body_limit: usize,
) -> Result<Response, ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let r = http1::exchange(io, req, head_only, body_limit).await?;
    Ok(Response {
        status: r.status,
        location: r
            .headers
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        headers: r.headers,
        body: r.body,
        cert_not_after: None,
    })
}

/// The method and headers of a probe's request, checked: a bad one names itself.
fn request(
    authority: &str,
    p: &HttpGetProbe,
) -> Result<(Method, Vec<(HeaderName, HeaderValue)>), ProbeError> {
    let bad = |n: &str, e: &dyn std::fmt::Display| ProbeError::Target(format!("header {n:?}: {e}"));
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), authority.to_string()),
        (
            "user-agent".into(),
            concat!("probity/", env!("CARGO_PKG_VERSION")).into(),
        ),
        ("accept".into(), "*/*".into()),
    ];
    // User headers replace defaults of the same name; an empty value removes one (kubelet).
    for h in p.http_headers.iter().flatten() {
        let name = h.name.to_ascii_lowercase();
        headers.retain(|(n, _)| *n != name);
        if !h.value.is_empty() {
            headers.push((name, h.value.clone()));
        }
    }
    let method = Method::from_bytes(p.method.as_deref().unwrap_or("GET").as_bytes())
        .map_err(|e| ProbeError::Target(format!("method: {e}")))?;
    let checked = headers
        .into_iter()
        .map(|(n, v)| {
            let name = HeaderName::from_bytes(n.as_bytes()).map_err(|e| bad(&n, &e))?;
            let value = HeaderValue::from_str(&v).map_err(|e| bad(&n, &e))?;
            Ok((name, value))
        })
        .collect::<Result<_, ProbeError>>()?;
    Ok((method, checked))
}

/// The TLS settings of a probe: None for the unverified default; built once per CA file.
fn tls_config(p: &HttpGetProbe) -> Result<Option<Arc<rustls::ClientConfig>>, ProbeError> {
    if !p.verifies_tls() {
        return Ok(None);
    }
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<rustls::ClientConfig>>>> = OnceLock::new();
    let key = p.ca_file.clone().unwrap_or_default();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Some(c.clone()));
    }
    let config = match &p.ca_file {
        None => verifying(None).map_err(|e| ProbeError::Tls(e.to_string()))?,
        Some(path) => {
            crate::tls::from_ca_file(path).map_err(|e| ProbeError::Target(format!("caFile {e}")))?
        }
    };
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, config.clone());
    Ok(Some(config))
}
