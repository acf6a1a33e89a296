//! A probe's HTTP/1.1 exchange on a connection of its own: the request goes out in one write,
//! the response's head is parsed with httparse, and its body is read by its framing
//! (Content-Length, chunked, or until the server closes) up to a limit, then the connection is
//! dropped (reset: SO_LINGER 0).
//!
//! Why not hyper's client connection: for one request per connection it costs a dispatch
//! channel, two oneshots, a body channel and 8 KiB buffers, allocated and torn down for every
//! probe; at a thousand probes a second that was a good part of probity's CPU for an HTTP probe.
//! A probe needs only this much of HTTP/1.1 (RFC 9112).

use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::tcp::io_reason;
use super::ProbeError;

/// The most a response's head (status line and headers) may take.
const MAX_HEAD: usize = 64 * 1024;
/// The most headers a response may have.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

/// A response as a probe judges it: its body holds at most the limit asked for.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The bytes of a request: `headers` as given (validated by the caller), then a
/// Content-Length when there is a body or the method usually carries one and none was given.
pub fn encode(
    method: &Method,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let carries = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if (!body.is_empty() || carries) && !headers.iter().any(|(n, _)| n == CONTENT_LENGTH) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Sends `request` and reads the response: its head, and up to `body_limit` bytes of its body
/// (none for a response to HEAD, `head_only`).
pub async fn exchange<S>(
    io: &mut S,
    request: &[u8],
    head_only: bool,
    body_limit: usize,
) -> Result<Response, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let failed =
        |what: &str, e: std::io::Error| ProbeError::Exchange(format!("{what}: {}", io_reason(&e)));
    io.write_all(request)
        .await
        .map_err(|e| failed("sending the request", e))?;
    io.flush()
        .await
        .map_err(|e| failed("sending the request", e))?;
    let mut r = Reader {
        io,
        buf: Vec::with_capacity(4096),
        pos: 0,
    };
    let (status, headers) = r.head().await?;
    let code = status.as_u16();
    let mut body = Vec::new();
    if head_only || body_limit == 0 || code == 204 || code == 304 || code < 200 {
        return Ok(Response {
            status,
            headers,
            body,
        });
    }
    let chunked = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
    if chunked {
        r.chunked(&mut body, body_limit).await?;
    } else if let Some(v) = headers.get(CONTENT_LENGTH) {
        let length: usize = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| ProbeError::Exchange(format!("invalid content-length {v:?}")))?;
        r.exactly(length.min(body_limit), &mut body).await?;
    } else {
        r.until_close(&mut body, body_limit).await?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The connection's bytes: `buf[pos..]` are read but not yet used.
struct Reader<'a, S> {
    io: &'a mut S,
    buf: Vec<u8>,
    pos: usize,
}

