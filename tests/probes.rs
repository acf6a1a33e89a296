//! Built-in probes over real sockets on loopback.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;
use hyper::body::{Body, Bytes, Frame};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use probity::api::probe::{
    DnsProbe, ExecProbe, GrpcProbe, HttpGetProbe, HttpHeader, TcpSocketProbe,
};
use probity::probe::{dns, exec, grpc, http, tcp};

async fn serve(router: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    format!("http://{addr}")
}

fn http_server() -> Router {
    Router::new()
        .route(
            "/status/{code}",
            get(|Path(code): Path<u16>| async move { StatusCode::from_u16(code).unwrap() }),
        )
        .route(
            "/hop/{n}",
            get(|Path(n): Path<u32>| async move {
                if n == 0 {
                    "arrived".into_response()
                } else {
                    Redirect::to(&format!("/hop/{}", n - 1)).into_response()
                }
            }),
        )
        .route(
            "/elsewhere",
            get(|| async { Redirect::to("http://127.0.0.2:1/away") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/big",
            get(|| async { format!("{}NEEDLE", "x".repeat(20 * 1024)) }),
        )
        .route("/small", get(|| async { "status: all good (v1.2)" }))
        .route(
            "/chunked",
            get(|| async {
                // A body of unknown length: hyper's server sends it chunked.
                let parts = ["first part, ", "second part, ", "the end"]
                    .map(|p| Ok::<_, Infallible>(Frame::data(Bytes::from(p))));
                axum::body::Body::new(http_body_util::StreamBody::new(futures::stream::iter(
                    parts,
                )))
            }),
        )
        .route(
            "/health.json",
            get(|| async {
                // About 100 KB, the field asserted on last: beyond kubelet's 10 KiB.
                let filler: Vec<String> =
                    (0..2000).map(|i| format!("component-{i:05}-ok")).collect();
                let doc =
                    serde_json::json!({"filler": filler, "queue": {"depth": 12}, "status": "UP"});
                (
                    [("content-type", "application/json"), ("x-version", "2.3.1")],
                    doc.to_string(),
                )
            }),
        )
        .route(
            "/echo",
            axum::routing::any(
                |method: axum::http::Method, h: HeaderMap, body: String| async move {
                    let length = h
                        .get("content-length")
                        .map_or("none".to_string(), |v| v.to_str().unwrap().to_string());
                    format!("{method} length={length} {body}")
                },
            ),
        )
        .route(
            "/headers",
            get(|h: HeaderMap| async move {
                let mut m: BTreeMap<String, String> = BTreeMap::new();
                for (k, v) in &h {
                    m.insert(k.to_string(), v.to_str().unwrap().to_string());
                }
                format!("{m:?}")
            }),
        )
}

fn url(u: &str) -> HttpGetProbe {
    HttpGetProbe {
        url: Some(u.to_string()),
        ..Default::default()
    }
}

#[tokio::test]
async fn http_status_classes() {
    let base = serve(http_server()).await;
    for (code, ok) in [
        (200, true),
        (204, true),
        (302, true),
        (399, true),
        (400, false),
        (404, false),
        (500, false),
        (503, false),
    ] {
        let v = http::probe(&url(&format!("{base}/status/{code}"))).await;
        assert_eq!(v.passed_ok(), ok, "{code}: {v:?}");
        if !ok {
            assert_eq!(
                v.message(),
                format!("GET {base}/status/{code}: status {code}")
            );
        }
    }
    // expectStatus replaces the 200-399 rule.
    let mut p = url(&format!("{base}/status/404"));
    p.expect_status = Some(vec![IntOrString::Int(404)]);
    assert!(http::probe(&p).await.passed_ok());
    let mut p = url(&format!("{base}/status/200"));
    p.expect_status = Some(vec![IntOrString::Int(201)]);
    assert_eq!(
        http::probe(&p).await.message(),
        format!("GET {base}/status/200: status 200, expected 201")
    );
}

fn http_yaml(yaml: &str) -> HttpGetProbe {
    serde_saphyr::from_str(yaml).unwrap()
}

#[tokio::test]
async fn assertions_on_json_headers_and_time_fail_or_degrade_naming_each_miss() {
    let base = serve(http_server()).await;
    let p = http_yaml(&format!(
        r#"
url: {base}/health.json
assertions:
  - {{jsonPath: $.status, equals: UP}}
  - {{jsonPath: $.queue.depth, lessThan: 100}}
  - {{jsonPath: '$.filler[1999]', contains: '01999'}}
  - {{header: content-type, matches: '^application/json'}}
  - {{body: '/"depth":\d+/'}}
"#
    ));
    let v = http::probe(&p).await;
    assert!(v.passed_ok() && !v.is_degraded(), "{v:?}");
    let p = http_yaml(&format!(
        r#"
url: {base}/health.json
assertions:
  - {{jsonPath: $.status, equals: DOWN}}
  - {{header: X-Version, equals: '3.0.0', severity: warning}}
  - {{jsonPath: $.queue.depth, greaterThan: 50, severity: warning}}
"#
    ));
    let v = http::probe(&p).await;
    assert!(!v.passed_ok());
    let at = format!("GET {base}/health.json: status 200: ");
    assert_eq!(
        v.errors,
        [format!("{at}$.status is \"UP\", expected \"DOWN\"")]
    );
    // Only warnings missed: degraded, OK, each named.
    let p = http_yaml(&format!(
        r#"
url: {base}/health.json
assertions:
  - {{header: X-Version, equals: '3.0.0', severity: warning}}
  - {{jsonPath: $.queue.depth, greaterThan: 50, severity: warning}}
  - {{responseTimeUnder: 1ms, severity: warning}}
"#
    ));
    let v = http::probe(&p).await;
    assert!(v.passed_ok() && v.is_degraded(), "{v:?}");
    assert_eq!(
        v.warnings[0],
        format!("{at}header X-Version is \"2.3.1\", expected \"3.0.0\"")
    );
    assert_eq!(
        v.warnings[1],
        format!("{at}$.queue.depth is 12, expected > 50")
    );
    assert!(
        v.warnings[2].starts_with(&format!("{at}response took "))
            && v.warnings[2].ends_with("ms, expected under 1ms"),
        "{}",
        v.warnings[2]
    );
    // A body that is not JSON is said so.
    let p = http_yaml(&format!(
        "{{url: '{base}/small', assertions: [{{jsonPath: $.status, equals: UP}}]}}"
    ));
    let m = http::probe(&p).await.message();
    assert!(m.contains("$.status: the body is not JSON"), "{m}");
}

#[tokio::test]
async fn methods_bodies_status_classes_and_ranges_and_redirect_policies() {
    let base = serve(http_server()).await;
    // The method and the body reach the server, with the body's length.
    let p = http_yaml(&format!(
        "{{url: '{base}/echo', method: POST, body: 'hello', expectBody: 'POST length=5 hello'}}"
    ));
    let v = http::probe(&p).await;
    assert!(v.passed_ok(), "{v:?}");
    let p = http_yaml(&format!("{{url: '{base}/echo', method: HEAD}}"));
    assert!(http::probe(&p).await.passed_ok());
    // Classes and ranges; a miss names what was expected and what came back.
    let p = http_yaml(&format!(
        "{{url: '{base}/status/503', expectStatus: ['5xx']}}"
    ));
    assert!(http::probe(&p).await.passed_ok());
    let p = http_yaml(&format!(
        "{{url: '{base}/status/200', method: DELETE, expectStatus: [201, '3xx', '500-503']}}"
    ));
    assert_eq!(
        http::probe(&p).await.message(),
        // The route takes GET only: the method was sent as asked.
        format!("DELETE {base}/status/200: status 405, expected 201, 3xx, 500-503")
    );
    // redirects: none, the redirect is the answer; follow, another host too.
    let p = http_yaml(&format!(
        "{{url: '{base}/hop/1', redirects: none, expectStatus: [200]}}"
    ));
    assert_eq!(
        http::probe(&p).await.message(),
        format!("GET {base}/hop/1: status 303, expected 200")
    );
    let p = http_yaml(&format!("{{url: '{base}/elsewhere', redirects: follow}}"));
    let v = http::probe(&p).await;
    assert!(
        v.message()
            .starts_with("GET http://127.0.0.2:1/away: connect 127.0.0.2:1: "),
        "followed to the other host: {v:?}"
    );
}

#[tokio::test]
async fn http_host_port_path_form() {
    let base = serve(http_server()).await;
    let port: i32 = base.rsplit(':').next().unwrap().parse().unwrap();
    let p = HttpGetProbe {
        host: Some("127.0.0.1".into()),
        port: Some(port),
        path: Some("/status/503".into()),
        ..Default::default()
    };
    assert_eq!(
        http::probe(&p).await.message(),
        format!("GET {base}/status/503: status 503")
    );
}

#[tokio::test]
async fn redirects_same_host_followed_other_host_not() {
    let base = serve(http_server()).await;
    let mut p = url(&format!("{base}/hop/10"));
    p.expect_body = Some("arrived".into());
    let v = http::probe(&p).await;
    assert!(v.passed_ok(), "ten same-host redirects are followed: {v:?}");
    let v = http::probe(&url(&format!("{base}/hop/11"))).await;
    assert!(!v.passed_ok());
    assert!(
        v.message().contains("stopped after 10 redirects"),
        "{}",
        v.message()
    );
    let v = http::probe(&url(&format!("{base}/elsewhere"))).await;
    assert!(v.passed_ok(), "a redirect to another host is a success");
    assert!(v
        .warnings
        .first()
        .unwrap()
        .contains("redirect to another host http://127.0.0.2:1/away not followed"));
}

#[tokio::test]
async fn body_is_read_up_to_10_kib_and_matched() {
    let base = serve(http_server()).await;
    let mut p = url(&format!("{base}/big"));
    p.expect_body = Some("NEEDLE".into());
    let v = http::probe(&p).await;
    assert!(!v.passed_ok(), "the needle is past the 10 KiB read");
    assert!(
        v.message().ends_with("body does not contain \"NEEDLE\""),
        "{}",
        v.message()
    );
    p.expect_body = Some("xxxx".into());
    let v = http::probe(&p).await;
    assert!(v.passed_ok(), "{v:?}");
    let mut p = url(&format!("{base}/small"));
    p.expect_body = Some(r"/all good \(v\d+\.\d+\)/".into());
    assert!(http::probe(&p).await.passed_ok());
    p.expect_body = Some(r"/^broken/".into());
    assert!(http::probe(&p)
        .await
        .message()
        .ends_with("body does not match /^broken/"));
}

#[tokio::test]
async fn a_chunked_body_is_read_across_its_chunks() {
    let base = serve(http_server()).await;
    let mut p = url(&format!("{base}/chunked"));
    p.expect_body = Some("part, the end".into());
    let v = http::probe(&p).await;
    assert!(v.passed_ok(), "{v:?}");
    p.expect_body = Some("third part".into());
    assert!(http::probe(&p)
        .await
        .message()
        .ends_with("body does not contain \"third part\""));
}

#[tokio::test]
async fn default_headers_and_overrides() {
    let base = serve(http_server()).await;
    let check = |headers: Vec<(&str, &str)>, want: &'static str| {
        let mut p = url(&format!("{base}/headers"));
        p.http_headers = Some(
            headers
                .into_iter()
                .map(|(n, v)| HttpHeader {
                    name: n.into(),
                    value: v.into(),
                })
                .collect(),
        );
        p.expect_body = Some(want.into());
        async move {
            let v = http::probe(&p).await;
            assert!(v.passed_ok(), "{want}: {v:?}");
        }
    };
    check(
        vec![],
        concat!(
            "\"user-agent\": \"probity/",
            env!("CARGO_PKG_VERSION"),
            "\""
        ),
    )
    .await;
    check(vec![], "\"accept\": \"*/*\"").await;
    check(
        vec![("User-Agent", "custom/1")],
        "\"user-agent\": \"custom/1\"",
    )
    .await;
    check(vec![("X-Token", "abc")], "\"x-token\": \"abc\"").await;
    // An empty value removes a default header.
    let mut p = url(&format!("{base}/headers"));
    p.http_headers = Some(vec![HttpHeader {
        name: "Accept".into(),
        value: String::new(),
    }]);
    p.expect_body = Some("/^[^a]*(a[^c]|ac[^c])*$/".into());
    let v = http::probe(&p).await;
    let mut q = url(&format!("{base}/headers"));
    q.http_headers = p.http_headers.clone();
    q.expect_body = Some("\"accept\"".into());
    assert!(
        !http::probe(&q).await.passed_ok(),
        "accept was removed: {v:?}"
    );
}

#[tokio::test]
async fn slow_server_is_cut_off_by_the_timeout() {
    let base = serve(http_server()).await;
    let p = url(&format!("{base}/slow"));
    let r = tokio::time::timeout(Duration::from_millis(300), http::probe(&p)).await;
    assert!(
        r.is_err(),
        "the probe waits for the server; the run's deadline ends it"
    );
}

#[tokio::test]
async fn tcp_refused_and_accepted() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let p = TcpSocketProbe {
        host: Some("127.0.0.1".into()),
        port: port as i32,
    };
    assert!(tcp::probe(&p).await.passed_ok());
    drop(l);
    let v = tcp::probe(&p).await;
    assert!(!v.passed_ok());
    assert!(
        v.message().starts_with(&format!(
            "connect 127.0.0.1:{port}: connection refused after "
        )),
        "{}",
        v.message()
    );
    let v = tcp::probe(&TcpSocketProbe {
        host: Some("nosuch.invalid".into()),
        port: 80,
    })
    .await;
    assert!(
        v.message()
            .starts_with("dns: no such host \"nosuch.invalid\""),
        "{}",
        v.message()
    );
}

