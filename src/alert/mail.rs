//! Mail receivers: a minimal SMTP client (RFC 5321) for notices. STARTTLS is required unless
//! the configuration says `tls: none`: a server that does not offer it gets nothing, not a
//! message in plain text. AUTH PLAIN, only over TLS.

use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// How the session is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// Upgraded with STARTTLS before anything else is said; the server verified against the
    /// Mozilla roots, or `ca_file`.
    StartTls { ca_file: Option<String> },
    /// Plain text (a relay on the same host).
    None,
}

/// A mail receiver, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub host: String,
    pub port: u16,
    pub from: String,
    pub to: Vec<String>,
    /// Username and password, for AUTH PLAIN.
    pub auth: Option<(String, String)>,
    pub security: Security,
}

/// One message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub account: Account,
    pub subject: String,
    pub body: String,
    /// The notice's id, for the Message-ID (a receiver drops a repeat by it).
    pub id: String,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Session {
    conn: BufStream<Box<dyn Io>>,
}

impl Session {
    /// Reads a reply (its lines up to the one with a space after the code); the code and the
    /// text.
    async fn reply(&mut self) -> Result<(u16, String), String> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .conn
                .read_line(&mut line)
                .await
                .map_err(|e| format!("reading the server's reply: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            if line.len() < 4 {
                return Err(format!("the server said {:?}", line.trim_end()));
            }
            let code: u16 = line[..3]
                .parse()
                .map_err(|_| format!("the server said {:?}", line.trim_end()))?;
            text.push_str(line[4..].trim_end());
            text.push('\n');
            if line.as_bytes()[3] == b' ' {
                return Ok((code, text));
            }
        }
    }

    /// Sends `line` and expects a reply with `want` (2 for 2xx, 3 for 3xx); `what` names the
    /// step in the error.
    async fn say(&mut self, line: &str, want: u16, what: &str) -> Result<String, String> {
        self.conn
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        self.conn
            .flush()
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        self.expect(want, what).await
    }

    async fn expect(&mut self, want: u16, what: &str) -> Result<String, String> {
        let (code, text) = self.reply().await?;
        if code / 100 != want {
            return Err(format!(
                "{what}: {code} {}",
                text.trim_end().replace('\n', " ")
            ));
        }
        Ok(text)
    }
}

fn client_config(ca_file: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    match ca_file {
        Some(f) => crate::tls::from_ca_file(f).map_err(|e| format!("caFile {e}")),
        None => crate::tls::verifying(None).map_err(|e| e.to_string()),
    }
}

/// Sends `mail`; an error says which step failed and what the server said.
pub async fn send(mail: &Mail) -> Result<(), String> {
    let a = &mail.account;
    let tcp = TcpStream::connect((a.host.as_str(), a.port))
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let mut s = Session {
        conn: BufStream::new(Box::new(tcp)),
    };
    s.expect(2, "greeting").await?;
    let helo = format!("EHLO {}", hostname());
    let mut offered = s.say(&helo, 2, "EHLO").await?;
    if let Security::StartTls { ca_file } = &a.security {
        if !offered.lines().any(|l| l.eq_ignore_ascii_case("STARTTLS")) {
            return Err(
                "the server does not offer STARTTLS (set tls: none for a plain-text relay)".into(),
            );
        }
        s.say("STARTTLS", 2, "STARTTLS").await?;
        let config = client_config(ca_file.as_deref())?;
        let name = rustls::pki_types::ServerName::try_from(a.host.clone())
            .map_err(|e| format!("{:?}: {e}", a.host))?;
        let plain = s.conn.into_inner();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, plain)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        s = Session {
            conn: BufStream::new(Box::new(tls)),
        };
        offered = s.say(&helo, 2, "EHLO").await?;
    }
    if let Some((user, password)) = &a.auth {
        if !offered.lines().any(|l| {
            l.to_ascii_uppercase().starts_with("AUTH") && l.to_ascii_uppercase().contains("PLAIN")
        }) {
            return Err("the server does not offer AUTH PLAIN".into());
        }
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        s.say(&format!("AUTH PLAIN {token}"), 2, "AUTH").await?;
    }
    s.say(&format!("MAIL FROM:<{}>", a.from), 2, "MAIL FROM")
        .await?;
    for to in &a.to {
        s.say(&format!("RCPT TO:<{to}>"), 2, &format!("RCPT TO {to}"))
            .await?;
    }
    s.say("DATA", 3, "DATA").await?;
    let message = message(mail, chrono::Utc::now());
    s.conn
        .write_all(message.as_bytes())
        .await
        .map_err(|e| format!("sending the message: {e}"))?;
    s.say(".", 2, "the message").await?;
    // The message is accepted; the goodbye is a courtesy.
    let _ = s.say("QUIT", 2, "QUIT").await;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
        .unwrap_or_else(|| "probity".into())
}

/// A header value as RFC 2047 words when it is not plain ASCII; never with a line break (no
/// header can be injected).
fn header_text(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.is_ascii() {
        one_line
    } else {
        format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(one_line)
        )
    }
}

/// The message as sent after DATA: headers, the body in base64 (any text, any line length),
/// and no line that is a lone dot.
pub fn message(mail: &Mail, now: chrono::DateTime<chrono::Utc>) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(mail.body.as_bytes());
    let mut out = String::new();
    out.push_str(&format!("From: {}\r\n", mail.account.from));
    out.push_str(&format!("To: {}\r\n", mail.account.to.join(", ")));
    out.push_str(&format!("Subject: {}\r\n", header_text(&mail.subject)));
    out.push_str(&format!("Date: {}\r\n", now.to_rfc2822()));
    let id: String = mail
        .id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '.'
            }
        })
        .collect();
    out.push_str(&format!("Message-ID: <{id}@probity>\r\n"));
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    out.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
    for chunk in body.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_headers_and_a_base64_body_with_nothing_injected() {
        let mail = Mail {
            account: Account {
                host: "h".into(),
                port: 25,
                from: "probity@example.com".into(),
                to: vec!["a@example.com".into(), "b@example.com".into()],
                auth: None,
                security: Security::None,
            },
            subject: "it/db is failing\r\nBcc: victim@example.com — é".into(),
            body: ".\nline".into(),
            id: "it/db/1700000000/firing".into(),
        };
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let m = message(&mail, now);
        assert!(m.starts_with("From: probity@example.com\r\nTo: a@example.com, b@example.com\r\nSubject: =?utf-8?b?"), "{m}");
        assert!(!m.contains("\r\nBcc:"), "{m}");
        assert!(m.contains("Message-ID: <it.db.1700000000.firing@probity>\r\n"));
        assert!(m.contains("Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
        let body = m.split("\r\n\r\n").nth(1).unwrap().replace("\r\n", "");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        assert_eq!(decoded, b".\nline");
        assert!(!m.lines().any(|l| l == "."));
    }
}
