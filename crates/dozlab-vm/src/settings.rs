//! What `vm run` is asked to do, as plain values whatever their source
//! (flags and environment in [`crate::args`], tests, other callers): the
//! input of [`crate::config::plan`], which checks it.
//!
//! The defaults live here once; the flags' defaults name these constants.

use crate::qemu::Machine;
use dozlab_core::netconfig::PortForward;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Default vCPU count.
pub const CPUS: u32 = 1;
/// Default guest memory, MiB.
pub const MEMORY_MIB: u32 = 1024;
/// Default session id.
pub const SESSION_ID: &str = "local";
/// Default state directory (also `vm status`'s).
pub const STATE_DIR: &str = "/run/dozlab/vm";
/// Default path of the session's private SSH key.
pub const SSH_KEY_OUT: &str = "/shared/vm-ssh-key";
/// Default path of the VM's known_hosts file.
pub const KNOWN_HOSTS_OUT: &str = "/shared/known_hosts";
/// Default guest sshd port.
pub const SSH_PORT: u16 = 22;
/// Default QEMU binary.
pub const QEMU_BIN: &str = "qemu-system-x86_64";
/// Default Firecracker binary.
pub const FIRECRACKER_BIN: &str = "firecracker";
/// Default jailer chroot base.
pub const JAILER_CHROOT_BASE: &str = "/srv/jailer";
/// Default seconds until the VM must be ready.
pub const BOOT_TIMEOUT_S: u64 = 300;
/// Default seconds a guest gets to shut down.
pub const STOP_TIMEOUT_S: u64 = 30;
/// Default seconds the kernel gets under KVM to print its banner.
pub const KVM_PROBE_TIMEOUT_S: u64 = 10;

/// Which VMM runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VmmChoice {
    /// Firecracker when its binary and a working /dev/kvm exist, else QEMU.
    Auto,
    Firecracker,
    Qemu,
}

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM when /dev/kvm opens and the guest kernel starts under it, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// Whether readiness waits for the guest's Docker API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DockerCheck {
    /// When manifest.json beside the image says so (else: the image has dockerd).
    Auto,
    On,
    Off,
}

/// Whether `vm run` restores from, and saves, snapshots of the booted VM
/// (see docs/snapshot.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SnapshotMode {
    /// Restore from a matching snapshot in the cache; without one, boot and
    /// save one when the VM is ready.
    Auto,
    /// Boot normally; neither read nor write the cache.
    Off,
    /// Boot normally and replace the cache's snapshot with a new one.
    Refresh,
}

impl SnapshotMode {
    /// `auto`, `off` or `refresh`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::Auto => "auto",
            SnapshotMode::Off => "off",
            SnapshotMode::Refresh => "refresh",
        }
    }
}

/// Everything `vm run` is asked to do; see the flags of the same names in
/// [`crate::args::RunArgs`] for each field's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    pub rootfs: PathBuf,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cpus: u32,
    /// MiB.
    pub memory: u32,
    pub tap: Option<String>,
    pub vm_ip: Option<Ipv4Addr>,
    pub gateway_ip: Option<Ipv4Addr>,
    pub prefix_len: Option<u8>,
    pub mac: Option<String>,
    pub session_id: String,
    pub vmm: VmmChoice,
    pub accel: AccelChoice,
    pub machine: Machine,
    pub network_config: PathBuf,
    pub state_dir: PathBuf,
    pub status_listen: Option<SocketAddr>,
    pub ssh_key_out: PathBuf,
    pub known_hosts_out: PathBuf,
    pub console_log: Option<PathBuf>,
    pub forward_ports: Vec<PortForward>,
    pub ssh_port: u16,
    pub docker_check: DockerCheck,
    pub append: Option<String>,
    pub qemu_bin: PathBuf,
    pub firecracker_bin: PathBuf,
    pub jailer: Option<PathBuf>,
    pub jailer_uid: u32,
    pub jailer_gid: u32,
    pub jailer_chroot_base: PathBuf,
    /// Seconds.
    pub boot_timeout: u64,
    /// Seconds.
    pub stop_timeout: u64,
    /// Seconds.
    pub kvm_probe_timeout: u64,
    pub snapshot: SnapshotMode,
    /// The snapshot cache directory (needed unless `snapshot` is off).
    pub snapshot_cache: Option<PathBuf>,
    /// The image's sha256, keying snapshots when no manifest.json is beside the rootfs.
    pub image_sha256: Option<String>,
}

impl RunSettings {
    /// The defaults, for the image at `rootfs`.
    pub fn new(rootfs: impl Into<PathBuf>) -> Self {
        Self {
            rootfs: rootfs.into(),
            kernel: None,
            initrd: None,
            cpus: CPUS,
            memory: MEMORY_MIB,
            tap: None,
            vm_ip: None,
            gateway_ip: None,
            prefix_len: None,
            mac: None,
            session_id: SESSION_ID.into(),
            vmm: VmmChoice::Auto,
            accel: AccelChoice::Auto,
            machine: Machine::Auto,
            network_config: dozlab_core::netconfig::DEFAULT_PATH.into(),
            state_dir: STATE_DIR.into(),
            status_listen: None,
            ssh_key_out: SSH_KEY_OUT.into(),
            known_hosts_out: KNOWN_HOSTS_OUT.into(),
            console_log: None,
            forward_ports: Vec::new(),
            ssh_port: SSH_PORT,
            docker_check: DockerCheck::Auto,
            append: None,
            qemu_bin: QEMU_BIN.into(),
            firecracker_bin: FIRECRACKER_BIN.into(),
            jailer: None,
            jailer_uid: 0,
            jailer_gid: 0,
            jailer_chroot_base: JAILER_CHROOT_BASE.into(),
            boot_timeout: BOOT_TIMEOUT_S,
            stop_timeout: STOP_TIMEOUT_S,
            kvm_probe_timeout: KVM_PROBE_TIMEOUT_S,
            snapshot: SnapshotMode::Off,
            snapshot_cache: None,
            image_sha256: None,
        }
    }
}
