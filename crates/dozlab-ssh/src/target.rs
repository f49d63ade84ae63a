//! A login described by files: the client key and the known_hosts file that
//! `vm run` writes once the VM has its identity. Both are read again on every
//! connection, so a missing file is the normal "VM starting" state rather
//! than a fatal error.

use crate::client::{Login, Session};
use crate::error::SshError;
use crate::{keys, known_hosts};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where and how to log into the VM, with the keys in files.
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
    /// Connect + handshake + login timeout.
    pub timeout: Duration,
}

impl SshTarget {
    /// The name the host has in known_hosts: `ip`, or `[ip]:port` when port != 22.
    pub fn known_hosts_name(&self) -> String {
        known_hosts::host_name(&self.host, self.port)
    }

    /// Reads the key files, then connects, checks the host key and logs in.
    pub async fn connect(&self) -> Result<Session, SshError> {
        self.login()?.connect().await
    }

    /// The [`Login`] the files describe now.
    pub fn login(&self) -> Result<Login, SshError> {
        Ok(Login {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            key: Arc::new(keys::load(&self.key_path)?),
            host_keys: known_hosts::load(&self.known_hosts_path, &self.known_hosts_name())?,
            timeout: self.timeout,
        })
    }
}
