//! The per-session supervisor: runs the phases (image, network, boot,
//! ready), publishes the ports, waits for Ctrl-C / SIGTERM or a component's
//! death, then tears everything down.
//!
//! It owns the children and the proxies. Its record (`session.json`) is
//! updated before each resource is created, so a failure or a kill at any
//! point can be undone from the record alone.

use crate::child;
use crate::hostnft;
use crate::image::ImageSpec;
use crate::phases;
use crate::pod;
use crate::procs;
use crate::proxy::{self, SocketFactory};
use crate::report::{Event, Sink};
use crate::state::{Layout, PhaseRecord, Session, State};
use crate::teardown;
use anyhow::{Context, anyhow};
use dozlab_core::exit;
use dozlab_core::netconfig::PortForward;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::process::Child;
use tokio::signal::unix::{SignalKind, signal};

/// Disk size when `--disk` is not given (the original's `IMAGE_SIZE`).
pub const DEFAULT_DISK: u64 = 4 << 30;

/// Everything `dozlab up` was asked for, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub image: ImageSpec,
    pub image_label: String,
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
}

/// A failed start: exit code and message (with the relevant log tail).
#[derive(Debug)]
pub struct StartError {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for StartError {
    fn from(e: E) -> Self {
        Self {
            code: exit::FAILURE,
            error: e.into(),
        }
    }
}

pub(crate) fn usage(e: impl Into<anyhow::Error>) -> StartError {
    StartError {
        code: exit::USAGE,
        error: e.into(),
    }
}

/// Host ports bound before anything else is created.
pub(crate) struct Listeners {
    pub(crate) terminal: TcpListener,
    pub(crate) ssh: TcpListener,
    pub(crate) docker: TcpListener,
    pub(crate) vscode: Option<TcpListener>,
    pub(crate) forwards: Vec<(PortForward, TcpListener)>,
}

fn port_of(l: &TcpListener) -> u16 {
    l.local_addr().map(|a| a.port()).unwrap_or(0)
}

/// Binds the explicit ports first (`--port`, `--forward`), then picks free
/// ones for the rest, so an automatic choice never takes a port asked for.
fn bind_ports(cfg: &Config, s: &mut Session) -> Result<Listeners, StartError> {
    let explicit_terminal = match cfg.port {
        Some(p) => Some(proxy::bind_exact(p).map_err(usage)?),
        None => None,
    };
    let mut forwards = Vec::new();
    for f in &cfg.forwards {
        let l = proxy::bind_exact(f.host).map_err(|e| match e {
            proxy::PortError::InUse(port) => usage(proxy::PortError::ForwardInUse { port }),
            e => e.into(),
        })?;
        forwards.push((*f, l));
    }
    let terminal = match explicit_terminal {
        Some(l) => l,
        None => proxy::bind_from(8081)?,
    };
    let vscode = match (cfg.vscode, crate::checks::find_program("code-server")) {
        (true, Some(_)) => Some(proxy::bind_from(8080)?),
        (true, None) => {
            s.notes.push(
                "VS Code not started: --vscode needs `code-server` on PATH and none was found \
                 (install code-server, then run `dozlab up --vscode` again)"
                    .into(),
            );
            None
        }
        (false, _) => None,
    };
    let l = Listeners {
        ssh: proxy::bind_from(2222)?,
        docker: proxy::bind_from(2375)?,
        terminal,
        vscode,
        forwards,
    };
    s.ports.terminal = port_of(&l.terminal);
    s.ports.ssh = Some(port_of(&l.ssh));
    s.ports.docker = Some(port_of(&l.docker));
    s.ports.vscode = l.vscode.as_ref().map(port_of);
    s.ports.forwards = cfg.forwards.iter().map(|f| f.to_string()).collect();
    Ok(l)
}

/// The running components.
struct Running {
    vm: Child,
    terminal: Child,
    vscode: Option<Child>,
    factory: SocketFactory,
}

impl Running {
    /// The first component to end: its name and whether it ended well.
    async fn any_exit(&mut self) -> (&'static str, String, bool) {
        let vscode = async {
            match self.vscode.as_mut() {
                Some(c) => c.wait().await,
                None => std::future::pending().await,
            }
        };
        let (component, st) = tokio::select! {
            st = self.vm.wait() => ("vm", st),
            st = self.terminal.wait() => ("terminal", st),
            st = vscode => ("vscode", st),
        };
        let ok = st.as_ref().is_ok_and(|s| s.success());
        let shown = st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
        (component, shown, ok)
    }
}

pub(crate) struct Ctx<'a> {
    pub(crate) layout: &'a Layout,
    pub(crate) cfg: &'a Config,
    pub(crate) s: Session,
    pub(crate) sink: &'a mut dyn Sink,
    pub(crate) phase_start: Instant,
    pub(crate) phase: String,
}

