//! The `dozlab` binary: a thin clap front over the component crates.
//!
//! Every container of a lab-session pod runs this same binary with a different
//! subcommand. `main` sets up logging, dispatches, prints a failed command's
//! error chain once and exits with the component's documented code.

use clap::{Parser, Subcommand};
use dozlab_core::failure::CmdResult;
use std::process::ExitCode;
use tracing_subscriber::filter::Targets;

/// Hands-on technical labs: a real Linux microVM per learner, in the browser.
#[derive(Debug, Parser)]
#[command(name = "dozlab", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// The variants differ in size (the terminal's flags are the most), but the
// command is parsed once per process: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
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
    /// List, remove and prune the node's VM snapshots.
    Snapshot(dozlab_vm::snapcli::SnapshotArgs),
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
    /// Labs in the Killercoda scenario format: validate, test headless.
    Lab(dozlab_lab::cli::LabArgs),
}

fn dispatch(command: Command) -> CmdResult {
    match command {
        Command::Image(a) => dozlab_image::cli::run(a),
        Command::InitRootfs(a) => dozlab_fetch::cli::run(a),
        Command::NetworkSetup(a) => dozlab_net::cli::run(a),
        Command::Vm(a) => dozlab_vm::cli::run(a),
        Command::Snapshot(a) => dozlab_vm::snapcli::run(a),
        Command::Terminal(a) => dozlab_terminal::cli::run(a),
        Command::Classroom(a) => dozlab_classroom::cli::run_classroom(a),
        Command::Session(a) => dozlab_classroom::cli::run_session(a),
        Command::Up(a) => dozlab_up::cli::run_up(a),
        Command::Down(a) => dozlab_up::cli::run_down(a),
        Command::Ls(a) => dozlab_up::cli::run_ls(a),
        Command::Logs(a) => dozlab_up::cli::run_logs(a),
        Command::Lab(a) => dozlab_lab::cli::run(a),
    }
}

/// The log filter: `DOZLAB_LOG`, else `RUST_LOG`, else `info`, each a list
/// of `target=level` directives (`info`, `dozlab_vm=debug,warn`). A value
/// that does not parse is skipped.
fn log_filter() -> Targets {
    filter_from(["DOZLAB_LOG", "RUST_LOG"].map(|var| std::env::var(var).ok()))
}

/// The first of `values` that is set and parses, else `info`.
fn filter_from(values: impl IntoIterator<Item = Option<String>>) -> Targets {
    values
        .into_iter()
        .flatten()
        .find_map(|value| value.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
}

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    tracing_subscriber::registry()
        .with(fmt)
        .with(log_filter())
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

#[cfg(test)]
mod tests {
    use super::filter_from;
    use tracing::Level;

    #[test]
    fn log_filter_takes_the_first_value_that_parses() {
        let f = filter_from([None, Some("dozlab_vm=debug,warn".into())]);
        assert!(f.would_enable("dozlab_vm::qemu", &Level::DEBUG));
        assert!(!f.would_enable("dozlab_up", &Level::INFO));
        let f = filter_from([Some("=bad=".into()), Some("error".into())]);
        assert!(!f.would_enable("dozlab_up", &Level::WARN));
        let f = filter_from([None, None]);
        assert!(f.would_enable("anything", &Level::INFO));
        assert!(!f.would_enable("anything", &Level::DEBUG));
    }
}
