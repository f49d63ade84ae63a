//! Benchmark client for `bench/terminal`: against one real local sshd, compares
//! `dozlab terminal` (the release binary given with `--bin`) with a plain
//! `ssh -tt` session: keystroke echo round trip, `cat` throughput of a 50 MB
//! file, and the terminal's resident memory idle and with 10 shells.

#[path = "../tests/common/sshd.rs"]
mod sshd;

use futures::{SinkExt, StreamExt};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

const KEYS: usize = 300;
const FILE_MB: usize = 50;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A byte pipe to a shell: either our WebSocket or ssh's stdin/stdout.
enum Pipe {
    Ws(Box<Ws>),
    Ssh(tokio::process::ChildStdin, tokio::process::ChildStdout),
}

impl Pipe {
    async fn send(&mut self, b: &[u8]) {
        match self {
            Pipe::Ws(ws) => ws.send(Message::Binary(b.to_vec().into())).await.unwrap(),
            Pipe::Ssh(i, _) => {
                i.write_all(b).await.unwrap();
                i.flush().await.unwrap();
            }
        }
    }

    /// Some output bytes (empty for control frames).
    async fn recv(&mut self) -> Vec<u8> {
        match self {
            Pipe::Ws(ws) => match ws.next().await {
                Some(Ok(Message::Binary(b))) => b.to_vec(),
                Some(Ok(_)) => Vec::new(),
                other => panic!("socket ended: {other:?}"),
            },
            Pipe::Ssh(_, o) => {
                let mut buf = vec![0u8; 64 * 1024];
                let n = o.read(&mut buf).await.unwrap();
                assert!(n > 0, "ssh ended");
                buf.truncate(n);
                buf
            }
        }
    }

