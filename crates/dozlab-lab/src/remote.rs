//! Running things in a session's VM over one SSH connection: a script with
//! a timeout (the process group is killed in the VM when the time is up),
//! asset upload over SFTP with modes, and a persistent interactive shell on
//! a PTY that runs `{{exec}}` blocks the way a learner's terminal does
//! (state such as `cd` carries over; Ctrl-C interrupts).

use crate::assets::AssetFile;
use crate::script::remote_command;
use russh::ChannelMsg;
use std::time::{Duration, Instant};

/// Output kept from one run (the tail).
const KEEP: usize = 64 * 1024;
/// Extra time the client waits beyond the in-VM `timeout`.
const GRACE: Duration = Duration::from_secs(5);

/// Why something could not be run in the VM.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Connecting or logging in failed.
    #[error("cannot reach the VM over SSH")]
    Connect(#[from] dozlab_ssh::SshError),
    /// The SSH channel failed.
    #[error("SSH channel failed")]
    Channel(#[from] russh::Error),
    /// SFTP failed.
    #[error("SFTP: {what}")]
    Sftp {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: russh_sftp::client::error::Error,
    },
    /// A local file could not be read.
    #[error("cannot read {0}")]
    Local(String, #[source] std::io::Error),
    /// The shell ended; `last` is the tail of what it printed.
    #[error("the shell in the VM ended; its last output:\n{last}")]
    ShellGone {
        /// The end of the shell's output before it ended.
        last: String,
    },
}

/// What one script run gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit status (None when killed or timed out).
    pub status: Option<u32>,
    /// stdout and stderr, interleaved, the last 64 KiB.
    pub output: Vec<u8>,
    /// Wall time.
    pub elapsed: Duration,
    /// It ran out of time.
    pub timed_out: bool,
}

impl Outcome {
    /// Exit 0 and in time.
    pub fn success(&self) -> bool {
        self.status == Some(0) && !self.timed_out
    }

    /// The last `n` lines of output, as text.
    pub fn last_lines(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&self.output);
        let lines: Vec<&str> = text.trim_end().lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

fn keep_tail(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(data);
    if buf.len() > KEEP {
        let cut = buf.len() - KEEP;
        buf.drain(..cut);
    }
}

/// One SSH connection to the VM.
pub struct Vm {
    session: dozlab_ssh::Session,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vm")
    }
}

impl Vm {
    /// Connects (host key verified, key login).
    pub async fn connect(target: &dozlab_ssh::SshTarget) -> Result<Vm, RemoteError> {
        Ok(Vm {
            session: target.connect().await?,
        })
    }

    /// An already open connection.
    pub fn from_session(session: dozlab_ssh::Session) -> Vm {
        Vm { session }
    }

    /// Runs `script` (its text) in the VM in the login user's home, killed
    /// after `timeout`. Exit 124 (the in-VM `timeout`) counts as timed out.
    pub async fn run_script(
        &self,
        script: &str,
        timeout: Duration,
    ) -> Result<Outcome, RemoteError> {
        let t0 = Instant::now();
        let mut ch = self.session.channel_open_session().await?;
        let secs = timeout.as_secs_f64().ceil().max(1.0) as u64;
        ch.exec(true, remote_command(script, secs)).await?;
        ch.data_bytes(script.as_bytes().to_vec()).await?;
        ch.eof().await?;
        let mut output = Vec::new();
        let mut status = None;
        let collect = async {
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => keep_tail(&mut output, &data),
                    ChannelMsg::ExtendedData { data, .. } => keep_tail(&mut output, &data),
                    ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                    _ => {}
                }
            }
        };
        let in_time = tokio::time::timeout(timeout + GRACE, collect).await.is_ok();
        let timed_out = !in_time || status == Some(124);
        if !in_time {
            let _ = ch.close().await;
        }
        Ok(Outcome {
            status: if timed_out { None } else { status },
            output,
            elapsed: t0.elapsed(),
            timed_out,
        })
    }

    /// Copies `files` into the VM over SFTP, creating directories and
    /// setting each file's mode.
    pub async fn upload(&self, files: &[AssetFile]) -> Result<(), RemoteError> {
        use tokio::io::AsyncWriteExt;
        let ch = self.session.channel_open_session().await?;
        ch.request_subsystem(true, "sftp").await?;
        let sftp = russh_sftp::client::SftpSession::new(ch.into_stream())
            .await
            .map_err(|source| sftp_err("start", source))?;
        for f in files {
            if let Some((dir, _)) = f.dest.rsplit_once('/') {
                mkdir_p(&sftp, dir).await?;
            }
            let data = tokio::fs::read(&f.source)
                .await
                .map_err(|e| RemoteError::Local(f.source.display().to_string(), e))?;
            let mut file = sftp
                .create(&f.dest)
                .await
                .map_err(|source| sftp_err(&format!("create {}", f.dest), source))?;
            file.write_all(&data)
                .await
                .map_err(|e| RemoteError::Local(f.dest.clone(), e))?;
            file.shutdown()
                .await
                .map_err(|e| RemoteError::Local(f.dest.clone(), e))?;
            let mut attrs = russh_sftp::protocol::FileAttributes::empty();
            attrs.permissions = Some(f.mode);
            sftp.set_metadata(&f.dest, attrs)
                .await
                .map_err(|source| sftp_err(&format!("chmod {}", f.dest), source))?;
        }
        Ok(())
    }

    /// Opens the persistent interactive shell.
    pub async fn shell(&self) -> Result<Shell, RemoteError> {
        let ch = self.session.channel_open_session().await?;
        ch.request_pty(false, "dumb", 200, 50, 0, 0, &[]).await?;
        ch.exec(true, "exec bash --norc --noprofile --noediting -i")
            .await?;
        let mut shell = Shell {
            ch,
            nonce: format!("{:08x}", rand::random::<u32>()),
            seq: 0,
            buf: Vec::new(),
        };
        shell.send("stty -echo; PS1=''; PS2=''; cd ~\n").await?;
        shell.wait_marker(Duration::from_secs(30)).await?;
        Ok(shell)
    }
}

