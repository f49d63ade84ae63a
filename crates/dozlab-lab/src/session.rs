//! The session `lab test` runs in: one it boots with `dozlab up --detach`
//! (and stops with `dozlab down` however the test ends), or a running one
//! it attaches to by name. Both go through the `dozlab` binary, so this
//! crate does not depend on the `up` crate (which depends on this one).

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Why a session could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// `dozlab` could not be run.
    #[error("cannot run {0}")]
    Spawn(String, #[source] std::io::Error),
    /// `dozlab up` failed.
    #[error("`dozlab up` failed (exit {code}):\n{output}")]
    Up {
        /// Its exit code.
        code: i32,
        /// Its output.
        output: String,
    },
    /// No such session.
    #[error("no running session named {0:?} (see `dozlab ls`)")]
    NotFound(String),
    /// The session has no SSH port.
    #[error("session {0:?} publishes no SSH port")]
    NoSsh(String),
    /// `dozlab ls --json` gave something unexpected.
    #[error("cannot read `dozlab ls --json`")]
    Ls(#[source] serde_json::Error),
}

#[derive(Debug, Deserialize)]
struct LsPorts {
    #[serde(default)]
    ssh: Option<u16>,
}

#[derive(Debug, Deserialize)]
struct LsRow {
    name: String,
    state: String,
    data_dir: PathBuf,
    ports: LsPorts,
}

/// A session to run in.
#[derive(Debug)]
pub struct Session {
    /// Its name.
    pub name: String,
    /// How to log into its VM.
    pub ssh: dozlab_ssh::SshTarget,
    /// We booted it (and stop it when done).
    pub owned: bool,
    bin: PathBuf,
}

/// How to boot a session.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The `dozlab` binary.
    pub bin: PathBuf,
    /// `--image`.
    pub image: String,
    /// `--accel`, when given.
    pub accel: Option<String>,
    /// `--wait-docker`.
    pub wait_docker: bool,
    /// Extra arguments for `dozlab up`.
    pub extra: Vec<String>,
}

impl Session {
    /// Attaches to the running session `name`.
    pub fn attach(bin: &Path, name: &str) -> Result<Session, SessionError> {
        let out = Command::new(bin)
            .args(["ls", "--json"])
            .output()
            .map_err(|e| SessionError::Spawn(bin.display().to_string(), e))?;
        let rows: Vec<LsRow> = serde_json::from_slice(&out.stdout).map_err(SessionError::Ls)?;
        let row = rows
            .into_iter()
            .find(|r| r.name == name && r.state == "ready")
            .ok_or_else(|| SessionError::NotFound(name.to_string()))?;
        let port = row
            .ports
            .ssh
            .ok_or_else(|| SessionError::NoSsh(name.to_string()))?;
        let shared = row.data_dir.join("shared");
        Ok(Session {
            name: name.to_string(),
            ssh: dozlab_ssh::SshTarget {
                host: "127.0.0.1".into(),
                port,
                user: "root".into(),
                key_path: shared.join("vm-ssh-key"),
                known_hosts_path: shared.join("host_known_hosts"),
                timeout: Duration::from_secs(30),
            },
            owned: false,
            bin: bin.to_path_buf(),
        })
    }

    /// Boots a new session `name` with `dozlab up --detach` and attaches.
    pub fn boot(name: &str, opts: &BootOptions) -> Result<Session, SessionError> {
        let mut cmd = Command::new(&opts.bin);
        cmd.args(["up", "--detach", "--name", name, "--image", &opts.image]);
        if let Some(a) = &opts.accel {
            cmd.args(["--accel", a]);
        }
        if opts.wait_docker {
            cmd.arg("--wait-docker");
        }
        cmd.args(&opts.extra);
        let out = cmd
            .output()
            .map_err(|e| SessionError::Spawn(opts.bin.display().to_string(), e))?;
        if !out.status.success() {
            let _ = Command::new(&opts.bin).args(["down", name]).output();
            return Err(SessionError::Up {
                code: out.status.code().unwrap_or(-1),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        let mut s = Session::attach(&opts.bin, name).inspect_err(|_| {
            let _ = Command::new(&opts.bin).args(["down", name]).output();
        })?;
        s.owned = true;
        Ok(s)
    }

    /// Stops the session if we booted it.
    pub fn finish(&self) {
        if self.owned {
            let _ = Command::new(&self.bin)
                .args(["down", &self.name])
                .stdout(std::process::Stdio::null())
                .output();
        }
    }
}
