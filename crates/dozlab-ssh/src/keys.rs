//! Private keys: made fresh (ed25519) or loaded from an OpenSSH key file,
//! where a missing file means the VM runner has not written it yet.

use crate::error::SshError;
use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use std::path::Path;

/// A fresh random ed25519 key with `comment`.
pub fn ed25519(comment: &str) -> PrivateKey {
    let seed: [u8; 32] = rand::random();
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    key
}

/// The unencrypted OpenSSH private key at `path`; a missing file is
/// [`SshError::KeyMissing`] (the VM is starting).
pub fn load(path: &Path) -> Result<PrivateKey, SshError> {
    if !path.exists() {
        return Err(SshError::KeyMissing(path.to_path_buf()));
    }
    russh::keys::load_secret_key(path, None).map_err(|e| SshError::BadFile {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::LineEnding;

    #[test]
    fn keys_are_fresh_and_load_back() {
        let a = ed25519("a");
        assert_ne!(a.public_key(), ed25519("a").public_key());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let e = load(&path).unwrap_err();
        assert!(
            matches!(e, SshError::KeyMissing(_)) && e.is_starting(),
            "{e}"
        );
        std::fs::write(&path, a.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
        assert_eq!(load(&path).unwrap().public_key(), a.public_key());
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(load(&path), Err(SshError::BadFile { .. })));
    }
}
