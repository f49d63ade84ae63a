//! SSH connections to the VM: key and known_hosts loading, host-key check, login.
//!
//! The private key and the known_hosts line are written by `vm run` once the
//! VM has its identity, so they may not exist yet: they are read again on
//! every connection attempt, and a missing file is the normal "VM starting"
//! state rather than a fatal error. The host key is always checked against
//! the known_hosts file; an unknown or different key is refused.

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
        source: anyhow::Error,
    },
    /// Nothing answers on the VM's SSH port (yet).
    #[error("cannot reach {addr}")]
    Unreachable {
        /// `ip:port`.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The VM's host key is not the one in known_hosts.
    #[error(
        "host key mismatch for {host}: the server offered {offered}, known_hosts has a different key; refusing to connect"
    )]
    HostKeyMismatch {
        /// The host.
        host: String,
        /// SHA256 fingerprint of the offered key.
        offered: String,
    },
    /// The server refused the key.
    #[error("the VM refused public-key login for user {0}")]
    AuthRejected(String),
    /// The handshake took too long.
    #[error("SSH handshake with {0} timed out")]
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

/// Where and how to log into the VM.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// VM address.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// OpenSSH private key file.
    pub key_path: PathBuf,
    /// known_hosts file.
    pub known_hosts_path: PathBuf,
    /// Connect + handshake timeout.
    pub timeout: Duration,
}

/// An authenticated SSH connection.
pub type Session = Handle<Verifier>;

impl SshTarget {
    /// The name the host has in known_hosts: `ip`, or `[ip]:port` when port != 22.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    /// Connects, checks the host key and logs in.
    pub async fn connect(&self) -> Result<Session, SshError> {
        let addr = format!("{}:{}", self.host, self.port);
        tokio::time::timeout(self.timeout, self.connect_inner(&addr))
            .await
            .map_err(|_| SshError::Timeout(addr.clone()))?
    }

    async fn connect_inner(&self, addr: &str) -> Result<Session, SshError> {
        let key = load_key(&self.key_path)?;
        let expected = load_known_hosts(&self.known_hosts_path, &self.known_hosts_name())?;
        let socket = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| SshError::Unreachable {
                addr: addr.to_string(),
                source,
            })?;
        let _ = socket.set_nodelay(true);
        let offered = Arc::new(Mutex::new(None));
        let verifier = Verifier {
            expected,
            offered: offered.clone(),
        };
        let config = Arc::new(client::Config {
            nodelay: true,
            keepalive_interval: Some(Duration::from_secs(30)),
            ..Default::default()
        });
        let mut handle = match client::connect_stream(config, socket, verifier).await {
            Ok(h) => h,
            Err(e) => return Err(self.handshake_error(e, &offered)),
        };
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten();
        let auth = handle
            .authenticate_publickey(&self.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(SshError::Protocol)?;
        if !auth.success() {
            return Err(SshError::AuthRejected(self.user.clone()));
        }
        Ok(handle)
    }

    fn handshake_error(&self, e: russh::Error, offered: &Mutex<Option<String>>) -> SshError {
        match (e, offered.lock().expect("lock").clone()) {
            (russh::Error::UnknownKey, Some(fp)) => SshError::HostKeyMismatch {
                host: self.known_hosts_name(),
                offered: fp,
            },
            (russh::Error::IO(source), _) => SshError::Unreachable {
                addr: format!("{}:{}", self.host, self.port),
                source,
            },
            (e, _) => SshError::Protocol(e),
        }
    }
}

fn load_key(path: &Path) -> Result<russh::keys::PrivateKey, SshError> {
    if !path.exists() {
        return Err(SshError::KeyMissing(path.to_path_buf()));
    }
    russh::keys::load_secret_key(path, None).map_err(|e| SshError::BadFile {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// The keys known_hosts lists for `name` (`ip` or `[ip]:port`).
pub fn load_known_hosts(path: &Path, name: &str) -> Result<Vec<PublicKey>, SshError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SshError::KnownHostsMissing(path.to_path_buf()));
        }
        Err(e) => {
            return Err(SshError::BadFile {
                path: path.to_path_buf(),
                source: e.into(),
            });
        }
    };
    let keys = parse_known_hosts(&text, name).map_err(|source| SshError::BadFile {
        path: path.to_path_buf(),
        source,
    })?;
    if keys.is_empty() {
        return Err(SshError::NoHostKey {
            path: path.to_path_buf(),
            host: name.to_string(),
        });
    }
    Ok(keys)
}

/// Parses known_hosts text (plain host names, comma lists; no hashed names).
pub fn parse_known_hosts(text: &str, name: &str) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(b64)) = (fields.next(), fields.next(), fields.next())
        else {
            anyhow::bail!("line {}: expected `host key-type base64-key`", n + 1);
        };
        if hosts.split(',').any(|h| h == name) {
            let key = russh::keys::parse_public_key_base64(b64)
                .map_err(|e| anyhow::anyhow!("line {}: bad key: {e}", n + 1))?;
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The client handler: accepts only the keys from known_hosts.
#[derive(Debug)]
pub struct Verifier {
    expected: Vec<PublicKey>,
    offered: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let ok = self.expected.iter().any(|k| k.key_data() == key.key_data());
        if !ok {
            *self.offered.lock().expect("lock") =
                Some(key.fingerprint(HashAlg::Sha256).to_string());
        }
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn known_hosts_matches_plain_and_bracketed_names() {
        let text = format!(
            "# c\n172.16.0.2 ssh-ed25519 {KEY}\n[127.0.0.1]:2222,other ssh-ed25519 {KEY} x\n"
        );
        assert_eq!(parse_known_hosts(&text, "172.16.0.2").unwrap().len(), 1);
        assert_eq!(
            parse_known_hosts(&text, "[127.0.0.1]:2222").unwrap().len(),
            1
        );
        assert!(parse_known_hosts(&text, "127.0.0.1").unwrap().is_empty());
        assert!(parse_known_hosts("garbage\n", "x").is_err());
    }

    #[test]
    fn missing_files_mean_the_vm_is_starting() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_known_hosts(&dir.path().join("kh"), "h").unwrap_err();
        assert!(err.is_starting(), "{err}");
        assert!(load_key(&dir.path().join("k")).unwrap_err().is_starting());
    }
}
