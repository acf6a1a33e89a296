//! `probity check network`: connects to `CONNECTION_TARGET` (`tcp://host:port` or
//! `udp://host:port`) and passes when the target is reachable, or, with
//! `CONNECTION_TARGET_UNREACHABLE=true`, when it is not. Kuberhealthy's settings, with its defect
//! fixed: there any error passed an "unreachable" check, a typo in the target or a name that does
//! not resolve included. Here only an answer that says "not reachable" does: a refused
//! connection, a timeout, no route. Anything else fails the check in both modes.

use std::io::ErrorKind;
use std::time::Duration;

use crate::checks::Problem;

use tokio::net::{lookup_host, TcpStream, UdpSocket};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub proto: Proto,
    /// `host:port` as given.
    pub address: String,
    /// `CONNECTION_TARGET_UNREACHABLE` (false).
    pub expect_unreachable: bool,
    /// `CONNECTION_TIMEOUT` (20s), cut to the run's time.
    pub timeout: Duration,
}

/// What a connection attempt showed.
#[derive(Debug, PartialEq)]
enum Reach {
    Reachable,
    /// The network said no: refused, timed out, no route.
    Unreachable(String),
    /// It proved nothing about the target (no such name, bad address, no answer over UDP).
    Unknown(String),
}

impl Config {
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        Self::parse(&env).map_err(|e| vec![e.0])
    }

    fn parse(env: &impl Fn(&str) -> Option<String>) -> Result<Self, Problem> {
        let target = env("CONNECTION_TARGET").unwrap_or_default();
        let target = target.trim();
        if target.is_empty() {
            return Err("CONNECTION_TARGET is not set: tcp://host:port or udp://host:port".into());
        }
        let (proto, address) = if let Some(a) = target.strip_prefix("tcp://") {
            (Proto::Tcp, a)
        } else if let Some(a) = target.strip_prefix("udp://") {
            (Proto::Udp, a)
        } else {
            return Err(Problem(format!(
                "CONNECTION_TARGET={target:?}: start it with tcp:// or udp://"
            )));
        };
        let port_ok = address
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok {
            return Err(Problem(format!(
                "CONNECTION_TARGET={target:?}: want host:port after the scheme"
            )));
        }
        let expect_unreachable = match env("CONNECTION_TARGET_UNREACHABLE")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(Problem(format!(
                    "CONNECTION_TARGET_UNREACHABLE={other:?}: want true or false"
                )))
            }
        };
        let timeout = super::duration(env, "CONNECTION_TIMEOUT", Duration::from_secs(20))?;
        Ok(Config {
            proto,
            address: address.to_string(),
            expect_unreachable,
            timeout,
        })
    }

    fn target(&self) -> String {
        let scheme = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        format!("{scheme}://{}", self.address)
    }

    pub async fn run(&self, budget: Duration) -> Result<(), Vec<String>> {
        let limit = self.timeout.min(budget);
        let reach = match self.proto {
            Proto::Tcp => tcp(&self.address, limit).await,
            Proto::Udp => udp(&self.address, limit).await,
        };
        let target = self.target();
        match (reach, self.expect_unreachable) {
            (Reach::Reachable, false) | (Reach::Unreachable(_), true) => Ok(()),
            (Reach::Reachable, true) => Err(vec![format!(
                "{target} is reachable, and CONNECTION_TARGET_UNREACHABLE says it must not be"
            )]),
            (Reach::Unreachable(why), false) => Err(vec![format!("{target}: {why}")]),
            (Reach::Unknown(why), _) => Err(vec![format!(
                "{target}: {why}; that says nothing about whether it is reachable"
            )]),
        }
    }
}

/// Whether an I/O error is the network saying the target cannot be reached.
fn says_unreachable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::TimedOut
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::ConnectionReset
    )
}

