//! Connecting to an sshd whose host key must be one of the expected keys,
//! and logging in with a private key, all within one timeout.

use crate::error::SshError;
use crate::known_hosts::host_name;
use russh::client::{self, Handle};
use russh::keys::PublicKeyOrCertificate;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An authenticated SSH connection.
pub type Session = Handle<Verifier>;

/// One login: where, as whom, with which key, and which host keys to accept.
#[derive(Debug, Clone)]
pub struct Login {
    /// Server address (IP or name).
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// The client key.
    pub key: Arc<PrivateKey>,
    /// The host keys accepted; any other is refused.
    pub host_keys: Vec<PublicKey>,
    /// Connect + handshake + login timeout.
    pub timeout: Duration,
}

impl Login {
    /// Connects, checks the host key and logs in.
    pub async fn connect(&self) -> Result<Session, SshError> {
        let addr = format!("{}:{}", self.host, self.port);
        tokio::time::timeout(self.timeout, self.connect_inner(&addr))
            .await
            .map_err(|_| SshError::Timeout(addr.clone()))?
    }

    async fn connect_inner(&self, addr: &str) -> Result<Session, SshError> {
        let socket = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| SshError::Unreachable {
                addr: addr.to_string(),
                source,
            })?;
        let _ = socket.set_nodelay(true);
        let offered = Arc::new(Mutex::new(None));
        let verifier = Verifier {
            expected: self.host_keys.clone(),
            offered: offered.clone(),
        };
        let config = Arc::new(client::Config {
            nodelay: true,
            keepalive_interval: Some(Duration::from_secs(30)),
            preferred: russh::Preferred {
                key: Cow::Owned(self.host_key_algorithms()),
                ..Default::default()
            },
            ..Default::default()
        });
        let mut handle = match client::connect_stream(config, socket, verifier).await {
            Ok(h) => h,
            Err(e) => return Err(self.handshake_error(e, &offered)),
        };
        let hash = if self.key.algorithm().is_rsa() {
            handle
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten()
        } else {
            None
        };
        let key = PrivateKeyWithHashAlg::new(self.key.clone(), hash);
        let auth = handle
            .authenticate_publickey(&self.user, key)
            .await
            .map_err(SshError::Protocol)?;
        if !auth.success() {
            return Err(SshError::AuthRejected(self.user.clone()));
        }
        Ok(handle)
    }

    /// The expected keys' algorithms first, so a server with several host
    /// keys presents the one we know; then the usual ones, so a server
    /// without it still shows which key it has (and is refused for it).
    fn host_key_algorithms(&self) -> Vec<Algorithm> {
        let mut algs: Vec<Algorithm> = Vec::new();
        let known = self.host_keys.iter().map(|k| k.algorithm());
        for alg in known.chain(russh::Preferred::DEFAULT.key.iter().cloned()) {
            if !algs.contains(&alg) {
                algs.push(alg);
            }
        }
        algs
    }

    fn handshake_error(&self, e: russh::Error, offered: &Mutex<Option<String>>) -> SshError {
        match (e, offered.lock().expect("lock").clone()) {
            (russh::Error::UnknownKey, Some(fp)) => SshError::HostKeyMismatch {
                host: host_name(&self.host, self.port),
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

/// The client handler: accepts only the expected host keys, and remembers
/// the fingerprint of a refused one for the error message.
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