impl<S: AsyncRead + Unpin> Reader<'_, S> {
    /// Reads more; Ok(false) at the end of the stream.
    async fn more(&mut self) -> Result<bool, ProbeError> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.reserve(4096);
        match self.io.read_buf(&mut self.buf).await {
            Ok(n) => Ok(n > 0),
            // A TLS server that closes without close_notify: the end, as far as HTTP goes.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(ProbeError::Exchange(format!(
                "reading the response: {}",
                io_reason(&e)
            ))),
        }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// The status and headers of the final response (interim 1xx responses are skipped).
    async fn head(&mut self) -> Result<(StatusCode, HeaderMap), ProbeError> {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(self.available()) {
                Ok(httparse::Status::Complete(n)) => {
                    let code = parsed.code.unwrap_or(0);
                    let status = StatusCode::from_u16(code).map_err(|_| {
                        ProbeError::Exchange(format!("invalid response: status {code}"))
                    })?;
                    if (100..200).contains(&code) && code != 101 {
                        self.pos += n;
                        continue;
                    }
                    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
                    for h in parsed.headers.iter() {
                        // httparse has checked both against RFC 9110's grammar.
                        if let (Ok(name), Ok(value)) = (
                            HeaderName::from_bytes(h.name.as_bytes()),
                            HeaderValue::from_bytes(h.value),
                        ) {
                            headers.append(name, value);
                        }
                    }
                    self.pos += n;
                    return Ok((status, headers));
                }
                Ok(httparse::Status::Partial) => {
                    if self.available().len() > MAX_HEAD {
                        return Err(ProbeError::Exchange(format!(
                            "the response's head is over {} KiB",
                            MAX_HEAD / 1024
                        )));
                    }
                    if !self.more().await? {
                        let why = if self.available().is_empty() {
                            "the server closed the connection without a response"
                        } else {
                            "the server closed the connection in the response's head"
                        };
                        return Err(ProbeError::Exchange(why.to_string()));
                    }
                }
                Err(e) => {
                    return Err(ProbeError::Exchange(format!("invalid response: {e}")));
                }
            }
        }
    }

    /// `n` bytes of body into `out`.
    async fn exactly(&mut self, n: usize, out: &mut Vec<u8>) -> Result<(), ProbeError> {
        let mut left = n;
        loop {
            let take = left.min(self.available().len());
            out.extend_from_slice(&self.available()[..take]);
            self.pos += take;
            left -= take;
            if left == 0 {
                return Ok(());
            }
            if !self.more().await? {
                return Err(ProbeError::Exchange(format!(
                    "reading the body: the server closed the connection {} bytes before its end",
                    left
                )));
            }
        }
    }

    /// The body up to `limit` or the end of the stream.
    async fn until_close(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), ProbeError> {
        loop {
            let take = (limit - out.len()).min(self.available().len());
            out.extend_from_slice(&self.available()[..take]);
            self.pos += take;
            if out.len() >= limit || !self.more().await? {
                return Ok(());
            }
        }
    }

    /// A line ending in CRLF (without it).
    async fn line(&mut self) -> Result<Vec<u8>, ProbeError> {
        loop {
            if let Some(i) = self.available().windows(2).position(|w| w == b"\r\n") {
                let line = self.available()[..i].to_vec();
                self.pos += i + 2;
                return Ok(line);
            }
            if self.available().len() > MAX_CHUNK_LINE {
                return Err(ProbeError::Exchange(
                    "reading the body: a chunk's size line is too long".into(),
                ));
            }
            if !self.more().await? {
                return Err(ProbeError::Exchange(
                    "reading the body: the server closed the connection mid-chunk".into(),
                ));
            }
        }
    }

    /// A chunked body's data up to `limit`.
    async fn chunked(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), ProbeError> {
        while out.len() < limit {
            let line = self.line().await?;
            let text = String::from_utf8_lossy(&line);
            let size = text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| {
                ProbeError::Exchange(format!("reading the body: invalid chunk size {size:?}"))
            })?;
            if size == 0 {
                return Ok(());
            }
            self.exactly(size.min(limit - out.len()), out).await?;
            if out.len() >= limit {
                return Ok(());
            }
            // The CRLF after the chunk's data.
            self.line().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, body: &[u8]) -> String {
        let headers = [(
            HeaderName::from_static("host"),
            HeaderValue::from_static("h:1"),
        )];
        String::from_utf8(encode(&method, "/p?q=1", &headers, body)).unwrap()
    }

    #[test]
    fn requests_carry_a_length_when_they_have_a_body_or_usually_would() {
        assert_eq!(
            req(Method::GET, b""),
            "GET /p?q=1 HTTP/1.1\r\nhost: h:1\r\n\r\n"
        );
        assert_eq!(
            req(Method::POST, b""),
            "POST /p?q=1 HTTP/1.1\r\nhost: h:1\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(
            req(Method::DELETE, b"abc"),
            "DELETE /p?q=1 HTTP/1.1\r\nhost: h:1\r\ncontent-length: 3\r\n\r\nabc"
        );
    }

    /// The response to `wire` read whole by `exchange` (the request goes nowhere).
    async fn answer(wire: &[u8], head_only: bool, limit: usize) -> Result<Response, ProbeError> {
        let (mut client, mut server) = tokio::io::duplex(64);
        let wire = wire.to_vec();
        let serving = tokio::spawn(async move {
            let mut sink = [0u8; 16];
            let _ = server.read(&mut sink).await;
            // In small pieces, so every state waits for more at least once.
            for piece in wire.chunks(7) {
                if server.write_all(piece).await.is_err() {
                    return;
                }
            }
        });
        let r = exchange(&mut client, b"GET / HTTP/1.1\r\n\r\n", head_only, limit).await;
        serving.abort();
        r
    }

    #[tokio::test]
    async fn bodies_are_read_by_their_framing_up_to_the_limit() {
        let r = answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhelloEXTRA",
            false,
            100,
        )
        .await
        .unwrap();
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"hello"[..]));
        assert_eq!(r.headers["x-a"], "1");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\n";
        let r = answer(chunked, false, 100).await.unwrap();
        assert_eq!(r.body, b"Wikipedia");
        let r = answer(chunked, false, 6).await.unwrap();
        assert_eq!(r.body, b"Wikipe");
        // Neither: the body ends when the server closes.
        let r = answer(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", false, 100)
            .await
            .unwrap();
        assert_eq!(r.body, b"until the end");
        let r = answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            false,
            3,
        )
        .await
        .unwrap();
        assert_eq!(r.body, b"hel");
        // No body asked for, or none to have: the head is enough.
        let r = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, 100)
            .await
            .unwrap();
        assert!(r.body.is_empty());
        let r = answer(b"HTTP/1.1 204 No Content\r\n\r\n", false, 100)
            .await
            .unwrap();
        assert_eq!(r.status, 204);
        // Interim responses are skipped.
        let r = answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            false,
            100,
        )
        .await
        .unwrap();
        assert_eq!((r.status.as_u16(), &r.body[..]), (201, &b"ok"[..]));
    }

    #[tokio::test]
    async fn broken_responses_say_what_broke() {
        let said = |r: Result<Response, ProbeError>| r.unwrap_err().to_string();
        assert_eq!(
            said(answer(b"", false, 100).await),
            "the server closed the connection without a response"
        );
        assert_eq!(
            said(answer(b"HTTP/1.1 200 OK\r\nContent-", false, 100).await),
            "the server closed the connection in the response's head"
        );
        assert!(
            said(answer(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", false, 100).await)
                .starts_with("invalid response: ")
        );
        assert_eq!(
            said(
                answer(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello",
                    false,
                    100
                )
                .await
            ),
            "reading the body: the server closed the connection 4 bytes before its end"
        );
        assert_eq!(
            said(answer(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false, 100).await),
            "invalid content-length \"x\""
        );
        assert_eq!(
            said(
                answer(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                    false,
                    100
                )
                .await
            ),
            "reading the body: invalid chunk size \"zz\""
        );
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(70 * 1024));
        assert_eq!(
            said(answer(huge.as_bytes(), false, 100).await),
            "the response's head is over 64 KiB"
        );
    }
}
