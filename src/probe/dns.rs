//! DNS on the wire (queries made here over UDP rather than through the C library, so a failure
//! names the server and what it said), and the DNS probe: a name, a record type, an optional
//! server, the expected rcode and answers. The bundled `dns` check uses the same codec.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::api::probe::{dns_server_addr as server_addr, DnsProbe, DNS_RCODES, DNS_RECORD_TYPES};
use crate::api::RunResult;

pub const QTYPE_A: u16 = 1;
pub const QTYPE_AAAA: u16 = 28;

pub fn record_type(name: &str) -> Option<u16> {
    DNS_RECORD_TYPES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, c)| *c)
}

pub fn rcode_name(rcode: u8) -> String {
    DNS_RCODES
        .get(rcode as usize)
        .map_or_else(|| format!("rcode {rcode}"), |n| n.to_string())
}

/// One answer record: its type and its data as text (`10.0.0.1`, `mail.example.com`,
/// `10 mail.example.com` for MX, `10 5 8080 web.example.com` for SRV, the text of a TXT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub rtype: u16,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: u8,
    pub records: Vec<Record>,
}

impl Answer {
    /// The A and AAAA records' addresses.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.records
            .iter()
            .filter(|r| r.rtype == QTYPE_A || r.rtype == QTYPE_AAAA)
            .filter_map(|r| r.data.parse().ok())
            .collect()
    }
}

/// `name` as DNS labels; None when it is not a name (an empty or too long label).
pub fn encode_name(name: &str) -> Option<Vec<u8>> {
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 || !label.is_ascii() {
            return None;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Some(out)
}

/// A recursive query for `name`/`qtype` with message id `id`.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut msg = Vec::with_capacity(512);
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    msg.extend(encode_name(name)?);
    msg.extend_from_slice(&qtype.to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes());
    Some(msg)
}

/// The (possibly compressed) name at `at`, and the offset after it where it was written.
/// Pointers may only go backwards, so a loop of them ends.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut limit = at;
    loop {
        let len = *msg.get(at)? as usize;
        match len {
            0 => {
                let after = end.unwrap_or(at + 1);
                return Some((labels.join("."), after));
            }
            l if l & 0xC0 == 0xC0 => {
                let target = ((l & 0x3F) << 8) | *msg.get(at + 1)? as usize;
                if target >= limit {
                    return None;
                }
                end.get_or_insert(at + 2);
                limit = target;
                at = target;
            }
            l => {
                let label = msg.get(at + 1..at + 1 + l)?;
                labels.push(String::from_utf8_lossy(label).into_owned());
                at += 1 + l;
            }
        }
    }
}

/// The record's data as text, for the types a probe asks for (others: None, skipped).
fn record_data(msg: &[u8], rtype: u16, start: usize, len: usize) -> Option<String> {
    let data = msg.get(start..start + len)?;
    let u16_at = |i: usize| Some(u16::from_be_bytes([*data.get(i)?, *data.get(i + 1)?]));
    Some(match rtype {
        QTYPE_A if len == 4 => IpAddr::from(<[u8; 4]>::try_from(data).ok()?).to_string(),
        QTYPE_AAAA if len == 16 => IpAddr::from(<[u8; 16]>::try_from(data).ok()?).to_string(),
        5 => read_name(msg, start)?.0,
        15 => format!("{} {}", u16_at(0)?, read_name(msg, start + 2)?.0),
        16 => {
            let mut text = String::new();
            let mut i = 0;
            while i < data.len() {
                let l = data[i] as usize;
                text.push_str(&String::from_utf8_lossy(data.get(i + 1..i + 1 + l)?));
                i += 1 + l;
            }
            text
        }
        33 => format!(
            "{} {} {} {}",
            u16_at(0)?,
            u16_at(2)?,
            u16_at(4)?,
            read_name(msg, start + 6)?.0
        ),
        _ => return None,
    })
}

