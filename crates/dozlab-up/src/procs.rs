//! Processes by pid and start time: is it still ours, signal it, wait for it.
//!
//! A pid alone can be recycled after a crash, so every recorded process also
//! carries its start time (`/proc/PID/stat` field 22); a process whose start
//! time differs is not ours and is never signalled.

use crate::state::ProcRecord;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// Start time (clock ticks since boot) and state letter of `pid`.
fn stat(pid: u32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // rest starts at field 3 (state); field 22 is index 19.
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// Start time of a live process, for a [`ProcRecord`].
pub fn start_ticks(pid: u32) -> Option<u64> {
    stat(pid).map(|(s, _)| s)
}

/// A record for `pid` now.
pub fn record(component: &str, pid: u32) -> ProcRecord {
    ProcRecord {
        component: component.into(),
        pid,
        start_ticks: start_ticks(pid).unwrap_or(0),
    }
}

/// Whether the recorded process still runs (not a zombie, same start time).
pub fn alive(p: &ProcRecord) -> bool {
    reap(p.pid);
    matches!(stat(p.pid), Some((start, state)) if start == p.start_ticks && state != 'Z' && state != 'X')
}

/// Collects the exit status of `pid` if it is our child and has exited.
fn reap(pid: u32) {
    let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
}

/// Sends `sig` to the recorded process if it is still ours.
pub fn signal(p: &ProcRecord, sig: Signal) {
    if alive(p) {
        let _ = kill(Pid::from_raw(p.pid as i32), sig);
    }
}

/// Waits up to `timeout` for the process to end; true when it did.
pub fn wait_gone(p: &ProcRecord, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !alive(p) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL. (Grandchildren such as the
/// VMM run in the session's namespace and are swept with it, see
/// [`crate::netns::kill_all_in`].)
pub fn stop(p: &ProcRecord, grace: Duration) {
    if !alive(p) {
        return;
    }
    signal(p, Signal::SIGTERM);
    if !wait_gone(p, grace) {
        tracing::warn!(
            "{} (pid {}) did not stop within {grace:?}; killing it",
            p.component,
            p.pid
        );
        signal(p, Signal::SIGKILL);
        wait_gone(p, Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_changed_start_time_is_not() {
        let me = record("test", std::process::id());
        assert!(alive(&me));
        let other = ProcRecord {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!alive(&other));
    }

    #[test]
    fn stop_ends_a_child_and_reaps_it() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let rec = record("sleep", child.id());
        assert!(alive(&rec));
        stop(&rec, Duration::from_secs(5));
        assert!(!alive(&rec));
        let _ = child.try_wait();
    }
}
