//! Command-line arguments and entry points of this component (placeholder until implemented).

use dozlab_core::failure::{CmdResult, Failure};

/// Arguments (not yet implemented).
#[derive(Debug, clap::Args)]
pub struct VmArgs {}

/// Entry point (not yet implemented).
pub fn run(_args: VmArgs) -> CmdResult {
    Err(Failure::new(1, anyhow::anyhow!("not implemented yet")))
}
