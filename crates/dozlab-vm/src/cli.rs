//! Entry points of `dozlab vm run|status`: dispatch of the parsed
//! [`VmArgs`] (defined in [`crate::args`]) to the supervisor and the probe.

pub use crate::args::{RunArgs, StatusArgs, VmArgs, VmCommand};
use dozlab_core::failure::CmdResult;

/// Entry point of `dozlab vm`.
pub fn run(args: VmArgs) -> CmdResult {
    match args.command {
        VmCommand::Run(a) => crate::supervisor::main((*a).into()),
        VmCommand::Status(a) => crate::status::main(&a.state_dir, a.json),
    }
}
