//! Setting a lab up in a session's VM before the learner starts: its assets
//! copied in over SFTP with their modes, then its intro's `background` run
//! to its end. `dozlab up --lab` does this once the VM is ready; anything
//! that serves a lab to a learner can call [`install`] the same way.

use crate::assets::{AssetError, AssetFile};
use crate::model::Lab;
use crate::remote::{Outcome, RemoteError, Vm};

/// Why a lab could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// An asset rule matches nothing or cannot be read.
    #[error("the lab's assets ({rule})")]
    Assets {
        /// The rule's `file`.
        rule: String,
        /// The cause.
        #[source]
        source: AssetError,
    },
    /// A script of the lab cannot be read.
    #[error("cannot read the lab's {0}")]
    Read(String, #[source] std::io::Error),
    /// The VM could not be used (SSH, SFTP).
    #[error("cannot set the lab up in the VM")]
    Remote(#[from] RemoteError),
    /// The intro's background did not finish in time.
    #[error(
        "the lab's intro background {script} did not finish within {seconds} s (dozlab.backgroundTimeout)"
    )]
    TimedOut {
        /// The script.
        script: String,
        /// The limit.
        seconds: u64,
        /// What it printed.
        outcome: Outcome,
    },
    /// The intro's background failed.
    #[error("the lab's intro background {script} failed (exit {status}); its last lines:\n{last}")]
    Failed {
        /// The script.
        script: String,
        /// Its exit status.
        status: u32,
        /// Its last output lines.
        last: String,
        /// What it printed.
        outcome: Outcome,
    },
}

impl InstallError {
    /// The background's run, when it ran.
    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            Self::TimedOut { outcome, .. } | Self::Failed { outcome, .. } => Some(outcome),
            _ => None,
        }
    }
}

/// What [`install`] did.
#[derive(Debug)]
pub struct Installed {
    /// Files copied in.
    pub files: Vec<AssetFile>,
    /// The intro's background (its path) and its run, when it has one.
    pub background: Option<(String, Outcome)>,
}

/// Every file the lab's asset rules copy, in rule order.
pub fn asset_files(lab: &Lab) -> Result<Vec<AssetFile>, InstallError> {
    let mut files = Vec::new();
    for rule in &lab.assets {
        files.extend(
            rule.expand(&lab.dir)
                .map_err(|source| InstallError::Assets {
                    rule: rule.file.clone(),
                    source,
                })?,
        );
    }
    Ok(files)
}

/// Copies the assets into the VM, then runs the intro's background to its
/// end (with the lab's `backgroundTimeout`); a background that fails or
/// times out is an error carrying its output.
pub async fn install(vm: &Vm, lab: &Lab) -> Result<Installed, InstallError> {
    let files = asset_files(lab)?;
    vm.upload(&files).await?;
    let Some(rel) = lab.intro.as_ref().and_then(|p| p.background.clone()) else {
        return Ok(Installed {
            files,
            background: None,
        });
    };
    let text = lab
        .read(&rel)
        .map_err(|e| InstallError::Read(rel.clone(), e))?;
    let limit = lab.timeouts.background;
    let outcome = vm.run_script(&text, limit).await?;
    if outcome.timed_out {
        return Err(InstallError::TimedOut {
            script: rel,
            seconds: limit.as_secs(),
            outcome,
        });
    }
    if !outcome.success() {
        return Err(InstallError::Failed {
            script: rel,
            status: outcome.status.unwrap_or(0),
            last: outcome.last_lines(15),
            outcome,
        });
    }
    Ok(Installed {
        files,
        background: Some((rel, outcome)),
    })
}
