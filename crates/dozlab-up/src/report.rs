//! Progress of `dozlab up`: phases with durations, a spinner while waiting,
//! the "ready" block, and the cause of a failure with its log tail.
//!
//! The supervisor emits [`Event`]s. In the foreground they go straight to a
//! [`Console`]; with `--detach` they travel as JSON lines over a pipe to the
//! launching process, which feeds the same `Console`, so both look alike.

use crate::state::Session;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::Duration;

/// One step of a session's start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// A phase began.
    Begin { phase: String, what: String },
    /// A phase ended well.
    Done {
        phase: String,
        ms: u64,
        detail: String,
    },
    /// The session is ready: everything to print.
    Ready { session: Box<Session> },
    /// The session failed and was cleaned up.
    Failed { code: u8, message: String },
}

/// Where events go.
pub trait Sink: Send {
    fn emit(&mut self, event: &Event);
}

/// Renders events for a person.
#[derive(Debug, Default)]
pub struct Console {
    bar: Option<ProgressBar>,
}

impl Console {
    fn stop_spinner(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Sink for Console {
    fn emit(&mut self, event: &Event) {
        match event {
            Event::Begin { phase, what } => {
                self.stop_spinner();
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(format!("{phase:<8} {what}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bar = Some(bar);
            }
            Event::Done { phase, ms, detail } => {
                self.stop_spinner();
                eprintln!("✓ {phase:<8} {:>6.1}s  {detail}", *ms as f64 / 1000.0);
            }
            Event::Ready { session } => {
                self.stop_spinner();
                print!("{}", ready_text(session));
                let _ = std::io::stdout().flush();
            }
            Event::Failed { .. } => self.stop_spinner(),
        }
    }
}

/// Writes events as JSON lines to the launcher's pipe.
#[derive(Debug)]
pub struct Pipe(pub std::fs::File);

impl Sink for Pipe {
    fn emit(&mut self, event: &Event) {
        let mut line = serde_json::to_string(event).expect("event serialises");
        line.push('\n');
        let _ = self.0.write_all(line.as_bytes());
    }
}

/// The block printed when a session is ready.
pub fn ready_text(s: &Session) -> String {
    let total: u64 = s.phases.iter().map(|p| p.ms).sum();
    let phases: Vec<String> = s
        .phases
        .iter()
        .map(|p| format!("{} {:.1}s", p.name, p.ms as f64 / 1000.0))
        .collect();
    let mut out = format!(
        "\nSession {} is ready in {:.1}s ({}).\n",
        s.name,
        total as f64 / 1000.0,
        phases.join(", ")
    );
    let password = std::fs::read_to_string(&s.password_file).unwrap_or_default();
    out += &format!("  Terminal:  {}\n", s.terminal_url());
    out += &format!("  Password:  {}\n", password.trim());
    if let Some(lab) = &s.lab {
        out += &format!(
            "  Lab:       {} ({} step{}), beside the terminal\n",
            lab.title,
            lab.steps,
            if lab.steps == 1 { "" } else { "s" }
        );
    }
    if let Some(cmd) = ssh_command(s) {
        out += &format!("  SSH:       {cmd}\n");
    }
    if let Some(p) = s.ports.docker {
        let starting = if s.docker_ready == Some(false) {
            "   (dockerd is still starting: `dozlab ls` shows when it is up)"
        } else {
            ""
        };
        out += &format!("  Docker:    export DOCKER_HOST=tcp://127.0.0.1:{p}{starting}\n");
    }
    if let Some(p) = s.ports.vscode {
        out += &format!("  VS Code:   http://127.0.0.1:{p}/ (same password)\n");
    }
    for f in &s.ports.forwards {
        if let Some((h, v)) = f.split_once(':') {
            out += &format!("  Forward:   127.0.0.1:{h} -> VM port {v}\n");
        }
    }
    for note in &s.notes {
        out += &format!("  Note:      {note}\n");
    }
    out += &format!(
        "  Logs:      dozlab logs {}\n  Stop:      dozlab down {}\n",
        s.name, s.name
    );
    out
}

/// `ssh ...` to reach the VM directly through the host port.
pub fn ssh_command(s: &Session) -> Option<String> {
    let port = s.ports.ssh?;
    let shared = s.shared_dir();
    Some(format!(
        "ssh -i {} -o UserKnownHostsFile={} -o IdentitiesOnly=yes -p {port} root@127.0.0.1",
        shared.join("vm-ssh-key").display(),
        shared.join("host_known_hosts").display()
    ))
}

/// Rewrites `known_hosts` lines written for the VM's own address so they
/// match `[127.0.0.1]:PORT`, the address ssh uses through the proxy.
pub fn known_hosts_for_port(text: &str, port: u16) -> String {
    dozlab_ssh::known_hosts::readdress(text, "127.0.0.1", port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_are_rewritten_for_the_loopback_port() {
        let text = "172.16.3.2 ssh-ed25519 AAAAC3Nza\n\n";
        assert_eq!(
            known_hosts_for_port(text, 2223),
            "[127.0.0.1]:2223 ssh-ed25519 AAAAC3Nza\n"
        );
    }

    #[test]
    fn ready_block_has_every_door() {
        let dir = tempfile::tempdir().unwrap();
        let layout = crate::state::Layout {
            run_root: dir.path().join("run"),
            data_root: dir.path().join("data"),
        };
        let mut s = Session::new(&layout, "lab", "profile vm".into());
        std::fs::create_dir_all(s.shared_dir()).unwrap();
        std::fs::write(&s.password_file, "pw123\n").unwrap();
        s.ports.terminal = 8082;
        s.ports.ssh = Some(2222);
        s.ports.docker = Some(2375);
        s.docker_ready = Some(false);
        s.ports.forwards = vec!["8000:80".into()];
        s.notes.push("VS Code not started".into());
        let t = ready_text(&s);
        for want in [
            "Terminal:  http://127.0.0.1:8082/",
            "Password:  pw123",
            "-p 2222 root@127.0.0.1",
            "UserKnownHostsFile=",
            "DOCKER_HOST=tcp://127.0.0.1:2375",
            "dockerd is still starting",
            "127.0.0.1:8000 -> VM port 80",
            "VS Code not started",
            "dozlab down lab",
        ] {
            assert!(t.contains(want), "{want:?} in:\n{t}");
        }
    }

    #[test]
    fn events_round_trip_as_json_lines() {
        let e = Event::Done {
            phase: "boot".into(),
            ms: 1500,
            detail: "qemu/tcg".into(),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains(r#""event":"done""#), "{text}");
        assert!(matches!(
            serde_json::from_str::<Event>(&text).unwrap(),
            Event::Done { ms: 1500, .. }
        ));
    }
}
