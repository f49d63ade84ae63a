//! The build host: preflight checks (root, tools on PATH), running external
//! commands with their stdout sent to our stderr, and phase progress output.

use std::io::IsTerminal;
use std::process::{Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A host problem that stops a build before it starts, or a failed command.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "`{tool}` is not installed (not found on PATH): install the Debian package `{package}` \
         (apt-get install {package}, or run scripts/setup)"
    )]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error(
        "image build must run as root (mmdebstrap installs packages owned by root into the tree): \
         run it with sudo, or as root in a container"
    )]
    NotRoot,
    #[error("cannot start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted by a signal; the partial build was removed")]
    Interrupted,
    #[error("`{program}` failed with {status}; see its output above")]
    Failed { program: String, status: String },
}

/// Tools a build needs: (program, Debian package).
pub const BUILD_TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("mkfs.ext4", "e2fsprogs"),
    ("zstd", "zstd"),
    ("chroot", "coreutils"),
];

/// Fails unless every build tool is on PATH and we run as root.
pub fn preflight() -> Result<(), HostError> {
    for (tool, package) in BUILD_TOOLS {
        if find_on_path(tool).is_none() {
            return Err(HostError::MissingTool { tool, package });
        }
    }
    if !is_root() {
        return Err(HostError::NotRoot);
    }
    Ok(())
}

/// The full path of a program on PATH (where `Command` will look for it too).
pub use dozlab_core::exe::which as find_on_path;

/// True when the effective uid is 0 (read from /proc, no unsafe code).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Runs a command to completion; its stdout goes to our stderr so that our
/// own stdout stays machine-readable. On SIGINT/SIGTERM (see
/// [`catch_interrupts`]) the child gets SIGTERM, is waited for (mmdebstrap
/// then unmounts and cleans its chroot), and the run fails as interrupted.
pub fn run(cmd: &mut Command) -> Result<(), HostError> {
    interrupted()?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let stderr_copy = std::io::stderr()
        .as_fd_owned()
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::inherit());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(stderr_copy)
        .spawn()
        .map_err(|source| HostError::Spawn {
            program: program.clone(),
            source,
        })?;
    let mut signalled = false;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|source| HostError::Spawn {
            program: program.clone(),
            source,
        })? {
            break status;
        }
        if INTERRUPTED.load(Ordering::SeqCst) && !signalled {
            signalled = true;
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    interrupted()?;
    if status.success() {
        Ok(())
    } else {
        Err(HostError::Failed {
            program,
            status: status.to_string(),
        })
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CATCH: Once = Once::new();

/// From now on SIGINT and SIGTERM do not kill the process: they set a flag
/// that [`run`] and [`interrupted`] turn into [`HostError::Interrupted`], so a
/// build can stop its tools and remove its staging directory.
pub fn catch_interrupts() {
    CATCH.call_once(|| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                let _ = ready_tx.send(());
                return;
            };
            rt.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    let _ = ready_tx.send(());
                    return;
                };
                let _ = ready_tx.send(());
                loop {
                    tokio::select! {
                        _ = int.recv() => {},
                        _ = term.recv() => {},
                    }
                    eprintln!("interrupted: stopping and cleaning up ...");
                    INTERRUPTED.store(true, Ordering::SeqCst);
                }
            });
        });
        let _ = ready_rx.recv();
    });
}

/// Fails with [`HostError::Interrupted`] once a signal was caught.
pub fn interrupted() -> Result<(), HostError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(HostError::Interrupted)
    } else {
        Ok(())
    }
}

trait StderrFd {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl StderrFd for std::io::Stderr {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned()
    }
}

/// Prints numbered phases with their durations to stderr.
#[derive(Debug)]
pub struct Progress {
    total: usize,
    current: usize,
    started: Instant,
    phase_started: Instant,
    fancy: bool,
}

impl Progress {
    /// A progress printer for `total` phases.
    pub fn new(total: usize) -> Self {
        let now = Instant::now();
        Self {
            total,
            current: 0,
            started: now,
            phase_started: now,
            fancy: std::io::stderr().is_terminal(),
        }
    }

    /// Starts the next phase.
    pub fn phase(&mut self, name: &str) {
        self.current += 1;
        self.phase_started = Instant::now();
        let arrow = if self.fancy { "==>" } else { "--" };
        eprintln!("{arrow} [{}/{}] {name}", self.current, self.total);
    }

    /// Ends the current phase, printing its duration.
    pub fn done(&self, detail: &str) {
        eprintln!(
            "   done in {:.1}s{}{}",
            self.phase_started.elapsed().as_secs_f64(),
            if detail.is_empty() { "" } else { ": " },
            detail
        );
    }

    /// Seconds since the first phase started.
    pub fn total_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// Quotes a string for a POSIX shell (mmdebstrap hooks are shell snippets).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("definitely-not-a-tool-xyz").is_none());
    }

    #[test]
    fn failed_command_names_the_program() {
        let err = run(&mut Command::new("false")).unwrap_err();
        assert!(err.to_string().contains("`false` failed"));
        let err = run(&mut Command::new("no-such-program-xyz")).unwrap_err();
        assert!(matches!(err, HostError::Spawn { .. }));
    }
}