    /// Reads until `needle` has been seen; returns the bytes read.
    async fn until(&mut self, needle: &[u8]) -> u64 {
        let mut tail: Vec<u8> = Vec::new();
        let mut total = 0u64;
        loop {
            let b = self.recv().await;
            total += b.len() as u64;
            tail.extend_from_slice(&b);
            if tail.windows(needle.len()).any(|w| w == needle) {
                return total;
            }
            let keep = tail.len().saturating_sub(needle.len());
            tail.drain(..keep);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Keystroke → echo round trips through `cat` on a remote pty.
async fn echo_rtt(pipe: &mut Pipe) -> Vec<Duration> {
    pipe.send(b"echo RE\"\"ADY; cat\r").await;
    pipe.until(b"READY\r\n").await;
    let mut times = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let t = Instant::now();
        pipe.send(b"x").await;
        let mut got = 0;
        while got == 0 {
            got = pipe.recv().await.len();
        }
        times.push(t.elapsed());
        if i % 50 == 49 {
            pipe.send(b"\r").await; // cat prints the line
            pipe.until(b"x\r\n").await;
        }
    }
    pipe.send(b"\x03").await; // end cat
    times.sort();
    times
}

/// Seconds to `cat` the file to the terminal, and bytes received.
async fn throughput(pipe: &mut Pipe, file: &str) -> (f64, u64) {
    pipe.send(b"\r").await;
    pipe.send(b"echo GO\"\"NOW\r").await;
    pipe.until(b"GONOW\r\n").await;
    let t = Instant::now();
    pipe.send(format!("cat {file}; echo EN\"\"DED\r").as_bytes())
        .await;
    let n = pipe.until(b"ENDED\r\n").await;
    (t.elapsed().as_secs_f64(), n)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

async fn login(port: u16, password: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let body = format!("password={password}");
    let req = format!(
        "POST /login HTTP/1.1\r\nHost: b\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("login works");
    line.split(';').next().unwrap().to_string()
}

async fn open_ws(port: u16, cookie: &str) -> Pipe {
    let mut req = format!("ws://127.0.0.1:{port}/ws?cols=200&rows=50")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await
            && t.contains("\"attached\"")
        {
            break;
        }
    }
    let mut pipe = Pipe::Ws(Box::new(ws));
    pipe.send(b"stty cols 200 rows 50; echo PR\"\"OMPT\r").await;
    pipe.until(b"PROMPT\r\n").await;
    pipe
}

fn ssh_pipe(sshd: &sshd::Sshd) -> (tokio::process::Child, Pipe) {
    let mut child = tokio::process::Command::new("ssh")
        .arg("-tt")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            sshd.known_hosts().display()
        ))
        .arg("-i")
        .arg(sshd.key())
        .args(["-p", &sshd.port.to_string()])
        .arg(format!("{}@127.0.0.1", sshd.user))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ssh runs");
    let pipe = Pipe::Ssh(child.stdin.take().unwrap(), child.stdout.take().unwrap());
    (child, pipe)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() {
    let bin = std::env::args()
        .skip_while(|a| a != "--bin")
        .nth(1)
        .expect("usage: termbench --bin PATH");
    let sshd = sshd::Sshd::start().expect("sshd is needed");
    let file = sshd.path("big.txt");
    let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_+=0123456789abcdefghijklmnopqrst\n";
    std::fs::write(&file, line.repeat(FILE_MB * 1024 * 1024 / line.len())).unwrap();
    let file = file.display().to_string();
    std::fs::write(sshd.path("pw"), "bench-password\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = tokio::process::Command::new(&bin)
        .args([
            "terminal",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--vm-ip",
            "127.0.0.1",
        ])
        .args([
            "--vm-ssh-port",
            &sshd.port.to_string(),
            "--ssh-user",
            &sshd.user,
            "--max-shells",
            "16",
        ])
        .arg("--ssh-key")
        .arg(sshd.key())
        .arg("--known-hosts")
        .arg(sshd.known_hosts())
        .arg("--password-file")
        .arg(sshd.path("pw"))
        .env("DOZLAB_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = server.id().unwrap();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cookie = login(port, "bench-password").await;
    let rss_idle = rss_kib(pid);

    let mut ours = open_ws(port, &cookie).await;
    let ours_rtt = echo_rtt(&mut ours).await;
    let (ours_secs, ours_bytes) = throughput(&mut ours, &file).await;

    let (_ssh_child, mut ssh) = ssh_pipe(&sshd);
    ssh.send(b"stty cols 200 rows 50; echo PR\"\"OMPT\r").await;
    ssh.until(b"PROMPT\r\n").await;
    let ssh_rtt = echo_rtt(&mut ssh).await;
    let (ssh_secs, ssh_bytes) = throughput(&mut ssh, &file).await;

    let mut shells = vec![ours];
    while shells.len() < 10 {
        shells.push(open_ws(port, &cookie).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_10 = rss_kib(pid);

    let (om, op) = (percentile(&ours_rtt, 0.5), percentile(&ours_rtt, 0.99));
    let (sm, sp) = (percentile(&ssh_rtt, 0.5), percentile(&ssh_rtt, 0.99));
    let mb = |b: u64, s: f64| b as f64 / s / 1e6;
    let (ot, st) = (mb(ours_bytes, ours_secs), mb(ssh_bytes, ssh_secs));
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "measure", "dozlab", "ssh -tt", "ratio"
    );
    println!(
        "{:<34} {:>14} {:>14} {:>8.2}  (target <= 1.2)",
        format!("echo RTT median ({KEYS} keys)"),
        us(om),
        us(sm),
        om.as_secs_f64() / sm.as_secs_f64()
    );
    println!(
        "{:<34} {:>14} {:>14} {:>8.2}",
        "echo RTT p99",
        us(op),
        us(sp),
        op.as_secs_f64() / sp.as_secs_f64()
    );
    println!(
        "{:<34} {:>14} {:>14} {:>8.2}  (target >= 0.8)",
        format!("cat {FILE_MB} MB throughput"),
        format!("{ot:.1} MB/s"),
        format!("{st:.1} MB/s"),
        ot / st
    );
    println!(
        "{:<34} {:>14} {:>14}",
        "resident memory idle",
        format!("{:.1} MiB", rss_idle as f64 / 1024.0),
        "(target <= 20)"
    );
    println!(
        "{:<34} {:>14} {:>14}",
        "resident memory, 10 shells",
        format!("{:.1} MiB", rss_10 as f64 / 1024.0),
        "(target <= 40)"
    );
    drop(shells);
    let _ = server.kill().await;
}
