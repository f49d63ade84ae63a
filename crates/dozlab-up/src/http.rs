//! A minimal HTTP/1.0 client for readiness probes on the host's loopback
//! (`GET /ready` of the terminal through the session's published port).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Status code of `GET path` on 127.0.0.1:`port`, or None when unreachable.
pub async fn get_status(port: u16, path: &str) -> Option<u16> {
    let fut = async {
        let s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        get_on(s, &format!("127.0.0.1:{port}"), path).await
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

/// Status code of `GET path` sent on an open connection.
pub async fn get_on(mut s: TcpStream, host: &str, path: &str) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status(&head)
}

/// The code in an HTTP status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
    }

    #[tokio::test]
    async fn closed_port_is_none() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert_eq!(get_status(port, "/ready").await, None);
    }
}
