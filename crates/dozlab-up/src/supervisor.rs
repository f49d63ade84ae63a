//! The per-session supervisor: runs the phases (image, network, boot,
//! ready), publishes the ports, waits for Ctrl-C / SIGTERM or a component's
//! death, then tears everything down.
//!
//! It owns the children and the proxies. Its record (`session.json`) is
//! updated before each resource is created, so a failure or a kill at any
//! point can be undone from the record alone.

use crate::child;
use crate::ctx::{Config, Ctx};
use crate::hostnft;
use crate::phases;
use crate::pod;
use crate::ports::{self, Listeners};
use crate::procs;
use crate::proxy::SocketFactory;
use crate::report::{Event, Sink};
use crate::state::{Layout, Session, State};
use crate::teardown;
use anyhow::{Context, anyhow};
use dozlab_core::failure::Failure;
use std::time::Duration;
use tokio::process::Child;
use tokio::signal::unix::{SignalKind, signal};

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

/// Runs a session to its end. `sink` gets the progress; returns the exit code.
pub fn supervise(layout: &Layout, cfg: &Config, sink: &mut dyn Sink) -> Result<(), Failure> {
    let mut s = Session::new(layout, &cfg.name, cfg.image_label.clone());
    s.supervisor = Some(procs::record("supervisor", std::process::id()));
    s.store(layout)?;
    let listeners = match ports::bind(cfg, &mut s) {
        Ok(l) => l,
        Err(e) => return fail(layout, &s, sink, e),
    };
    s.store(layout)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut ctx = Ctx::new(layout, cfg, s, sink);
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
fn fail(layout: &Layout, s: &Session, sink: &mut dyn Sink, e: Failure) -> Result<(), Failure> {
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
async fn run(ctx: &mut Ctx<'_>, listeners: Listeners) -> Result<String, Failure> {
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
            _ = phases::docker_up(&docker, vm_ip, None), if docker_pending => {
                docker_pending = false;
                ctx.s.docker_ready = Some(true);
                ctx.store();
                tracing::info!("the VM's Docker API answers");
            }
        }
    }
}

async fn start(ctx: &mut Ctx<'_>, l: Listeners) -> Result<Running, Failure> {
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
    ports::publish(ctx, &factory, l);
    ctx.done(format!(
        "namespace {}, VM {} on {}",
        plan.netns, plan.vm_ip, plan.tap
    ));
    let vm = phases::boot(ctx).await?;
    crate::lab::install(ctx, &factory).await?;
    let (terminal, vscode) = phases::front_ends(ctx, &factory).await?;
    Ok(Running {
        vm,
        terminal,
        vscode,
        factory,
    })
}
