//! `tcpSocket`: success iff a TCP connection is established.

use std::time::Instant;

use super::{after, ProbeError, RunResult};
use crate::api::probe::TcpSocketProbe;

pub async fn probe(p: &TcpSocketProbe) -> RunResult {
    let host = p.host.as_deref().unwrap_or("localhost");
    let start = Instant::now();
    match connect(host, p.port as u16).await {
        Ok(_) => RunResult::passed(),
        Err(e) => RunResult::failure(format!("{e} {}", after(start))),
    }
}

/// Connects to the first address of `host` that accepts, with SO_LINGER 0 set so the socket is
/// reset, not left in TIME-WAIT, when dropped: at hundreds of probes a second TIME-WAIT sockets
/// would use up the ephemeral ports. Nagle's algorithm stays on: a protocol that writes twice
/// before it reads sets TCP_NODELAY itself. Errors read `connect 10.0.0.5:5432: connection refused` or
/// `dns: no such host "x"`.
pub async fn connect(host: &str, port: u16) -> Result<tokio::net::TcpStream, ProbeError> {
    let addrs: Vec<std::net::SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(a) => a.collect(),
        Err(e) => return Err(dns_error(host, &e)),
    };
    let mut last = ProbeError::NoAddress(host.to_string());
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_zero_linger();
                return Ok(s);
            }
            Err(e) => {
                last = ProbeError::Connect {
                    addr,
                    reason: io_reason(&e),
                }
            }
        }
    }
    Err(last)
}

fn dns_error(host: &str, e: &std::io::Error) -> ProbeError {
    let text = e.to_string();
    if text.contains("not known") || text.contains("No address") || text.contains("no such host") {
        ProbeError::NoSuchHost(host.to_string())
    } else {
        ProbeError::Dns {
            host: host.to_string(),
            reason: text,
        }
    }
}

/// The error's reason in lower case without the OS's error number: `connection refused`.
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}
