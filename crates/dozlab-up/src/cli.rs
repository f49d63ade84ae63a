//! Command-line arguments and entry points of this component (placeholder until implemented).

use dozlab_core::failure::{CmdResult, Failure};

/// Arguments (not yet implemented).
#[derive(Debug, clap::Args)]
pub struct UpArgs {}

/// Entry point (not yet implemented).
pub fn run_up(_args: UpArgs) -> CmdResult {
    Err(Failure::new(1, anyhow::anyhow!("not implemented yet")))
}

/// Arguments (not yet implemented).
#[derive(Debug, clap::Args)]
pub struct DownArgs {}

/// Entry point (not yet implemented).
pub fn run_down(_args: DownArgs) -> CmdResult {
    Err(Failure::new(1, anyhow::anyhow!("not implemented yet")))
}

/// Arguments (not yet implemented).
#[derive(Debug, clap::Args)]
pub struct LsArgs {}

/// Entry point (not yet implemented).
pub fn run_ls(_args: LsArgs) -> CmdResult {
    Err(Failure::new(1, anyhow::anyhow!("not implemented yet")))
}

/// Arguments (not yet implemented).
#[derive(Debug, clap::Args)]
pub struct LogsArgs {}

/// Entry point (not yet implemented).
pub fn run_logs(_args: LogsArgs) -> CmdResult {
    Err(Failure::new(1, anyhow::anyhow!("not implemented yet")))
}
