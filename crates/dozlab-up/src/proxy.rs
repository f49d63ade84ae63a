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
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
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
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let factory = factory.clone();
        tokio::spawn(async move {
            match factory.connect(target).await {
                Ok(outbound) => {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    join(inbound, outbound).await;
                }
                Err(e) => tracing::debug!("proxy: cannot reach {target} in the session: {e}"),
            }
        });
    }
}

/// How long a client may keep sending to a server that is gone, while it
/// reads what the server said last, before its connection is closed.
const LINGER: Duration = Duration::from_secs(10);

/// How one direction of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The source closed its side (EOF).
    Eof,
    /// Reading the source failed (a reset).
    ReadFailed,
    /// Writing to the destination failed (it is gone).
    WriteFailed,
}

/// Copies `from` to `to` until one of them ends.
async fn pump(from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf) -> End {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return End::Eof,
            Ok(n) => n,
            Err(_) => return End::ReadFailed,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return End::WriteFailed;
        }
    }
}

/// Reads and throws away what `from` still sends, until it closes.
async fn discard(from: &mut OwnedReadHalf) {
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Joins a client's connection (host side) to the server's (inside the
/// namespace), each direction on its own, until both are done.
///
/// Whatever the server sent before it closed or reset reaches the client,
/// followed by a FIN, even while the client is still sending: its further
/// bytes are read and dropped (a socket closed with unread input makes the
/// kernel reset the connection, which would throw away the server's last
/// bytes still on their way to the client; this is how a terminal's close
/// frame after an oversized WebSocket frame got lost). An EOF on one side is
/// passed on as a half-close of the other.
pub async fn join(client: TcpStream, server: TcpStream) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let upstream = async {
        match pump(&mut client_rx, &mut server_tx).await {
            End::Eof => {
                let _ = server_tx.shutdown().await;
                true
            }
            End::WriteFailed => {
                let _ = tokio::time::timeout(LINGER, discard(&mut client_rx)).await;
                true
            }
            End::ReadFailed => false,
        }
    };
    let downstream = async {
        let end = pump(&mut server_rx, &mut client_tx).await;
        if end != End::WriteFailed {
            let _ = client_tx.shutdown().await;
        }
        end
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        up = &mut upstream => if up {
            downstream.await;
        },
        down = &mut downstream => match down {
            End::Eof => {
                upstream.await;
            }
            End::ReadFailed => {
                let _ = tokio::time::timeout(LINGER, upstream).await;
            }
            End::WriteFailed => {}
        },
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
        let guard = pod_with_loopback("px").await;
        let name = guard.0.clone();
        let result = async {
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

    /// A namespace with its loopback up; deleted when the guard drops.
    async fn pod_with_loopback(tag: &str) -> netns::tests::Guard {
        let name = format!("dozlab-t-{tag}-{}", std::process::id());
        netns::create(&name).unwrap();
        let guard = netns::tests::Guard(name.clone());
        let pod = crate::link::connect(Some(&name)).await.unwrap();
        let lo = crate::link::index(&pod, "lo").await.unwrap().unwrap();
        pod.link()
            .set(rtnetlink::LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .unwrap();
        guard
    }

    /// Bytes queued in a socket's send buffer, not yet acknowledged.
    fn unsent(s: &std::net::TcpStream) -> i32 {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer,
        // which points at `n`; the descriptor is the open socket `s`.
        let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        assert_eq!(rc, 0, "ioctl(TIOCOUTQ)");
        n
    }

    /// Bytes received on a socket and not read yet.
    fn unread(s: &std::net::TcpStream) -> i32 {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD (SIOCINQ) writes one int through the pointer,
        // which points at `n`; the descriptor is the open socket `s`.
        let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0, "ioctl(FIONREAD)");
        n
    }

    /// The server side of a test: on its one connection, reads 16 bytes,
    /// stops reading until the sender is blocked (its receive queue stops
    /// growing), writes `reply`, waits until the peer acknowledged all of
    /// it, then closes with the client's further bytes unread, so its kernel
    /// resets the connection: what the terminal does after refusing an
    /// oversized WebSocket frame.
    fn reply_then_close(l: StdListener, reply: Vec<u8>) {
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut head = [0u8; 16];
            std::io::Read::read_exact(&mut s, &mut head).unwrap();
            let mut queued = -1;
            while unread(&s) != queued {
                queued = unread(&s);
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            std::io::Write::write_all(&mut s, &reply).unwrap();
            while unsent(&s) > 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
    }

    /// A client that sends `send` bytes (from another thread when
    /// `concurrently`, else all before reading; errors ignored) and returns
    /// everything it reads until EOF or a reset.
    fn client(port: u16, send: usize, concurrently: bool) -> Vec<u8> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut w = s.try_clone().unwrap();
        let mut writer = move || {
            let chunk = vec![b'c'; 64 << 10];
            for _ in 0..send / chunk.len() {
                if w.write_all(&chunk).is_err() {
                    break;
                }
            }
        };
        let sender = if concurrently {
            Some(std::thread::spawn(writer))
        } else {
            writer();
            None
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 64 << 10];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let _ = s.shutdown(std::net::Shutdown::Both);
        if let Some(t) = sender {
            let _ = t.join();
        }
        got
    }

    /// Runs `client` against a server behaving as `reply_then_close` says,
    /// straight on the host's loopback and through the proxy into a namespace.
    async fn direct_and_proxied(
        tag: &str,
        reply: Vec<u8>,
        send: usize,
        concurrently: bool,
    ) -> (Vec<u8>, Vec<u8>) {
        let direct = StdListener::bind("127.0.0.1:0").unwrap();
        let port = direct.local_addr().unwrap().port();
        reply_then_close(direct, reply.clone());
        let direct = tokio::task::spawn_blocking(move || client(port, send, concurrently))
            .await
            .unwrap();
        let guard = pod_with_loopback(tag).await;
        let inner = netns::run_in(&guard.0, || StdListener::bind("127.0.0.1:7001"))
            .unwrap()
            .unwrap();
        reply_then_close(inner, reply);
        let host = bind_from(21000).unwrap();
        let port = host.local_addr().unwrap().port();
        let factory = SocketFactory::new(&guard.0).unwrap();
        let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7001);
        tokio::spawn(serve(host, factory, target));
        let proxied = tokio::task::spawn_blocking(move || client(port, send, concurrently))
            .await
            .unwrap();
        (direct, proxied)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn root_a_reply_to_a_client_blocked_in_a_big_write_gets_through() {
        dozlab_testkit::require_root!("creating a network namespace needs root");
        // The shape of the terminal refusing a 2 MiB WebSocket frame: a close
        // frame with code 1009, then close() with the frame's bytes unread.
        let close_1009 = vec![0x88, 0x02, 0x03, 0xf1];
        let (direct, proxied) =
            direct_and_proxied("pxclose", close_1009.clone(), 16 << 20, false).await;
        assert_eq!(direct, close_1009, "straight to the server");
        assert_eq!(proxied, close_1009, "through the proxy");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn root_all_the_servers_bytes_reach_a_client_that_is_still_sending() {
        dozlab_testkit::require_root!("creating a network namespace needs root");
        let reply: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let (direct, proxied) = direct_and_proxied("pxbulk", reply.clone(), 64 << 20, true).await;
        assert!(
            direct == reply,
            "straight: {} of {} bytes",
            direct.len(),
            reply.len()
        );
        assert!(
            proxied == reply,
            "through the proxy: {} of {} bytes",
            proxied.len(),
            reply.len()
        );
    }
}
