//! The `dozlab` binary: a thin clap front over the component crates.
//!
//! Every container of a lab-session pod runs this same binary with a different
//! subcommand. `main` sets up logging, dispatches, prints a failed command's
//! error chain once and exits with the component's documented code.

use clap::{Parser, Subcommand};
use dozlab_core::failure::CmdResult;
use std::process::ExitCode;

/// Hands-on technical labs: a real Linux microVM per learner, in the browser.
#[derive(Debug, Parser)]
#[command(name = "dozlab", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build, verify and serve guest rootfs images (the rootfs manager).
    Image(dozlab_image::cli::ImageArgs),
    /// Download, verify and grow the session's rootfs image (init container).
    InitRootfs(dozlab_fetch::cli::Args),
    /// Wire the tap device, NAT and port forwarding for the VM (init container).
    NetworkSetup(dozlab_net::cli::Args),
    /// Boot and supervise the session's microVM.
    Vm(dozlab_vm::cli::VmArgs),
    /// Serve the web terminal into the VM.
    Terminal(dozlab_terminal::cli::TerminalArgs),
    /// Generate per-student sessions for a class (FluxCD HelmReleases).
    Classroom(dozlab_classroom::cli::ClassroomArgs),
    /// Helpers for one Helm-deployed session (values files).
    Session(dozlab_classroom::cli::SessionArgs),
    /// Start a whole lab session on this machine.
    Up(dozlab_up::cli::UpArgs),
    /// Stop local lab sessions and remove everything they created.
    Down(dozlab_up::cli::DownArgs),
    /// List local lab sessions.
    Ls(dozlab_up::cli::LsArgs),
    /// Show a local session's logs.
    Logs(dozlab_up::cli::LogsArgs),
}

fn dispatch(command: Command) -> CmdResult {
    match command {
        Command::Image(a) => dozlab_image::cli::run(a),
        Command::InitRootfs(a) => dozlab_fetch::cli::run(a),
        Command::NetworkSetup(a) => dozlab_net::cli::run(a),
        Command::Vm(a) => dozlab_vm::cli::run(a),
        Command::Terminal(a) => dozlab_terminal::cli::run(a),
        Command::Classroom(a) => dozlab_classroom::cli::run_classroom(a),
        Command::Session(a) => dozlab_classroom::cli::run_session(a),
        Command::Up(a) => dozlab_up::cli::run_up(a),
        Command::Down(a) => dozlab_up::cli::run_down(a),
        Command::Ls(a) => dozlab_up::cli::run_ls(a),
        Command::Logs(a) => dozlab_up::cli::run_logs(a),
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DOZLAB_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            failure.exit_code()
        }
    }
}