/// The answer to query `id`: its rcode and records. Err when it is not an answer to that query.
pub fn decode_answer(id: u16, msg: &[u8]) -> Result<Answer, String> {
    let bad = || "a malformed answer".to_string();
    if msg.len() < 12 || u16::from_be_bytes([msg[0], msg[1]]) != id || msg[2] & 0x80 == 0 {
        return Err("an answer to another query".into());
    }
    let rcode = msg[3] & 0x0F;
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    let an = u16::from_be_bytes([msg[6], msg[7]]);
    let mut at = 12;
    for _ in 0..qd {
        at = read_name(msg, at).ok_or_else(bad)?.1 + 4;
    }
    let mut records = Vec::new();
    for _ in 0..an {
        at = read_name(msg, at).ok_or_else(bad)?.1;
        let head = msg.get(at..at + 10).ok_or_else(bad)?;
        let rtype = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[8], head[9]]) as usize;
        msg.get(at + 10..at + 10 + len).ok_or_else(bad)?;
        if let Some(data) = record_data(msg, rtype, at + 10, len) {
            records.push(Record { rtype, data });
        }
        at += 10 + len;
    }
    Ok(Answer { rcode, records })
}

/// One query to `server` over UDP, retried once within `limit`.
pub async fn query(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    limit: Duration,
) -> Result<Answer, String> {
    let id: u16 = rand_id();
    let msg = encode_query(id, name, qtype).ok_or_else(|| format!("{name:?} is not a DNS name"))?;
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("a socket address");
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("no UDP socket: {e}"))?;
    sock.connect(server)
        .await
        .map_err(|e| format!("cannot send: {e}"))?;
    let end = Instant::now() + limit;
    let mut buf = vec![0u8; 4096];
    for attempt in 0..2 {
        sock.send(&msg)
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        let wait = if attempt == 0 {
            limit / 2
        } else {
            end.saturating_duration_since(Instant::now())
        };
        let deadline = Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err("refused (nothing listens there)".into())
                }
                Ok(Err(e)) => return Err(format!("receiving: {e}")),
                Ok(Ok(n)) => match decode_answer(id, &buf[..n]) {
                    Ok(a) => return Ok(a),
                    Err(_) => continue,
                },
            }
        }
    }
    Err(format!("no answer in {}s", limit.as_secs_f32()))
}

fn rand_id() -> u16 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u16::from_be_bytes([b[0], b[1]])
}

/// The server a probe without `server` asks: the first nameserver of /etc/resolv.conf.
fn system_server() -> Result<SocketAddr, String> {
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("no server given and /etc/resolv.conf: {e}"))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .ok_or_else(|| "no server given and /etc/resolv.conf names no nameserver".into())
}