#[tokio::test]
async fn probes_leave_no_time_wait_sockets() {
    let base = serve(http_server()).await;
    let port = base.rsplit(':').next().unwrap().to_string();
    for _ in 0..200 {
        assert!(http::probe(&url(&format!("{base}/status/200")))
            .await
            .passed_ok());
    }
    // TIME-WAIT sockets of this port in /proc/net/tcp (state 06).
    let hex_port = format!(":{:04X}", port.parse::<u16>().unwrap());
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let time_wait = tcp
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "06" && (f[1].ends_with(&hex_port) || f[2].ends_with(&hex_port))
        })
        .count();
    assert_eq!(time_wait, 0, "connections are reset, not left in TIME-WAIT");
}

#[tokio::test]
async fn exec_exit_codes_and_output() {
    let ok = exec::probe(&ExecProbe {
        command: vec!["true".into()],
        ..Default::default()
    })
    .await;
    assert!(ok.passed_ok());
    let v = exec::probe(&ExecProbe {
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo out; echo err >&2; exit 7".into(),
        ],
        ..Default::default()
    })
    .await;
    assert_eq!(v.message(), "exec \"sh\" exited with code 7: out err");
    let v = exec::probe(&ExecProbe {
        command: vec![
            "sh".into(),
            "-c".into(),
            "head -c 50000 /dev/zero | tr '\\0' y; exit 1".into(),
        ],
        ..Default::default()
    })
    .await;
    assert!(
        v.message().len() <= exec::MAX_OUTPUT + 64,
        "{}",
        v.message().len()
    );
    let v = exec::probe(&ExecProbe {
        command: vec!["/nonexistent/cmd".into()],
        ..Default::default()
    })
    .await;
    assert!(
        v.message()
            .starts_with("exec \"/nonexistent/cmd\": no such file"),
        "{}",
        v.message()
    );
}

