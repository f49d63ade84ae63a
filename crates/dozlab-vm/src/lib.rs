//! `dozlab vm run|status`: boot and supervise the session's microVM.
//!
//! `args` holds the flags and `cli` dispatches them; `settings` is what
//! `vm run` is asked (plain values), which `config` turns (with
//! `/shared/network-config`) into a checked plan before anything starts;
//! `bootfiles`, `vmlinux`, `identity` and `inject` prepare the image and
//! kernel offline; `qemu` and `firecracker` are the two backends;
//! `console`, `ready` and `statusd` watch the guest; `supervisor` ties them
//! together; `status` is the probe. `snapshot` saves and restores booted
//! VMs (QEMU) through `qmp`, `snapdisk` and the `snapcache`, and re-keys a
//! restored guest through its agent (`qga`); `snapcli` is `dozlab snapshot`.

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
pub mod qga;
pub mod qmp;
pub mod ready;
pub mod settings;
pub mod snapcache;
pub mod snapcli;
pub mod snapdisk;
pub mod snapshot;
pub mod status;
pub mod statusd;
pub mod supervisor;
pub mod vmlinux;
pub mod vmm;
pub mod vmspec;
