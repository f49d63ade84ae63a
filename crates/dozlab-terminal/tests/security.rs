//! The findings of the security review (issue 15), each against the real
//! server and a real OpenSSH sshd on loopback: shell slots, login limits,
//! HTTP timeouts and the connection cap, the upload limit, response headers
//! and the readiness probe.

mod common;

use common::*;
use dozlab_terminal::proxy::TrustedProxies;
use dozlab_terminal::server::ConnLimits;
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

macro_rules! sshd_or_skip {
    () => {
        match Sshd::start() {
            Some(s) => s,
            None => return,
        }
    };
}

/// Polls `cond` every 50 ms; panics after the hang guard.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens a new shell; true when it got attached, false when refused.
async fn try_open(addr: std::net::SocketAddr, cookie: &str) -> (bool, Option<Client>) {
    let ws = ws_connect(addr, "cols=80&rows=24", Some(cookie), None)
        .await
        .expect("ws connects");
    let mut c = Client::new(ws);
    while c.step().await {
        if c.controls.iter().any(|v| v["type"] == "attached") {
            return (true, Some(c));
        }
    }
    (false, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_ending_with_10_mib_of_input_queued_frees_its_slot() {
    let sshd = sshd_or_skip!();
    let mut l = limits();
    l.grace = Duration::from_secs(2);
    let (addr, state) = serve(settings(), l, target(&sshd)).await;
    let cookie = login(addr).await;
    let mut c = Client::open(addr, &cookie).await;
    c.send("sleep 1; exit\r").await;
    let (mut tx, mut rx) = c.ws.split();
    // 10 MiB of keystrokes the shell never reads: they queue up in the pty,
    // the SSH channel window and the server, until the shell exits.
    let flood = tokio::spawn(async move {
        let frame = vec![b'x'; 64 * 1024];
        for _ in 0..160 {
            if tx
                .send(Message::Binary(frame.clone().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    while let Ok(Some(Ok(_))) = tokio::time::timeout(HANG, rx.next()).await {}
    eventually("the ended shell leaves the registry", || {
        state.0.shells.is_empty()
    })
    .await;
    flood.abort();
    let mut open = Vec::new();
    for _ in 0..8 {
        let (ok, c) = try_open(addr, &cookie).await;
        assert!(ok, "shell {} of 8 opens", open.len() + 1);
        open.push(c);
    }
    assert_eq!(state.0.shells.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_opens_create_at_most_max_shells() {
    let sshd = sshd_or_skip!();
    let (addr, state) = serve(settings(), limits(), target(&sshd)).await;
    let cookie = login(addr).await;
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let cookie = cookie.clone();
            tokio::spawn(async move { try_open(addr, &cookie).await })
        })
        .collect();
    let mut attached = Vec::new();
    for t in tasks {
        let (ok, c) = t.await.unwrap();
        if ok {
            attached.push(c);
        }
    }
    assert_eq!(attached.len(), 8, "exactly --max-shells 8 shells attached");
    assert_eq!(state.0.shells.len(), 8);
}

/// POST /login from the trusted proxy on behalf of `xff`.
async fn login_via(addr: std::net::SocketAddr, xff: &str, password: &str) -> HttpResponse {
    let body = format!("password={}", password.replace(' ', "+"));
    http(
        addr,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Forwarded-For", xff),
        ],
        body.as_bytes(),
    )
    .await
}

/// Settings of a terminal behind a proxy on 127.0.0.1 (the test client).
fn behind_proxy() -> dozlab_terminal::web::Settings {
    let mut s = settings();
    s.trusted_proxies = TrustedProxies(vec!["127.0.0.1".parse().unwrap()]);
    s
}

#[tokio::test]
async fn the_learner_logs_in_while_an_attacker_hammers_through_the_same_proxy() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(behind_proxy(), limits(), target(&sshd)).await;
    for _ in 0..20 {
        let r = login_via(addr, "198.51.100.66", "guess").await;
        assert!(matches!(r.status, 401 | 429), "{}", r.head);
    }
    let r = login_via(addr, "203.0.113.7", PASSWORD).await;
    assert_eq!(r.status, 303, "the learner's right password works");
}

#[tokio::test]
async fn rotating_the_first_forwarded_for_entry_does_not_bypass_the_limit() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(behind_proxy(), limits(), target(&sshd)).await;
    let mut answered_401 = 0;
    for i in 0..30 {
        // The attacker writes any first entry; the proxy appends the real address.
        let r = login_via(addr, &format!("10.9.{i}.1, 198.51.100.66"), "guess").await;
        answered_401 += usize::from(r.status == 401);
    }
    assert!(
        answered_401 <= 10,
        "{answered_401} of 30 guesses were checked"
    );
}

#[tokio::test]
async fn spoofing_the_learners_address_does_not_lock_them_out() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(behind_proxy(), limits(), target(&sshd)).await;
    for _ in 0..10 {
        login_via(addr, "203.0.113.7, 198.51.100.66", "guess").await;
    }
    let r = login_via(addr, "203.0.113.7", PASSWORD).await;
    assert_eq!(r.status, 303, "{}", r.head);
}

#[tokio::test]
async fn a_global_cap_limits_guesses_from_many_addresses() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(behind_proxy(), limits(), target(&sshd)).await;
    let global = dozlab_terminal::auth::GLOBAL_MAX_FAILURES;
    for i in 0..global {
        let r = login_via(addr, &format!("10.1.{}.{}", i / 250, i % 250 + 1), "guess").await;
        assert_eq!(r.status, 401);
    }
    // An address with one failure would still have free tries of its own.
    let again = login_via(addr, "10.1.0.1", "guess").await;
    assert_eq!(again.status, 429, "over the global cap: {}", again.head);
    // A first attempt from a new address is still checked.
    let r = login_via(addr, "203.0.113.7", PASSWORD).await;
    assert_eq!(r.status, 303, "{}", r.head);
}

#[tokio::test]
async fn after_a_short_backoff_the_right_password_works_again() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(settings(), limits(), target(&sshd)).await;
    for _ in 0..5 {
        assert_eq!(login_with(addr, "guess").await.status, 401);
    }
    let limited = login_with(addr, PASSWORD).await;
    assert_eq!(limited.status, 429);
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(wait <= 2, "a short backoff, not a lockout: {wait} s");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(login_with(addr, PASSWORD).await.status, 303);
}

/// Reads until the server closes the connection (or the guard): the bytes.
async fn read_until_closed(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(raw),
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

async fn raw_connect(addr: std::net::SocketAddr, first: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(first).await.unwrap();
    s
}

#[tokio::test]
async fn half_sent_requests_and_idle_keep_alive_connections_are_closed() {
    let sshd = sshd_or_skip!();
    let conn = ConnLimits {
        header_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        max_connections: 64,
    };
    let (addr, _) = serve_with(settings(), limits(), target(&sshd), conn).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(raw_connect(addr, b"GET / HTTP/1.1\r\nHost: x\r\n").await);
    }
    // A body that stops coming.
    held.push(
        raw_connect(
            addr,
            b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npassword=",
        )
        .await,
    );
    // A finished request on a kept-alive connection, then silence.
    let mut idle = raw_connect(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    for s in &mut held {
        assert!(
            read_until_closed(s).await.is_some(),
            "a half-sent request is dropped"
        );
    }
    let answer = read_until_closed(&mut idle)
        .await
        .expect("closed when idle");
    assert!(answer.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn the_connection_cap_holds_further_connections_until_one_closes() {
    let sshd = sshd_or_skip!();
    let conn = ConnLimits {
        max_connections: 4,
        ..ConnLimits::default()
    };
    let (addr, _) = serve_with(settings(), limits(), target(&sshd), conn).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(raw_connect(addr, b"GET / HTTP/1.1\r\nHost: x\r\n").await);
    }
    let mut next = raw_connect(
        addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let mut buf = [0u8; 64];
    use tokio::io::AsyncReadExt;
    let early = tokio::time::timeout(Duration::from_millis(800), next.read(&mut buf)).await;
    assert!(early.is_err(), "not served while the cap is reached");
    drop(held.pop());
    let answer = read_until_closed(&mut next).await.expect("served");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test]
async fn pages_cannot_be_framed_and_hsts_only_behind_tls() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(settings(), limits(), target(&sshd)).await;
    for path in ["/", "/health"] {
        let r = http(addr, "GET", path, &[], b"").await;
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(r.header("strict-transport-security"), None, "plain HTTP");
    }
    // X-Forwarded-Proto from a client that is not a trusted proxy: no HSTS.
    let r = http(addr, "GET", "/", &[("X-Forwarded-Proto", "https")], b"").await;
    assert_eq!(r.header("strict-transport-security"), None);
    let (addr, _) = serve(behind_proxy(), limits(), target(&sshd)).await;
    let r = http(addr, "GET", "/", &[("X-Forwarded-Proto", "https")], b"").await;
    let hsts = r
        .header("strict-transport-security")
        .expect("HSTS behind TLS");
    assert!(hsts.starts_with("max-age="), "{hsts}");
    let mut s = settings();
    s.secure_cookie = dozlab_terminal::web::SecureCookie::Always;
    let (addr, _) = serve(s, limits(), target(&sshd)).await;
    let r = http(addr, "GET", "/", &[], b"").await;
    assert!(r.header("strict-transport-security").is_some());
}

#[tokio::test]
async fn uploads_over_the_limit_get_413_and_leave_no_file() {
    use tokio::io::AsyncWriteExt;
    let sshd = sshd_or_skip!();
    let mut s = settings();
    s.max_upload = 100_000;
    let (addr, _) = serve(s, limits(), target(&sshd)).await;
    let cookie = login(addr).await;
    let exact = vec![7u8; 100_000];
    let ok = http(
        addr,
        "POST",
        "/upload?name=ok.bin",
        &[("Cookie", &cookie)],
        &exact,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    assert_eq!(std::fs::read(sshd.home().join("ok.bin")).unwrap(), exact);
    // Declared too big: refused before a byte is stored.
    let head = format!(
        "POST /upload?name=big.bin HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: 1000000\r\n\r\n"
    );
    let mut c = raw_connect(addr, head.as_bytes()).await;
    let _ = c.write_all(&vec![1u8; 200_000]).await;
    let answer = read_until_closed(&mut c).await.expect("answered");
    assert!(
        answer.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Streamed without a length (200 MB offered): cut off at the limit.
    let head = format!(
        "POST /upload?name=stream.bin HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let c = raw_connect(addr, head.as_bytes()).await;
    let (mut rd, mut wr) = c.into_split();
    let writer = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 65536, "z".repeat(65536));
        for _ in 0..(200 * 16) {
            if wr.write_all(chunk.as_bytes()).await.is_err() {
                return false;
            }
        }
        true
    });
    let mut answer = Vec::new();
    use tokio::io::AsyncReadExt;
    let _ = tokio::time::timeout(HANG, rd.read_to_end(&mut answer)).await;
    let wrote_all = tokio::time::timeout(HANG, writer)
        .await
        .is_ok_and(|r| r.unwrap());
    assert!(!wrote_all, "the server stopped reading");
    if !answer.is_empty() {
        assert!(
            answer.starts_with(b"HTTP/1.1 413"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    let left: Vec<_> = std::fs::read_dir(sshd.home())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["ok.bin".to_string()],
        "no partial file in the VM"
    );
}

/// A TCP forwarder to the sshd that counts the connections it carries.
async fn counting_proxy(to: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = l.accept().await {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut out = tokio::net::TcpStream::connect(("127.0.0.1", to))
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            });
        }
    });
    (port, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ready_probes_share_one_handshake() {
    let sshd = sshd_or_skip!();
    let (port, handshakes) = counting_proxy(sshd.port).await;
    let kh = std::fs::read_to_string(sshd.known_hosts()).unwrap();
    let line = kh.replace(&format!("]:{} ", sshd.port), &format!("]:{port} "));
    std::fs::write(sshd.path("proxy_known_hosts"), line).unwrap();
    let mut t = target(&sshd);
    t.port = port;
    t.known_hosts_path = sshd.path("proxy_known_hosts");
    let (addr, _) = serve(settings(), limits(), t).await;
    let probes: Vec<_> = (0..100)
        .map(|_| tokio::spawn(async move { http(addr, "GET", "/ready", &[], b"").await.status }))
        .collect();
    for p in probes {
        assert_eq!(p.await.unwrap(), 200);
    }
    assert_eq!(
        handshakes.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one SSH handshake for 100 concurrent probes"
    );
}

#[tokio::test]
async fn ready_errors_name_no_paths() {
    let sshd = sshd_or_skip!();
    let mut t = target(&sshd);
    t.key_path = sshd.path("secret-dir/key");
    t.known_hosts_path = sshd.path("secret-dir/known_hosts");
    let (addr, _) = serve(settings(), limits(), t).await;
    let r = http(addr, "GET", "/ready", &[], b"").await;
    assert_eq!(r.status, 503);
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.starts_with("not ready: "), "{body}");
    assert!(
        !body.contains('/') && !body.contains("secret-dir"),
        "{body}"
    );
}
