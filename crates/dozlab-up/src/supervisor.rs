//! The per-session supervisor: runs the phases (image, network, boot,
//! ready), publishes the ports, waits for Ctrl-C / SIGTERM or a component's
//! death, then tears everything down.
//!
//! It owns the children and the proxies. Its record (`session.json`) is
//! updated before each resource is created, so a failure or a kill at any
//! point can be undone from the record alone.

use crate::child;
use crate::hostnft;
use crate::image::{self, ImageSpec};
use crate::pod;
use crate::procs;
use crate::proxy::{self, SocketFactory};
use crate::report::{Event, Sink, known_hosts_for_port};
use crate::state::{Layout, PhaseRecord, Session, State};
use crate::teardown;
use anyhow::{Context, anyhow};
use dozlab_core::exit;
use dozlab_core::netconfig::PortForward;
use dozlab_core::vmstatus::{Phase, VmStatus};
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

fn usage(e: impl Into<anyhow::Error>) -> StartError {
    StartError {
        code: exit::USAGE,
        error: e.into(),
    }
}

/// Host ports bound before anything else is created.
struct Listeners {
    terminal: TcpListener,
    ssh: TcpListener,
    docker: TcpListener,
    vscode: Option<TcpListener>,
    forwards: Vec<(PortForward, TcpListener)>,
}

fn port_of(l: &TcpListener) -> u16 {
    l.local_addr().map(|a| a.port()).unwrap_or(0)
}

fn bind_ports(cfg: &Config, s: &mut Session) -> Result<Listeners, StartError> {
    let terminal = match cfg.port {
        Some(p) => proxy::bind_exact(p).map_err(usage)?,
        None => proxy::bind_from(8081)?,
    };
    let mut forwards = Vec::new();
    for f in &cfg.forwards {
        let l = proxy::bind_exact(f.host).map_err(|e| match e {
            proxy::PortError::InUse(port) => usage(proxy::PortError::ForwardInUse { port }),
            e => e.into(),
        })?;
        forwards.push((*f, l));
    }
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

struct Ctx<'a> {
    layout: &'a Layout,
    cfg: &'a Config,
    s: Session,
    sink: &'a mut dyn Sink,
    phase_start: Instant,
    phase: String,
}

