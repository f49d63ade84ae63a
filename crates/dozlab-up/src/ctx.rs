//! What the phases of a session's start share: the validated request
//! ([`Config`]) and the start's context ([`Ctx`]: the session's record, the
//! progress sink, the current phase, and how a component is started).
//!
//! Every phase records what it creates in the session before creating it
//! ([`Ctx::store`]), so a failure or a kill at any point can be undone from
//! the record alone.

use crate::child;
use crate::image::ImageSpec;
use crate::procs;
use crate::report::{Event, Sink};
use crate::state::{Layout, PhaseRecord, Session};
use dozlab_core::failure::Failure;
use dozlab_core::netconfig::PortForward;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::process::Child;

/// Everything `dozlab up` was asked for, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub image: ImageSpec,
    pub image_label: String,
    /// `--sha256`: the expected digest of a URL image (keys the download cache).
    pub sha256: Option<String>,
    pub cpus: u32,
    pub memory_mib: u32,
    pub disk: Option<u64>,
    pub port: Option<u16>,
    pub vmm: String,
    pub accel: String,
    pub vscode: bool,
    pub forwards: Vec<PortForward>,
    pub ready_timeout: Duration,
    pub wait_docker: bool,
    pub internet: bool,
    /// Running as the detached supervisor: leave the terminal's session once ready.
    pub detached: bool,
    pub cache: PathBuf,
    /// `--snapshot auto|off|refresh` (cache: `CACHE/snapshots`).
    pub snapshot: String,
    /// `--lab`: the lab fetched into the session's data directory.
    pub lab: Option<crate::lab::LabConfig>,
}

/// The context a session's start threads through its phases.
pub(crate) struct Ctx<'a> {
    pub(crate) layout: &'a Layout,
    pub(crate) cfg: &'a Config,
    pub(crate) s: Session,
    pub(crate) sink: &'a mut dyn Sink,
    pub(crate) phase_start: Instant,
    pub(crate) phase: String,
}

impl<'a> Ctx<'a> {
    /// A context for the session `s`, before its first phase.
    pub(crate) fn new(
        layout: &'a Layout,
        cfg: &'a Config,
        s: Session,
        sink: &'a mut dyn Sink,
    ) -> Self {
        Self {
            layout,
            cfg,
            s,
            sink,
            phase_start: Instant::now(),
            phase: String::new(),
        }
    }

    /// Writes the record (a failure is logged: the start goes on).
    pub(crate) fn store(&self) {
        if let Err(e) = self.s.store(self.layout) {
            tracing::warn!("{e:#}");
        }
    }

    /// Starts phase `phase`, described as `what`.
    pub(crate) fn begin(&mut self, phase: &str, what: &str) {
        self.phase = phase.into();
        self.phase_start = Instant::now();
        self.s.current_phase = Some(phase.into());
        self.store();
        self.sink.emit(&Event::Begin {
            phase: phase.into(),
            what: what.into(),
        });
    }

    /// Ends the current phase with `detail`.
    pub(crate) fn done(&mut self, detail: String) {
        let ms = self.phase_start.elapsed().as_millis() as u64;
        self.s.phases.push(PhaseRecord {
            name: self.phase.clone(),
            ms,
        });
        self.s.current_phase = None;
        self.store();
        self.sink.emit(&Event::Done {
            phase: self.phase.clone(),
            ms,
            detail,
        });
    }

    /// The log file of `component`.
    pub(crate) fn log(&self, component: &str) -> PathBuf {
        self.s.logs_dir().join(format!("{component}.log"))
    }

    /// The session's namespace (empty before the network phase).
    pub(crate) fn netns(&self) -> &str {
        self.s.net.as_ref().map(|n| n.netns.as_str()).unwrap_or("")
    }

    /// The VM's address (unspecified before the network phase).
    pub(crate) fn vm_ip(&self) -> Ipv4Addr {
        self.s
            .net
            .as_ref()
            .map(|n| n.vm_ip)
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Starts `dozlab ARGS` as `component`, inside the namespace when
    /// `in_pod`, and records it.
    pub(crate) fn spawn(
        &mut self,
        component: &str,
        args: &[String],
        in_pod: bool,
    ) -> Result<Child, Failure> {
        let fd = if in_pod {
            Some(crate::netns::open(self.netns())?)
        } else {
            None
        };
        let cmd = child::component(&child::args(args.iter().cloned()), &self.log(component), fd)?;
        let c = child::spawn(cmd, &args[0])?;
        self.record_child(component, &c);
        Ok(c)
    }

    /// Records a started child in the session.
    pub(crate) fn record_child(&mut self, component: &str, c: &Child) {
        if let Some(pid) = c.id() {
            self.s.children.push(procs::record(component, pid));
            self.store();
        }
    }
}
