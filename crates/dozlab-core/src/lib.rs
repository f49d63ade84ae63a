//! Types and small helpers shared by every Dozlab component.
//!
//! Nothing here talks to the network or spawns processes: this crate holds the
//! contracts between components (the image manifest written by `image build`
//! and read by `init-rootfs`, the network config file written by
//! `network-setup` and read by `vm run`, the VM status file read by probes and
//! `dozlab up`), plus the exit-code convention of the `dozlab` binary.

pub mod atomic;
pub mod exe;
pub mod failure;
pub mod manifest;
pub mod netconfig;
pub mod size;
pub mod vmstatus;

pub use failure::{Failure, error_chain, exit};
pub use size::ByteSize;
