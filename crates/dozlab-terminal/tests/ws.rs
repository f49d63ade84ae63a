//! WebSocket tests against the real server and a real OpenSSH sshd.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

macro_rules! sshd_or_skip {
    () => {
        match Sshd::start() {
            Some(s) => s,
            None => return,
        }
    };
}

#[tokio::test]
async fn a_shell_runs_a_command_and_resize_reaches_stty() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(settings(), limits(), target(&sshd)).await;
    let cookie = login(addr).await;
    let mut c = Client::open(addr, &cookie).await;
    c.send("echo ab$((40+2))cd\r").await;
    c.read_until("ab42cd").await;
    c.control(json!({"type":"resize","cols":123,"rows":45}))
        .await;
    c.send("stty size | sed 's/ /x/'\r").await;
    c.read_until("45x123").await;
    c.send("exit 7\r").await;
    let exit = c.wait_control("exit").await;
    assert_eq!(exit["code"], 7);
    assert_eq!(c.until_closed().await, 1000);
}

#[tokio::test]
async fn reattach_replays_missed_output_without_loss_or_duplication() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(settings(), limits(), target(&sshd)).await;
    let cookie = login(addr).await;
    let mut c = Client::open(addr, &cookie).await;
    c.send("for i in $(seq 1 300); do echo line$i; sleep 0.005; done; echo DO\"\"NE\r")
        .await;
    c.read_until("line20\r\n").await;
    // Drop the socket in the middle of the command.
    let (shell, offset, out) = (
        c.shell.clone().unwrap(),
        c.offset,
        std::mem::take(&mut c.out),
    );
    drop(c);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut c = Client::reattach(addr, &cookie, &shell, offset, out).await;
    c.read_until("DONE").await;
    let lines = numbered_lines(&c.text());
    let expected: Vec<String> = (1..=300).map(|i| format!("line{i}")).collect();
    assert_eq!(lines, expected, "every line exactly once, in order");
}

#[tokio::test]
async fn two_tabs_are_two_shells() {
    let sshd = sshd_or_skip!();
    let (addr, state) = serve(settings(), limits(), target(&sshd)).await;
    let cookie = login(addr).await;
    let mut a = Client::open(addr, &cookie).await;
    let mut b = Client::open(addr, &cookie).await;
    assert_ne!(a.shell, b.shell);
    assert_eq!(state.0.shells.len(), 2);
    a.send("echo A$((1+1))A; tty; echo E\"\"OT\r").await;
    b.send("echo B$((2+2))B; tty; echo E\"\"OT\r").await;
    a.read_until("EOT").await;
    b.read_until("EOT").await;
    assert!(a.text().contains("A2A") && b.text().contains("B4B"));
    assert!(!a.text().contains("B4B") && !b.text().contains("A2A"));
    let pts = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("/dev/pts/"))
            .map(|l| l.trim().to_string())
            .expect("tty printed its terminal")
    };
    assert_ne!(pts(&a.text()), pts(&b.text()), "separate terminals");
}

#[tokio::test]
async fn a_wrong_host_key_is_refused() {
    let sshd = sshd_or_skip!();
    let other = sshd.path("other_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(sshd.path("other_key.pub")).unwrap();
    let mut f = public.split_whitespace();
    let line = format!(
        "[127.0.0.1]:{} {} {}\n",
        sshd.port,
        f.next().unwrap(),
        f.next().unwrap()
    );
    std::fs::write(sshd.known_hosts(), line).unwrap();
    let (addr, state) = serve(settings(), limits(), target(&sshd)).await;
    let cookie = login(addr).await;
    let ws = ws_connect(addr, "cols=80&rows=24", Some(&cookie), None)
        .await
        .unwrap();
    let mut c = Client::new(ws);
    let status = loop {
        let s = c.wait_control("status").await;
        if s["state"] == "error" {
            break s;
        }
        c.controls.clear();
    };
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("host key mismatch"),
        "{status}"
    );
    assert!(state.0.shells.is_empty(), "no shell was opened");
    let ready = http(addr, "GET", "/ready", &[], b"").await;
    assert_eq!(ready.status, 503);
}