#[tokio::test]
async fn exec_is_killed_with_its_group_when_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let p = ExecProbe {
        command: vec![
            "sh".into(),
            "-c".into(),
            format!("sleep 60 & echo $! > {}; wait", pidfile.display()),
        ],
        ..Default::default()
    };
    let probe = tokio::spawn(async move { exec::probe(&p).await });
    // Cancel only once the command has started its child, however slow the machine.
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the command never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    probe.abort();
    assert!(probe.await.unwrap_err().is_cancelled());
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
            .unwrap_or(false);
        if !alive {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the sleep outlived the probe"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal gRPC health server: one data frame, then trailers.
struct GrpcBody(Option<Bytes>, bool);

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.0.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if !self.1 {
            self.1 = true;
            let mut t = hyper::HeaderMap::new();
            t.insert("grpc-status", "0".parse().unwrap());
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        Poll::Ready(None)
    }
}

async fn grpc_server(status_for: fn(&str) -> u8) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        use http_body_util::BodyExt;
                        assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let service = if body.len() > 7 {
                            String::from_utf8_lossy(&body[7..]).to_string()
                        } else {
                            String::new()
                        };
                        let msg = [0x08, status_for(&service)];
                        let mut frame = vec![0, 0, 0, 0, msg.len() as u8];
                        frame.extend_from_slice(&msg);
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(GrpcBody(Some(Bytes::from(frame)), false))
                                .unwrap(),
                        )
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn grpc_serving_and_not_serving() {
    let port = grpc_server(|service| if service == "db" { 2 } else { 1 }).await;
    let p = |service: &str| GrpcProbe {
        host: Some("127.0.0.1".into()),
        port: port as i32,
        service: Some(service.into()),
    };
    let v = grpc::probe(&p("")).await;
    assert!(v.passed_ok(), "{v:?}");
    let v = grpc::probe(&p("db")).await;
    assert_eq!(
        v.message(),
        format!("grpc 127.0.0.1:{port}: status NOT_SERVING")
    );
}

