//! `dozlab vm run|status`: boot and supervise the session's microVM.
//!
//! `args` holds the flags and `cli` dispatches them; `settings` is what
//! `vm run` is asked (plain values), which `config` turns (with
//! `/shared/network-config`) into a checked plan before anything starts;
//! `bootfiles`, `vmlinux`, `identity` and `inject` prepare the image and
//! kernel offline; `qemu` and `firecracker` are the two backends;
//! `console`, `ready` and `statusd` watch the guest; `supervisor` ties them
//! together; `status` is the probe.

pub mod args;
pub mod bootfiles;
pub mod cli;
pub mod cmdline;
pub mod config;
pub mod console;
pub mod firecracker;
pub mod hosttsc;
pub mod identity;
pub mod inject;
pub mod qemu;
pub mod ready;
pub mod settings;
pub mod status;
pub mod statusd;
pub mod supervisor;
pub mod vmlinux;
pub mod vmm;
pub mod vmspec;
