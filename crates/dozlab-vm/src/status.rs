//! `dozlab vm status`: reads `status.json` and exits 0 only when the VM is
//! ready and its supervisor is alive, so it fits an exec probe.

use dozlab_core::failure::{CmdResult, Failure};
use dozlab_core::vmstatus::{Phase, VmStatus};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

/// Whether a process with this pid exists (signal 0).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// The status as a probe should see it: a live phase whose supervisor is
/// gone is reported as failed.
pub fn effective(mut s: VmStatus) -> VmStatus {
    let live = matches!(s.phase, Phase::Booting | Phase::Ready | Phase::Stopping);
    if live && !pid_alive(s.pid) {
        s.message = Some(format!(
            "the supervisor (pid {}) is gone; status.json is stale (last phase: {})",
            s.pid, s.phase
        ));
        s.phase = Phase::Failed;
    }
    s
}

/// Human-readable status.
pub fn render(s: &VmStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "phase:       {}", s.phase);
    let _ = writeln!(out, "vmm:         {}", s.vmm);
    let _ = writeln!(out, "accelerator: {}", s.accel);
    let _ = writeln!(out, "vm ip:       {}", s.vm_ip);
    let boot = s
        .boot_ms
        .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "boot time:   {boot}");
    let vmm_pid = s
        .vmm_pid
        .map(|p| p.to_string())
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "pids:        supervisor {}, vmm {vmm_pid}", s.pid);
    if let Some(m) = &s.message {
        let _ = writeln!(out, "message:     {m}");
    }
    out
}

/// Entry point of `dozlab vm status`: the status in `state_dir`, as JSON
/// when `json`.
pub fn main(state_dir: &Path, json: bool) -> CmdResult {
    let s = VmStatus::load(state_dir).map_err(|e| {
        Failure::new(
            1,
            anyhow::anyhow!(
                "no VM status in {} ({e}); is `dozlab vm run --state-dir {}` running?",
                state_dir.display(),
                state_dir.display()
            ),
        )
    })?;
    let s = effective(s);
    if json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
    } else {
        print!("{}", render(&s));
    }
    Ok(if s.phase == Phase::Ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: Phase, pid: u32) -> VmStatus {
        VmStatus {
            phase,
            vmm: "qemu".into(),
            accel: "tcg".into(),
            pid,
            vmm_pid: Some(7),
            started_at: 0,
            boot_ms: Some(14_250),
            vm_ip: "172.16.0.2".into(),
            message: None,
        }
    }

    #[test]
    fn a_ready_vm_of_a_dead_supervisor_is_failed() {
        let me = std::process::id();
        assert_eq!(effective(status(Phase::Ready, me)).phase, Phase::Ready);
        let dead = effective(status(Phase::Ready, u32::MAX - 1));
        assert_eq!(dead.phase, Phase::Failed);
        assert!(dead.message.unwrap().contains("stale"));
        assert_eq!(
            effective(status(Phase::Stopped, u32::MAX - 1)).phase,
            Phase::Stopped
        );
    }

    #[test]
    fn renders_phase_accel_and_boot_time() {
        let text = render(&status(Phase::Ready, 1));
        assert!(text.contains("phase:       ready"));
        assert!(text.contains("accelerator: tcg"));
        assert!(text.contains("boot time:   14.2 s"), "{text}");
    }
}