async fn tls_server(dir: &std::path::Path) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                        Bytes::from("secure ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    format!("https://{addr}/")
}

#[tokio::test]
async fn https_is_unverified_unless_asked_and_verifies_against_a_ca_file() {
    if !common::need_tool("openssl", "apt-get install openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    common::make_certs(dir.path());
    let base = tls_server(dir.path()).await;
    let port: i32 = base
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // kubelet's fields keep kubelet's semantics: not verified.
    let kubelet = HttpGetProbe {
        host: Some("127.0.0.1".into()),
        port: Some(port),
        scheme: Some("HTTPS".into()),
        expect_body: Some("secure ok".into()),
        ..Default::default()
    };
    let v = http::probe(&kubelet).await;
    assert!(
        v.passed_ok(),
        "a self-signed server passes kubelet's fields unverified: {v:?}"
    );
    let mut p = url(&base);
    p.verify_tls = Some(false);
    assert!(http::probe(&p).await.passed_ok(), "verifyTLS: false");
    // A url is verified by default.
    p.verify_tls = None;
    let v = http::probe(&p).await;
    assert!(!v.passed_ok(), "the system roots do not know this CA");
    assert!(
        v.message().contains("TLS") && v.message().contains("certificate"),
        "{}",
        v.message()
    );
    p.ca_file = Some(dir.path().join("ca.pem").display().to_string());
    let v = http::probe(&p).await;
    assert!(v.passed_ok(), "verified against the CA file: {v:?}");
    // The name is verified: the certificate is for 127.0.0.1, not localhost.
    let mut by_name = p.clone();
    by_name.url = Some(base.replace("127.0.0.1", "localhost"));
    let v = http::probe(&by_name).await;
    assert!(
        !v.passed_ok()
            && v.message()
                .contains("certificate not valid for name \"localhost\""),
        "{}",
        v.message()
    );
    // The certificate's expiry (openssl made it for 2 days): enough for 1d, a warning at 14d.
    p.assertions = serde_saphyr::from_str(
        "[{certificateValidFor: 1d}, {certificateValidFor: 14d, severity: warning}]",
    )
    .unwrap();
    let v = http::probe(&p).await;
    assert!(v.passed_ok() && v.is_degraded(), "{v:?}");
    assert!(
        // Made for 2 days a moment ago: 1d 23h, or 2d 0h when openssl rounded up.
        (v.warnings[0].contains("certificate expires in 1d 23h (")
            || v.warnings[0].contains("certificate expires in 2d 0h ("))
            && v.warnings[0].ends_with("), expected at least 14d 0h"),
        "{}",
        v.warnings[0]
    );
    p.assertions = serde_saphyr::from_str("[{certificateValidFor: 3d}]").unwrap();
    assert!(!http::probe(&p).await.passed_ok(), "3d is more than it has");
    // Plain HTTP where TLS is expected fails as a TLS error.
    let plain = serve(http_server()).await;
    let v = http::probe(&url(&plain.replace("http://", "https://"))).await;
    assert!(
        !v.passed_ok() && v.message().contains("TLS"),
        "{}",
        v.message()
    );
}

mod thresholds {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::{TimeZone, Utc};
    use probity::api::load::parse_documents;
    use probity::api::CheckKey;
    use probity::engine::clock::TokioClock;
    use probity::engine::driver::Driver;
    use probity::engine::MemoryStore;
    use probity::engine::{Desired, Engine, EngineConfig, EngineHandle};
    use probity::local::LocalRunner;
    use tokio::sync::{mpsc, watch};

    /// A TCP probe check on a paused clock: the published state flips only after three failures
    /// in a row (the probe default), and back after one success.
    #[tokio::test(start_paused = true)]
    async fn tcp_probe_flips_state_by_thresholds() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (handle, events) = EngineHandle::channel();
        let (stop, shutdown) = watch::channel(false);
        let (obs, mut finished) = mpsc::unbounded_channel();
        let runner = Arc::new(LocalRunner::new(handle.clone(), "http://127.0.0.1:1"));
        let clock = TokioClock::starting_at(Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap());
        let driver = Driver::new(
            Engine::new(EngineConfig::new("t")),
            runner,
            Arc::new(MemoryStore),
            clock,
            events,
            Arc::new(probity::engine::Board::new("t")),
        )
        .stopping_on(shutdown)
        .grace(Duration::from_secs(1))
        .observed_by(obs);
        let board = driver.board().clone();
        let task = tokio::spawn(driver.run());
        handle.loaded().await;
        let text = format!(
            "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: db, namespace: t}}\nspec:\n  probe: {{tcpSocket: {{host: 127.0.0.1, port: {port}}}}}\n"
        );
        let check = parse_documents(&text).unwrap().remove(0).check.unwrap();
        handle
            .upsert(Desired::new(Arc::new(check), None), None)
            .await;
        let key = CheckKey::new("t", "db");
        let ok = || board.get(&key).unwrap().status.ok;

        assert!(finished.recv().await.unwrap().result.outcome.is_success());
        assert!(ok());
        drop(listener);
        for n in 1..=3 {
            let f = finished.recv().await.unwrap();
            assert!(!f.result.outcome.is_success());
            assert!(f.result.errors[0]
                .starts_with(&format!("connect 127.0.0.1:{port}: connection refused")));
            assert_eq!(ok(), n < 3, "after {n} failures");
        }
        let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert!(finished.recv().await.unwrap().result.outcome.is_success());
        assert!(ok());
        let st = board.get(&key).unwrap().status.clone();
        // 10 s apart, start to start, on the paused clock.
        let starts: Vec<i64> = st.history.iter().map(|h| h.start_unix).collect();
        assert!(starts.windows(2).all(|w| w[0] - w[1] == 10), "{starts:?}");
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}

/// dnsmasq on loopback, answering the zone `test` from its command line only (nothing is
/// forwarded); killed when dropped.
struct Dnsmasq {
    child: std::process::Child,
    addr: String,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn dnsmasq() -> Option<Dnsmasq> {
    if !common::need_tool("dnsmasq", "apt-get install dnsmasq-base") {
        return None;
    }
    // dnsmasq listens on UDP and TCP: a port free for UDP may be another test's ephemeral TCP
    // port a moment later, and then dnsmasq exits. Another port is tried then.
    let mut why = String::new();
    for _ in 0..5 {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--user=root",
                "--group=root",
                "--pid-file=",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                &format!("--port={port}"),
                "--local=/test/",
                "--host-record=web.test,10.0.0.1",
                "--host-record=web.test,10.0.0.2",
                "--host-record=v6.test,fd00::1",
                "--cname=alias.test,web.test",
                "--mx-host=mail.test,mx1.mail.test,10",
                "--txt-record=txt.test,v=spf1 -all",
                "--srv-host=_http._tcp.srv.test,web.test,8080,10,5",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start dnsmasq");
        let mut d = Dnsmasq {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        // Ready when it answers.
        let server = d.addr.parse().unwrap();
        for _ in 0..100 {
            if dns::query(server, "web.test", dns::QTYPE_A, Duration::from_millis(100))
                .await
                .is_ok()
            {
                return Some(d);
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = d.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                why = format!("dnsmasq on {} exited ({status}): {}", d.addr, err.trim());
                break;
            }
            // Not listening yet: refused at once.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if why.is_empty() {
            panic!("dnsmasq did not answer on {}", d.addr);
        }
    }
    panic!("{why}");
}

fn dns_probe(yaml: &str) -> DnsProbe {
    serde_saphyr::from_str(yaml).unwrap()
}

#[tokio::test]
async fn dns_probes_against_a_real_server() {
    let Some(d) = dnsmasq().await else { return };
    let at = &d.addr.clone();
    let run =
        |yaml: String| async move { dns::probe(&dns_probe(&yaml), Duration::from_secs(2)).await };
    let ok = |r: &probity::api::RunResult| r.passed_ok();

    // Each record type, its answers as text.
    for (q, want) in [
        (
            "{name: web.test, answers: {equals: [10.0.0.2, 10.0.0.1]}}",
            true,
        ),
        (
            "{name: web.test, type: A, answers: {contains: [10.0.0.1]}}",
            true,
        ),
        (
            "{name: v6.test, type: AAAA, answers: {equals: ['fd00::1']}}",
            true,
        ),
        (
            "{name: alias.test, type: CNAME, answers: {equals: [web.test.]}}",
            true,
        ),
        (
            "{name: mail.test, type: MX, answers: {equals: ['10 mx1.mail.test']}}",
            true,
        ),
        (
            "{name: txt.test, type: TXT, answers: {contains: ['v=spf1 -all']}}",
            true,
        ),
        (
            "{name: _http._tcp.srv.test, type: SRV, answers: {equals: ['10 5 8080 web.test']}}",
            true,
        ),
        ("{name: nowhere.test, rcode: NXDOMAIN}", true),
        ("{name: web.test}", true),
    ] {
        let r = run(format!("{{server: '{at}', {}", &q[1..])).await;
        assert_eq!(ok(&r), want, "{q}: {:?}", r.errors);
    }

    // Failures name what was expected and what came back.
    let r = run(format!(
        "{{server: '{at}', name: web.test, answers: {{contains: [10.0.0.9]}}}}"
    ))
    .await;
    assert_eq!(
        r.errors,
        [format!(
            "web.test A at {at}: expected an answer \"10.0.0.9\"; got 10.0.0.1, 10.0.0.2"
        )]
    );
    let r = run(format!(
        "{{server: '{at}', name: web.test, answers: {{equals: [10.0.0.1]}}}}"
    ))
    .await;
    assert_eq!(
        r.errors,
        [format!(
            "web.test A at {at}: expected exactly 10.0.0.1; got 10.0.0.1, 10.0.0.2"
        )]
    );
    let r = run(format!("{{server: '{at}', name: nowhere.test}}")).await;
    assert_eq!(
        r.errors,
        [format!(
            "nowhere.test A at {at}: NXDOMAIN, expected NOERROR"
        )]
    );
    let r = run(format!("{{server: '{at}', name: web.test, type: MX}}")).await;
    assert_eq!(
        r.errors,
        [format!(
            "web.test MX at {at}: no MX record (NOERROR, empty answer)"
        )]
    );
    // A server that never answers: asked twice within the run's time, then said so.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let quiet = silent.local_addr().unwrap();
    let started = std::time::Instant::now();
    let r = dns::probe(
        &dns_probe(&format!("{{server: '{quiet}', name: web.test}}")),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        r.errors,
        [format!("web.test A at {quiet}: no answer in 0.9s")]
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "within the run's timeout"
    );
    let mut buf = [0u8; 512];
    let mut asked = 0;
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(10), silent.recv_from(&mut buf)).await
    {
        asked += 1;
    }
    assert_eq!(asked, 2, "the query and its one retry");
    // Nothing listening: said so, not a hang.
    drop(d);
    let r = run(format!("{{server: '{at}', name: web.test}}")).await;
    assert!(
        r.errors[0].starts_with(&format!("web.test A at {at}: ")),
        "{:?}",
        r.errors
    );
}
