//! The session's lab (`dozlab up --lab DIR|URL`): fetched, checked and
//! validated into the session's data directory by the launcher before
//! anything else is created (a bad lab is refused with exit 2), then, once
//! the VM is ready, its assets copied in over SFTP with their modes and the
//! intro's `background` run; the terminal serves it with `--lab-dir`.

use crate::ctx::{Config, Ctx};
use crate::image;
use crate::proxy::SocketFactory;
use anyhow::{Context, anyhow};
use dozlab_core::failure::Failure;
use dozlab_lab::fetch::{
    FetchLabError, FetchRequest, LabSource, fetch_lab_until_stopped, parse_sha256,
};
use dozlab_lab::remote::Vm;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lab's directory inside the session's data directory.
pub const LAB_DIR: &str = "lab";

/// The lab a session runs, as `--lab` resolved.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The fetched lab directory.
    pub dir: PathBuf,
    /// What it is shown as in the record.
    pub record: LabRecord,
    /// The image the lab asks for (`backend.imageid` mapped, or `dozlab.image`).
    pub image: String,
}

/// The lab in the session's record (`session.json`, `ls --json`, the report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabRecord {
    /// Its title.
    pub title: String,
    /// Its number of steps.
    pub steps: usize,
    /// `--lab` as given.
    pub source: String,
    /// The fetched lab directory.
    pub dir: PathBuf,
}

/// `--lab` and `--lab-sha256`, checked before anything is created.
#[derive(Debug, Clone)]
pub struct LabRequest {
    source: LabSource,
    sha256: Option<String>,
}

/// Checks `--lab` (the source exists, or is a URL) and `--lab-sha256`.
pub fn request(source: &str, sha256: Option<&str>) -> Result<LabRequest, Failure> {
    let source = LabSource::parse(source).map_err(Failure::usage)?;
    let sha256 = sha256
        .map(|s| parse_sha256(s).map_err(|e| anyhow!("--lab-sha256: {e}")))
        .transpose()
        .map_err(Failure::usage)?;
    if sha256.is_some() && matches!(source, LabSource::Dir(_)) {
        return Err(Failure::usage(anyhow!(
            "--lab-sha256 applies to a lab archive (a URL or a .tar.gz), not to the directory {source}"
        )));
    }
    Ok(LabRequest { source, sha256 })
}

/// Fetches and validates the lab into `data_dir/lab`. A lab that is
/// refused (digest, unsafe archive, invalid) is exit 2; a failed download 1.
pub fn fetch(req: LabRequest, data_dir: &Path, cache: &Path) -> Result<LabConfig, Failure> {
    let t0 = Instant::now();
    if req.source.is_url() && req.sha256.is_none() {
        eprintln!(
            "warning: the lab {} is not verified: give --lab-sha256 (the sha256sum of the archive)",
            req.source
        );
    }
    let dir = data_dir.join(LAB_DIR);
    let fetch_req = FetchRequest {
        source: req.source.clone(),
        dest: dir.clone(),
        sha256: req.sha256,
        cache: Some(cache.join("downloads")),
        limits: Default::default(),
    };
    // Ctrl-C or SIGTERM drops the fetch (it removes what it staged);
    // the caller removes the claimed session.
    let Some(result) = fetch_lab_until_stopped(&fetch_req)? else {
        return Err(Failure::new(
            130,
            anyhow!("interrupted while fetching the lab; nothing was started"),
        ));
    };
    let fetched = result.map_err(lab_failure)?;
    for w in &fetched.warnings {
        eprintln!("{w}");
    }
    let cfg = adopt(data_dir, &req.source.to_string())?;
    eprintln!(
        "✓ {:<8} {:>6.1}s  {} ({} step{}) from {}",
        "lab",
        t0.elapsed().as_secs_f64(),
        cfg.record.title,
        cfg.record.steps,
        if cfg.record.steps == 1 { "" } else { "s" },
        req.source
    );
    Ok(cfg)
}

fn lab_failure(e: FetchLabError) -> Failure {
    let input = e.is_input();
    Failure::usage_if(input, anyhow::Error::new(e).context("--lab"))
}

