//! Readiness probes on the host's loopback (`GET /ready` of the terminal
//! through the session's published port), over the one HTTP probe
//! ([`dozlab_vm::ready::http_get`]).

use std::time::Duration;
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
pub async fn get_on(s: TcpStream, host: &str, path: &str) -> Option<u16> {
    let (status, _) = dozlab_vm::ready::http_get(s, host, path).await.ok()?;
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_status_of_a_real_answer() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\nstarting")
                .await
                .unwrap();
        });
        assert_eq!(get_status(port, "/ready").await, Some(503));
    }

    #[tokio::test]
    async fn closed_port_is_none() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert_eq!(get_status(port, "/ready").await, None);
    }
}
