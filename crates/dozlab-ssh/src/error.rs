//! Why an SSH connection to the VM failed, and whether the VM is most likely
//! still starting.

use std::path::PathBuf;

/// Why a connection to the VM failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The private key file is not there (yet).
    #[error("SSH key {0} does not exist yet (the VM runner writes it at boot)")]
    KeyMissing(PathBuf),
    /// The known_hosts file is not there (yet).
    #[error("known_hosts file {0} does not exist yet (the VM runner writes it at boot)")]
    KnownHostsMissing(PathBuf),
    /// The known_hosts file has no line for the VM.
    #[error("{path} has no host key for {host}")]
    NoHostKey {
        /// The file.
        path: PathBuf,
        /// The `host` or `[host]:port` looked for.
        host: String,
    },
    /// A file could not be read or parsed.
    #[error("cannot read {path}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Nothing answers on the VM's SSH port (yet).
    #[error("cannot reach {addr}")]
    Unreachable {
        /// `host:port`.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server's host key is not one of the expected keys.
    #[error(
        "host key mismatch for {host}: the server offered {offered}, which is not the expected key; refusing to connect"
    )]
    HostKeyMismatch {
        /// The host, as known_hosts names it.
        host: String,
        /// SHA256 fingerprint of the offered key.
        offered: String,
    },
    /// The server refused the key.
    #[error("the VM refused public-key login for user {0}")]
    AuthRejected(String),
    /// Connecting, the handshake or the login took too long.
    #[error("SSH login to {0} timed out")]
    Timeout(String),
    /// Any other protocol failure.
    #[error("SSH protocol error")]
    Protocol(#[source] russh::Error),
}

impl SshError {
    /// True when the VM is most likely still booting (files or port not there yet).
    pub fn is_starting(&self) -> bool {
        matches!(
            self,
            Self::KeyMissing(_)
                | Self::KnownHostsMissing(_)
                | Self::Unreachable { .. }
                | Self::Timeout(_)
        )
    }
}
