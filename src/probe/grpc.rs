//! `grpc`: the standard health checking protocol, `grpc.health.v1.Health/Check`, over plaintext
//! HTTP/2 as kubelet does. Success iff the answer is SERVING.
//!
//! One unary call with a one-field request and response: written on hyper's HTTP/2 client with
//! the few bytes of protobuf by hand, instead of pulling in tonic and prost for it.

use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::tcp::connect;
use super::ProbeError;
use super::{after, RunResult};
use crate::api::probe::GrpcProbe;

const PATH: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckRequest { service }` in a gRPC frame.
pub fn request_frame(service: &str) -> Vec<u8> {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    frame
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The `status` of a `HealthCheckResponse` message (0 when absent, as protobuf defaults).
pub fn response_status(msg: &[u8]) -> Option<u64> {
    let mut i = 0;
    let mut status = 0;
    while i < msg.len() {
        let (key, n) = varint(&msg[i..])?;
        i += n;
        match key & 7 {
            0 => {
                let (v, n) = varint(&msg[i..])?;
                i += n;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let (len, n) = varint(&msg[i..])?;
                i += n + len as usize;
            }
            5 => i += 4,
            1 => i += 8,
            _ => return None,
        }
    }
    Some(status)
}

pub fn status_name(s: u64) -> &'static str {
    match s {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "an unknown status",
    }
}

pub async fn probe(p: &GrpcProbe) -> RunResult {
    let host = p.host.as_deref().unwrap_or("localhost");
    let port = p.port as u16;
    let shown = format!("grpc {host}:{port}");
    let start = Instant::now();
    match check(host, port, p.service.as_deref().unwrap_or("")).await {
        Ok(1) => RunResult::passed(),
        Ok(s) => RunResult::failure(format!("{shown}: status {}", status_name(s))),
        Err(e) => RunResult::failure(format!("{shown}: {e} {}", after(start))),
    }
}

async fn check(host: &str, port: u16, service: &str) -> Result<u64, ProbeError> {
    let tcp = connect(host, port).await?;
    // HTTP/2 writes its preface, settings and request in separate writes.
    let _ = tcp.set_nodelay(true);
    let h2 = |e: hyper::Error| ProbeError::Exchange(format!("HTTP/2: {e}"));
    let failed = |why: String| ProbeError::Exchange(why);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(h2)?;
    let driver = tokio::spawn(conn);
    let result = async {
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let req = Request::post(format!("http://{authority}{PATH}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", concat!("probity/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(request_frame(service))))
            .map_err(|e| ProbeError::Target(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(h2)?;
        if !resp.status().is_success() {
            return Err(failed(format!("HTTP status {}", resp.status().as_u16())));
        }
        let headers = resp.headers().clone();
        let collected = resp.into_body().collect().await.map_err(h2)?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let body = collected.to_bytes();
        // A failed call may answer with headers only ("trailers-only").
        let grpc_status = trailers
            .get("grpc-status")
            .or_else(|| headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0")
            .to_string();
        if grpc_status != "0" {
            let msg = trailers
                .get("grpc-message")
                .or_else(|| headers.get("grpc-message"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let name = match grpc_status.as_str() {
                "5" => " (NOT_FOUND)",
                "12" => " (UNIMPLEMENTED: the server has no health service)",
                "14" => " (UNAVAILABLE)",
                _ => "",
            };
            return Err(failed(format!(
                "rpc error: code {grpc_status}{name}{}",
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                }
            )));
        }
        if body.len() < 5 {
            return Err(failed("empty response".into()));
        }
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let msg = body
            .get(5..5 + len)
            .ok_or_else(|| failed("truncated response".into()))?;
        response_status(msg).ok_or_else(|| failed("unreadable response".into()))
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_parses_the_health_messages() {
        assert_eq!(request_frame(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(
            request_frame("db"),
            vec![0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']
        );
        assert_eq!(response_status(&[0x08, 0x01]), Some(1));
        assert_eq!(response_status(&[0x08, 0x02]), Some(2));
        assert_eq!(response_status(&[]), Some(0));
        // Unknown fields are skipped.
        assert_eq!(response_status(&[0x12, 0x01, b'x', 0x08, 0x01]), Some(1));
        assert_eq!(response_status(&[0x08]), None);
    }
}
