//! The per-session SSH identity: a client key for root and a host key for
//! the guest's sshd, both ed25519, made fresh for every `vm run`.
//!
//! The private client key and a `known_hosts` line go to the shared volume
//! (the terminal reads them); the public client key and the host key pair go
//! into the image (see `inject`).

use dozlab_ssh::keys::ed25519;
use dozlab_ssh::known_hosts;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{PrivateKey, PublicKey};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Why the identity could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot encode an SSH key")]
    Encode(#[source] russh::keys::ssh_key::Error),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The session's keys.
#[derive(Clone)]
pub struct Identity {
    /// Root's login key (private part goes to `--ssh-key-out`).
    pub client: PrivateKey,
    /// The guest's sshd host key.
    pub host: PrivateKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field(
                "host",
                &self.host.public_key().fingerprint(Default::default()),
            )
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Fresh random keys; comments name the session.
    pub fn generate(session_id: &str) -> Self {
        Self {
            client: ed25519(&format!("dozlab-{session_id}")),
            host: ed25519(&format!("root@dozlab-{session_id}")),
        }
    }

    /// A private key in OpenSSH format.
    pub fn private_openssh(key: &PrivateKey) -> Result<String, IdentityError> {
        key.to_openssh(LineEnding::LF)
            .map(|s| s.to_string())
            .map_err(IdentityError::Encode)
    }

    /// A public key line `ssh-ed25519 AAAA... comment`.
    pub fn public_openssh(key: &PublicKey) -> Result<String, IdentityError> {
        key.to_openssh().map_err(IdentityError::Encode)
    }

    /// Writes the client key (0600) and `PATH.pub` (0644), atomically.
    pub fn write_client_key(&self, path: &Path) -> Result<(), IdentityError> {
        let private = Self::private_openssh(&self.client)?;
        let public = Self::public_openssh(self.client.public_key())? + "\n";
        write(path, private.as_bytes(), 0o600)?;
        write(&pub_path(path), public.as_bytes(), 0o644)
    }

    /// The `known_hosts` line for the VM (see [`known_hosts::line`]):
    /// `ip ssh-ed25519 AAAA...`, or `[ip]:port ...` when sshd is not on 22.
    pub fn known_hosts_line(&self, ip: Ipv4Addr, port: u16) -> Result<String, IdentityError> {
        known_hosts::line(&ip.to_string(), port, self.host.public_key())
            .map_err(IdentityError::Encode)
    }

    /// Writes the `known_hosts` file (0644), atomically.
    pub fn write_known_hosts(
        &self,
        path: &Path,
        ip: Ipv4Addr,
        port: u16,
    ) -> Result<(), IdentityError> {
        write(path, self.known_hosts_line(ip, port)?.as_bytes(), 0o644)
    }
}

/// `PATH.pub` beside a private key path.
pub fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), IdentityError> {
    dozlab_core::atomic::write_atomic(path, data, mode).map_err(|source| IdentityError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_fresh_and_written_with_the_right_modes() {
        let a = Identity::generate("s1");
        let b = Identity::generate("s1");
        assert_ne!(a.client.public_key(), b.client.public_key());
        assert_ne!(a.client.public_key(), a.host.public_key());

        let t = tempfile::tempdir().unwrap();
        let key = t.path().join("vm-ssh-key");
        a.write_client_key(&key).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&pub_path(&key)), 0o644);
        let back = PrivateKey::from_openssh(std::fs::read(&key).unwrap()).unwrap();
        assert_eq!(back.public_key(), a.client.public_key());
        let text = std::fs::read_to_string(pub_path(&key)).unwrap();
        assert!(text.starts_with("ssh-ed25519 AAAA") && text.ends_with("dozlab-s1\n"));
    }

    #[test]
    fn known_hosts_lines_use_brackets_off_port_22() {
        let id = Identity::generate("s");
        let ip = Ipv4Addr::new(172, 16, 0, 2);
        let l = id.known_hosts_line(ip, 22).unwrap();
        assert!(l.starts_with("172.16.0.2 ssh-ed25519 AAAA"), "{l}");
        assert_eq!(l.split_whitespace().count(), 3);
        let parsed = PublicKey::from_openssh(l.split_once(' ').unwrap().1.trim()).unwrap();
        assert_eq!(parsed.key_data(), id.host.public_key().key_data());
        assert!(
            id.known_hosts_line(ip, 2222)
                .unwrap()
                .starts_with("[172.16.0.2]:2222 ssh-ed25519 ")
        );
    }
}
