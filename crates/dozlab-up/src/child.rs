//! Components as child processes: the same `dozlab` binary with another
//! subcommand, like the containers of the pod.
//!
//! Each child gets its own process group (so Ctrl-C reaches only the
//! supervisor, which then stops the children in order), stdout and stderr in
//! a per-component log file, and, for the pod's components, the session's
//! network namespace, entered between fork and exec. Every setting is a
//! flag: a child's environment is cleared and holds only [`PASSED_ENV`], so
//! the original pod's variables (`VM_IP`, `TAP_DEVICE_NAME`, `MEMORY`, ...)
//! exported in the caller's shell never reach a component.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A child that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot open log file {path}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start `dozlab {sub}`")]
    Spawn {
        sub: String,
        #[source]
        source: std::io::Error,
    },
}

/// The only variables a child inherits from `dozlab up`: where programs are
/// and how to log. Everything else a component needs is a flag.
pub const PASSED_ENV: &[&str] = &["PATH", "DOZLAB_LOG", "RUST_LOG", "RUST_BACKTRACE"];

/// `PATH` when the caller has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Clears `cmd`'s environment, then passes [`PASSED_ENV`] and `extra` (names
/// of further variables to pass from ours, e.g. `HOME` for code-server).
pub fn explicit_env(cmd: &mut Command, extra: &[&str]) {
    cmd.env_clear();
    for name in PASSED_ENV.iter().chain(extra) {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", DEFAULT_PATH);
    }
}

/// The running `dozlab` binary. `/proc/self/exe` rather than its path: it
/// still works when the file was replaced (a rebuild) while the session
/// runs, and every child runs exactly the supervisor's build.
pub fn self_exe() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}

/// Makes `cmd` enter the namespace behind `netns` right before exec, like
/// `ip netns exec`: it also gets a private mount namespace with a fresh
/// `/sys`, so `/sys/class/net` lists the pod's interfaces, not the host's.
pub fn enter_netns_on_exec(cmd: &mut Command, netns: OwnedFd) {
    let root = c"/";
    let sys = c"/sys";
    let sysfs = c"sysfs";
    let hook = move || {
        let check = |rc: i32| {
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        // SAFETY: plain syscalls (setns, unshare, mount, umount2), all
        // async-signal-safe; every pointer is a static C string literal and
        // `netns` is an open namespace fd owned by this closure.
        unsafe {
            check(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS))?;
            let flags = libc::MS_SLAVE | libc::MS_REC;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ))?;
            libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
            check(libc::mount(
                sysfs.as_ptr(),
                sys.as_ptr(),
                sysfs.as_ptr(),
                0,
                std::ptr::null(),
            ))?;
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe syscalls between fork
    // and exec; it allocates nothing.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Builds `dozlab ARGS...` with output appended to `log`, in its own process
/// group, with an explicit environment, inside `netns` when given.
pub fn component(
    args: &[OsString],
    log: &Path,
    netns: Option<OwnedFd>,
) -> Result<Command, ChildError> {
    let mut cmd = Command::new(self_exe());
    cmd.args(args);
    prepare(&mut cmd, log, netns)?;
    Ok(cmd)
}

/// Gives `cmd` its log, process group, explicit environment and namespace.
fn prepare(cmd: &mut Command, log: &Path, netns: Option<OwnedFd>) -> Result<(), ChildError> {
    let open_log = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| ChildError::Log {
                path: log.display().to_string(),
                source,
            })
    };
    let out = open_log()?;
    let err = open_log()?;
    explicit_env(cmd, &[]);
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    if let Some(fd) = netns {
        enter_netns_on_exec(cmd, fd);
    }
    Ok(())
}

/// Starts `cmd` as a tokio child (the caller awaits or polls it).
pub fn spawn(cmd: Command, sub: &str) -> Result<tokio::process::Child, ChildError> {
    tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|source| ChildError::Spawn {
            sub: sub.into(),
            source,
        })
}

/// The last `n` lines of a log file (empty when missing).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `OsString` arguments from anything string-like.
pub fn args<I, S>(items: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    items.into_iter().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&p, 2), "b\nc");
        assert_eq!(tail(&p, 10), "a\nb\nc");
        assert_eq!(tail(&dir.path().join("none"), 3), "");
    }

    #[test]
    fn a_child_sees_only_the_passed_variables() {
        // `cargo test` runs tests with CARGO_*, HOME, ... in the environment:
        // none of it may reach a component.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("env.log");
        let mut cmd = Command::new("env");
        prepare(&mut cmd, &log, None).unwrap();
        assert!(cmd.status().unwrap().success());
        let seen = std::fs::read_to_string(&log).unwrap();
        let names: Vec<&str> = seen.lines().filter_map(|l| l.split('=').next()).collect();
        assert!(names.contains(&"PATH"), "{seen}");
        for n in &names {
            assert!(PASSED_ENV.contains(n), "{n} reached the child:\n{seen}");
        }
    }
}
