//! Command-line arguments and entry points of this component (placeholder until implemented).

use dozlab_core::failure::{CmdResult, Failure};

/// Arguments (not yet implemented).
#[derive(Debug, clap::Args)]
pub struct ClassroomArgs {}

/// Entry point (not yet implemented).
pub fn run_classroom(_args: ClassroomArgs) -> CmdResult {
    Err(Failure::new(1, anyhow::anyhow!("not implemented yet")))
}

/// Arguments (not yet implemented).
#[derive(Debug, clap::Args)]
pub struct SessionArgs {}

/// Entry point (not yet implemented).
pub fn run_session(_args: SessionArgs) -> CmdResult {
    Err(Failure::new(1, anyhow::anyhow!("not implemented yet")))
}
