//! Publishing the session on the host's loopback: a userspace TCP proxy from
//! `127.0.0.1:PORT` on the host to an address inside the session's namespace.
//!
//! The host has no route into the namespace (the VM's 172.16.N.x address
//! exists only there). Instead, outbound sockets are *created* by a thread
//! that entered the namespace: a socket keeps the namespace it was created
//! in, so connecting it reaches the namespace's addresses while the rest of
//! the proxy runs on the host.

use crate::netns;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener as StdListener};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::mpsc;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

type Reply = oneshot::Sender<io::Result<OwnedFd>>;

/// Hands out TCP sockets created inside a network namespace.
#[derive(Clone, Debug)]
pub struct SocketFactory {
    tx: mpsc::Sender<Reply>,
}

impl SocketFactory {
    /// Starts the factory thread inside namespace `name`.
    pub fn new(name: &str) -> Result<Self, netns::NetnsError> {
        let fd = netns::open(name)?;
        let (tx, rx) = mpsc::channel::<Reply>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                let entered = nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET);
                let _ = ready_tx.send(entered.map_err(io::Error::from));
                drop(fd);
                for reply in rx {
                    let _ = reply.send(new_socket());
                }
            })
            .map_err(|e| netns::NetnsError::Sys {
                what: "start a thread in",
                name: name.into(),
                source: e,
            })?;
        ready_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("factory thread died")))
            .map_err(|e| netns::NetnsError::Sys {
                what: "enter",
                name: name.into(),
                source: e,
            })?;
        Ok(Self { tx })
    }

    /// Connects to `addr` as seen from inside the namespace.
    pub async fn connect(&self, addr: SocketAddrV4) -> io::Result<TcpStream> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(reply)
            .map_err(|_| io::Error::other("namespace socket factory stopped"))?;
        let fd = wait
            .await
            .map_err(|_| io::Error::other("namespace socket factory stopped"))??;
        let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        socket.connect(SocketAddr::V4(addr)).await
    }
}

/// A non-blocking IPv4 TCP socket in the calling thread's namespace.
fn new_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the returned descriptor is checked and
    // then owned exactly once by OwnedFd.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Why a host port could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error(
        "port {0} on 127.0.0.1 is already in use; pick another with --port, or omit it to take the next free one"
    )]
    InUse(u16),
    #[error("port {port} is already in use on 127.0.0.1 (asked for by --forward {port})")]
    ForwardInUse { port: u16 },
    #[error("no free port on 127.0.0.1 from {0} upwards")]
    NoneFree(u16),
    #[error("cannot bind 127.0.0.1:{port}")]
    Bind {
        port: u16,
        #[source]
        source: io::Error,
    },
}

/// Binds 127.0.0.1:`port` exactly.
pub fn bind_exact(port: u16) -> Result<StdListener, PortError> {
    StdListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            PortError::InUse(port)
        } else {
            PortError::Bind { port, source }
        }
    })
}

/// Binds the first free port from `start` upwards (a few hundred tries).
pub fn bind_from(start: u16) -> Result<StdListener, PortError> {
    for port in start..start.saturating_add(200) {
        match bind_exact(port) {
            Ok(l) => return Ok(l),
            Err(PortError::InUse(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(PortError::NoneFree(start))
}

/// Serves `listener` forever: each accepted connection is joined to a new
/// connection to `target` inside the namespace.
pub async fn serve(listener: StdListener, factory: SocketFactory, target: SocketAddrV4) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("proxy to {target}: {e}");
            return;
        }
    };
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let factory = factory.clone();
        tokio::spawn(async move {
            match factory.connect(target).await {
                Ok(mut outbound) => {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::debug!("proxy: cannot reach {target} in the session: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn exact_port_in_use_is_named_and_next_free_skips_it() {
        let held = StdListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let err = bind_exact(port).unwrap_err();
        assert!(err.to_string().contains(&port.to_string()), "{err}");
        let next = bind_from(port).unwrap();
        assert_ne!(next.local_addr().unwrap().port(), port);
    }

    #[tokio::test]
    async fn root_proxies_into_a_namespace_the_host_cannot_route_to() {
        dozlab_testkit::require_root!("creating a network namespace needs root");
        let name = format!("dozlab-t-px-{}", std::process::id());
        netns::create(&name).unwrap();
        let _guard = netns::tests::Guard(name.clone());
        let result = async {
            let pod = crate::link::connect(Some(&name)).await.unwrap();
            let lo = crate::link::index(&pod, "lo").await.unwrap().unwrap();
            pod.link()
                .set(rtnetlink::LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .unwrap();
            // An echo server on the namespace's own loopback.
            let inner = netns::run_in(&name, || StdListener::bind("127.0.0.1:7777"))
                .unwrap()
                .unwrap();
            inner.set_nonblocking(true).unwrap();
            let inner = TcpListener::from_std(inner).unwrap();
            tokio::spawn(async move {
                let (mut s, _) = inner.accept().await.unwrap();
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
            });
            let factory = SocketFactory::new(&name).unwrap();
            let host = bind_from(20000).unwrap();
            let port = host.local_addr().unwrap().port();
            tokio::spawn(serve(
                host,
                factory,
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7777),
            ));
            let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            c.write_all(b"hello").await.unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).await.unwrap();
            buf
        }
        .await;
        netns::delete(&name).unwrap();
        assert_eq!(&result, b"hello");
    }
}
