//! Removing everything a session created, from its record alone.
//!
//! Used by the supervisor on Ctrl-C, `dozlab down` and after a failed phase,
//! and by `dozlab down` after the supervisor was killed. Every step is
//! idempotent and runs even when an earlier one failed; what could not be
//! removed is returned, so the caller can say so.

use crate::child;
use crate::hostnft;
use crate::link;
use crate::netns;
use crate::procs;
use crate::state::{Layout, ProcRecord, Session};
use std::time::Duration;

/// How long the VM gets to shut down cleanly after SIGTERM.
pub const VM_GRACE: Duration = Duration::from_secs(90);

/// Stops the session's components: front ends first, then the VM (clean
/// guest shutdown), then anything else.
pub fn stop_children(children: &[ProcRecord]) {
    let order = |c: &ProcRecord| match c.component.as_str() {
        "vscode" | "terminal" => 0,
        "vm" => 1,
        _ => 2,
    };
    let mut sorted: Vec<&ProcRecord> = children.iter().collect();
    sorted.sort_by_key(|c| order(c));
    for c in sorted {
        let grace = if c.component == "vm" {
            VM_GRACE
        } else {
            Duration::from_secs(10)
        };
        procs::stop(c, grace);
    }
}

/// Removes everything in the record; returns what could not be removed.
pub fn teardown(layout: &Layout, s: &Session) -> Vec<String> {
    let mut problems = Vec::new();
    stop_children(&s.children);
    if let Some(net) = &s.net {
        if netns::exists(&net.netns) {
            network_teardown(s, &net.netns, &net.tap);
            netns::kill_all_in(&net.netns);
        }
        if let Err(e) = delete_host_link(&net.host_if) {
            problems.push(format!("veth {}: {e:#}", net.host_if));
        }
        if let Err(e) = netns::delete(&net.netns) {
            problems.push(format!("{e:#}"));
        }
        if let Some(table) = &net.nft_table
            && let Err(e) = hostnft::remove(table)
        {
            problems.push(format!("{e:#}"));
        }
    }
    if s.enabled_ip_forward {
        restore_ip_forward(s.net.as_ref().map(|n| n.host_if.as_str()));
    }
    for dir in [s.data_dir.clone(), layout.run_dir(&s.name)] {
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("{}: {e}", dir.display()));
        }
    }
    problems
}

/// `dozlab network-setup --teardown` inside the namespace (best effort: the
/// namespace's removal takes the tap and its nftables table anyway).
fn network_teardown(s: &Session, ns: &str, tap: &str) {
    let log = s.logs_dir().join("network.log");
    let config = s.shared_dir().join("network-config");
    if !config.exists() {
        return;
    }
    let args = child::args([
        "network-setup".into(),
        "--teardown".into(),
        "--tap".into(),
        tap.to_string(),
        "--config-out".into(),
        config.display().to_string(),
    ]);
    let Ok(fd) = netns::open(ns) else { return };
    let Ok(mut cmd) = child::component(&args, &log, Some(fd)) else {
        return;
    };
    if let Ok(mut c) = cmd.spawn() {
        let rec = procs::record("network", c.id());
        if !procs::wait_gone(&rec, Duration::from_secs(20)) {
            procs::stop(&rec, Duration::from_secs(1));
        }
        let _ = c.wait();
    }
}

fn delete_host_link(name: &str) -> anyhow::Result<()> {
    if !link::host_link_exists(name) {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let h = link::connect(None).await?;
        link::delete(&h, name).await?;
        Ok::<_, link::LinkError>(())
    })?;
    Ok(())
}

/// Switches `ip_forward` back off when Dozlab turned it on and no other
/// session's veth is left on the host.
fn restore_ip_forward(own_if: Option<&str>) {
    let others = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .any(|n| n.starts_with("dzl") && n.ends_with('h') && Some(n.as_str()) != own_if);
    if !others && hostnft::forward_was_enabled_by_us() {
        let _ = hostnft::set_ip_forward(false);
        hostnft::forget_forward_origin();
    }
}

/// What of a session is still on the host (for `down` to report, and tests).
pub fn leftovers(layout: &Layout, s: &Session) -> Vec<String> {
    let mut left = Vec::new();
    for p in s.supervisor.iter().chain(&s.children) {
        if procs::alive(p) {
            left.push(format!("process {} ({})", p.pid, p.component));
        }
    }
    if let Some(net) = &s.net {
        if netns::exists(&net.netns) {
            left.push(format!("network namespace {}", net.netns));
        }
        if link::host_link_exists(&net.host_if) {
            left.push(format!("interface {}", net.host_if));
        }
        if let Some(t) = &net.nft_table
            && hostnft::exists(t)
        {
            left.push(format!("nftables table ip {t}"));
        }
    }
    for dir in [s.data_dir.clone(), layout.run_dir(&s.name)] {
        if dir.exists() {
            left.push(dir.display().to_string());
        }
    }
    left
}
