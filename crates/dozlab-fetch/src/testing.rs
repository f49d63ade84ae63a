//! Helpers for tests and the benchmark: a loopback HTTP server with
//! injectable faults, digests, compression and small ext4 images.
//!
//! Public so that the CLI tests (`crates/dozlab/tests/init_rootfs.rs`) and
//! `bench/init-rootfs` use the same server as the library tests. It serves
//! only `127.0.0.1`, one response per connection (`Connection: close`),
//! honours `Range: bytes=N-` and logs every request.

use crate::decode::Compression;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Lower-case hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `data` compressed in format `c` (`None` returns it unchanged).
pub fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    let run = || -> io::Result<Vec<u8>> {
        Ok(match c {
            Compression::None => data.to_vec(),
            Compression::Zstd => zstd::encode_all(data, 3)?,
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data)?;
                e.finish()?
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data)?;
                e.finish()?
            }
        })
    };
    run().expect("in-memory compression")
}

/// Makes an ext4 image of `size` bytes at `path` holding `files` (name, content),
/// with `mkfs.ext4 -d` (no mount needed).
pub fn make_ext4(path: &Path, size: u64, files: &[(&str, &[u8])]) -> io::Result<()> {
    let tree = tempfile::Builder::new()
        .prefix("dozlab-tree")
        .tempdir_in(std::env::temp_dir())?;
    for (name, content) in files {
        let p = tree.path().join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(p, content)?;
    }
    let _ = std::fs::remove_file(path);
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "rootfs", "-d"])
        .arg(tree.path())
        .arg(path)
        .arg(format!("{}k", size / 1024))
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// A misbehaviour of the server for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a short text body.
    Status(u16),
    /// Send this many body bytes, then close the connection cleanly.
    TruncateAfter(u64),
    /// Send this many body bytes, then reset the connection (RST).
    ResetAfter(u64),
    /// Send this many body bytes, then nothing more, never closing.
    StallAfter(u64),
    /// Answer `200` with the whole body even when asked for a range.
    IgnoreRange,
    /// Announce this `Content-Length` (sending at most that many bytes).
    ContentLength(u64),
    /// Pause this long after every 64 KiB.
    Throttle(Duration),
}

/// A request the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Path asked for.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// Status answered.
    pub status: u16,
}

#[derive(Debug, Clone)]
enum Body {
    Bytes(Bytes),
    File(PathBuf),
}

#[derive(Debug)]
struct Route {
    body: Body,
    next: VecDeque<Fault>,
    always: Vec<Fault>,
}

#[derive(Debug, Default)]
struct State {
    routes: HashMap<String, Route>,
    log: Vec<Request>,
}

type Shared = Arc<Mutex<State>>;

