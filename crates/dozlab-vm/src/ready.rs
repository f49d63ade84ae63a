//! Readiness: the VM is ready when its sshd answers with the host key we
//! injected and accepts the session's client key, and, when the image runs
//! Docker, when `GET /_ping` on port 2375 answers `OK`. Extra forwarded ports
//! must accept a TCP connection.
//!
//! The same SSH connection logic also runs `poweroff` in the guest, the
//! supervisor's second way to stop a guest that ignores the power button.

use dozlab_ssh::{Login, Session, SshError};
use russh::keys::{PrivateKey, PublicKey};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Port of the guest's Docker API.
pub const DOCKER_PORT: u16 = 2375;
const ATTEMPT: Duration = Duration::from_secs(10);

/// Why the VM is not (yet) ready.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("ssh on {addr}: {why}")]
    Ssh { addr: SocketAddr, why: String },
    #[error(
        "ssh on {0} presented a host key that is not the one injected into the image (another VM on this address, or the image regenerated its keys)"
    )]
    WrongHostKey(SocketAddr),
    #[error("ssh on {0} refused the session key for root")]
    AuthRefused(SocketAddr),
    #[error("docker on {addr}: {why}")]
    Docker { addr: SocketAddr, why: String },
    #[error("port {addr} does not accept connections: {why}")]
    Port { addr: SocketAddr, why: String },
}

/// What to check.
#[derive(Debug, Clone)]
pub struct ReadyCheck {
    /// The guest's sshd.
    pub ssh: SocketAddr,
    /// The host key injected into the image.
    pub host_key: PublicKey,
    /// The session's client key.
    pub client_key: Arc<PrivateKey>,
    /// The guest's Docker API, when the image has Docker.
    pub docker: Option<SocketAddr>,
    /// Other guest ports that must accept connections.
    pub tcp: Vec<SocketAddr>,
}

impl ReadyCheck {
    /// One pass over every check, stopping at the first that fails.
    pub async fn probe(&self) -> Result<(), NotReady> {
        let handle = self.ssh_session().await?;
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        if let Some(addr) = self.docker {
            docker_ping(addr).await?;
        }
        for &addr in &self.tcp {
            match timeout(ATTEMPT, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(NotReady::Port {
                        addr,
                        why: e.to_string(),
                    });
                }
                Err(_) => {
                    return Err(NotReady::Port {
                        addr,
                        why: "timed out".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Connects, verifies the host key and logs in as root.
    async fn ssh_session(&self) -> Result<Session, NotReady> {
        let addr = self.ssh;
        let login = Login {
            host: addr.ip().to_string(),
            port: addr.port(),
            user: "root".into(),
            key: self.client_key.clone(),
            host_keys: vec![self.host_key.clone()],
            timeout: 2 * ATTEMPT,
        };
        login.connect().await.map_err(|e| match e {
            SshError::HostKeyMismatch { .. } => NotReady::WrongHostKey(addr),
            SshError::AuthRejected(_) => NotReady::AuthRefused(addr),
            e => NotReady::Ssh {
                addr,
                why: dozlab_core::error_chain(&e),
            },
        })
    }

    /// Runs `command` as root in the guest (used to power it off).
    pub async fn exec(&self, command: &str) -> Result<(), NotReady> {
        let handle = self.ssh_session().await?;
        let fail = |e: russh::Error| NotReady::Ssh {
            addr: self.ssh,
            why: e.to_string(),
        };
        let channel = handle.channel_open_session().await.map_err(fail)?;
        channel.exec(true, command).await.map_err(fail)?;
        // The guest may go down before answering; we do not wait for output.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    }
}

/// `GET path` over `stream` (HTTP/1.0, so no chunked answer), reading at
/// most 4 KiB of the answer: its status code and body. The one hand-written
/// HTTP probe (this module's Docker check, `dozlab up`'s terminal and Docker
/// checks).
pub async fn http_get<S>(mut stream: S, host: &str, path: &str) -> std::io::Result<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    (&mut stream).take(4096).read_to_end(&mut buf).await?;
    let reply = String::from_utf8_lossy(&buf);
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            let first = head.lines().next().unwrap_or("");
            std::io::Error::other(format!("not an HTTP answer: {first:?}"))
        })?;
    Ok((status, body.to_string()))
}

/// `GET /_ping` → `200 OK`.
pub async fn docker_ping(addr: SocketAddr) -> Result<(), NotReady> {
    let fail = |why: String| NotReady::Docker { addr, why };
    let attempt = async {
        let s = TcpStream::connect(addr).await?;
        http_get(s, "docker", "/_ping").await
    };
    match timeout(ATTEMPT, attempt).await {
        Ok(Ok((200, body))) if body.trim_end() == "OK" => Ok(()),
        Ok(Ok((status, body))) => Err(fail(format!(
            "unexpected answer {status} {:?}",
            body.trim_end()
        ))),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(_) => Err(fail("timed out".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dozlab_ssh::testing::Sshd;
    use tokio::net::TcpListener;

    async fn one_shot_http(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /_ping HTTP/1.0\r\n"));
            s.write_all(reply).await.unwrap();
        });
        addr
    }

    /// A real OpenSSH sshd on loopback with the session identity, as in the guest.
    fn sshd(id: &crate::identity::Identity) -> Option<Sshd> {
        dozlab_testkit::require_root!("sshd needs root");
        dozlab_testkit::require_path!(
            dozlab_ssh::testing::SSHD,
            "install openssh-server (scripts/setup)"
        );
        Some(Sshd::start(&id.host, id.client.public_key()))
    }

    fn check(id: &crate::identity::Identity, port: u16) -> ReadyCheck {
        ReadyCheck {
            ssh: SocketAddr::from(([127, 0, 0, 1], port)),
            host_key: id.host.public_key().clone(),
            client_key: Arc::new(id.client.clone()),
            docker: None,
            tcp: vec![],
        }
    }

    #[tokio::test]
    async fn ssh_readiness_verifies_the_host_key_and_the_login_root() {
        use crate::identity::Identity;
        let id = Identity::generate("t");
        let Some(sshd) = sshd(&id) else { return };
        let marker = sshd.path("ran");
        let good = check(&id, sshd.port);
        good.probe().await.unwrap();

        let other = Identity::generate("other");
        let mut wrong_host = good.clone();
        wrong_host.host_key = other.host.public_key().clone();
        let e = wrong_host.probe().await.unwrap_err();
        assert!(matches!(e, NotReady::WrongHostKey(_)), "{e}");

        let mut wrong_client = good.clone();
        wrong_client.client_key = Arc::new(other.client.clone());
        let e = wrong_client.probe().await.unwrap_err();
        assert!(matches!(e, NotReady::AuthRefused(_)), "{e}");

        good.exec(&format!("touch {}", marker.display()))
            .await
            .unwrap();
        for _ in 0..50 {
            if marker.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(marker.exists(), "exec ran the command");

        let mut closed = good.clone();
        closed.tcp = vec![SocketAddr::from(([127, 0, 0, 1], 1))];
        let e = closed.probe().await.unwrap_err();
        assert!(matches!(e, NotReady::Port { .. }), "{e}");
    }

    #[tokio::test]
    async fn docker_ping_accepts_ok_and_refuses_the_rest() {
        let ok = one_shot_http(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK").await;
        docker_ping(ok).await.unwrap();
        let bad = one_shot_http(b"HTTP/1.1 500 Internal Server Error\r\n\r\n").await;
        let e = docker_ping(bad).await.unwrap_err();
        assert!(e.to_string().contains("500"), "{e}");
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(docker_ping(closed).await.is_err());
    }
}