impl Ctx<'_> {
    fn store(&self) {
        if let Err(e) = self.s.store(self.layout) {
            tracing::warn!("{e:#}");
        }
    }

    fn begin(&mut self, phase: &str, what: &str) {
        self.phase = phase.into();
        self.phase_start = Instant::now();
        self.s.current_phase = Some(phase.into());
        self.store();
        self.sink.emit(&Event::Begin {
            phase: phase.into(),
            what: what.into(),
        });
    }

    fn done(&mut self, detail: String) {
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

    fn log(&self, component: &str) -> PathBuf {
        self.s.logs_dir().join(format!("{component}.log"))
    }

    fn netns(&self) -> &str {
        self.s.net.as_ref().map(|n| n.netns.as_str()).unwrap_or("")
    }

    fn vm_ip(&self) -> Ipv4Addr {
        self.s
            .net
            .as_ref()
            .map(|n| n.vm_ip)
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Starts `dozlab ARGS` as `component`, inside the namespace when `in_pod`.
    fn spawn(
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
    finish(layout, &s);
    Err(e)
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
async fn docker_up(f: &SocketFactory, vm: Ipv4Addr, deadline: Option<Instant>) -> bool {
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
    write_password(ctx)?;
    prepare_disk(ctx).await?;
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
    network_setup(ctx).await?;
    let factory = SocketFactory::new(&plan.netns)?;
    let has_docker = image_has_docker(&ctx.s.data_dir);
    ctx.s.docker_ready = has_docker.then_some(false);
    if !has_docker {
        ctx.s.ports.docker = None;
    }
    publish(ctx, &factory, l);
    ctx.done(format!(
        "namespace {}, VM {} on {}",
        plan.netns, plan.vm_ip, plan.tap
    ));
    let vm = boot(ctx).await?;
    let (terminal, vscode) = front_ends(ctx, &factory).await?;
    Ok(Running {
        vm,
        terminal,
        vscode,
        factory,
    })
}

/// Whether the image has Docker: its manifest (copied beside the session's
/// disk) says so; without a manifest, assume it does.
fn image_has_docker(data_dir: &std::path::Path) -> bool {
    dozlab_core::manifest::Manifest::load(&data_dir.join(dozlab_core::manifest::MANIFEST_FILE))
        .map(|m| m.features.docker)
        .unwrap_or(true)
}

fn write_password(ctx: &mut Ctx<'_>) -> Result<(), StartError> {
    use rand::Rng;
    let pw: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    dozlab_core::atomic::write_atomic(&ctx.s.password_file, pw.as_bytes(), 0o600)
        .context("cannot write the session password")?;
    Ok(())
}

async fn prepare_disk(ctx: &mut Ctx<'_>) -> Result<(), StartError> {
    let disk = ctx.s.data_dir.join("rootfs.ext4");
    let spec = ctx.cfg.image.clone();
    ctx.begin(
        "image",
        &format!("preparing the session's disk from {}", ctx.cfg.image_label),
    );
    let base = match spec {
        ImageSpec::Url(url) => {
            fetch_url(ctx, &url, &disk).await?;
            None
        }
        ImageSpec::File(p) => Some(p),
        ImageSpec::Profile(p) => Some(profile_image(ctx, &p).await?),
    };
    if let Some(base) = base {
        let (d, explicit) = (disk.clone(), ctx.cfg.disk);
        tokio::task::spawn_blocking(move || {
            let len = image::sparse_copy(&base, &d)?;
            image::copy_manifest_beside(&base, &d);
            let size = explicit.or(Some(DEFAULT_DISK).filter(|s| *s > len));
            image::check_and_grow(&d, size)
        })
        .await
        .map_err(anyhow::Error::from)?
        .map_err(|e| if e.is_usage() { usage(e) } else { e.into() })?;
    }
    let size = std::fs::metadata(&disk).map(|m| m.len()).unwrap_or(0);
    ctx.done(format!(
        "{} ({})",
        ctx.cfg.image_label,
        dozlab_core::size::human(size)
    ));
    Ok(())
}

async fn fetch_url(ctx: &mut Ctx<'_>, url: &str, out: &std::path::Path) -> Result<(), StartError> {
    let mut args = vec![
        "init-rootfs".to_string(),
        "--url".into(),
        url.into(),
        "--out".into(),
        out.display().to_string(),
        "--cache".into(),
        ctx.cfg.cache.join("downloads").display().to_string(),
    ];
    if let Some(d) = ctx.cfg.disk {
        args.extend(["--size".into(), d.to_string()]);
    }
    let mut c = ctx.spawn("init", &args, false)?;
    let st = c.wait().await?;
    if !st.success() {
        return Err(StartError {
            code: st.code().map(|c| c as u8).filter(|c| *c != 0).unwrap_or(1),
            error: anyhow!(
                "cannot fetch the image {url} (init-rootfs {st}):\n{}",
                child::tail(&ctx.log("init"), 15)
            ),
        });
    }
    Ok(())
}

async fn profile_image(ctx: &mut Ctx<'_>, profile: &str) -> Result<PathBuf, StartError> {
    let (p, cache) = (profile.to_string(), ctx.cfg.cache.clone());
    let dir = tokio::task::spawn_blocking(move || crate::images::ensure_profile(&p, &cache))
        .await
        .map_err(anyhow::Error::from)?
        .map_err(|e| if e.is_usage() { usage(e) } else { e.into() })?;
    Ok(image::rootfs_in_dir(&dir)?)
}

async fn network_setup(ctx: &mut Ctx<'_>) -> Result<(), StartError> {
    let net = ctx.s.net.clone().expect("planned");
    let args: Vec<String> = [
        "network-setup",
        "--tap",
        &net.tap,
        "--gateway-ip",
        &net.gateway_ip.to_string(),
        "--vm-ip",
        &net.vm_ip.to_string(),
        "--prefix-len",
        "24",
        "--uplink",
        &net.pod_if,
        "--pod-ip",
        &net.pod_ip.to_string(),
        "--forward-port",
        "22",
        "--config-out",
        &ctx.s
            .shared_dir()
            .join("network-config")
            .display()
            .to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut c = ctx.spawn("network", &args, true)?;
    let st = tokio::time::timeout(Duration::from_secs(60), c.wait())
        .await
        .map_err(|_| anyhow!("network-setup did not finish within 60 s"))??;
    if !st.success() {
        bail_start(format!(
            "network-setup failed ({st}):\n{}",
            child::tail(&ctx.log("network"), 15)
        ))?;
    }
    Ok(())
}

fn bail_start(msg: String) -> Result<(), StartError> {
    Err(anyhow!(msg).into())
}

/// Starts serving the host ports (they were bound at the very start).
fn publish(ctx: &Ctx<'_>, factory: &SocketFactory, l: Listeners) {
    let vm = ctx.vm_ip();
    let serve = |listener: TcpListener, target: SocketAddrV4| {
        tokio::spawn(proxy::serve(listener, factory.clone(), target));
    };
    serve(l.terminal, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8081));
    serve(l.ssh, SocketAddrV4::new(vm, 22));
    if ctx.s.ports.docker.is_some() {
        serve(l.docker, SocketAddrV4::new(vm, 2375));
    }
    if let Some(v) = l.vscode {
        serve(v, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
    }
    for (f, listener) in l.forwards {
        serve(listener, SocketAddrV4::new(vm, f.vm));
    }
}

async fn boot(ctx: &mut Ctx<'_>) -> Result<Child, StartError> {
    let state_dir = ctx.s.data_dir.join("vm");
    let shared = ctx.s.shared_dir();
    ctx.begin(
        "boot",
        &format!("booting the VM ({}, accel {})", ctx.cfg.vmm, ctx.cfg.accel),
    );
    let args: Vec<String> = vec![
        "vm".into(),
        "run".into(),
        "--rootfs".into(),
        ctx.s.data_dir.join("rootfs.ext4").display().to_string(),
        "--cpus".into(),
        ctx.cfg.cpus.to_string(),
        "--memory".into(),
        ctx.cfg.memory_mib.to_string(),
        "--vmm".into(),
        ctx.cfg.vmm.clone(),
        "--accel".into(),
        ctx.cfg.accel.clone(),
        "--state-dir".into(),
        state_dir.display().to_string(),
        "--network-config".into(),
        shared.join("network-config").display().to_string(),
        "--ssh-key-out".into(),
        shared.join("vm-ssh-key").display().to_string(),
        "--known-hosts-out".into(),
        shared.join("known_hosts").display().to_string(),
        "--console-log".into(),
        ctx.log("console").display().to_string(),
        "--session-id".into(),
        ctx.s.name.clone(),
        "--boot-timeout".into(),
        ctx.cfg.ready_timeout.as_secs().to_string(),
        // Ready = SSH answers with the session's host key; Docker comes up
        // later and is tracked by the supervisor (see `--wait-docker`).
        "--docker-check".into(),
        "off".into(),
    ];
    let mut vm = ctx.spawn("vm", &args, true)?;
    let deadline = Instant::now() + ctx.cfg.ready_timeout;
    let status = loop {
        if let Ok(st) = VmStatus::load(&state_dir) {
            match st.phase {
                Phase::Ready => break st,
                Phase::Failed | Phase::Stopped => bail_start(format!(
                    "the VM failed to boot: {}\nlast console lines:\n{}",
                    st.message.unwrap_or_default(),
                    vm_tail(ctx)
                ))?,
                _ => {}
            }
        }
        if let Some(st) = vm.try_wait()? {
            bail_start(format!(
                "the VM supervisor exited ({st}):\n{}",
                vm_tail(ctx)
            ))?;
        }
        if Instant::now() >= deadline {
            bail_start(format!(
                "the VM was not ready within {} s (raise --ready-timeout if the machine is slow)\nlast console lines:\n{}",
                ctx.cfg.ready_timeout.as_secs(),
                vm_tail(ctx)
            ))?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    write_host_known_hosts(ctx)?;
    ctx.done(format!(
        "{} ({}), ready in {:.1}s by its own clock",
        status.vmm,
        status.accel,
        status.boot_ms.unwrap_or(0) as f64 / 1000.0
    ));
    Ok(vm)
}

fn vm_tail(ctx: &Ctx<'_>) -> String {
    let console = child::tail(&ctx.log("console"), 15);
    let vm = child::tail(&ctx.log("vm"), 10);
    format!("{console}\n--- vm.log ---\n{vm}")
}

fn write_host_known_hosts(ctx: &Ctx<'_>) -> Result<(), StartError> {
    let shared = ctx.s.shared_dir();
    let text = std::fs::read_to_string(shared.join("known_hosts")).unwrap_or_default();
    let port = ctx.s.ports.ssh.unwrap_or(22);
    dozlab_core::atomic::write_atomic(
        &shared.join("host_known_hosts"),
        known_hosts_for_port(&text, port).as_bytes(),
        0o644,
    )
    .context("cannot write the host known_hosts file")?;
    Ok(())
}

async fn front_ends(
    ctx: &mut Ctx<'_>,
    factory: &SocketFactory,
) -> Result<(Child, Option<Child>), StartError> {
    ctx.begin("ready", "starting the web terminal");
    let shared = ctx.s.shared_dir();
    let args: Vec<String> = vec![
        "terminal".into(),
        "--listen".into(),
        "127.0.0.1:8081".into(),
        "--vm-ip".into(),
        ctx.vm_ip().to_string(),
        "--vm-ssh-port".into(),
        "22".into(),
        "--ssh-key".into(),
        shared.join("vm-ssh-key").display().to_string(),
        "--known-hosts".into(),
        shared.join("known_hosts").display().to_string(),
        "--password-file".into(),
        ctx.s.password_file.display().to_string(),
        "--session-id".into(),
        ctx.s.name.clone(),
    ];
    let mut terminal = ctx.spawn("terminal", &args, true)?;
    let port = ctx.s.ports.terminal;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if crate::http::get_status(port, "/ready").await == Some(200) {
            break;
        }
        if let Some(st) = terminal.try_wait()? {
            bail_start(format!(
                "the terminal exited ({st}):\n{}",
                child::tail(&ctx.log("terminal"), 15)
            ))?;
        }
        if Instant::now() >= deadline {
            bail_start(format!(
                "the terminal did not report ready within 60 s:\n{}",
                child::tail(&ctx.log("terminal"), 15)
            ))?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let vscode = start_vscode(ctx)?;
    if ctx.cfg.wait_docker && ctx.s.docker_ready == Some(false) {
        let deadline = Instant::now() + ctx.cfg.ready_timeout;
        if !docker_up(factory, ctx.vm_ip(), Some(deadline)).await {
            bail_start(format!(
                "the VM's Docker API did not answer within {} s (--wait-docker)\nlast console lines:\n{}",
                ctx.cfg.ready_timeout.as_secs(),
                child::tail(&ctx.log("console"), 15)
            ))?;
        }
        ctx.s.docker_ready = Some(true);
    }
    ctx.done(format!("terminal on {}", ctx.s.terminal_url()));
    Ok((terminal, vscode))
}

/// code-server in the namespace, with the session password and the VM's Docker.
fn start_vscode(ctx: &mut Ctx<'_>) -> Result<Option<Child>, StartError> {
    if ctx.s.ports.vscode.is_none() {
        return Ok(None);
    }
    let Some(bin) = crate::checks::find_program("code-server") else {
        return Ok(None);
    };
    let workspace = ctx.s.data_dir.join("workspace");
    std::fs::create_dir_all(&workspace)?;
    let password = std::fs::read_to_string(&ctx.s.password_file)?;
    let log = ctx.log("vscode");
    let fd = crate::netns::open(ctx.netns())?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["--bind-addr", "127.0.0.1:8080", "--auth", "password"])
        .args(["--disable-telemetry", "--disable-update-check"])
        .arg(&workspace)
        .env("PASSWORD", password.trim())
        .env("DOCKER_HOST", format!("tcp://{}:2375", ctx.vm_ip()))
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    child::enter_netns_on_exec(&mut cmd, fd);
    let c = child::spawn(cmd, "code-server")?;
    if let Some(pid) = c.id() {
        ctx.s.children.push(procs::record("vscode", pid));
        ctx.store();
    }
    Ok(Some(c))
}