#[tokio::test]
async fn vm_starting_then_ready_when_the_files_appear() {
    let sshd = sshd_or_skip!();
    let mut t = target(&sshd);
    t.key_path = sshd.path("not-yet/key");
    t.known_hosts_path = sshd.path("not-yet/known_hosts");
    let (addr, _) = serve(settings(), limits(), t).await;
    assert_eq!(http(addr, "GET", "/health", &[], b"").await.status, 200);
    let res = http(addr, "GET", "/ready", &[], b"").await;
    assert_eq!(res.status, 503);
    assert!(String::from_utf8_lossy(&res.body).contains("not written yet"));
    let cookie = login(addr).await;
    let ws = ws_connect(addr, "cols=80&rows=24", Some(&cookie), None)
        .await
        .unwrap();
    let mut c = Client::new(ws);
    let s = loop {
        let s = c.wait_control("status").await;
        if s["state"] != "connecting" {
            break s;
        }
        c.controls.clear();
    };
    assert_eq!(s["state"], "vm-starting", "{s}");
    // The VM runner writes its files: the same socket gets its shell.
    std::fs::create_dir_all(sshd.path("not-yet")).unwrap();
    std::fs::copy(sshd.known_hosts(), sshd.path("not-yet/known_hosts")).unwrap();
    std::fs::copy(sshd.key(), sshd.path("not-yet/key")).unwrap();
    c.wait_control("attached").await;
    c.send("echo up$((1))up\r").await;
    c.read_until("up1up").await;
}

#[tokio::test]
async fn ready_answers_200_after_a_verified_handshake() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(settings(), limits(), target(&sshd)).await;
    let res = http(addr, "GET", "/ready", &[], b"").await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
}

#[tokio::test]
async fn security_origin_cookie_password_and_frame_size() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(settings(), limits(), target(&sshd)).await;
    let status = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => r.status().as_u16(),
        e => panic!("expected an HTTP refusal, got {e}"),
    };
    // No cookie: 401.
    let e = ws_connect(addr, "", None, None).await.expect_err("refused");
    assert_eq!(status(e), 401);
    // Wrong password: 401, then the rate limit (429) even for the right one.
    for _ in 0..5 {
        assert_eq!(login_with(addr, "wrong").await.status, 401);
    }
    let limited = login_with(addr, PASSWORD).await;
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
}

#[tokio::test]
async fn bad_origin_is_403_and_oversized_frames_close_with_1009() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(settings(), limits(), target(&sshd)).await;
    let cookie = login(addr).await;
    assert!(cookie.starts_with("dozlab_terminal="));
    let e = ws_connect(addr, "", Some(&cookie), Some("https://evil.example.com"))
        .await
        .expect_err("refused");
    assert!(
        matches!(e, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 403),
        "{e}"
    );
    // The page's own origin and an --allowed-origin pass.
    let own = format!("http://{addr}");
    let mut c = Client::new(
        ws_connect(addr, "", Some(&cookie), Some(&own))
            .await
            .unwrap(),
    );
    c.wait_control("attached").await;
    let ok = ws_connect(addr, "", Some(&cookie), Some("https://lab.example.org")).await;
    assert!(ok.is_ok());
    // One byte over --max-frame-bytes.
    c.send(&"x".repeat(64 * 1024 + 1)).await;
    assert_eq!(c.until_closed().await, 1009);
}

#[tokio::test]
async fn the_shell_limit_answers_1013() {
    let sshd = sshd_or_skip!();
    let mut l = limits();
    l.max_shells = 1;
    let (addr, _) = serve(settings(), l, target(&sshd)).await;
    let cookie = login(addr).await;
    let _first = Client::open(addr, &cookie).await;
    let mut second = Client::new(ws_connect(addr, "", Some(&cookie), None).await.unwrap());
    assert_eq!(second.until_closed().await, 1013);
    let err = second
        .controls
        .iter()
        .find(|v| v["type"] == "error")
        .expect("an error message");
    assert!(err["message"].as_str().unwrap().contains("too many shells"));
}

#[tokio::test]
async fn idle_shells_close_and_gone_shells_answer_4404() {
    let sshd = sshd_or_skip!();
    let mut l = limits();
    l.idle = Some(Duration::from_millis(800));
    l.grace = Duration::from_millis(300);
    let (addr, state) = serve(settings(), l, target(&sshd)).await;
    let cookie = login(addr).await;
    let mut c = Client::open(addr, &cookie).await;
    let shell = c.shell.clone().unwrap();
    let exit = c.wait_control("exit").await;
    assert_eq!(exit["reason"], "idle timeout");
    while !state.0.shells.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = Client::new(
        ws_connect(
            addr,
            &format!("shell={shell}&offset=0"),
            Some(&cookie),
            None,
        )
        .await
        .unwrap(),
    );
    assert_eq!(again.until_closed().await, 4404);
}

