//! A plain HTTP/1.1 request to a process's metrics listener (metrics, health, the console):
//! enough for tests, with no HTTP client dependency.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One answer: status, the header block (lower-cased) and the body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// `METHOD path` to `addr`, with `Authorization: Bearer token` when given.
pub fn request(addr: &str, method: &str, path: &str, token: Option<&str>) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    Answer {
        status,
        head: head.to_lowercase(),
        body: body.to_owned(),
    }
}
