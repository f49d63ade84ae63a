//! Command line of `dozlab terminal` (serve) and `dozlab terminal replay FILE`.

use crate::auth::Auth;
use crate::proxy::{Cidr, TrustedProxies};
use crate::record::{self, Pace};
use crate::server::ConnLimits;
use crate::shell::{Limits, Registry};
use crate::ssh::SshTarget;
use crate::web::{self, AppState, SecureCookie, Settings};
use anyhow::Context as _;
use dozlab_core::failure::{CmdResult, Failure};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `dozlab terminal`: serve the web terminal, or replay a recording.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TerminalArgs {
    #[command(subcommand)]
    command: Option<TerminalCommand>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, clap::Subcommand)]
enum TerminalCommand {
    /// Play an asciicast v2 recording in this terminal.
    Replay(ReplayArgs),
}

/// Flags of the server.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TERMINAL_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// The VM's address.
    #[arg(long, env = "VM_IP", default_value = "172.16.0.2")]
    pub vm_ip: String,
    /// The VM's SSH port.
    #[arg(long, env = "VM_SSH_PORT", default_value_t = 22)]
    pub vm_ssh_port: u16,
    /// User to log into the VM as.
    #[arg(long, env = "SSH_USER", default_value = "root")]
    pub ssh_user: String,
    /// OpenSSH private key for the VM (written by `vm run`; may appear later).
    #[arg(long, env = "SSH_KEY_PATH", default_value = "/shared/vm-ssh-key")]
    pub ssh_key: PathBuf,
    /// known_hosts file with the VM's host key (written by `vm run`; may appear later).
    #[arg(long, env = "KNOWN_HOSTS_PATH", default_value = "/shared/known_hosts")]
    pub known_hosts: PathBuf,
    /// File holding the session password (first line). Overrides TERMINAL_PASSWORD.
    #[arg(long, env = "TERMINAL_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// The lab session id (names recordings).
    #[arg(long, env = "SESSION_ID", default_value = "local")]
    pub session_id: String,
    /// Record every shell as asciicast v2 into this directory.
    #[arg(long, env = "RECORD_DIR")]
    pub record_dir: Option<PathBuf>,
    /// Close a shell after this long without keyboard input ("0" = never). E.g. 90s, 30m, 2h.
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// How long a shell survives without a connected browser.
    #[arg(long, env = "GRACE_PERIOD", default_value = "5m", value_parser = parse_duration)]
    pub grace_period: Duration,
    /// An origin allowed to open the WebSocket besides the page's own (repeatable), e.g. https://lab.example.org.
    #[arg(
        long = "allowed-origin",
        env = "ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Maximum shells open at once.
    #[arg(long, env = "MAX_SHELLS", default_value_t = 8)]
    pub max_shells: usize,
    /// Largest WebSocket frame accepted from a browser; bigger ones close the socket with 1009.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    /// Output kept per shell for re-attach after a disconnect.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub scrollback_bytes: usize,
    /// Largest upload.
    #[arg(long, default_value_t = 1024 * 1024 * 1024)]
    pub max_upload_bytes: usize,
    /// When the session cookie is marked Secure: auto = behind TLS (X-Forwarded-Proto: https).
    #[arg(long, value_enum, default_value = "auto")]
    pub secure_cookie: SecureCookie,
    /// A reverse proxy (CIDR or address) whose X-Forwarded-For/-Proto are believed (repeatable).
    #[arg(
        long = "trusted-proxy",
        env = "TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<Cidr>,
    /// Time allowed for a request's head, and for the next request on a kept-alive connection.
    #[arg(long, env = "HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Close an HTTP connection (not a WebSocket) when no byte moved for this long.
    #[arg(long, env = "IDLE_CONNECTION_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_connection_timeout: Duration,
    /// Open connections at most, WebSockets included; further ones wait.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: usize,
    /// The lab panel (--lab-dir, --lab-state).
    #[command(flatten)]
    pub lab: crate::lab::LabArgs,
    /// Removed: use --trusted-proxy CIDR.
    #[arg(long, hide = true)]
    pub trust_forwarded_for: bool,
}

/// Flags of `replay`.
#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// The .cast file.
    file: PathBuf,
    /// Playback speed factor (2 = twice as fast).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Longest pause between events, in seconds.
    #[arg(long, default_value_t = 2.0)]
    idle_limit: f64,
    /// Print everything at once, without pauses.
    #[arg(long)]
    instant: bool,
}

/// Parses "90", "90s", "5m", "2h", "1d"; "0" means off where allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 30m, 2h)"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(n * secs))
}

/// Entry point.
pub fn run(args: TerminalArgs) -> CmdResult {
    match args.command {
        Some(TerminalCommand::Replay(r)) => replay(r),
        None => serve(args.serve),
    }
}

