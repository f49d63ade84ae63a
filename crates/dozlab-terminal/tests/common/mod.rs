//! Shared test support: a real sshd, the server on a loopback port, an HTTP
//! helper and a WebSocket client that speaks the terminal protocol.

#![allow(dead_code)]

pub mod browser;
pub mod sshd;

use dozlab_terminal::auth::Auth;
use dozlab_terminal::server::{self, ConnLimits};
use dozlab_terminal::shell::{Limits, Registry};
use dozlab_terminal::ssh::SshTarget;
use dozlab_terminal::web::{self, AppState, SecureCookie, Settings};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

pub use sshd::Sshd;

pub const PASSWORD: &str = "correct horse battery staple";
/// Guard against hangs only; no test asserts on timing.
pub const HANG: Duration = Duration::from_secs(30);

pub fn settings() -> Settings {
    Settings {
        allowed_origins: vec!["https://lab.example.org".into()],
        secure_cookie: SecureCookie::Auto,
        trusted_proxies: Default::default(),
        max_frame: 64 * 1024,
        max_upload: 16 * 1024 * 1024,
        retry: Duration::from_millis(200),
        record_dir: None,
        session_id: "test".into(),
    }
}

pub fn limits() -> Limits {
    Limits {
        scrollback: 1024 * 1024,
        grace: Duration::from_secs(60),
        idle: None,
        max_shells: 8,
    }
}

pub fn target(sshd: &Sshd) -> SshTarget {
    SshTarget {
        host: "127.0.0.1".into(),
        port: sshd.port,
        user: sshd.user.clone(),
        key_path: sshd.key(),
        known_hosts_path: sshd.known_hosts(),
        timeout: Duration::from_secs(10),
    }
}

/// Serves `app(state)` on a free loopback port with the default connection limits.
pub async fn serve(
    settings: Settings,
    limits: Limits,
    target: SshTarget,
) -> (SocketAddr, AppState) {
    serve_with(settings, limits, target, ConnLimits::default()).await
}

/// Serves `app(state)` on a free loopback port (`dozlab_terminal::server`).
pub async fn serve_with(
    settings: Settings,
    limits: Limits,
    target: SshTarget,
    conn: ConnLimits,
) -> (SocketAddr, AppState) {
    let state = AppState::new(
        settings,
        Auth::new(PASSWORD).unwrap(),
        Registry::new(limits),
        target,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = web::app(state.clone());
    tokio::spawn(server::serve(listener, app, conn, std::future::pending()));
    (addr, state)
}

pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One HTTP/1.1 request over a fresh connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(HANG, s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("http head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    HttpResponse { status, head, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

pub async fn login_with(addr: SocketAddr, password: &str) -> HttpResponse {
    let body = format!("password={}", password.replace(' ', "+"));
    http(
        addr,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .await
}

/// Logs in and returns the `Cookie` header value.
pub async fn login(addr: SocketAddr) -> String {
    let res = login_with(addr, PASSWORD).await;
    assert_eq!(res.status, 303, "login answers 303: {}", res.head);
    let set = res.header("set-cookie").expect("a cookie");
    set.split(';').next().unwrap().to_string()
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn ws_connect(
    addr: SocketAddr,
    query: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://{addr}/ws?{query}")
        .into_client_request()
        .unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// A protocol-speaking client for one tab.
pub struct Client {
    pub ws: Ws,
    pub shell: Option<String>,
    pub offset: u64,
    pub out: Vec<u8>,
    pub controls: Vec<Value>,
    pub closed: Option<(u16, String)>,
}

impl Client {
    pub fn new(ws: Ws) -> Self {
        Self {
            ws,
            shell: None,
            offset: 0,
            out: Vec::new(),
            controls: Vec::new(),
            closed: None,
        }
    }

    pub async fn open(addr: SocketAddr, cookie: &str) -> Self {
        let ws = ws_connect(addr, "cols=80&rows=24", Some(cookie), None)
            .await
            .expect("ws connects");
        let mut c = Self::new(ws);
        c.wait_control("attached").await;
        c
    }

    /// Re-attaches to `shell` having seen `offset` bytes (keeps `out`).
    pub async fn reattach(
        addr: SocketAddr,
        cookie: &str,
        shell: &str,
        offset: u64,
        out: Vec<u8>,
    ) -> Self {
        let q = format!("shell={shell}&offset={offset}");
        let ws = ws_connect(addr, &q, Some(cookie), None)
            .await
            .expect("ws connects");
        let mut c = Self::new(ws);
        c.out = out;
        c.offset = offset;
        let a = c.wait_control("attached").await;
        assert_eq!(
            a["offset"].as_u64(),
            Some(offset),
            "resumes where it left off"
        );
        c
    }

    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::Binary(text.as_bytes().to_vec().into()))
            .await
            .unwrap();
    }

    pub async fn control(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    /// Reads one frame; false when the socket ended.
    pub async fn step(&mut self) -> bool {
        let msg = tokio::time::timeout(HANG, self.ws.next())
            .await
            .expect("no hang");
        match msg {
            Some(Ok(Message::Binary(b))) => {
                self.offset += b.len() as u64;
                self.out.extend_from_slice(&b);
            }
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "attached" {
                    self.shell = v["shell"].as_str().map(String::from);
                    self.offset = v["offset"].as_u64().unwrap();
                }
                self.controls.push(v);
            }
            Some(Ok(Message::Close(c))) => {
                self.closed = Some(c.map_or((1005, String::new()), |c| {
                    (c.code.into(), c.reason.to_string())
                }));
                return false;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return false,
        }
        true
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    pub async fn read_until(&mut self, needle: &str) {
        while !self.text().contains(needle) {
            assert!(
                self.step().await,
                "socket ended before {needle:?}; got {:?}",
                self.text()
            );
        }
    }

    pub async fn wait_control(&mut self, kind: &str) -> Value {
        let mut seen = self.controls.len();
        loop {
            if let Some(v) = self.controls[seen..].iter().find(|v| v["type"] == kind) {
                return v.clone();
            }
            seen = self.controls.len();
            assert!(
                self.step().await,
                "socket ended before a {kind:?} message: {:?}",
                self.controls
            );
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn until_closed(&mut self) -> u16 {
        while self.step().await {}
        self.closed.as_ref().map_or(1006, |c| c.0)
    }
}
