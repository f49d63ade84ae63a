//! One running VMM process, whichever backend: spawning it (own process
//! group, dies with the supervisor), pumping its console, asking the guest
//! to shut down, and killing it.

use crate::config::{Attempt, Vmm};
use crate::console::{self, Sink, Tail};
use crate::firecracker::{self, FcPlan};
use crate::qemu::{self, QemuPlan};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Why a VMM could not be started or controlled.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("cannot start {prog}")]
    Spawn {
        prog: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Firecracker(#[from] firecracker::FcError),
    #[error(transparent)]
    Qmp(#[from] qemu::QmpError),
    #[error("cannot open the console log {path}")]
    ConsoleLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How the supervisor talks to a running VMM.
#[derive(Debug, Clone)]
pub enum Control {
    /// QEMU's QMP socket.
    Qmp(PathBuf),
    /// Firecracker's API socket.
    Api(PathBuf),
}

/// What to run for one attempt.
#[derive(Debug, Clone)]
pub enum Launch {
    Qemu(QemuPlan),
    Firecracker(FcPlan),
}

/// A started VMM.
#[derive(Debug)]
pub struct Running {
    pub attempt: Attempt,
    pub child: Child,
    pub pid: Option<u32>,
    pub control: Control,
    /// True once the guest kernel printed its banner.
    pub kernel_started: watch::Receiver<bool>,
    /// The console pumps (stdout, stderr); they end at EOF.
    pumps: Vec<tokio::task::JoinHandle<()>>,
}

impl Launch {
    /// Program, arguments and control channel.
    fn command(&self) -> (PathBuf, Vec<OsString>, Control) {
        match self {
            Launch::Qemu(q) => (q.bin.clone(), q.args(), Control::Qmp(q.qmp_socket.clone())),
            Launch::Firecracker(f) => {
                let (prog, args) = f.command();
                (prog, args, Control::Api(f.host_socket()))
            }
        }
    }
}

/// Starts the VMM; for Firecracker also configures and boots the instance.
pub async fn start(
    attempt: Attempt,
    launch: &Launch,
    console_log: Option<&Path>,
    tail: &Tail,
) -> Result<Running, VmmError> {
    let (prog, args, control) = launch.command();
    let socket = match &control {
        Control::Qmp(p) | Control::Api(p) => p.clone(),
    };
    let _ = std::fs::remove_file(&socket);
    if let Launch::Firecracker(f) = launch {
        f.prepare_jail()?;
    }
    let mut child = spawn(&prog, &args)?;
    let (tx, kernel_started) = watch::channel(false);
    let log = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|source| VmmError::ConsoleLog {
                path: p.to_path_buf(),
                source,
            })
    };
    let log = console_log.map(log).transpose()?;
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        let sink = Sink {
            prefix: "[vm] ".into(),
            log,
            tail: tail.clone(),
            kernel_started: Some(tx),
        };
        pumps.push(tokio::spawn(console::pump(out, sink)));
    }
    if let Some(err) = child.stderr.take() {
        let name = attempt.vmm.as_str();
        let sink = Sink {
            prefix: format!("[{name}] "),
            log: None,
            tail: tail.clone(),
            kernel_started: None,
        };
        pumps.push(tokio::spawn(console::pump(err, sink)));
    }
    let pid = child.id();
    let mut running = Running {
        attempt,
        child,
        pid,
        control,
        kernel_started,
        pumps,
    };
    if let Launch::Firecracker(f) = launch {
        let boot = async {
            firecracker::wait_socket(&socket, Duration::from_secs(5)).await?;
            firecracker::configure_and_start(&socket, f).await
        };
        if let Err(e) = boot.await {
            running.kill().await;
            return Err(e.into());
        }
    }
    Ok(running)
}

fn spawn(prog: &Path, args: &[OsString]) -> Result<Child, VmmError> {
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl(2), which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn().map_err(|source| VmmError::Spawn {
        prog: prog.to_path_buf(),
        source,
    })
}

impl Running {
    /// Asks the guest to shut down: ACPI power button (QEMU) or
    /// Ctrl-Alt-Del (Firecracker).
    pub async fn request_shutdown(&self) -> Result<(), VmmError> {
        match &self.control {
            Control::Qmp(sock) => Ok(qemu::qmp_execute(sock, "system_powerdown").await?),
            Control::Api(sock) => Ok(firecracker::ctrl_alt_del(sock).await?),
        }
    }

    /// Waits for the VMM to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// After the VMM exited: lets the console pumps read what is left in
    /// the pipes (bounded, in case a grandchild still holds them open).
    pub async fn drain(&mut self) {
        for p in self.pumps.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
        }
    }

    /// Kills the VMM (SIGKILL) and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Name for messages, e.g. `qemu (TCG)`.
    pub fn label(&self) -> String {
        label(self.attempt)
    }
}

/// `qemu (TCG)`, `firecracker (KVM)`.
pub fn label(a: Attempt) -> String {
    let vmm = match a.vmm {
        Vmm::Qemu => "qemu",
        Vmm::Firecracker => "firecracker",
    };
    format!("{vmm} ({})", a.accel.as_str().to_ascii_uppercase())
}
