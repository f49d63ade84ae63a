//! A QMP session with arguments and return values: what snapshots need
//! from a running QEMU (`stop`, `migrate`, `query-migrate`, `query-status`,
//! `cont`), beyond the one-shot commands of [`crate::qemu::qmp_execute`].
//!
//! The same line protocol (one JSON object per line, `{"execute": ...}` →
//! `{"return": ...}` or `{"error": ...}`) is spoken by the guest agent; see
//! [`crate::qga`].

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// Why a QMP (or guest agent) exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot talk to {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {reply}")]
    Refused { command: String, reply: String },
    #[error("{path} closed the connection")]
    Closed { path: PathBuf },
    #[error("no answer to {command} within {secs} s")]
    Timeout { command: String, secs: u64 },
}

/// One connection speaking JSON lines.
pub struct Session {
    path: PathBuf,
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Session {
    /// Connects to `socket` without any handshake (the guest agent's way).
    pub async fn connect(socket: &Path) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| QmpError::Io {
                path: socket.to_path_buf(),
                source,
            })?;
        let (r, w) = stream.into_split();
        Ok(Self {
            path: socket.to_path_buf(),
            r: BufReader::new(r),
            w,
        })
    }

    /// Connects to QEMU's QMP socket: greeting, then `qmp_capabilities`.
    pub async fn qmp(socket: &Path) -> Result<Self, QmpError> {
        let mut s = Self::connect(socket).await?;
        loop {
            let v = s.read().await?;
            if v.get("QMP").is_some() {
                break;
            }
        }
        s.execute("qmp_capabilities", Value::Null).await?;
        Ok(s)
    }

    /// Sends one command and returns its `return` value (events are skipped).
    pub async fn execute(&mut self, command: &str, args: Value) -> Result<Value, QmpError> {
        self.send(command, args).await?;
        loop {
            let v = self.read().await?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if v.get("error").is_some() {
                return Err(QmpError::Refused {
                    command: command.into(),
                    reply: v.to_string(),
                });
            }
        }
    }

    /// [`Session::execute`] bounded by `limit`.
    pub async fn execute_within(
        &mut self,
        command: &str,
        args: Value,
        limit: Duration,
    ) -> Result<Value, QmpError> {
        tokio::time::timeout(limit, self.execute(command, args))
            .await
            .map_err(|_| QmpError::Timeout {
                command: command.into(),
                secs: limit.as_secs(),
            })?
    }

    /// Writes `{"execute": command, "arguments": args}` (no arguments when null).
    pub async fn send(&mut self, command: &str, args: Value) -> Result<(), QmpError> {
        let msg = if args.is_null() {
            json!({ "execute": command })
        } else {
            json!({ "execute": command, "arguments": args })
        };
        let mut line = msg.to_string();
        line.push('\n');
        self.w
            .write_all(line.as_bytes())
            .await
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// The next JSON object (lines that are not JSON are skipped: the guest
    /// agent's sync delimiter `0xff` may precede one).
    pub async fn read(&mut self) -> Result<Value, QmpError> {
        loop {
            let mut line = Vec::new();
            let n = self
                .r
                .read_until(b'\n', &mut line)
                .await
                .map_err(|source| QmpError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                return Err(QmpError::Closed {
                    path: self.path.clone(),
                });
            }
            let start = line.iter().position(|b| *b == b'{').unwrap_or(line.len());
            if let Ok(v) = serde_json::from_slice::<Value>(&line[start..]) {
                return Ok(v);
            }
        }
    }
}

/// Polls `query-migrate` until the migration completed; the error names
/// QEMU's reason when it failed.
pub async fn wait_migration(s: &mut Session, limit: Duration) -> Result<(), QmpError> {
    let start = tokio::time::Instant::now();
    loop {
        let r = s.execute("query-migrate", Value::Null).await?;
        match r.get("status").and_then(Value::as_str) {
            Some("completed") => return Ok(()),
            Some("failed") | Some("cancelled") => {
                return Err(QmpError::Refused {
                    command: "migrate".into(),
                    reply: r.to_string(),
                });
            }
            _ => {}
        }
        if start.elapsed() > limit {
            return Err(QmpError::Timeout {
                command: "migrate".into(),
                secs: limit.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `query-status` until QEMU's run state is `want` (e.g. `paused`
/// after an incoming migration under `-S`); `inmigrate` is waited through,
/// any other state is an error.
pub async fn wait_status(s: &mut Session, want: &str, limit: Duration) -> Result<(), QmpError> {
    let start = tokio::time::Instant::now();
    loop {
        let r = s.execute("query-status", Value::Null).await?;
        let status = r.get("status").and_then(Value::as_str).unwrap_or("");
        if status == want {
            return Ok(());
        }
        if status != "inmigrate" && status != "prelaunch" {
            return Err(QmpError::Refused {
                command: format!("waiting for run state {want}"),
                reply: r.to_string(),
            });
        }
        if start.elapsed() > limit {
            return Err(QmpError::Timeout {
                command: format!("run state {want}"),
                secs: limit.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn arguments_return_values_events_and_errors() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("qmp.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"{\"QMP\": {}}\r\n").await.unwrap();
            let mut seen = Vec::new();
            let mut polls = 0;
            while let Some(l) = lines.next_line().await.unwrap() {
                let v: Value = serde_json::from_str(&l).unwrap();
                seen.push(v.clone());
                let reply = match v["execute"].as_str().unwrap() {
                    "query-migrate" => {
                        polls += 1;
                        let st = if polls < 3 { "active" } else { "completed" };
                        format!("{{\"event\":\"X\"}}\n{{\"return\":{{\"status\":\"{st}\"}}}}\n")
                    }
                    "bad" => "{\"error\":{\"class\":\"GenericError\",\"desc\":\"no\"}}\n".into(),
                    _ => "{\"return\":{}}\n".into(),
                };
                w.write_all(reply.as_bytes()).await.unwrap();
            }
            seen
        });
        let mut s = Session::qmp(&sock).await.unwrap();
        s.execute("migrate", json!({"uri": "exec:cat > /x"}))
            .await
            .unwrap();
        wait_migration(&mut s, Duration::from_secs(5))
            .await
            .unwrap();
        let e = s.execute("bad", Value::Null).await.unwrap_err();
        assert!(e.to_string().contains("bad failed") && e.to_string().contains("no"));
        drop(s);
        let seen = server.await.unwrap();
        assert_eq!(seen[0], json!({"execute": "qmp_capabilities"}));
        assert_eq!(
            seen[1],
            json!({"execute": "migrate", "arguments": {"uri": "exec:cat > /x"}})
        );
        assert_eq!(seen.len(), 6, "{seen:?}");
    }
}
