//! The readiness probe (`GET /ready`): one SSH login to the VM at a time,
//! its result cached for a few seconds and shared by every probe meanwhile,
//! and answered with a short reason that names no file or address.
//!
//! `/ready` needs no login, so it must neither let anyone make the terminal
//! open SSH connections at will nor tell them where the keys are kept; the
//! whole error (paths included) goes to the debug log only.

use crate::ssh::{SshError, SshTarget};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long a probe's result is reused.
pub const TTL: Duration = Duration::from_secs(5);

/// The cached outcome of the last probe.
#[derive(Debug, Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, Result<(), &'static str>)>>,
}

impl Readiness {
    /// Ok when the VM accepts an SSH login with a verified host key, else
    /// why not. Concurrent callers wait for the one probe in flight.
    pub async fn check(&self, target: &SshTarget) -> Result<(), &'static str> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = *last
            && at.elapsed() < TTL
        {
            return result;
        }
        let result = probe(target).await;
        *last = Some((Instant::now(), result));
        result
    }
}

async fn probe(target: &SshTarget) -> Result<(), &'static str> {
    match target.connect().await {
        Ok(session) => {
            let bye = session.disconnect(russh::Disconnect::ByApplication, "probe", "en");
            let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
            Ok(())
        }
        Err(e) => {
            tracing::debug!("not ready: {}", crate::error_chain(&e));
            Err(reason(&e))
        }
    }
}

/// A reason for the probe's answer, without paths or addresses.
pub fn reason(e: &SshError) -> &'static str {
    match e {
        SshError::KeyMissing(_) | SshError::KnownHostsMissing(_) => {
            "the VM's SSH key files are not written yet (the VM is starting)"
        }
        SshError::NoHostKey { .. } => "the known_hosts file has no host key for the VM",
        SshError::BadFile { .. } => "an SSH key file cannot be read",
        SshError::Unreachable { .. } => "the VM's SSH port does not answer (yet)",
        SshError::HostKeyMismatch { .. } => {
            "host key mismatch: the VM's key is not the expected one"
        }
        SshError::AuthRejected(_) => "the VM refused the SSH key",
        SshError::Timeout(_) => "the SSH login to the VM timed out",
        SshError::Protocol(_) => "SSH protocol error",
    }
}