fn replay(args: ReplayArgs) -> CmdResult {
    if !(args.speed > 0.0 && args.speed.is_finite()) {
        return Err(Failure::usage(anyhow::anyhow!(
            "--speed must be a positive number"
        )));
    }
    let (_, events) = record::read_cast(&args.file).map_err(|e| match e {
        record::RecordError::Invalid { .. } => Failure::usage(e),
        e => Failure::new(1, e),
    })?;
    let pace = Pace {
        speed: if args.instant { 0.0 } else { args.speed },
        idle_limit: args.idle_limit.max(0.0),
    };
    let mut out = std::io::stdout().lock();
    record::replay(&events, pace, &mut out).context("writing to the terminal")?;
    Ok(ExitCode::SUCCESS)
}

fn read_password(args: &ServeArgs) -> Result<String, Failure> {
    let pw = match &args.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the password file {}", path.display()))
                .map_err(Failure::usage)?;
            text.lines().next().unwrap_or("").to_string()
        }
        None => std::env::var("TERMINAL_PASSWORD").unwrap_or_default(),
    };
    if pw.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "no session password: pass --password-file FILE or set TERMINAL_PASSWORD (the terminal never runs without one)"
        )));
    }
    Ok(pw)
}

/// Builds the state from the flags, validating them.
pub fn state_from_args(args: &ServeArgs) -> Result<AppState, Failure> {
    if args.trust_forwarded_for {
        return Err(Failure::usage(anyhow::anyhow!(
            "--trust-forwarded-for was removed: name the proxies to trust with --trusted-proxy CIDR (repeatable, or TRUSTED_PROXIES=cidr,cidr)"
        )));
    }
    let auth = Auth::new(&read_password(args)?).map_err(Failure::usage)?;
    if let Some(dir) = &args.record_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the recording directory {}", dir.display()))
            .map_err(Failure::usage)?;
    }
    if args.max_shells == 0 || args.max_frame_bytes == 0 || args.scrollback_bytes < 4096 {
        return Err(Failure::usage(anyhow::anyhow!(
            "--max-shells and --max-frame-bytes must be > 0 and --scrollback-bytes at least 4096"
        )));
    }
    let limits = conn_limits(args);
    if limits.max_connections <= args.max_shells
        || limits.header_timeout.is_zero()
        || limits.idle_timeout.is_zero()
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "--max-connections must be more than --max-shells, and --header-timeout and --idle-connection-timeout more than 0"
        )));
    }
    let settings = Settings {
        allowed_origins: args.allowed_origins.clone(),
        secure_cookie: args.secure_cookie,
        trusted_proxies: TrustedProxies(args.trusted_proxies.clone()),
        max_frame: args.max_frame_bytes,
        max_upload: args.max_upload_bytes,
        retry: Duration::from_secs(2),
        record_dir: args.record_dir.clone(),
        session_id: args.session_id.clone(),
    };
    let limits = Limits {
        scrollback: args.scrollback_bytes,
        grace: args.grace_period,
        idle: (!args.idle_timeout.is_zero()).then_some(args.idle_timeout),
        max_shells: args.max_shells,
    };
    let ssh = SshTarget {
        host: args.vm_ip.clone(),
        port: args.vm_ssh_port,
        user: args.ssh_user.clone(),
        key_path: args.ssh_key.clone(),
        known_hosts_path: args.known_hosts.clone(),
        timeout: Duration::from_secs(10),
    };
    Ok(AppState::new(settings, auth, Registry::new(limits), ssh))
}

fn conn_limits(args: &ServeArgs) -> ConnLimits {
    ConnLimits {
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_connection_timeout,
        max_connections: args.max_connections,
    }
}

fn serve(args: ServeArgs) -> CmdResult {
    let state = state_from_args(&args)?;
    let lab = args.lab.open(&args.session_id).map_err(Failure::usage)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(
            listen = %args.listen,
            vm = %format!("{}:{}", args.vm_ip, args.vm_ssh_port),
            "web terminal serving"
        );
        let shells = state.0.shells.clone();
        // On SIGTERM, end the shells first: their sockets get `exit` and close.
        let shutdown = async move {
            shutdown_signal().await;
            tracing::info!("shutting down: closing shells");
            shells.close_all();
        };
        if let Some(panel) = &lab {
            crate::labsetup::spawn_start(panel.clone(), state.0.ssh.clone(), args.lab.lab_prepare);
        }
        crate::server::serve(
            listener,
            web::app_with_lab(state, lab),
            conn_limits(&args),
            shutdown,
        )
        .await;
        tracing::info!("web terminal stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5 min").is_err());
        assert!(parse_duration("m").is_err());
    }
}
