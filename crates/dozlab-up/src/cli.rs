//! Flags and entry points of `dozlab up|down|ls|logs`.
//!
//! Exit codes: 0 success; 1 a phase or component failed (the message has
//! the cause and the log tail); 2 bad flags or input (image not found, port
//! taken, bad name); 3 the host is not ready (not root, a tool missing).

use crate::checks::{self, TOOLS};
use crate::ctx::Config;
use crate::image;
use crate::launch;
use crate::procs;
use crate::report::{Console, ready_text};
use crate::state::{Layout, Session, State, StateError, validate_name};
use crate::supervisor;
use crate::teardown;
use dozlab_core::failure::{CmdResult, Failure};
use dozlab_core::netconfig::PortForward;
use dozlab_core::{ByteSize, exit};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Exit code when the host lacks privileges or tools.
pub const EXIT_HOST: u8 = 3;

/// Start a whole lab session on this machine.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Image: a rootfs.ext4, a directory with manifest.json, an http(s) URL,
    /// or a profile (minimal, vm, k8s, FILE.toml) [default: vm].
    #[arg(long, env = "DOZLAB_IMAGE")]
    pub image: Option<String>,
    /// Expected sha256 of an http(s) image (the file at the URL, or the image
    /// it decompresses to): verifies it and keys the download cache. Not
    /// needed when a manifest.json beside the image (or given as --image) lists it.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Session name [default: lab, lab-2, ...].
    #[arg(long)]
    pub name: Option<String>,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Size of the session's disk (the image copy is grown to it) [default: 4G, or the image's size when larger].
    #[arg(long)]
    pub disk: Option<ByteSize>,
    /// Host port for the terminal on 127.0.0.1 [default: 8081, or the next free one].
    #[arg(long)]
    pub port: Option<u16>,
    /// VMM: auto, qemu or firecracker (passed to `vm run`).
    #[arg(long, default_value = "auto")]
    pub vmm: String,
    /// Accelerator: auto, kvm or tcg (passed to `vm run`).
    #[arg(long, default_value = "auto")]
    pub accel: String,
    /// Also run VS Code (code-server from PATH) with DOCKER_HOST set to the VM.
    #[arg(long)]
    pub vscode: bool,
    /// Publish VM port VMPORT on 127.0.0.1:PORT (repeatable).
    #[arg(long = "forward", value_name = "PORT[:VMPORT]")]
    pub forwards: Vec<PortForward>,
    /// Return once the session is ready and leave it running in the background.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Seconds to wait for the VM to become ready.
    #[arg(long, default_value_t = 300)]
    pub ready_timeout: u64,
    /// Report ready only once the VM's Docker API answers too (by default the
    /// session is ready when the terminal works; Docker follows, see `dozlab ls`).
    #[arg(long)]
    pub wait_docker: bool,
    /// Do not give the VM internet access (no host NAT table, no forwarding).
    #[arg(long)]
    pub no_internet: bool,
    /// Cache for built and downloaded images.
    #[arg(long, env = "DOZLAB_CACHE")]
    pub cache: Option<PathBuf>,
    /// Snapshots of the booted VM (kept in CACHE/snapshots): auto = start from
    /// one when the cache has a matching one, else boot and save one; refresh
    /// = boot and replace it; off = always boot.
    #[arg(long, env = "DOZLAB_SNAPSHOT", value_parser = ["auto", "off", "refresh"], default_value = "auto")]
    pub snapshot: String,
    /// A lab to open beside the terminal: a directory, a .tar.gz, or its
    /// http(s) URL. Validated before anything starts; its assets are copied
    /// into the VM and its intro's background run once the VM is ready.
    #[arg(long, value_name = "DIR|URL")]
    pub lab: Option<String>,
    /// Expected sha256 of the --lab archive (recommended for URLs).
    #[arg(long, value_name = "HEX", requires = "lab")]
    pub lab_sha256: Option<String>,
    /// Internal: run as the detached supervisor of an already claimed session.
    #[arg(long, hide = true)]
    pub supervise_internal: bool,
}

