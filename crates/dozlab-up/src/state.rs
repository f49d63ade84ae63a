//! Session records: where a session's state and data live, and `session.json`.
//!
//! `session.json` (in `/run/dozlab/sessions/<name>/`) is the recovery record:
//! it names every resource the session created (processes, namespace, veth,
//! nftables table, directories), so `dozlab down` can remove them even when
//! the supervisor was killed. It is rewritten atomically at every change and
//! removed last. Data (the rootfs copy, logs, keys) lives in
//! `/var/lib/dozlab/sessions/<name>/`. `DOZLAB_RUN_DIR` and `DOZLAB_DATA_DIR`
//! move both roots (tests use them to stay apart from real sessions).

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// File name of the record in a session's run directory.
pub const SESSION_FILE: &str = "session.json";

/// Why a session record could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "invalid session name {0:?}: use 1-24 characters a-z, 0-9 and '-', starting with a letter or digit"
    )]
    BadName(String),
    #[error(
        "a session named {0:?} already exists (see `dozlab ls`, stop it with `dozlab down {0}`)"
    )]
    Exists(String),
    #[error("no session named {0:?} (see `dozlab ls`)")]
    NotFound(String),
    #[error("cannot read session record {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("session record {path} is not valid")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The two roots under which sessions keep their files.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Runtime records (tmpfs): `/run/dozlab`.
    pub run_root: PathBuf,
    /// Session data: `/var/lib/dozlab`.
    pub data_root: PathBuf,
}

impl Layout {
    /// The roots from `DOZLAB_RUN_DIR` / `DOZLAB_DATA_DIR`, or the defaults.
    pub fn from_env() -> Self {
        let var = |k: &str, d: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(d))
        };
        Self {
            run_root: var("DOZLAB_RUN_DIR", "/run/dozlab"),
            data_root: var("DOZLAB_DATA_DIR", "/var/lib/dozlab"),
        }
    }

    /// Directory holding one run directory per session.
    pub fn sessions_dir(&self) -> PathBuf {
        self.run_root.join("sessions")
    }

    /// The run directory of session `name`.
    pub fn run_dir(&self, name: &str) -> PathBuf {
        self.sessions_dir().join(name)
    }

    /// The data directory of session `name`.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.data_root.join("sessions").join(name)
    }

    /// Path of `session.json` for `name`.
    pub fn record_path(&self, name: &str) -> PathBuf {
        self.run_dir(name).join(SESSION_FILE)
    }

    /// Names of all sessions with a run directory, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.sessions_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// Claims `name`: creates its run directory (atomic: fails when it
    /// exists) and its data directory.
    pub fn claim(&self, name: &str) -> Result<(), StateError> {
        let write_err = |path: &Path, source| StateError::Write {
            path: path.display().to_string(),
            source,
        };
        let sessions = self.sessions_dir();
        std::fs::create_dir_all(&sessions).map_err(|e| write_err(&sessions, e))?;
        let run = self.run_dir(name);
        match std::fs::create_dir(&run) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(name.into()));
            }
            Err(e) => return Err(write_err(&run, e)),
        }
        let data = self.data_dir(name);
        // Data without a record is left from before a reboot (the record
        // lives on tmpfs): nothing owns it any more.
        let _ = std::fs::remove_dir_all(&data);
        if let Err(e) = std::fs::create_dir_all(data.join("logs")) {
            let _ = std::fs::remove_dir(&run);
            return Err(write_err(&data, e));
        }
        Ok(())
    }
}

/// Checks a session name (it becomes part of a namespace and table name).
pub fn validate_name(name: &str) -> Result<(), StateError> {
    let ok = !name.is_empty()
        && name.len() <= 24
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(StateError::BadName(name.into()))
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Ready,
    Stopping,
    Failed,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Stopping => "stopping",
            State::Failed => "failed",
        })
    }
}

/// A process the session started, identified by pid and start time (so a
/// recycled pid is never signalled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    /// `vm`, `terminal`, `vscode`, `network`, `init` or `supervisor`.
    pub component: String,
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
}

/// A finished phase of `dozlab up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub name: String,
    pub ms: u64,
}

/// Host loopback ports the session publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    pub terminal: u16,
    #[serde(default)]
    pub ssh: Option<u16>,
    #[serde(default)]
    pub docker: Option<u16>,
    #[serde(default)]
    pub vscode: Option<u16>,
    /// `HOSTPORT:VMPORT` pairs.
    #[serde(default)]
    pub forwards: Vec<String>,
}