impl Ctx<'_> {
    pub(crate) fn store(&self) {
        if let Err(e) = self.s.store(self.layout) {
            tracing::warn!("{e:#}");
        }
    }

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

    pub(crate) fn log(&self, component: &str) -> PathBuf {
        self.s.logs_dir().join(format!("{component}.log"))
    }

    pub(crate) fn netns(&self) -> &str {
        self.s.net.as_ref().map(|n| n.netns.as_str()).unwrap_or("")
    }

    pub(crate) fn vm_ip(&self) -> Ipv4Addr {
        self.s
            .net
            .as_ref()
            .map(|n| n.vm_ip)
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Starts `dozlab ARGS` as `component`, inside the namespace when `in_pod`.
    pub(crate) fn spawn(
        &mut self,
        component: &str,
        args: &[String],
        in_pod: bool,
    ) -> Result<Child, StartError> {
        let fd = if in_pod {
            Some(crate::netns::open(self.netns())?)
        } else {
            None
        };
        let cmd = child::component(&child::args(args.iter().cloned()), &self.log(component), fd)?;
        let c = child::spawn(cmd, &args[0])?;
        if let Some(pid) = c.id() {
            self.s.children.push(procs::record(component, pid));
            self.store();
        }
        Ok(c)
    }
}

/// Runs a session to its end. `sink` gets the progress; returns the exit code.
pub fn supervise(layout: &Layout, cfg: &Config, sink: &mut dyn Sink) -> Result<(), StartError> {
    let mut s = Session::new(layout, &cfg.name, cfg.image_label.clone());
    s.supervisor = Some(procs::record("supervisor", std::process::id()));
    s.store(layout)?;
    let listeners = match bind_ports(cfg, &mut s) {
        Ok(l) => l,
        Err(e) => return fail(layout, &s, sink, e),
    };
    s.store(layout)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut ctx = Ctx {
        layout,
        cfg,
        s,
        sink,
        phase_start: Instant::now(),
        phase: String::new(),
    };
    let outcome = rt.block_on(run(&mut ctx, listeners));
    let Ctx { s, sink, .. } = ctx;
    match outcome {
        Ok(why) => {
            tracing::info!("stopping session {}: {why}", s.name);
            eprintln!("Stopping session {} ({why})...", s.name);
            let mut s = s;
            s.state = State::Stopping;
            let _ = s.store(layout);
            finish(layout, &s);
            note_end(layout, &s.name, &why);
            rt.shutdown_timeout(Duration::from_secs(1));
            eprintln!("Session {} stopped and removed.", s.name);
            Ok(())
        }
        Err(e) => {
            let r = fail(layout, &s, sink, e);
            rt.shutdown_timeout(Duration::from_secs(1));
            r
        }
    }
}

/// Cleans up after a failed start and reports the failure.
fn fail(
    layout: &Layout,
    s: &Session,
    sink: &mut dyn Sink,
    e: StartError,
) -> Result<(), StartError> {
    let mut s = s.clone();
    s.state = State::Failed;
    s.error = Some(format!("{:#}", e.error));
    let _ = s.store(layout);
    sink.emit(&Event::Failed {
        code: e.code,
        message: format!("{:#}", e.error),
    });
    tracing::error!("session {} failed: {:#}", s.name, e.error);
    finish(layout, &s);
    note_end(layout, &s.name, &format!("failed: {:#}", e.error));
    Err(e)
}

