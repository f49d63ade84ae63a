//! SSH connections to the VM: the terminal's [`SshTarget`] from
//! [`dozlab_ssh`], which re-reads the key and known_hosts files `vm run`
//! writes on every connection, checks the host key and logs in.
//!
//! A missing file is the normal "VM starting" state rather than a fatal
//! error ([`SshError::is_starting`]); an unknown or different host key is
//! refused.

pub use dozlab_ssh::{Session, SshError, SshTarget, Verifier};