/// Addresses of a session's two links (see [`crate::addr`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPlan {
    /// Slot number N: veth on 10.213.N.0/30, VM subnet 172.16.N.0/24.
    pub index: u8,
    pub netns: String,
    pub host_if: String,
    pub pod_if: String,
    pub host_ip: Ipv4Addr,
    pub pod_ip: Ipv4Addr,
    pub gateway_ip: Ipv4Addr,
    pub vm_ip: Ipv4Addr,
    pub tap: String,
    /// Host nftables table (masquerade), when created.
    #[serde(default)]
    pub nft_table: Option<String>,
}

/// The whole record (`session.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub name: String,
    pub state: State,
    /// What `--image` resolved to, for people.
    pub image: String,
    /// Unix seconds.
    pub started_at: u64,
    #[serde(default)]
    pub supervisor: Option<ProcRecord>,
    #[serde(default)]
    pub children: Vec<ProcRecord>,
    #[serde(default)]
    pub net: Option<NetPlan>,
    #[serde(default)]
    pub ports: Ports,
    pub data_dir: PathBuf,
    pub password_file: PathBuf,
    #[serde(default)]
    pub phases: Vec<PhaseRecord>,
    /// Phase in progress, for `ls` and the detached launcher.
    #[serde(default)]
    pub current_phase: Option<String>,
    /// Why the session failed.
    #[serde(default)]
    pub error: Option<String>,
    /// A note shown with the URLs (e.g. why VS Code is not running).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The VM's Docker API: None when the image has no Docker, else whether
    /// it answers `GET /_ping` yet (it comes up after SSH; see `--wait-docker`).
    #[serde(default)]
    pub docker_ready: Option<bool>,
    /// We switched the host's `net.ipv4.ip_forward` on for this session.
    #[serde(default)]
    pub enabled_ip_forward: bool,
    /// The lab (`--lab`) the terminal opens beside it.
    #[serde(default)]
    pub lab: Option<crate::lab::LabRecord>,
}

impl Session {
    /// A fresh record for `name` in `layout`.
    pub fn new(layout: &Layout, name: &str, image: String) -> Self {
        let data_dir = layout.data_dir(name);
        Self {
            name: name.into(),
            state: State::Starting,
            image,
            started_at: unix_now(),
            supervisor: None,
            children: Vec::new(),
            net: None,
            ports: Ports::default(),
            password_file: data_dir.join("shared").join("password"),
            data_dir,
            phases: Vec::new(),
            current_phase: None,
            error: None,
            notes: Vec::new(),
            docker_ready: None,
            enabled_ip_forward: false,
            lab: None,
        }
    }

    /// Reads the record of `name`.
    pub fn load(layout: &Layout, name: &str) -> Result<Self, StateError> {
        let path = layout.record_path(name);
        let text = std::fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                StateError::NotFound(name.into())
            } else {
                StateError::Read {
                    path: path.display().to_string(),
                    source,
                }
            }
        })?;
        serde_json::from_str(&text).map_err(|source| StateError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Writes the record atomically.
    pub fn store(&self, layout: &Layout) -> Result<(), StateError> {
        let path = layout.record_path(&self.name);
        let json = serde_json::to_vec_pretty(self).expect("session serialises");
        dozlab_core::atomic::write_atomic(&path, &json, 0o600).map_err(|source| StateError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// The session's log directory.
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// The directory shared by the components (keys, network config).
    pub fn shared_dir(&self) -> PathBuf {
        self.data_dir.join("shared")
    }

    /// The terminal URL on the host.
    pub fn terminal_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.ports.terminal)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("lab").is_ok());
        assert!(validate_name("lab-2").is_ok());
        for bad in ["", "-x", "Lab", "a b", "a/b", "abcdefghijklmnopqrstuvwxy"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn claim_is_exclusive_and_record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            run_root: dir.path().join("run"),
            data_root: dir.path().join("data"),
        };
        std::fs::create_dir_all(layout.data_dir("a").join("stale")).unwrap();
        layout.claim("a").unwrap();
        assert!(
            !layout.data_dir("a").join("stale").exists(),
            "stale data removed"
        );
        assert!(matches!(layout.claim("a"), Err(StateError::Exists(_))));
        assert!(layout.data_dir("a").join("logs").is_dir());
        let s = Session::new(&layout, "a", "vm".into());
        s.store(&layout).unwrap();
        assert_eq!(Session::load(&layout, "a").unwrap(), s);
        assert_eq!(layout.names(), vec!["a".to_string()]);
        assert!(matches!(
            Session::load(&layout, "b"),
            Err(StateError::NotFound(_))
        ));
    }
}