/// Appends one line to `<run root>/ended.log`, so why a session ended is
/// known after its logs went with it (`dozlab ls --ended`).
fn note_end(layout: &Layout, name: &str, why: &str) {
    use std::io::Write;
    let first_line = why.lines().next().unwrap_or("");
    let line = format!(
        "{} {name} {first_line}\n",
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    let path = layout.run_root.join("ended.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

fn finish(layout: &Layout, s: &Session) {
    for p in teardown::teardown(layout, s) {
        eprintln!("warning: could not remove {p}");
    }
}

/// The phases, then the wait. Ok(reason to stop) or the start error.
async fn run(ctx: &mut Ctx<'_>, listeners: Listeners) -> Result<String, StartError> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let started = tokio::select! {
        r = start(ctx, listeners) => r,
        _ = term.recv() => return Ok("SIGTERM during start".into()),
        _ = int.recv() => return Ok("interrupted during start".into()),
        _ = hup.recv() => return Ok("hang-up during start".into()),
    };
    let mut running = started?;
    ctx.s.state = State::Ready;
    ctx.store();
    ctx.sink.emit(&Event::Ready {
        session: Box::new(ctx.s.clone()),
    });
    if ctx.cfg.detached {
        // From now on the session outlives the launcher and its terminal.
        let _ = nix::unistd::setsid();
    }
    let docker = running.factory.clone();
    let vm_ip = ctx.vm_ip();
    let mut docker_pending = ctx.s.docker_ready == Some(false);
    loop {
        tokio::select! {
            _ = term.recv() => return Ok("SIGTERM".into()),
            _ = int.recv() => return Ok("interrupted".into()),
            _ = hup.recv() => return Ok("hang-up".into()),
            (component, status, ok) = running.any_exit() => {
                // A clean exit (the learner powered the VM off) ends the
                // session normally; a crash is a failure with its log tail.
                let why = format!("{component} exited ({status})");
                if ok {
                    return Ok(why);
                }
                return Err(anyhow!(
                    "{why}; last lines of {component}.log:\n{}",
                    child::tail(&ctx.log(component), 15)
                )
                .into());
            }
            _ = docker_up(&docker, vm_ip, None), if docker_pending => {
                docker_pending = false;
                ctx.s.docker_ready = Some(true);
                ctx.store();
                tracing::info!("the VM's Docker API answers");
            }
        }
    }
}

/// Waits until the VM's Docker answers `GET /_ping` (until `deadline`).
pub(crate) async fn docker_up(f: &SocketFactory, vm: Ipv4Addr, deadline: Option<Instant>) -> bool {
    loop {
        let target = SocketAddrV4::new(vm, 2375);
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(3), f.connect(target)).await
            && crate::http::get_on(s, "docker", "/_ping").await == Some(200)
        {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn start(ctx: &mut Ctx<'_>, l: Listeners) -> Result<Running, StartError> {
    phases::write_password(ctx)?;
    phases::prepare_disk(ctx).await?;
    ctx.begin("network", "creating the session's namespace, veth and tap");
    let plan = pod::create(ctx.layout, &mut ctx.s).await?;
    if ctx.cfg.internet {
        ctx.s.enabled_ip_forward = true;
        ctx.store();
        hostnft::enable_ip_forward().context("cannot enable IPv4 forwarding")?;
        let table = plan.netns.clone();
        if let Some(n) = ctx.s.net.as_mut() {
            n.nft_table = Some(table.clone());
        }
        ctx.store();
        hostnft::create(&table, &plan.host_if, pod::veth_subnet(&plan), 30)?;
    }
    phases::network_setup(ctx).await?;
    let factory = SocketFactory::new(&plan.netns)?;
    let has_docker = phases::image_has_docker(&ctx.s.data_dir);
    ctx.s.docker_ready = has_docker.then_some(false);
    if !has_docker {
        ctx.s.ports.docker = None;
    }
    phases::publish(ctx, &factory, l);
    ctx.done(format!(
        "namespace {}, VM {} on {}",
        plan.netns, plan.vm_ip, plan.tap
    ));
    let vm = phases::boot(ctx).await?;
    let (terminal, vscode) = phases::front_ends(ctx, &factory).await?;
    Ok(Running {
        vm,
        terminal,
        vscode,
        factory,
    })
}