fn sftp_err(what: &str, source: russh_sftp::client::error::Error) -> RemoteError {
    RemoteError::Sftp {
        what: what.to_string(),
        source,
    }
}

async fn mkdir_p(sftp: &russh_sftp::client::SftpSession, dir: &str) -> Result<(), RemoteError> {
    let mut path = String::new();
    for (i, part) in dir.split('/').enumerate() {
        if i == 0 && part.is_empty() {
            path.push('/');
            continue;
        }
        if part.is_empty() {
            continue;
        }
        if !path.is_empty() && !path.ends_with('/') {
            path.push('/');
        }
        path.push_str(part);
        if sftp.try_exists(&path).await.unwrap_or(false) {
            continue;
        }
        sftp.create_dir(&path)
            .await
            .map_err(|source| sftp_err(&format!("mkdir {path}"), source))?;
    }
    Ok(())
}

/// The result of one command in the [`Shell`].
#[derive(Debug, Clone)]
pub struct ShellResult {
    /// `$?` after it, or None when it was still running (interrupted later
    /// or timed out).
    pub status: Option<i32>,
    /// Its output.
    pub output: String,
    /// Wall time.
    pub elapsed: Duration,
}

/// An interactive bash on a PTY, like the learner's terminal.
pub struct Shell {
    ch: russh::Channel<russh::client::Msg>,
    nonce: String,
    seq: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shell")
    }
}

impl Shell {
    async fn send(&mut self, text: &str) -> Result<(), RemoteError> {
        self.seq += 1;
        // The marker is assembled by printf so that the command line itself,
        // echoed by the terminal before `stty -echo` takes effect (a slow
        // login), never contains it.
        let line = format!(
            "{text}\nprintf '__DZL_%s_%s__\\n' '{n}_{s}' \"$?\"\n",
            n = self.nonce,
            s = self.seq
        );
        self.ch.data_bytes(line.into_bytes()).await?;
        Ok(())
    }

    /// Waits for the current command's marker; None if `limit` passes first.
    async fn wait_marker(&mut self, limit: Duration) -> Result<Option<(i32, String)>, RemoteError> {
        let tag = format!("__DZL_{}_{}_", self.nonce, self.seq);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            if let Some(at) = text.find(&tag) {
                let rest = &text[at + tag.len()..];
                if let Some(end) = rest.find("__") {
                    let status = rest[..end].parse().unwrap_or(-1);
                    let output = text[..at].to_string();
                    let after = at + tag.len() + end + 2;
                    self.buf = text.as_bytes()[after..].to_vec();
                    return Ok(Some((status, output)));
                }
            }
            match tokio::time::timeout_at(deadline, self.ch.wait()).await {
                Err(_) => return Ok(None),
                Ok(None) | Ok(Some(ChannelMsg::Close)) | Ok(Some(ChannelMsg::Eof)) => {
                    let text = String::from_utf8_lossy(&self.buf).replace('\r', "");
                    let lines: Vec<&str> = text.trim_end().lines().collect();
                    let last = lines[lines.len().saturating_sub(10)..].join("\n");
                    return Err(RemoteError::ShellGone { last });
                }
                Ok(Some(ChannelMsg::Data { data })) => keep_tail(&mut self.buf, &data),
                Ok(Some(_)) => {}
            }
        }
    }

    /// Types `text` (after Ctrl-C when `interrupt`) and waits up to `limit`
    /// for it to finish.
    pub async fn run(
        &mut self,
        text: &str,
        interrupt: bool,
        limit: Duration,
    ) -> Result<ShellResult, RemoteError> {
        let t0 = Instant::now();
        if interrupt {
            self.ch.data_bytes(b"\x03".to_vec()).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.send(text).await?;
        let got = self.wait_marker(limit).await?;
        let (status, output) = match got {
            Some((s, o)) => (Some(s), o),
            None => (
                None,
                String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned(),
            ),
        };
        Ok(ShellResult {
            status,
            output: output.replace('\r', ""),
            elapsed: t0.elapsed(),
        })
    }
}
