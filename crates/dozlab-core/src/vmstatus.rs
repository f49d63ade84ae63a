//! The VM status file (`status.json` in `vm run`'s state directory).
//!
//! Written atomically by the VM supervisor at every phase change; read by
//! `dozlab vm status` (the Kubernetes exec probe), `--status-listen`, and
//! `dozlab up`/`dozlab ls`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name of the status file inside the state directory.
pub const STATUS_FILE: &str = "status.json";

/// Lifecycle of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Booting,
    Ready,
    Stopping,
    Stopped,
    Failed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Phase::Booting => "booting",
            Phase::Ready => "ready",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
        };
        f.write_str(s)
    }
}

/// What the supervisor reports about its VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmStatus {
    pub phase: Phase,
    /// `firecracker` or `qemu`.
    pub vmm: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// Supervisor process id.
    pub pid: u32,
    /// VMM process id, once started.
    #[serde(default)]
    pub vmm_pid: Option<u32>,
    /// Unix time (seconds) the supervisor started.
    pub started_at: u64,
    /// Milliseconds from start to ready, once ready.
    #[serde(default)]
    pub boot_ms: Option<u64>,
    /// The VM's address.
    pub vm_ip: String,
    /// Why the VM failed, or other human detail.
    #[serde(default)]
    pub message: Option<String>,
}

impl VmStatus {
    /// Path of the status file in `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATUS_FILE)
    }

    /// Reads the status from `state_dir`.
    pub fn load(state_dir: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(Self::path(state_dir))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }

    /// Writes the status to `state_dir` atomically.
    pub fn store(&self, state_dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::atomic::write_atomic(&Self::path(state_dir), &json, 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let s = VmStatus {
            phase: Phase::Ready,
            vmm: "qemu".into(),
            accel: "tcg".into(),
            pid: 1,
            vmm_pid: Some(2),
            started_at: 3,
            boot_ms: Some(4000),
            vm_ip: "172.16.0.2".into(),
            message: None,
        };
        s.store(dir.path()).unwrap();
        assert_eq!(VmStatus::load(dir.path()).unwrap(), s);
        let text = std::fs::read_to_string(VmStatus::path(dir.path())).unwrap();
        assert!(text.contains("\"phase\": \"ready\""));
    }
}