/// The lab already fetched into `data_dir/lab` (the detached supervisor
/// gets it from its launcher).
pub fn adopt(data_dir: &Path, source: &str) -> Result<LabConfig, Failure> {
    let dir = data_dir.join(LAB_DIR);
    let lab = dozlab_lab::load(&dir).map_err(|e| Failure::usage(anyhow::Error::new(e)))?;
    Ok(LabConfig {
        record: LabRecord {
            title: lab.title.clone(),
            steps: lab.steps.len(),
            source: source.to_string(),
            dir: dir.clone(),
        },
        image: lab.image.image.clone(),
        dir,
    })
}

/// Uses the lab's image when `--image` was not given.
pub fn apply_image(cfg: &mut Config, lab: &LabConfig) -> Result<(), Failure> {
    let spec = image::parse_spec(Some(&lab.image)).map_err(|e| {
        Failure::usage(
            anyhow::Error::new(e).context("the lab's image (`backend.imageid` / `dozlab.image`)"),
        )
    })?;
    cfg.image_label = match &spec {
        image::ImageSpec::Profile(p) => format!("profile {p}"),
        image::ImageSpec::Url(u) => u.clone(),
        image::ImageSpec::File(p) => p.display().to_string(),
    };
    cfg.image = spec;
    Ok(())
}

/// The `lab` phase: assets in, the intro's background run (its output in
/// `logs/lab.log`). A failure fails the start: the lab would not work.
pub(crate) async fn install(ctx: &mut Ctx<'_>, factory: &SocketFactory) -> Result<(), Failure> {
    let Some(cfg) = ctx.cfg.lab.clone() else {
        return Ok(());
    };
    ctx.s.lab = Some(cfg.record.clone());
    ctx.begin(
        "lab",
        &format!(
            "copying {:?}'s assets in, running its intro",
            cfg.record.title
        ),
    );
    let lab = dozlab_lab::load(&cfg.dir).map_err(anyhow::Error::from)?;
    if dozlab_lab::labtest::uses_docker(&lab) && ctx.s.docker_ready == Some(false) {
        // Its scripts use Docker: the intro's background may already.
        let deadline = Instant::now() + ctx.cfg.ready_timeout;
        if !crate::phases::docker_up(factory, ctx.vm_ip(), Some(deadline)).await {
            return Err(anyhow!(
                "the lab uses Docker and the VM's Docker API did not answer within {} s",
                ctx.cfg.ready_timeout.as_secs()
            )
            .into());
        }
        ctx.s.docker_ready = Some(true);
    }
    let vm = Vm::connect(&ssh_target(ctx))
        .await
        .context("cannot reach the VM over SSH to install the lab")?;
    let result = dozlab_lab::install::install(&vm, &lab).await;
    let ran = match &result {
        Ok(done) => done.background.as_ref().map(|(rel, o)| (rel.as_str(), o)),
        Err(e) => e.outcome().map(|o| ("intro background", o)),
    };
    if let Some((rel, o)) = ran {
        let head = format!(
            "== {rel} (exit {:?}, {:.1}s) ==\n",
            o.status,
            o.elapsed.as_secs_f64()
        );
        let _ = std::fs::write(ctx.log("lab"), [head.as_bytes(), &o.output].concat());
    }
    let done = result.map_err(anyhow::Error::from)?;
    let n = done.files.len();
    let background = done
        .background
        .map(|(rel, o)| {
            format!(
                ", intro background {rel} in {:.1}s",
                o.elapsed.as_secs_f64()
            )
        })
        .unwrap_or_default();
    ctx.done(format!(
        "{}: {n} asset{}{background}",
        cfg.record.title,
        if n == 1 { "" } else { "s" }
    ));
    Ok(())
}

/// SSH to the VM through the session's published loopback port.
fn ssh_target(ctx: &Ctx<'_>) -> dozlab_ssh::SshTarget {
    let shared = ctx.s.shared_dir();
    dozlab_ssh::SshTarget {
        host: "127.0.0.1".into(),
        port: ctx.s.ports.ssh.unwrap_or(22),
        user: "root".into(),
        key_path: shared.join("vm-ssh-key"),
        known_hosts_path: shared.join("host_known_hosts"),
        timeout: Duration::from_secs(30),
    }
}

/// The terminal's lab flags for `cfg`.
pub(crate) fn terminal_args(cfg: &Config, shared: &Path) -> Vec<String> {
    match &cfg.lab {
        Some(lab) => vec![
            "--lab-dir".into(),
            lab.dir.display().to_string(),
            "--lab-state".into(),
            shared.join("lab-state").display().to_string(),
        ],
        None => Vec::new(),
    }
}