fn host_failure(e: impl Into<anyhow::Error>) -> Failure {
    Failure::new(EXIT_HOST, e)
}

fn state_failure(e: StateError) -> Failure {
    match e {
        StateError::BadName(_) | StateError::Exists(_) | StateError::NotFound(_) => {
            Failure::usage(e)
        }
        e => Failure::new(exit::FAILURE, e),
    }
}

fn default_cache() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/dozlab")
}

/// Validates the flags into a [`Config`] (nothing is created yet).
fn config(args: &UpArgs, name: String) -> Result<Config, Failure> {
    let spec = image::parse_spec(args.image.as_deref()).map_err(Failure::usage)?;
    let label = match &spec {
        image::ImageSpec::Profile(p) => format!("profile {p}"),
        image::ImageSpec::Url(u) => u.clone(),
        image::ImageSpec::File(p) => p.display().to_string(),
    };
    let sha256 = match (&args.sha256, &spec) {
        (None, _) => None,
        (Some(h), image::ImageSpec::Url(_)) if is_sha256(h) => Some(h.to_ascii_lowercase()),
        (Some(h), image::ImageSpec::Url(_)) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--sha256 {h:?} is not a sha256 digest (64 hex digits, as printed by sha256sum)"
            )));
        }
        (Some(_), _) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--sha256 applies to http(s) images only (--image URL)"
            )));
        }
    };
    if args.cpus == 0 || args.memory < 128 {
        return Err(Failure::usage(anyhow::anyhow!(
            "--cpus must be at least 1 and --memory at least 128 (MiB)"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in &args.forwards {
        if !seen.insert(f.host) {
            return Err(Failure::usage(anyhow::anyhow!(
                "--forward {} is given twice",
                f.host
            )));
        }
    }
    Ok(Config {
        name,
        image: spec,
        image_label: label,
        sha256,
        cpus: args.cpus,
        memory_mib: args.memory,
        disk: args.disk.map(|d| d.0),
        port: args.port,
        vmm: args.vmm.clone(),
        accel: args.accel.clone(),
        vscode: args.vscode,
        forwards: args.forwards.clone(),
        ready_timeout: Duration::from_secs(args.ready_timeout.max(1)),
        wait_docker: args.wait_docker,
        detached: args.supervise_internal,
        internet: !args.no_internet,
        cache: args.cache.clone().unwrap_or_else(default_cache),
        snapshot: args.snapshot.clone(),
        lab: None,
    })
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The first free default name: `lab`, `lab-2`, ...
fn default_name(layout: &Layout) -> String {
    (1..)
        .map(|i| {
            if i == 1 {
                "lab".to_string()
            } else {
                format!("lab-{i}")
            }
        })
        .find(|n| !layout.run_dir(n).exists() && !crate::netns::exists(&format!("dozlab-{n}")))
        .expect("a free name")
}

/// Entry point of `dozlab up`.
pub fn run_up(args: UpArgs) -> CmdResult {
    checks::require_root().map_err(host_failure)?;
    checks::require_tools(TOOLS).map_err(host_failure)?;
    let layout = Layout::from_env();
    let name = match &args.name {
        Some(n) => {
            validate_name(n).map_err(state_failure)?;
            n.clone()
        }
        None => default_name(&layout),
    };
    let mut cfg = config(&args, name.clone())?;
    if args.supervise_internal {
        if let Some(src) = &args.lab {
            let lab = crate::lab::adopt(&layout.data_dir(&name), src)?;
            use_lab(&mut cfg, &args, lab)?;
        }
        let mut sink = launch::report_pipe().unwrap_or_else(|| Box::new(Console::default()));
        return finish(supervisor::supervise(&layout, &cfg, sink.as_mut()));
    }
    let lab = args
        .lab
        .as_deref()
        .map(|l| crate::lab::request(l, args.lab_sha256.as_deref()))
        .transpose()?;
    layout.claim(&name).map_err(state_failure)?;
    if let Some(req) = lab {
        // Fetched and validated before anything else is created.
        let fetched = crate::lab::fetch(req, &layout.data_dir(&name), &cfg.cache)
            .and_then(|lab| use_lab(&mut cfg, &args, lab));
        if let Err(e) = fetched {
            let _ = std::fs::remove_dir_all(layout.run_dir(&name));
            let _ = std::fs::remove_dir_all(layout.data_dir(&name));
            return Err(e);
        }
    }
    if args.detach {
        return launch::detached(&layout, &name, args.name.is_none());
    }
    let mut console = Console::default();
    finish(supervisor::supervise(&layout, &cfg, &mut console))
}

/// The session runs `lab` (and boots its image unless `--image` was given).
fn use_lab(cfg: &mut Config, args: &UpArgs, lab: crate::lab::LabConfig) -> Result<(), Failure> {
    if args.image.is_none() {
        crate::lab::apply_image(cfg, &lab)?;
    }
    cfg.lab = Some(lab);
    Ok(())
}

fn finish(r: Result<(), Failure>) -> CmdResult {
    r.map(|()| ExitCode::SUCCESS)
}

/// Stop local lab sessions and remove everything they created.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Sessions to stop.
    #[arg(required_unless_present = "all")]
    pub names: Vec<String>,
    /// Stop every session.
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    /// Seconds to wait for a session's supervisor (the VM's clean shutdown included).
    #[arg(long, default_value_t = 150)]
    pub timeout: u64,
}

/// Entry point of `dozlab down`.
pub fn run_down(args: DownArgs) -> CmdResult {
    checks::require_root().map_err(host_failure)?;
    let layout = Layout::from_env();
    let names = if args.all { layout.names() } else { args.names };
    let mut failed = Vec::new();
    for name in &names {
        let s = Session::load(&layout, name).map_err(state_failure)?;
        let t0 = Instant::now();
        let left = down_one(&layout, s, Duration::from_secs(args.timeout));
        if left.is_empty() {
            println!(
                "Session {name} stopped and removed ({:.1}s).",
                t0.elapsed().as_secs_f64()
            );
        } else {
            failed.push(format!("{name}: still present: {}", left.join(", ")));
        }
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Failure::new(
            exit::FAILURE,
            anyhow::anyhow!(failed.join("\n")),
        ))
    }
}

/// Asks the supervisor to stop; if it is gone (or hangs), removes the
/// session from its record. Returns what is left.
fn down_one(layout: &Layout, s: Session, timeout: Duration) -> Vec<String> {
    if let Some(sup) = s.supervisor.as_ref().filter(|p| procs::alive(p)) {
        procs::signal(sup, nix::sys::signal::Signal::SIGTERM);
        if !procs::wait_gone(sup, timeout) {
            eprintln!(
                "warning: the supervisor of {} did not stop; killing it",
                s.name
            );
            procs::signal(sup, nix::sys::signal::Signal::SIGKILL);
            procs::wait_gone(sup, Duration::from_secs(5));
        }
    }
    // The supervisor normally removed everything, its record included. If
    // not (killed, hung), the record still names what to remove.
    let latest = Session::load(layout, &s.name).unwrap_or(s);
    for p in teardown::teardown(layout, &latest) {
        eprintln!("warning: could not remove {p}");
    }
    teardown::leftovers(layout, &latest)
}

/// List local lab sessions.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Print the session records as a JSON array.
    #[arg(long)]
    pub json: bool,
    /// Also print the last sessions that ended, and why (from `ended.log`).
    #[arg(long)]
    pub ended: bool,
}

/// The state shown for a record: a session whose supervisor is gone is `dead`.
pub fn shown_state(s: &Session) -> String {
    let alive = s.supervisor.as_ref().is_some_and(procs::alive);
    match (s.state, alive) {
        (State::Failed, _) => "failed".into(),
        (_, false) => "dead (run `dozlab down` to clean up)".into(),
        (State::Starting, true) => match &s.current_phase {
            Some(p) => format!("starting ({p})"),
            None => "starting".into(),
        },
        (st, true) => st.to_string(),
    }
}

fn uptime(s: &Session) -> String {
    let secs = crate::state::unix_now().saturating_sub(s.started_at);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// Entry point of `dozlab ls`.
pub fn run_ls(args: LsArgs) -> CmdResult {
    let layout = Layout::from_env();
    let sessions: Vec<Session> = layout
        .names()
        .iter()
        .filter_map(|n| Session::load(&layout, n).ok())
        .collect();
    if args.json {
        let rows: Vec<serde_json::Value> = sessions
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).expect("serialises");
                v["shown_state"] = shown_state(s).into();
                v["terminal_url"] = s.terminal_url().into();
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("serialises")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.ended {
        let log = std::fs::read_to_string(layout.run_root.join("ended.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        println!("Ended (most recent last):");
        for l in &lines[lines.len().saturating_sub(10)..] {
            println!("  {l}");
        }
        println!();
    }
    if sessions.is_empty() {
        println!("No sessions. Start one with `dozlab up`.");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<10} {:<8} {:<26} {:<6} {:<16} IMAGE",
        "NAME", "STATE", "UPTIME", "TERMINAL", "SSH", "DOCKER"
    );
    for s in &sessions {
        let port = |p: Option<u16>| p.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let docker = match (s.ports.docker, s.docker_ready) {
            (Some(p), Some(false)) => format!("{p} (starting)"),
            (p, _) => port(p),
        };
        println!(
            "{:<16} {:<10} {:<8} {:<26} {:<6} {:<16} {}",
            s.name,
            shown_state(s),
            uptime(s),
            s.terminal_url(),
            port(s.ports.ssh),
            docker,
            s.image
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Show a local session's logs.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The session.
    pub name: String,
    /// One component: supervisor, init, network, vm, console, terminal, vscode or lab [default: all].
    #[arg(long, short = 'c')]
    pub component: Option<String>,
    /// Only the last N lines of each log.
    #[arg(long, short = 'n')]
    pub lines: Option<usize>,
    /// Keep printing what is appended (one component only) until the session ends.
    #[arg(long, short = 'f', requires = "component")]
    pub follow: bool,
    /// Print the connection details again (the block `up` prints when ready).
    #[arg(long)]
    pub info: bool,
}

/// Log components in display order.
pub const COMPONENTS: &[&str] = &[
    "supervisor",
    "init",
    "network",
    "vm",
    "console",
    "terminal",
    "vscode",
    "lab",
];

/// Entry point of `dozlab logs`.
pub fn run_logs(args: LogsArgs) -> CmdResult {
    let layout = Layout::from_env();
    let s = Session::load(&layout, &args.name).map_err(state_failure)?;
    if args.info {
        print!("{}", ready_text(&s));
        return Ok(ExitCode::SUCCESS);
    }
    let dir = s.logs_dir();
    let chosen: Vec<&str> = match &args.component {
        Some(c) if COMPONENTS.contains(&c.as_str()) => vec![c.as_str()],
        Some(c) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "unknown component {c:?}: use one of {}",
                COMPONENTS.join(", ")
            )));
        }
        None => COMPONENTS.to_vec(),
    };
    let single = chosen.len() == 1;
    for c in chosen {
        let path = dir.join(format!("{c}.log"));
        if !path.exists() {
            if single {
                eprintln!("(no {c} log yet: {})", path.display());
            }
            continue;
        }
        if !single {
            println!("==> {c} ({}) <==", path.display());
        }
        let text = match args.lines {
            Some(n) => crate::child::tail(&path, n),
            None => String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned(),
        };
        println!("{}", text.trim_end());
        if args.follow {
            follow(&path, &layout, &s.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints what is appended to `path` until the session's record is gone.
fn follow(path: &std::path::Path, layout: &Layout, name: &str) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let Ok(mut f) = std::fs::File::open(path) else {
        return;
    };
    let mut pos = f.seek(SeekFrom::End(0)).unwrap_or(0);
    while layout.record_path(name).exists() {
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(pos)).is_ok() && f.read_to_end(&mut buf).is_ok() {
            pos += buf.len() as u64;
            let _ = std::io::stdout().write_all(&buf);
            let _ = std::io::stdout().flush();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
