//! The phases of a session's start, each a step the supervisor runs in
//! order: the session's disk (image), the pod's network set-up, the VM's
//! boot, and the front ends (terminal, VS Code, optionally Docker). Each
//! records what it creates in the session before creating it.

use crate::child;
use crate::image::{self, ImageSpec};
use crate::procs;
use crate::proxy::{self, SocketFactory};
use crate::report::known_hosts_for_port;
use crate::supervisor::{Ctx, DEFAULT_DISK, Listeners, StartError, docker_up, usage};
use anyhow::{Context, anyhow};
use dozlab_core::vmstatus::{Phase, VmStatus};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::process::Child;

/// Whether the image has Docker: its manifest (copied beside the session's
/// disk) says so; without a manifest, assume it does.
pub(crate) fn image_has_docker(data_dir: &std::path::Path) -> bool {
    dozlab_core::manifest::Manifest::load(&data_dir.join(dozlab_core::manifest::MANIFEST_FILE))
        .map(|m| m.features.docker)
        .unwrap_or(true)
}

pub(crate) fn write_password(ctx: &mut Ctx<'_>) -> Result<(), StartError> {
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

pub(crate) async fn prepare_disk(ctx: &mut Ctx<'_>) -> Result<(), StartError> {
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

pub(crate) async fn fetch_url(
    ctx: &mut Ctx<'_>,
    url: &str,
    out: &std::path::Path,
) -> Result<(), StartError> {
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

pub(crate) async fn profile_image(ctx: &mut Ctx<'_>, profile: &str) -> Result<PathBuf, StartError> {
    let (p, cache) = (profile.to_string(), ctx.cfg.cache.clone());
    let dir = tokio::task::spawn_blocking(move || crate::images::ensure_profile(&p, &cache))
        .await
        .map_err(anyhow::Error::from)?
        .map_err(|e| if e.is_usage() { usage(e) } else { e.into() })?;
    Ok(image::rootfs_in_dir(&dir)?)
}

pub(crate) async fn network_setup(ctx: &mut Ctx<'_>) -> Result<(), StartError> {
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
        // Nothing is DNATed from the pod's address: the host reaches the VM
        // only through the supervisor's loopback proxies.
        "--forward-port",
        "none",
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

pub(crate) fn bail_start(msg: String) -> Result<(), StartError> {
    Err(anyhow!(msg).into())
}

/// Starts serving the host ports (they were bound at the very start).
pub(crate) fn publish(ctx: &Ctx<'_>, factory: &SocketFactory, l: Listeners) {
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

pub(crate) async fn boot(ctx: &mut Ctx<'_>) -> Result<Child, StartError> {
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
                    "the VM failed to boot: {}\n{}",
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
                "the VM was not ready within {} s (raise --ready-timeout if the machine is slow)\n{}",
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

pub(crate) fn vm_tail(ctx: &Ctx<'_>) -> String {
    let console = child::tail(&ctx.log("console"), 15);
    let vm = child::tail(&ctx.log("vm"), 10);
    format!("--- console.log ---\n{console}\n--- vm.log ---\n{vm}")
}

pub(crate) fn write_host_known_hosts(ctx: &Ctx<'_>) -> Result<(), StartError> {
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

pub(crate) async fn front_ends(
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
pub(crate) fn start_vscode(ctx: &mut Ctx<'_>) -> Result<Option<Child>, StartError> {
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
