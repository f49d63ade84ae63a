//! The phases of a session's start, each a step the supervisor runs in
//! order: the session's disk (image), the pod's network set-up, the VM's
//! boot, and the front ends (terminal, VS Code, optionally Docker). Each
//! records what it creates in the session before creating it.

use crate::child;
use crate::ctx::Ctx;
use crate::image::{self, ImageSpec};
use crate::proxy::SocketFactory;
use crate::report::known_hosts_for_port;
use anyhow::{Context, anyhow};
use dozlab_core::failure::Failure;
use dozlab_core::vmstatus::{Phase, VmStatus};
use dozlab_fetch::{CacheUse, ErrorKind, FetchError, FetchReport, Grow};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Child;

/// Whether the image has Docker: its manifest (copied beside the session's
/// disk) says so; without a manifest, assume it does.
pub(crate) fn image_has_docker(data_dir: &std::path::Path) -> bool {
    dozlab_core::manifest::Manifest::load(&data_dir.join(dozlab_core::manifest::MANIFEST_FILE))
        .map(|m| m.features.docker)
        .unwrap_or(true)
}

pub(crate) fn write_password(ctx: &mut Ctx<'_>) -> Result<(), Failure> {
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

pub(crate) async fn prepare_disk(ctx: &mut Ctx<'_>) -> Result<(), Failure> {
    let disk = ctx.s.data_dir.join("rootfs.ext4");
    ctx.begin(
        "image",
        &format!("preparing the session's disk from {}", ctx.cfg.image_label),
    );
    let grow = image::disk_grow(ctx.cfg.disk);
    let report = match ctx.cfg.image.clone() {
        ImageSpec::Url(url) => fetch_url(ctx, &url, &disk, grow).await?,
        ImageSpec::File(base) => copy_image(&base, &disk, grow).await?,
        ImageSpec::Profile(p) => {
            copy_image(&profile_image(&p, &ctx.cfg.cache).await?, &disk, grow).await?
        }
    };
    let _ = std::fs::write(ctx.log("init"), format!("{report}\n"));
    let from_cache = match report.cache {
        CacheUse::Hit => ", from the cache",
        _ => "",
    };
    ctx.done(format!(
        "{} ({}{from_cache})",
        ctx.cfg.image_label,
        dozlab_core::size::human(report.image_size)
    ));
    Ok(())
}

/// A fetch or copy failure: exit 2 when the input is at fault (a `--disk`
/// smaller than the image, a malformed `--sha256`), else 1.
fn disk_failure(e: FetchError, what: String) -> Failure {
    if let Some((image, disk)) = e.refused_shrink() {
        return Failure::usage(anyhow!(
            "--disk {} is smaller than the image ({}); give at least the image's size",
            dozlab_core::size::human(disk),
            dozlab_core::size::human(image)
        ));
    }
    let usage = e.kind() == ErrorKind::Usage;
    Failure::usage_if(usage, anyhow::Error::new(e).context(what))
}

/// The session's own copy of a local image (and its manifest, if any).
async fn copy_image(base: &Path, disk: &Path, grow: Grow) -> Result<FetchReport, Failure> {
    let report = dozlab_fetch::copy_local(base, disk, grow)
        .await
        .map_err(|e| {
            disk_failure(
                e,
                format!("cannot prepare the session's disk from {}", base.display()),
            )
        })?;
    image::copy_manifest_beside(base, disk);
    Ok(report)
}

/// Fetches `--image URL` into the session's disk through the download cache.
async fn fetch_url(
    ctx: &mut Ctx<'_>,
    url: &str,
    disk: &Path,
    grow: Grow,
) -> Result<FetchReport, Failure> {
    let (mut opts, guessed) =
        image::url_fetch(url, ctx.cfg.sha256.as_deref(), disk, &ctx.cfg.cache, grow);
    let mut result = dozlab_fetch::fetch(&opts).await;
    if guessed && result.as_ref().is_err_and(FetchError::manifest_unavailable) {
        ctx.s.notes.push(
            "The image was not verified and not cached: no manifest.json beside it lists it \
             (give --sha256, or the URL of its manifest.json)"
                .into(),
        );
        opts.manifest = None;
        result = dozlab_fetch::fetch(&opts).await;
    }
    let report = result.map_err(|e| disk_failure(e, format!("cannot fetch the image {url}")))?;
    if let Some(m) = &report.manifest {
        let path = disk.with_file_name(dozlab_core::manifest::MANIFEST_FILE);
        if let Err(e) = dozlab_core::atomic::write_atomic(&path, m.to_json().as_bytes(), 0o644) {
            tracing::warn!("cannot keep the image's manifest beside the disk: {e}");
        }
    }
    Ok(report)
}

/// The image of a profile, built once and cached.
async fn profile_image(profile: &str, cache: &Path) -> Result<PathBuf, Failure> {
    let (p, cache) = (profile.to_string(), cache.to_path_buf());
    let dir = tokio::task::spawn_blocking(move || crate::images::ensure_profile(&p, &cache))
        .await
        .map_err(anyhow::Error::from)?
        .map_err(|e| Failure::usage_if(e.is_usage(), e))?;
    Ok(image::rootfs_in_dir(&dir)?)
}

pub(crate) async fn network_setup(ctx: &mut Ctx<'_>) -> Result<(), Failure> {
    let net = ctx.s.net.clone().expect("the network phase planned it");
    let args: Vec<String> = [
        "network-setup",
        "--tap",
        &net.tap,
        "--gateway-ip",
        &net.gateway_ip.to_string(),
        "--vm-ip",
        &net.vm_ip.to_string(),
        "--prefix-len",
        &crate::pod::PREFIX_LEN.to_string(),
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

pub(crate) fn bail_start(msg: String) -> Result<(), Failure> {
    Err(anyhow!(msg).into())
}

pub(crate) async fn boot(ctx: &mut Ctx<'_>) -> Result<Child, Failure> {
    let state_dir = ctx.s.data_dir.join("vm");
    let shared = ctx.s.shared_dir();
    let net = ctx.s.net.clone().expect("the network phase planned it");
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
        "--tap".into(),
        net.tap.clone(),
        "--vm-ip".into(),
        net.vm_ip.to_string(),
        "--gateway-ip".into(),
        net.gateway_ip.to_string(),
        "--prefix-len".into(),
        crate::pod::PREFIX_LEN.to_string(),
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
        "--snapshot".into(),
        ctx.cfg.snapshot.clone(),
        "--snapshot-cache".into(),
        ctx.cfg.cache.join("snapshots").display().to_string(),
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

pub(crate) fn write_host_known_hosts(ctx: &Ctx<'_>) -> Result<(), Failure> {
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
) -> Result<(Child, Option<Child>), Failure> {
    ctx.begin("ready", "starting the web terminal");
    let shared = ctx.s.shared_dir();
    let mut args: Vec<String> = vec![
        "terminal".into(),
        "--listen".into(),
        "127.0.0.1:8081".into(),
        "--vm-ip".into(),
        ctx.vm_ip().to_string(),
        "--vm-ssh-port".into(),
        "22".into(),
        "--ssh-user".into(),
        "root".into(),
        "--ssh-key".into(),
        shared.join("vm-ssh-key").display().to_string(),
        "--known-hosts".into(),
        shared.join("known_hosts").display().to_string(),
        "--password-file".into(),
        ctx.s.password_file.display().to_string(),
        "--session-id".into(),
        ctx.s.name.clone(),
    ];
    args.extend(crate::lab::terminal_args(ctx.cfg, &shared));
    let mut terminal = ctx.spawn("terminal", &args, true)?;
    let port = ctx.s.ports.terminal;
    // The terminal is ready once its own SSH login to the VM works: slow
    // under TCG on a busy machine, so it gets the VM's --ready-timeout too.
    let deadline = Instant::now() + ctx.cfg.ready_timeout;
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
                "the terminal did not report ready within {} s (raise --ready-timeout if the machine is slow):\n{}",
                ctx.cfg.ready_timeout.as_secs(),
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
pub(crate) fn start_vscode(ctx: &mut Ctx<'_>) -> Result<Option<Child>, Failure> {
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
    // Like every component: an explicit environment. code-server keeps its
    // settings and extensions under HOME.
    child::explicit_env(&mut cmd, &["HOME", "USER", "LANG"]);
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
    ctx.record_child("vscode", &c);
    Ok(Some(c))
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
