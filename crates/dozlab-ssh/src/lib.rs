//! The SSH client to a session VM's sshd: connect with the host key verified
//! against the expected keys (in memory or from a known_hosts file), log in
//! with a private key, and the `ip` / `[ip]:port` known_hosts format.
//!
//! One owner for what `vm run` (readiness, `poweroff`), `terminal` (shells,
//! SFTP) and `up` (the host's known_hosts file) each need: a host key that
//! is not the expected one is always refused, never learned.

mod client;
mod error;
pub mod keys;
pub mod known_hosts;
mod target;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{Login, Session, Verifier};
pub use error::SshError;
pub use target::SshTarget;