/// The server; stops when dropped.
#[derive(Debug)]
pub struct FaultServer {
    addr: SocketAddr,
    state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultServer {
    /// Starts a server on `127.0.0.1` with a free port.
    pub fn start() -> io::Result<Self> {
        Self::start_on(0)
    }

    /// Starts a server on `127.0.0.1:port` (0: any free port).
    pub fn start_on(port: u16) -> io::Result<Self> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let state: Shared = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("fault-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("test server runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    tokio::select! {
                        _ = accept_loop(listener, st) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Serves `body` at `path` (e.g. `/rootfs.ext4`).
    pub fn add(&self, path: &str, body: impl Into<Bytes>) {
        self.insert(path, Body::Bytes(body.into()));
    }

    /// Serves the file `file` at `path`, read on each request.
    pub fn add_file(&self, path: &str, file: &Path) {
        self.insert(path, Body::File(file.to_path_buf()));
    }

    fn insert(&self, path: &str, body: Body) {
        self.lock().routes.insert(
            path.to_string(),
            Route {
                body,
                next: VecDeque::new(),
                always: Vec::new(),
            },
        );
    }

    /// The next requests of `path` get these faults, one each, in order.
    pub fn fail_next(&self, path: &str, faults: impl IntoIterator<Item = Fault>) {
        if let Some(r) = self.lock().routes.get_mut(path) {
            r.next.extend(faults);
        }
    }

    /// Every request of `path` gets `fault` (after any queued one).
    pub fn fail_always(&self, path: &str, fault: Fault) {
        if let Some(r) = self.lock().routes.get_mut(path) {
            r.always.push(fault);
        }
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests of `path` so far.
    pub fn requests(&self, path: &str) -> Vec<Request> {
        self.lock()
            .log
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Shared) {
    while let Ok((sock, _)) = listener.accept().await {
        let st = state.clone();
        tokio::spawn(async move {
            let _ = serve(sock, st).await;
        });
    }
}

struct Head {
    method: String,
    path: String,
    range: Option<String>,
}

async fn read_head(sock: &mut TcpStream) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut byte).await?;
        if n == 0 || buf.len() > 16 << 10 {
            return Err(io::ErrorKind::InvalidData.into());
        }
        buf.extend_from_slice(&byte[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_string());
    Ok(Head {
        method,
        path,
        range,
    })
}

async fn serve(mut sock: TcpStream, state: Shared) -> io::Result<()> {
    let head = read_head(&mut sock).await?;
    let found = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.routes.get_mut(&head.path).map(|r| {
            let mut faults: Vec<Fault> = r.next.pop_front().into_iter().collect();
            faults.extend(r.always.iter().cloned());
            (r.body.clone(), faults)
        })
    };
    let log = |status| {
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log
            .push(Request {
                path: head.path.clone(),
                range: head.range.clone(),
                status,
            })
    };
    let Some((body, faults)) = found else {
        log(404);
        return simple(&mut sock, 404).await;
    };
    if let Some(code) = faults.iter().find_map(|f| match f {
        Fault::Status(c) => Some(*c),
        _ => None,
    }) {
        log(code);
        return simple(&mut sock, code).await;
    }
    let len = body_len(&body).await?;
    let start = match (&head.range, faults.contains(&Fault::IgnoreRange)) {
        (Some(r), false) => r
            .strip_prefix("bytes=")
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse::<u64>().ok()),
        _ => None,
    };
    if start.is_some_and(|s| s >= len) {
        log(416);
        let h = format!(
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return sock.write_all(h.as_bytes()).await;
    }
    let from = start.unwrap_or(0);
    let status = if start.is_some() { 206 } else { 200 };
    log(status);
    let declared = faults
        .iter()
        .find_map(|f| match f {
            Fault::ContentLength(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(len - from);
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {declared}\r\nAccept-Ranges: bytes\r\nETag: \"v1-{len}\"\r\nConnection: close\r\n",
        if status == 206 {
            "Partial Content"
        } else {
            "OK"
        }
    );
    if status == 206 {
        h.push_str(&format!(
            "Content-Range: bytes {from}-{}/{len}\r\n",
            len - 1
        ));
    }
    h.push_str("\r\n");
    sock.write_all(h.as_bytes()).await?;
    if head.method == "HEAD" {
        return Ok(());
    }
    send_body(&mut sock, &body, from, len.min(from + declared), &faults).await
}

async fn simple(sock: &mut TcpStream, code: u16) -> io::Result<()> {
    let text = format!("status {code}\n");
    let h = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    sock.write_all(h.as_bytes()).await
}

async fn body_len(body: &Body) -> io::Result<u64> {
    match body {
        Body::Bytes(b) => Ok(b.len() as u64),
        Body::File(p) => Ok(tokio::fs::metadata(p).await?.len()),
    }
}

async fn send_body(
    sock: &mut TcpStream,
    body: &Body,
    from: u64,
    to: u64,
    faults: &[Fault],
) -> io::Result<()> {
    let limit = faults.iter().find_map(|f| match f {
        Fault::TruncateAfter(n) | Fault::ResetAfter(n) | Fault::StallAfter(n) => Some(*n),
        _ => None,
    });
    let throttle = faults.iter().find_map(|f| match f {
        Fault::Throttle(d) => Some(*d),
        _ => None,
    });
    let end = limit.map_or(to, |n| to.min(from + n));
    let mut file = match body {
        Body::File(p) => {
            let mut f = tokio::fs::File::open(p).await?;
            f.seek(io::SeekFrom::Start(from)).await?;
            Some(f)
        }
        Body::Bytes(_) => None,
    };
    let mut buf = vec![0u8; 256 << 10];
    let piece = if throttle.is_some() {
        64 << 10
    } else {
        buf.len()
    };
    let mut at = from;
    while at < end {
        let n = ((end - at) as usize).min(piece);
        match (body, &mut file) {
            (Body::Bytes(b), _) => buf[..n].copy_from_slice(&b[at as usize..at as usize + n]),
            (_, Some(f)) => f.read_exact(&mut buf[..n]).await.map(|_| ())?,
            _ => unreachable!(),
        }
        sock.write_all(&buf[..n]).await?;
        at += n as u64;
        if let Some(d) = throttle {
            tokio::time::sleep(d).await;
        }
    }
    match faults.iter().find(|f| {
        matches!(
            f,
            Fault::TruncateAfter(_) | Fault::ResetAfter(_) | Fault::StallAfter(_)
        )
    }) {
        Some(Fault::ResetAfter(_)) => sock.set_zero_linger(),
        Some(Fault::StallAfter(_)) => {
            std::future::pending::<()>().await;
            Ok(())
        }
        _ => sock.shutdown().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(server: &FaultServer, path: &str, range: Option<&str>) -> String {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        let r = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{r}\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_ranges_faults_and_logs() {
        let server = FaultServer::start().unwrap();
        server.add("/a", &b"0123456789"[..]);
        assert!(get(&server, "/a", None).ends_with("\r\n\r\n0123456789"));
        let r = get(&server, "/a", Some("bytes=4-"));
        assert!(
            r.starts_with("HTTP/1.1 206") && r.contains("bytes 4-9/10") && r.ends_with("456789")
        );
        assert!(get(&server, "/a", Some("bytes=10-")).starts_with("HTTP/1.1 416"));
        server.fail_next("/a", [Fault::Status(500), Fault::TruncateAfter(3)]);
        assert!(get(&server, "/a", None).starts_with("HTTP/1.1 500"));
        assert!(get(&server, "/a", None).ends_with("\r\n\r\n012"));
        assert!(get(&server, "/nope", None).starts_with("HTTP/1.1 404"));
        let statuses: Vec<u16> = server.requests("/a").iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 206, 416, 500, 200]);
    }
}