async fn resolve(address: &str) -> Result<Vec<std::net::SocketAddr>, Reach> {
    match lookup_host(address).await {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            if addrs.is_empty() {
                Err(Reach::Unknown(format!("{address} resolves to no address")))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(Reach::Unknown(format!("cannot resolve {address}: {e}"))),
    }
}

async fn tcp(address: &str, limit: Duration) -> Reach {
    let addrs = match resolve(address).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match tokio::time::timeout(limit, TcpStream::connect(&addrs[..])).await {
        Ok(Ok(_)) => Reach::Reachable,
        Ok(Err(e)) if says_unreachable(&e) => Reach::Unreachable(format!("connect: {e}")),
        Ok(Err(e)) => Reach::Unknown(format!("connect: {e}")),
        Err(_) => Reach::Unreachable(format!("no connection within {limit:?}")),
    }
}

/// UDP has no handshake: a datagram is sent, and an answer means reachable, an ICMP "port
/// unreachable" (a refused receive) means not; silence proves neither.
async fn udp(address: &str, limit: Duration) -> Reach {
    let addrs = match resolve(address).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let local = if addrs[0].is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let attempt = async {
        let sock = UdpSocket::bind(local).await?;
        sock.connect(addrs[0]).await?;
        sock.send(b"probity\n").await?;
        let mut buf = [0u8; 512];
        sock.recv(&mut buf).await
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(_)) => Reach::Reachable,
        Ok(Err(e)) if says_unreachable(&e) => Reach::Unreachable(format!("udp: {e}")),
        Ok(Err(e)) => Reach::Unknown(format!("udp: {e}")),
        Err(_) => Reach::Unknown(format!("no answer over UDP within {limit:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_env as env;

    fn cfg(target: &str, unreachable: &str) -> Config {
        Config::from_env(env(&[
            ("CONNECTION_TARGET", target),
            ("CONNECTION_TARGET_UNREACHABLE", unreachable),
            ("CONNECTION_TIMEOUT", "2s"),
        ]))
        .unwrap()
    }

    #[test]
    fn settings_name_what_is_wrong() {
        let c = Config::from_env(env(&[("CONNECTION_TARGET", "tcp://github.com:443")])).unwrap();
        assert_eq!(
            (c.proto, c.address.as_str(), c.expect_unreachable, c.timeout),
            (Proto::Tcp, "github.com:443", false, Duration::from_secs(20))
        );
        let err = |pairs: &[(&str, &str)]| Config::from_env(env(pairs)).unwrap_err().join("");
        assert!(err(&[]).starts_with("CONNECTION_TARGET is not set"));
        assert!(err(&[("CONNECTION_TARGET", "github.com:443")]).contains("tcp:// or udp://"));
        assert!(err(&[("CONNECTION_TARGET", "tcp://github.com")]).contains("host:port"));
        assert!(err(&[
            ("CONNECTION_TARGET", "tcp://h:1"),
            ("CONNECTION_TARGET_UNREACHABLE", "yes")
        ])
        .contains("want true or false"));
        assert!(err(&[
            ("CONNECTION_TARGET", "tcp://h:1"),
            ("CONNECTION_TIMEOUT", "soon")
        ])
        .starts_with("CONNECTION_TIMEOUT=\"soon\""));
    }

    #[tokio::test]
    async fn tcp_reachable_refused_and_what_unreachable_means() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = format!("tcp://{}", open.local_addr().unwrap());
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("tcp://{}", l.local_addr().unwrap())
        };
        let budget = Duration::from_secs(5);
        assert_eq!(cfg(&open, "false").run(budget).await, Ok(()));
        assert_eq!(cfg(&closed, "true").run(budget).await, Ok(()));
        let e = cfg(&closed, "false").run(budget).await.unwrap_err();
        assert!(e[0].starts_with(&format!("{closed}: connect: ")), "{e:?}");
        let e = cfg(&open, "true").run(budget).await.unwrap_err();
        assert_eq!(
            e[0],
            format!("{open} is reachable, and CONNECTION_TARGET_UNREACHABLE says it must not be")
        );
    }

    #[tokio::test]
    async fn udp_answer_refusal_and_silence() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = format!("udp://{}", echo.local_addr().unwrap());
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = format!("udp://{}", silent.local_addr().unwrap());
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            format!("udp://{}", s.local_addr().unwrap())
        };
        let budget = Duration::from_millis(500);
        assert_eq!(cfg(&echo_addr, "false").run(budget).await, Ok(()));
        assert_eq!(cfg(&closed, "true").run(budget).await, Ok(()));
        // Silence proves nothing, either way.
        for expect in ["true", "false"] {
            let e = cfg(&silent_addr, expect).run(budget).await.unwrap_err();
            assert!(e[0].contains("no answer over UDP"), "{e:?}");
        }
        drop(silent);
    }

    #[test]
    fn only_network_answers_count_as_unreachable() {
        use std::io::Error;
        assert!(says_unreachable(&Error::from(ErrorKind::ConnectionRefused)));
        assert!(says_unreachable(&Error::from(ErrorKind::TimedOut)));
        assert!(!says_unreachable(&Error::from(ErrorKind::PermissionDenied)));
        assert!(!says_unreachable(&Error::from(ErrorKind::InvalidInput)));
    }
}
