//! The guest agent client and the re-keying of a VM restored from a
//! snapshot: the session's SSH host key and authorized key, a new
//! machine-id, a reseeded RNG and the right clock, through Debian's
//! `qemu-guest-agent` on the virtio-serial port `org.qemu.guest_agent.0`.
//!
//! No key is baked into the image for this: the agent is reached only
//! through the VMM's chardev socket in the state dir. The secrets travel as
//! the standard input of one `guest-exec` (never on a command line).

use crate::identity::{Identity, IdentityError};
use crate::qmp::{QmpError, Session};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Why the guest could not be re-keyed.
#[derive(Debug, thiserror::Error)]
pub enum QgaError {
    #[error("the guest agent did not answer within {0} s")]
    NoAgent(u64),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("{what} in the guest exited with {code}: {stderr}")]
    Exec {
        what: String,
        code: i64,
        stderr: String,
    },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot read host randomness")]
    Random(#[source] std::io::Error),
}

/// A connection to the guest agent.
pub struct Agent {
    s: Session,
}

/// What a `guest-exec` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Agent {
    /// Connects and synchronises (`guest-sync`), retrying until `limit`.
    pub async fn connect(socket: &Path, limit: Duration) -> Result<Self, QgaError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut id: u64 = std::process::id().into();
        while tokio::time::Instant::now() < deadline {
            id += 1;
            if let Ok(mut s) = Session::connect(socket).await {
                let sync = async {
                    s.send("guest-sync", json!({ "id": id })).await?;
                    loop {
                        let v = s.read().await?;
                        if v.get("return").and_then(Value::as_u64) == Some(id) {
                            return Ok::<_, QmpError>(());
                        }
                    }
                };
                if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), sync).await {
                    return Ok(Self { s });
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(QgaError::NoAgent(limit.as_secs()))
    }

    /// Sets the guest's wall clock to the host's with `date -s` (QEMU's
    /// `guest-set-time` also runs `hwclock -w`, which waits up to a second
    /// for the RTC and is not needed: the guest keeps time with its clocksource).
    pub async fn set_clock(&mut self) -> Result<(), QgaError> {
        let at = date_arg(now_ns());
        self.run_checked("date", "/bin/date", &["-u", "-s", &at], b"")
            .await
            .map(drop)
    }

    /// Runs `path args` in the guest with `stdin`, waits for it, returns its output.
    pub async fn exec(
        &mut self,
        path: &str,
        args: &[&str],
        stdin: &[u8],
        limit: Duration,
    ) -> Result<ExecOutput, QgaError> {
        let mut a = json!({ "path": path, "arg": args, "capture-output": true });
        if !stdin.is_empty() {
            a["input-data"] = B64.encode(stdin).into();
        }
        let r = self.s.execute_within("guest-exec", a, limit).await?;
        let pid = r.get("pid").cloned().unwrap_or_default();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let st = self
                .s
                .execute_within("guest-exec-status", json!({ "pid": pid }), limit)
                .await?;
            if st.get("exited").and_then(Value::as_bool) == Some(true) {
                let data = |k: &str| {
                    st.get(k)
                        .and_then(Value::as_str)
                        .and_then(|d| B64.decode(d).ok())
                        .unwrap_or_default()
                };
                return Ok(ExecOutput {
                    code: st.get("exitcode").and_then(Value::as_i64).unwrap_or(-1),
                    stdout: data("out-data"),
                    stderr: data("err-data"),
                });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(QmpError::Timeout {
                    command: format!("guest-exec {path}"),
                    secs: limit.as_secs(),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn run_checked(
        &mut self,
        what: &str,
        path: &str,
        args: &[&str],
        stdin: &[u8],
    ) -> Result<ExecOutput, QgaError> {
        let out = self
            .exec(path, args, stdin, Duration::from_secs(60))
            .await?;
        if out.code != 0 {
            return Err(QgaError::Exec {
                what: what.into(),
                code: out.code,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out)
    }
}

/// The new secrets of one restored VM.
pub struct Rekey {
    pub host_private: String,
    pub host_public: String,
    pub authorized_key: String,
    /// 32 lowercase hex digits.
    pub machine_id: String,
    /// Host randomness mixed into the guest's pool before its CRNG is reseeded.
    pub entropy: [u8; 64],
}

impl Rekey {
    /// The session's keys, a random machine-id and 64 bytes of host entropy.
    pub fn for_identity(id: &Identity) -> Result<Self, QgaError> {
        let mut rnd = [0u8; 80];
        random(&mut rnd).map_err(QgaError::Random)?;
        let mut entropy = [0u8; 64];
        entropy.copy_from_slice(&rnd[16..]);
        Ok(Self {
            host_private: Identity::private_openssh(&id.host)?,
            host_public: Identity::public_openssh(id.host.public_key())?,
            authorized_key: Identity::public_openssh(id.client.public_key())?,
            machine_id: machine_id(&rnd[..16]),
            entropy,
        })
    }

    /// The shell script (fed to `sh -s` on stdin) that sets the clock to
    /// `now_ns` (host time when it is sent), rewrites the secrets in place
    /// (the files exist, from the cold boot the snapshot was taken of, and
    /// keep their modes; shell builtins only, every process costs under
    /// TCG), reseeds the CRNG (`RNDRESEEDCRNG` through perl, which every
    /// Debian has), forgets the old neighbours and makes sshd re-exec with
    /// the new host key (SIGHUP; `systemctl restart` when there is no pid file).
    pub fn script(&self, now_ns: i64) -> String {
        let hex: String = self.entropy.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            r#"set -eu
date -u -s {at} >/dev/null
umask 077
k=/etc/ssh/ssh_host_ed25519_key
cat > "$k" <<'DOZLAB_KEY_EOF'
{private}
DOZLAB_KEY_EOF
printf '%s\n' '{public}' > "$k.pub"
printf '%s\n' '{authorized}' > /root/.ssh/authorized_keys
printf '%s\n' '{machine_id}' > /etc/machine-id
printf '%s' '{hex}' | perl -e 'open(my $u, ">", "/dev/urandom") or die "urandom: $!"; my $h = <STDIN>; syswrite($u, pack("H*", $h)) or die "write: $!"; ioctl($u, 0x5207, 0) or die "RNDRESEEDCRNG: $!"'
ip neigh flush all >/dev/null 2>&1 || true
if read -r pid < /run/sshd.pid 2>/dev/null; then kill -HUP "$pid"; else systemctl restart ssh.service; fi
"#,
            at = date_arg(now_ns),
            private = self.host_private.trim_end(),
            public = self.host_public,
            authorized = self.authorized_key,
            machine_id = self.machine_id,
        )
    }
}

/// Re-keys a restored guest (clock, secrets, RNG, sshd) in one `guest-exec`.
pub async fn rekey(agent: &mut Agent, rekey: &Rekey) -> Result<(), QgaError> {
    let script = rekey.script(now_ns());
    agent
        .run_checked("the re-key script", "/bin/sh", &["-s"], script.as_bytes())
        .await
        .map(drop)
}

/// `@SECONDS.NANOSECONDS` for `date -s`.
fn date_arg(ns: i64) -> String {
    format!("@{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn random(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// A machine-id: 32 lowercase hex digits, as systemd writes them (a UUID v4).
fn machine_id(rnd: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&rnd[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    #[test]
    fn machine_ids_are_fresh_uuid4_hex() {
        let id = Identity::generate("t");
        let a = Rekey::for_identity(&id).unwrap();
        let b = Rekey::for_identity(&id).unwrap();
        assert_ne!(a.machine_id, b.machine_id);
        assert_ne!(a.entropy, b.entropy);
        assert_eq!(a.machine_id.len(), 32);
        assert!(
            a.machine_id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(&a.machine_id[12..13], "4");
    }

    #[test]
    fn the_script_installs_every_secret_and_restarts_sshd() {
        let id = Identity::generate("t");
        let r = Rekey::for_identity(&id).unwrap();
        let s = r.script(1_796_000_000_123_456_789);
        assert!(s.contains("date -u -s @1796000000.123456789"), "{s}");
        assert!(s.contains(r.host_private.trim_end()));
        assert!(s.contains(&r.host_public) && s.contains(&r.authorized_key));
        assert!(s.contains(&r.machine_id));
        assert!(s.contains("0x5207"), "RNDRESEEDCRNG");
        assert!(
            s.trim_end()
                .ends_with("else systemctl restart ssh.service; fi")
        );
        // Keys are single-quoted: no quote may appear inside them.
        assert!(!r.host_public.contains('\'') && !r.authorized_key.contains('\''));
    }

    /// A stand-in agent: answers guest-sync, guest-exec and
    /// guest-exec-status; records what it was sent.
    #[tokio::test]
    async fn sync_clock_and_exec_with_stdin() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("qga.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            let mut seen: Vec<Value> = Vec::new();
            while let Some(l) = lines.next_line().await.unwrap() {
                let v: Value = serde_json::from_str(&l).unwrap();
                let reply = match v["execute"].as_str().unwrap() {
                    "guest-sync" => json!({"return": v["arguments"]["id"]}),
                    "guest-exec" => json!({"return": {"pid": 7}}),
                    "guest-exec-status" => json!({"return": {
                        "exited": true, "exitcode": 0,
                        "out-data": B64.encode(b"ok")}}),
                    _ => json!({"error": {"desc": "unknown"}}),
                };
                seen.push(v);
                w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
            }
            seen
        });
        let mut a = Agent::connect(&sock, Duration::from_secs(5)).await.unwrap();
        a.set_clock().await.unwrap();
        let out = a
            .exec("/bin/sh", &["-s"], b"echo ok", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((out.code, out.stdout.as_slice()), (0, b"ok".as_slice()));
        drop(a);
        let seen = server.await.unwrap();
        assert_eq!(seen[1]["arguments"]["path"], "/bin/date");
        let at = seen[1]["arguments"]["arg"][2].as_str().unwrap().to_string();
        let secs: f64 = at.trim_start_matches('@').parse().unwrap();
        assert!(
            (secs - now_ns() as f64 / 1e9).abs() < 60.0,
            "host time: {at}"
        );
        assert_eq!(seen[3]["arguments"]["input-data"], B64.encode(b"echo ok"));
        assert_eq!(seen[4]["arguments"]["pid"], 7);
    }
}
