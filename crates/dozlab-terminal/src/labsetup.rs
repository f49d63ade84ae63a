//! The lab's start-of-page scripts, run from the terminal: with
//! `--lab-prepare` (a pod, where nothing else sets the lab up) the assets and
//! the intro's `background` once the VM answers, and for every other page the
//! first time it starts, its `background` script.
//!
//! What ran is kept in the progress file ([`crate::lab::Progress`]), so a
//! restarted terminal does not run it again. The state of the set-up is in
//! `GET /api/lab` (`progress.setup`); a page's background runs beside the
//! learner (the page shows at once) and its failure is logged and counted
//! (`dozlab_lab_backgrounds_total`), as on hosted platforms, where the
//! learner never sees background scripts.

use crate::lab::LabPanel;
use dozlab_lab::PageId;
use dozlab_lab::install::install;
use dozlab_lab::remote::{RemoteError, Vm};
use dozlab_ssh::SshTarget;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// How long the set-up waits for the VM's sshd before it gives up.
pub const VM_WAIT: Duration = Duration::from_secs(600);
/// Pause between connection attempts while the VM starts.
const RETRY: Duration = Duration::from_secs(1);

/// Where the lab's set-up in the VM stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "message", rename_all = "lowercase")]
pub enum Setup {
    /// Nothing to do here (no `--lab-prepare`, or done by an earlier run).
    #[default]
    None,
    /// Waiting for the VM's sshd.
    Waiting,
    /// Copying the assets, running the intro's background.
    Running,
    /// Done.
    Done,
    /// Failed: why (the learner sees it above the page).
    Failed(String),
}

/// Starts the set-up: with `prepare` and when no earlier run finished it,
/// the assets and the intro's background; then the first page's
/// background (when the first page is not the intro).
pub fn spawn_start(panel: Arc<LabPanel>, target: SshTarget, prepare: bool) {
    tokio::spawn(async move {
        if prepare && !panel.progress().prepared {
            prepare_vm(&panel, &target).await;
        }
        start_background(panel, target, 0);
    });
}

async fn prepare_vm(panel: &LabPanel, target: &SshTarget) {
    panel.set_setup(Setup::Waiting);
    let vm = match wait_for_vm(target).await {
        Ok(vm) => vm,
        Err(message) => {
            tracing::error!("lab set-up: {message}");
            panel.set_setup(Setup::Failed(message));
            return;
        }
    };
    panel.set_setup(Setup::Running);
    match install(&vm, panel.lab()).await {
        Ok(done) => {
            tracing::info!(assets = done.files.len(), "lab set up in the VM");
            panel.update(|p| {
                p.prepared = true;
                if panel.lab().intro.is_some() {
                    p.backgrounds.insert(0);
                }
            });
            panel.set_setup(Setup::Done);
        }
        Err(e) => {
            let message = format!("the lab could not be set up: {}", crate::error_chain(&e));
            tracing::error!("{message}");
            panel.set_setup(Setup::Failed(message));
        }
    }
}

/// Connects to the VM, retrying while it starts (up to [`VM_WAIT`]); an
/// error that waiting cannot mend (host key, login) ends it at once.
async fn wait_for_vm(target: &SshTarget) -> Result<Vm, String> {
    let deadline = tokio::time::Instant::now() + VM_WAIT;
    loop {
        match Vm::connect(target).await {
            Ok(vm) => return Ok(vm),
            // A wrong host key or a refused login will not mend by waiting.
            Err(RemoteError::Connect(e)) if !e.is_starting() => {
                return Err(format!(
                    "cannot log into the VM: {}",
                    crate::error_chain(&e)
                ));
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!(
                    "the VM did not answer SSH within {} s: {}",
                    VM_WAIT.as_secs(),
                    crate::error_chain(&e)
                ));
            }
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

/// Runs page `index`'s background, once per lab progress: not for the intro
/// (the set-up's job: `--lab-prepare` or `dozlab up --lab`).
pub fn start_background(panel: Arc<LabPanel>, target: SshTarget, index: usize) {
    let Some(view) = panel.view().pages.get(index) else {
        return;
    };
    if view.id == PageId::Intro || panel.progress().backgrounds.contains(&index) {
        return;
    }
    let Some(rel) = panel.lab().page(view.id).and_then(|p| p.background.clone()) else {
        return;
    };
    panel.update(|p| {
        p.backgrounds.insert(index);
    });
    tokio::spawn(async move {
        let result = run_background(&panel, &target, &rel).await;
        match &result {
            Ok(()) => tracing::info!(page = index, script = %rel, "lab background done"),
            Err(e) => tracing::warn!(page = index, script = %rel, "lab background: {e}"),
        }
        panel.count_background(index, result.is_ok());
    });
}

async fn run_background(panel: &LabPanel, target: &SshTarget, rel: &str) -> Result<(), String> {
    let text = panel
        .lab()
        .read(rel)
        .map_err(|e| format!("cannot read {rel}: {e}"))?;
    let vm = wait_for_vm(target).await?;
    let limit = panel.lab().timeouts.background;
    let o = vm
        .run_script(&text, limit)
        .await
        .map_err(|e| crate::error_chain(&e))?;
    if o.timed_out {
        return Err(format!("did not finish within {} s", limit.as_secs()));
    }
    if !o.success() {
        return Err(format!(
            "failed (exit {}): {}",
            o.status.unwrap_or(0),
            o.last_lines(10)
        ));
    }
    Ok(())
}
