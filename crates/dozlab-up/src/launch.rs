//! `dozlab up --detach`: re-executes itself as the session's supervisor,
//! with output in `logs/supervisor.log`, and follows its progress over a
//! pipe until the session is ready or has failed.
//!
//! Until ready, the supervisor stays in the launcher's process group, so
//! Ctrl-C during the start reaches it and it removes the half-made session
//! (the launcher ignores SIGINT and reports the outcome). Once ready, the
//! supervisor leaves the terminal's session (`setsid`) and runs on its own.

use crate::child;
use crate::report::{Console, Event, Pipe, Sink};
use crate::state::{Layout, Session};
use crate::teardown;
use dozlab_core::failure::{CmdResult, Failure};
use std::io::BufRead;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};

/// Environment variable naming the supervisor's report pipe.
pub const REPORT_FD_ENV: &str = "DOZLAB_UP_REPORT_FD";

/// The report pipe handed down by a launcher, if any (made close-on-exec so
/// the components never hold it open).
pub fn report_pipe() -> Option<Box<dyn Sink>> {
    let fd: i32 = std::env::var(REPORT_FD_ENV).ok()?.parse().ok()?;
    // SAFETY: fcntl on a descriptor number only inspects/sets its flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return None;
    }
    // SAFETY: the launcher passed this descriptor for us alone; fcntl just
    // proved it is open, and nothing else in this process owns it.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    Some(Box::new(Pipe(file)))
}

/// Starts the detached supervisor for the claimed session `name` and
/// renders its progress; returns when it is ready or failed.
pub fn detached(layout: &Layout, name: &str, add_name: bool) -> CmdResult {
    let log = layout.data_dir(name).join("logs").join("supervisor.log");
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Failure::from(anyhow::Error::from(e).context("cannot create a pipe")))?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.push("--supervise-internal".into());
    if add_name {
        args.extend(["--name".into(), name.into()]);
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let mut cmd = std::process::Command::new(child::self_exe());
    let wfd = write.as_raw_fd();
    cmd.args(&args)
        .env(REPORT_FD_ENV, wfd.to_string())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let hook = move || {
        // SAFETY: fcntl is an async-signal-safe syscall; `wfd` is the
        // pipe's write end, kept open by the parent until spawn.
        if unsafe { libc::fcntl(wfd, libc::F_SETFD, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(hook);
    }
    let spawned = cmd.spawn();
    drop(write);
    // Ctrl-C now goes to the supervisor too: it cleans up and we report.
    // SAFETY: installing SIG_IGN has no handler code to be unsafe about.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
    let mut supervisor = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(layout.run_dir(name));
            let _ = std::fs::remove_dir_all(layout.data_dir(name));
            return Err(anyhow::Error::from(e)
                .context("cannot start the session supervisor")
                .into());
        }
    };
    let result = follow(read);
    // Reap it if it already ended (it keeps running once ready).
    let _ = supervisor.try_wait();
    match result {
        Some(Ok(())) => Ok(ExitCode::SUCCESS),
        Some(Err((code, message))) => {
            // It is cleaning up; return once nothing is left.
            let _ = supervisor.wait();
            Err(Failure::new(code, anyhow::anyhow!(message)))
        }
        None => {
            let status = supervisor.wait();
            if status.is_ok_and(|s| s.success()) {
                return Err(Failure::new(
                    130,
                    anyhow::anyhow!(
                        "interrupted before the session was ready; it was stopped and removed"
                    ),
                ));
            }
            let tail = child::tail(&log, 20);
            // It died without a word: clean up from whatever it recorded.
            if let Ok(s) = Session::load(layout, name) {
                teardown::teardown(layout, &s);
            }
            let _ = std::fs::remove_dir_all(layout.run_dir(name));
            let _ = std::fs::remove_dir_all(layout.data_dir(name));
            Err(Failure::from(anyhow::anyhow!(
                "the session supervisor exited unexpectedly:\n{tail}"
            )))
        }
    }
}

/// Reads events until Ready (Ok) or Failed (Err); None on EOF.
fn follow(read: OwnedFd) -> Option<Result<(), (u8, String)>> {
    let mut console = Console::default();
    let reader = std::io::BufReader::new(std::fs::File::from(read));
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let Ok(event) = serde_json::from_str::<Event>(&line) else {
            continue;
        };
        console.emit(&event);
        match event {
            Event::Ready { .. } => return Some(Ok(())),
            Event::Failed { code, message } => return Some(Err((code, message))),
            _ => {}
        }
    }
    None
}
