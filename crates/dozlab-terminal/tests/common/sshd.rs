//! The terminal's tests' view of the shared real sshd
//! (`dozlab_ssh::testing::Sshd`, Debian's /usr/sbin/sshd on 127.0.0.1,
//! standing in for the VM): throwaway keys, and the client key and
//! `known_hosts` written as files the way `vm run` writes them for the
//! terminal.

#![allow(dead_code)]

use dozlab_ssh::keys::ed25519;
use dozlab_ssh::testing::{self, SSHD};
use russh::keys::ssh_key::LineEnding;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub struct Sshd {
    inner: testing::Sshd,
    pub port: u16,
    pub user: String,
}

impl Sshd {
    /// None, after a recorded skip (dozlab-testkit), when sshd is not installed.
    pub fn start() -> Option<Sshd> {
        dozlab_testkit::require_path!(Path::new(SSHD), "install openssh-server (scripts/setup)");
        let host = ed25519("dozlab-test-host");
        let client = ed25519("dozlab-test");
        let inner = testing::Sshd::start(&host, client.public_key());
        let port = inner.port;
        let key = client
            .to_openssh(LineEnding::LF)
            .expect("client key encodes");
        write_private(&inner.path("client_key"), key.as_bytes());
        let line = dozlab_ssh::known_hosts::line("127.0.0.1", port, host.public_key())
            .expect("host key encodes");
        std::fs::write(inner.path("known_hosts"), line).unwrap();
        Some(Sshd {
            inner,
            port,
            user: testing::Sshd::user(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.inner.path(name)
    }

    pub fn key(&self) -> PathBuf {
        self.path("client_key")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.path("known_hosts")
    }

    /// The SFTP start directory.
    pub fn home(&self) -> PathBuf {
        self.path("home")
    }
}

fn write_private(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create the client key file");
    f.write_all(data).expect("write the client key file");
}