/// Names compare without case or a final dot.
fn same(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Judges an answer against the probe: the rcode, then the records of the type asked for.
pub fn judge(p: &DnsProbe, server: SocketAddr, answer: &Answer) -> Vec<String> {
    let (tname, qtype) = p.record_type();
    let what = format!("{} {tname} at {server}", p.name);
    let want_rcode = p.expected_rcode();
    if answer.rcode != want_rcode {
        return vec![format!(
            "{what}: {}, expected {}",
            rcode_name(answer.rcode),
            rcode_name(want_rcode)
        )];
    }
    let mut got: Vec<&str> = answer
        .records
        .iter()
        .filter(|r| r.rtype == qtype)
        .map(|r| r.data.as_str())
        .collect();
    // Servers rotate their records: said in one order, the message is the same each time.
    got.sort_unstable();
    let shown = if got.is_empty() {
        "none".to_string()
    } else {
        got.join(", ")
    };
    let answers = p.answers.as_ref();
    let mut errors = Vec::new();
    if let Some(want) = answers.and_then(|a| a.equals.as_ref()) {
        let all_in = want.iter().all(|w| got.iter().any(|g| same(g, w)));
        if !all_in || got.len() != want.len() {
            errors.push(format!(
                "{what}: expected exactly {}; got {shown}",
                want.join(", ")
            ));
        }
    } else if let Some(want) = answers.and_then(|a| a.contains.as_ref()) {
        for w in want {
            if !got.iter().any(|g| same(g, w)) {
                errors.push(format!("{what}: expected an answer {w:?}; got {shown}"));
            }
        }
    } else if want_rcode == 0 && got.is_empty() {
        errors.push(format!("{what}: no {tname} record (NOERROR, empty answer)"));
    }
    errors
}

/// How long a DNS probe's query may take when the run does not say.
pub const QUERY_LIMIT: Duration = Duration::from_secs(5);

/// The DNS probe: one query, retried once within `limit` (the run's timeout), judged.
pub async fn probe(p: &DnsProbe, limit: Duration) -> RunResult {
    let server = match p.server.as_deref() {
        Some(s) => match server_addr(s) {
            Some(a) => a,
            None => return RunResult::failure(format!("{s:?} is not a server address")),
        },
        None => match system_server() {
            Ok(a) => a,
            Err(e) => return RunResult::failure(e),
        },
    };
    let (tname, qtype) = p.record_type();
    let name = p.name.trim_end_matches('.');
    // Inside the run's timeout, so the retry happens and a silent server is said as such.
    let limit = limit
        .saturating_sub(Duration::from_millis(100))
        .max(Duration::from_millis(100));
    match query(server, name, qtype, limit).await {
        Err(e) => RunResult::failure(format!("{name} {tname} at {server}: {e}")),
        Ok(answer) => RunResult::judged(judge(p, server, &answer)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_encode_and_answers_decode_with_compression() {
        let q = encode_query(0x1234, "kubernetes.default.svc", QTYPE_A).unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..31], b"\x0akubernetes\x07default");
        // The answer: header, the question echoed, one A record whose name points at it.
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, 1]);
        let answer = decode_answer(0x1234, &a).unwrap();
        assert_eq!(answer.rcode, 0);
        assert_eq!(
            answer.addresses(),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(decode_answer(0x9999, &a).is_err(), "another query's answer");
        let mut nx = q.clone();
        nx[2] = 0x81;
        nx[3] = 0x83;
        assert_eq!(decode_answer(0x1234, &nx).unwrap().rcode, 3);
        assert!(
            decode_answer(0x1234, &a[..a.len() - 2]).is_err(),
            "truncated"
        );
        assert!(encode_name(&"a".repeat(64)).is_none());
    }

    #[test]
    fn names_in_records_are_decompressed_and_a_pointer_loop_ends() {
        let q = encode_query(7, "mail.test", 15).unwrap();
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        // MX 10, exchange "mx1" + pointer to "mail.test" at offset 12.
        a.extend_from_slice(&[
            0xC0, 12, 0, 15, 0, 1, 0, 0, 0, 30, 0, 8, 0, 10, 3, b'm', b'x', b'1', 0xC0, 12,
        ]);
        let answer = decode_answer(7, &a).unwrap();
        assert_eq!(
            answer.records,
            [Record {
                rtype: 15,
                data: "10 mx1.mail.test".into()
            }]
        );
        // A pointer to itself never ends a name: refused, not a hang.
        let mut looped = q.clone();
        looped[2] = 0x81;
        looped[7] = 1;
        let at = looped.len();
        looped.extend_from_slice(&[0xC0, at as u8, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 1, 2, 3, 4]);
        assert!(decode_answer(7, &looped).is_err());
    }

    #[test]
    fn rcodes_and_types_by_name() {
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(9), "rcode 9");
        assert_eq!(record_type("srv"), Some(33));
        assert_eq!(record_type("PTR"), None);
        assert_eq!(
            server_addr("127.0.0.1"),
            Some("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            server_addr("[::1]:5353"),
            Some("[::1]:5353".parse().unwrap())
        );
        assert_eq!(server_addr("dns.example"), None);
    }
}
