//! `dozlab lab test`: the headless CI for a lab. Copies the assets in,
//! runs the intro, then every step (verify must fail, do the step, verify
//! must pass), and reports a table; any failure makes it fail.

use crate::model::Lab;
use crate::remote::{RemoteError, Vm};
use crate::runner::{self, RunError, StepReport};
use std::time::Instant;

/// The outcome of a whole run.
#[derive(Debug, serde::Serialize)]
pub struct TestReport {
    /// One row per page run (intro when it has scripts, then each step).
    pub rows: Vec<StepReport>,
    /// Seconds for the whole run (assets included).
    pub seconds: f64,
}

impl TestReport {
    /// True when every row passed.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.failure.is_none())
    }
}

/// Runs `lab` in the VM `vm` is connected to.
pub async fn run(vm: &Vm, lab: &Lab) -> Result<TestReport, RunError> {
    let t0 = Instant::now();
    let mut rows = Vec::new();
    let mut files = Vec::new();
    for rule in &lab.assets {
        files.extend(rule.expand(&lab.dir).map_err(|e| {
            RunError::Read(
                format!("assets ({})", rule.file),
                std::io::Error::other(e.to_string()),
            )
        })?);
    }
    let t_assets = Instant::now();
    vm.upload(&files).await?;
    let mut shell = vm.shell().await?;
    if let Some(intro) = &lab.intro
        && (intro.background.is_some() || intro.foreground.is_some())
    {
        let failure = runner::start_page(vm, &mut shell, lab, intro).await?;
        rows.push(StepReport {
            step: format!("intro ({} assets)", files.len()),
            before: "-".into(),
            after: "-".into(),
            seconds: t_assets.elapsed().as_secs_f64(),
            failure,
        });
    }
    for page in &lab.steps {
        let r = runner::test_step(vm, &mut shell, lab, page).await?;
        let stop = r.failure.is_some();
        rows.push(r);
        if stop {
            break;
        }
    }
    Ok(TestReport {
        rows,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// True when the lab uses Docker (a script or page mentions `docker`), so
/// a booted session should wait for the VM's Docker.
pub fn uses_docker(lab: &Lab) -> bool {
    lab.pages().any(|p| {
        p.scripts()
            .iter()
            .map(|(_, r)| *r)
            .chain(p.text.as_deref())
            .any(|rel| lab.read(rel).is_ok_and(|t| t.contains("docker")))
    })
}

impl From<dozlab_ssh::SshError> for RunError {
    fn from(e: dozlab_ssh::SshError) -> Self {
        RunError::Remote(RemoteError::Connect(e))
    }
}