#[tokio::test]
async fn upload_and_download_over_sftp() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(settings(), limits(), target(&sshd)).await;
    let cookie = login(addr).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let up = http(
        addr,
        "POST",
        "/upload?name=data.bin",
        &[("Cookie", &cookie)],
        &data,
    )
    .await;
    assert_eq!(up.status, 200, "{}", String::from_utf8_lossy(&up.body));
    assert_eq!(std::fs::read(sshd.home().join("data.bin")).unwrap(), data);
    let down = http(
        addr,
        "GET",
        "/download?path=data.bin",
        &[("Cookie", &cookie)],
        b"",
    )
    .await;
    assert_eq!(down.status, 200);
    assert_eq!(down.body, data);
    assert!(
        down.header("content-disposition")
            .unwrap()
            .contains("data.bin")
    );
    let bad = http(
        addr,
        "POST",
        "/upload?name=../x",
        &[("Cookie", &cookie)],
        b"x",
    )
    .await;
    assert_eq!(bad.status, 400);
    let anon = http(addr, "GET", "/download?path=data.bin", &[], b"").await;
    assert_eq!(anon.status, 401);
    let missing = http(
        addr,
        "GET",
        "/download?path=nope",
        &[("Cookie", &cookie)],
        b"",
    )
    .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn a_recorded_shell_is_valid_asciicast_v2() {
    let sshd = sshd_or_skip!();
    let rec = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.record_dir = Some(rec.path().to_path_buf());
    let (addr, _) = serve(s, limits(), target(&sshd)).await;
    let cookie = login(addr).await;
    let mut c = Client::open(addr, &cookie).await;
    c.send("echo rec$((40+2))orded\r").await;
    c.read_until("rec42orded").await;
    c.send("exit\r").await;
    c.until_closed().await;
    let files: Vec<_> = std::fs::read_dir(rec.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let (header, events) = dozlab_terminal::record::read_cast(&files[0]).unwrap();
    assert_eq!((header.version, header.width, header.height), (2, 80, 24));
    let output: String = events
        .iter()
        .filter(|e| e.kind == "o")
        .map(|e| e.data.as_str())
        .collect();
    let input: String = events
        .iter()
        .filter(|e| e.kind == "i")
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(
        output.as_bytes(),
        c.out.as_slice(),
        "the recording holds exactly what the client saw"
    );
    assert!(input.contains("echo rec$((40+2))orded\r"));
    let times: Vec<f64> = events.iter().map(|e| e.time).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "timestamps never go back"
    );
}

/// Every `line<N>` that ends a line of output, in order.
fn numbered_lines(text: &str) -> Vec<String> {
    text.split("\r\n")
        .filter_map(|l| {
            let at = l.rfind("line")?;
            let digits = &l[at + 4..];
            (!digits.is_empty() && digits.chars().all(|ch| ch.is_ascii_digit()))
                .then(|| format!("line{digits}"))
        })
        .collect()
}

#[tokio::test]
async fn a_second_attach_closes_the_first_socket_with_4000() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(settings(), limits(), target(&sshd)).await;
    let cookie = login(addr).await;
    let mut first = Client::open(addr, &cookie).await;
    first.send("echo fi$((1))rst\r").await;
    first.read_until("fi1rst").await;
    let shell = first.shell.clone().unwrap();
    let mut second = Client::reattach(addr, &cookie, &shell, 0, Vec::new()).await;
    assert_eq!(first.until_closed().await, 4000, "taken over");
    second.send("echo sec$((2))ond\r").await;
    second.read_until("sec2ond").await;
}

#[tokio::test]
async fn logout_closes_that_users_sockets_with_4001() {
    let sshd = sshd_or_skip!();
    let (addr, _) = serve(settings(), limits(), target(&sshd)).await;
    let mine = login(addr).await;
    let other = login(addr).await;
    let mut a = Client::open(addr, &mine).await;
    let mut b = Client::open(addr, &other).await;
    let out = http(addr, "POST", "/logout", &[("Cookie", &mine)], b"").await;
    assert_eq!(out.status, 303);
    assert_eq!(a.until_closed().await, 4001, "logged out");
    b.send("echo st$((1))ill\r").await;
    b.read_until("st1ill").await;
}
