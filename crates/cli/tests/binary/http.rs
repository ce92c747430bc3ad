//! Plain HTTP/1.1 to a node's admin API (one request per connection).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{ADMIN_TOKEN, Running};

/// The admin address a node logged at start.
pub(crate) fn admin_addr(node: &Running) -> String {
    let log = node.log();
    let line = log
        .lines()
        .find(|l| l.contains("shardkeeper running"))
        .unwrap_or_else(|| panic!("no start line yet:\n{log}"));
    let plain: String = strip_ansi(line);
    let start = plain.find("admin=").expect("admin= in the start line") + "admin=".len();
    plain[start..]
        .split_whitespace()
        .next()
        .expect("an address")
        .to_owned()
}

/// `text` without terminal colour codes.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `method path` with the admin token; the status and the body.
pub(crate) fn request(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("admin API reachable");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("request written");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `GET path` parsed as JSON (the body must be complete, not chunked).
pub(crate) fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = request(addr, "GET", path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|err| panic!("GET {path}: {err}: {body}"))
}
