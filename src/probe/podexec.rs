//! `exec` in a cluster: the command runs in a pod of the check's namespace that matches
//! `podSelector` (the first Running one by name), in `container` or the pod's first, through the
//! pods/exec API. Success iff it exits 0; at most 10 KiB of output is kept for the message.
//!
//! The pod is found with a LIST by label selector per probe: exec probes are few and their
//! targets come and go, so a watch per selector would cost more than it saves.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, ListParams};
use kube::{Client, ResourceExt};

use super::exec::drain;
use crate::api::probe::ExecProbe;
use crate::api::RunResult;

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

/// The label selector in `k=v,k=v` form.
pub fn selector(e: &ExecProbe) -> Option<String> {
    let sel = e.pod_selector.as_ref().filter(|s| !s.is_empty())?;
    Some(
        sel.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

pub async fn probe(client: &Client, namespace: &str, e: &ExecProbe) -> RunResult {
    let Some(selector) = selector(e) else {
        return RunResult::failure("exec in a cluster needs spec.probe.exec.podSelector");
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = match api.list(&ListParams::default().labels(&selector)).await {
        Ok(l) => l.items,
        Err(err) => {
            return RunResult::failure(format!(
                "listing pods {selector} in {namespace}: {}",
                api_message(&err)
            ))
        }
    };
    let mut running: Vec<Pod> = pods
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .collect();
    running.sort_by_key(|p| p.name_any());
    let Some(pod) = running.first() else {
        return RunResult::failure(format!("no running pod in {namespace} matches {selector}"));
    };
    let name = pod.name_any();
    let mut ap = AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(true);
    if let Some(c) = &e.container {
        ap = ap.container(c.clone());
    }
    let mut process = match api.exec(&name, e.command.clone(), &ap).await {
        Ok(p) => p,
        Err(err) => {
            return RunResult::failure(format!(
                "exec in pod {namespace}/{name}: {}",
                api_message(&err)
            ))
        }
    };
    let status = process.take_status();
    let (out, err) = tokio::join!(drain(process.stdout()), drain(process.stderr()));
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    let mut output = String::from_utf8_lossy(&out).into_owned();
    output.push_str(&String::from_utf8_lossy(&err));
    let output = output.trim();
    match status {
        Some(s) if s.status.as_deref() == Some("Success") => RunResult::passed(),
        Some(s) => {
            let code = s
                .details
                .iter()
                .flat_map(|d| d.causes.iter().flatten())
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .and_then(|c| c.message.clone());
            let mut msg = match code {
                Some(code) => format!("exec in pod {namespace}/{name}: exit code {code}"),
                None => format!(
                    "exec in pod {namespace}/{name}: {}",
                    s.message.as_deref().unwrap_or("failed")
                ),
            };
            if !output.is_empty() {
                msg.push_str(&format!(": {output}"));
            }
            RunResult::failure(msg)
        }
        None => RunResult::failure(format!(
            "exec in pod {namespace}/{name}: the stream ended without an exit status"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An API server stand-in: answers the LIST with one Running pod, then records the exec
    /// request (the one the real API server would upgrade to a stream) and refuses it.
    async fn fake_api() -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap();
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let line = head.lines().next().unwrap_or_default().to_string();
                let body = if line.contains("/exec?") {
                    r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"no kubelet here","code":500}"#.to_string()
                } else {
                    r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[
                        {"metadata":{"name":"b-pod","namespace":"ns"},"status":{"phase":"Running"}},
                        {"metadata":{"name":"a-pod","namespace":"ns"},"status":{"phase":"Pending"}}]}"#
                        .to_string()
                };
                let code = if line.contains("/exec?") {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let resp = format!(
                    "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
                seen.push(line);
            }
            seen
        });
        (url, task)
    }

    /// Answers the LIST with one Running pod, then accepts the exec stream (the v4 channel
    /// protocol: a channel byte, then data; channel 3 is the final status) and plays `stdout`
    /// and `status`.
    // tungstenite's handshake callback returns its own (large) error type; not ours to shrink.
    #[allow(clippy::result_large_err)]
    async fn fake_stream(stdout: &'static str, status: &'static str) -> String {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
        use tokio_tungstenite::tungstenite::Message;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let _ = s.read(&mut buf).await.unwrap();
            let body = r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"db-0","namespace":"ns"},"status":{"phase":"Running"}}]}"#;
            let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            s.write_all(resp.as_bytes()).await.unwrap();
            drop(s);
            let (s, _) = l.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_hdr_async(s, |_: &Request, mut r: Response| {
                r.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    "v4.channel.k8s.io".parse().unwrap(),
                );
                Ok(r)
            })
            .await
            .unwrap();
            let frame = |ch: u8, data: &str| {
                let mut v = vec![ch];
                v.extend_from_slice(data.as_bytes());
                Message::Binary(v.into())
            };
            ws.send(frame(1, stdout)).await.unwrap();
            ws.send(frame(3, status)).await.unwrap();
            let _ = ws.close(None).await;
        });
        url
    }

    fn probe_spec() -> ExecProbe {
        serde_json::from_value(serde_json::json!({
            "command": ["pg_isready"], "podSelector": {"app": "db"}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn the_exit_status_of_the_stream_is_the_verdict() {
        let client =
            |url: String| Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let url = fake_stream(
            "accepting connections\n",
            r#"{"metadata":{},"status":"Success"}"#,
        )
        .await;
        let v = super::probe(&client(url), "ns", &probe_spec()).await;
        assert!(v.passed_ok(), "{}", v.message());
        let url = fake_stream(
            "no response\n",
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"2"}]}}"#,
        )
        .await;
        let v = super::probe(&client(url), "ns", &probe_spec()).await;
        assert!(!v.passed_ok());
        assert_eq!(v.message(), "exec in pod ns/db-0: exit code 2: no response");
    }

    #[tokio::test]
    async fn exec_goes_to_the_first_running_matching_pod_with_the_command_and_container() {
        let (url, seen) = fake_api().await;
        let config = kube::Config::new(url.parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let probe: ExecProbe = serde_json::from_value(serde_json::json!({
            "command": ["pg_isready", "-h", "db"],
            "podSelector": {"app": "db", "tier": "data"},
            "container": "main"
        }))
        .unwrap();
        let v = super::probe(&client, "ns", &probe).await;
        assert!(!v.passed_ok());
        assert!(
            v.message().starts_with("exec in pod ns/b-pod: "),
            "{}",
            v.message()
        );
        let seen = seen.await.unwrap();
        assert!(
            seen[0].starts_with(
                "GET /api/v1/namespaces/ns/pods?&labelSelector=app%3Ddb%2Ctier%3Ddata"
            ) || seen[0]
                .starts_with("GET /api/v1/namespaces/ns/pods?labelSelector=app%3Ddb%2Ctier%3Ddata"),
            "{}",
            seen[0]
        );
        let exec = &seen[1];
        assert!(
            exec.starts_with("GET /api/v1/namespaces/ns/pods/b-pod/exec?"),
            "{exec}"
        );
        for part in [
            "command=pg_isready",
            "command=-h",
            "command=db",
            "container=main",
            "stdout=true",
            "stderr=true",
        ] {
            assert!(exec.contains(part), "{part} in {exec}");
        }
        assert!(!exec.contains("stdin=true"), "{exec}");
    }
}
