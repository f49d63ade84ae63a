//! The command-line arguments of `dozlab vm run|status` (clap types, each
//! flag with an environment variable fallback), turned into the plain
//! [`RunSettings`] the planner takes.
//!
//! Environment variable names are the original `firecracker-vm` container's
//! (`ROOTFS_PATH`, `KERNEL_PATH`, `CPU_COUNT`, `MEMORY`, `TAP_DEVICE_NAME`,
//! `VM_IP`, `GATEWAY_IP`, `SESSION_ID`) so existing pod specs keep working.

use crate::qemu::Machine;
use crate::settings::{self, AccelChoice, DockerCheck, RunSettings, SnapshotMode, VmmChoice};
use dozlab_core::netconfig::PortForward;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// `dozlab vm`: boot and supervise the session's microVM.
#[derive(Debug, clap::Args)]
pub struct VmArgs {
    #[command(subcommand)]
    pub command: VmCommand,
}

/// The `vm` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum VmCommand {
    /// Boot the VM from the rootfs image and supervise it until SIGTERM.
    Run(Box<RunArgs>),
    /// Print the VM's phase; exit 0 only when it is ready (a probe).
    Status(StatusArgs),
}

/// `dozlab vm run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The guest's ext4 root filesystem image (booted read-write).
    #[arg(long, env = "ROOTFS_PATH")]
    pub rootfs: PathBuf,
    /// Guest kernel (bzImage or ELF vmlinux). Default: /boot/vmlinuz-* inside the image.
    #[arg(long, env = "KERNEL_PATH")]
    pub kernel: Option<PathBuf>,
    /// Initramfs. Default: the image's /boot/initrd.img-<ver> when the kernel comes from the image.
    #[arg(long, env = "INITRD_PATH")]
    pub initrd: Option<PathBuf>,
    /// Number of vCPUs (1-32).
    #[arg(long, env = "CPU_COUNT", default_value_t = settings::CPUS)]
    pub cpus: u32,
    /// Guest memory in MiB (128-65536, at most the host's memory).
    #[arg(long, env = "MEMORY", default_value_t = settings::MEMORY_MIB)]
    pub memory: u32,
    /// Tap device on the host side [default: from the network config, else tap0].
    #[arg(long, env = "TAP_DEVICE_NAME")]
    pub tap: Option<String>,
    /// The VM's IPv4 address [default: from the network config, else 172.16.0.2].
    #[arg(long, env = "VM_IP")]
    pub vm_ip: Option<Ipv4Addr>,
    /// The tap's address, the VM's gateway [default: from the network config, else 172.16.0.1].
    #[arg(long, env = "GATEWAY_IP")]
    pub gateway_ip: Option<Ipv4Addr>,
    /// Prefix length of the tap link [default: from the network config, else 24].
    #[arg(long, env = "PREFIX_LEN")]
    pub prefix_len: Option<u8>,
    /// The VM NIC's MAC [default: from the network config, else derived from the VM IP].
    #[arg(long, env = "VM_MAC")]
    pub mac: Option<String>,
    /// Session identifier (names the VM, the keys' comments, the jail).
    #[arg(long, env = "SESSION_ID", default_value = settings::SESSION_ID)]
    pub session_id: String,
    /// The VMM.
    #[arg(long, env = "DOZLAB_VMM", value_enum, default_value_t = VmmChoice::Auto)]
    pub vmm: VmmChoice,
    /// QEMU's accelerator (Firecracker always uses KVM).
    #[arg(long, env = "DOZLAB_ACCEL", value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// QEMU machine type.
    #[arg(long, env = "DOZLAB_QEMU_MACHINE", value_enum, default_value_t = Machine::Auto)]
    pub machine: Machine,
    /// Network config written by `dozlab network-setup` (read when it exists; flags win).
    #[arg(long, env = "NETWORK_CONFIG", default_value = dozlab_core::netconfig::DEFAULT_PATH)]
    pub network_config: PathBuf,
    /// Directory for status.json, extracted kernel/initrd, sockets.
    #[arg(long, env = "DOZLAB_VM_STATE_DIR", default_value = settings::STATE_DIR)]
    pub state_dir: PathBuf,
    /// Serve GET /healthz, /readyz, /status on this address (e.g. 0.0.0.0:8082).
    #[arg(long, env = "STATUS_LISTEN")]
    pub status_listen: Option<SocketAddr>,
    /// Where to write the session's private SSH key (0600; PATH.pub beside it).
    #[arg(long, env = "SSH_KEY_PATH", default_value = settings::SSH_KEY_OUT)]
    pub ssh_key_out: PathBuf,
    /// Where to write the known_hosts line for the VM.
    #[arg(long, env = "KNOWN_HOSTS_PATH", default_value = settings::KNOWN_HOSTS_OUT)]
    pub known_hosts_out: PathBuf,
    /// Copy the raw guest console to this file.
    #[arg(long, env = "CONSOLE_LOG")]
    pub console_log: Option<PathBuf>,
    /// Guest ports that must accept connections before the VM counts as ready,
    /// PORT or HOSTPORT:VMPORT (repeatable) [default: the network config's FORWARD_PORTS].
    #[arg(long = "forward-port", env = "FORWARD_PORTS", value_delimiter = ',')]
    pub forward_ports: Vec<PortForward>,
    /// The guest sshd's port.
    #[arg(long, env = "VM_SSH_PORT", default_value_t = settings::SSH_PORT)]
    pub ssh_port: u16,
    /// Wait for the guest's Docker API (tcp 2375) before ready.
    #[arg(long, env = "DOZLAB_DOCKER_CHECK", value_enum, default_value_t = DockerCheck::Auto)]
    pub docker_check: DockerCheck,
    /// Extra kernel command-line arguments.
    #[arg(long, env = "KERNEL_ARGS")]
    pub append: Option<String>,
    /// QEMU binary.
    #[arg(long, env = "QEMU_BIN", default_value = settings::QEMU_BIN)]
    pub qemu_bin: PathBuf,
    /// Firecracker binary.
    #[arg(long, env = "FIRECRACKER_BIN", default_value = settings::FIRECRACKER_BIN)]
    pub firecracker_bin: PathBuf,
    /// Run Firecracker under this jailer binary.
    #[arg(long, env = "JAILER_BIN")]
    pub jailer: Option<PathBuf>,
    /// The jailer's --uid.
    #[arg(long, env = "JAILER_UID", default_value_t = 0)]
    pub jailer_uid: u32,
    /// The jailer's --gid.
    #[arg(long, env = "JAILER_GID", default_value_t = 0)]
    pub jailer_gid: u32,
    /// The jailer's --chroot-base-dir.
    #[arg(long, env = "JAILER_CHROOT_BASE", default_value = settings::JAILER_CHROOT_BASE)]
    pub jailer_chroot_base: PathBuf,
    /// Seconds from start until the VM must be ready.
    #[arg(long, env = "BOOT_TIMEOUT", default_value_t = settings::BOOT_TIMEOUT_S)]
    pub boot_timeout: u64,
    /// Seconds a guest gets to shut down after SIGTERM before it is killed.
    #[arg(long, env = "STOP_TIMEOUT", default_value_t = settings::STOP_TIMEOUT_S)]
    pub stop_timeout: u64,
    /// With --accel auto: seconds the kernel gets under KVM to print its banner before TCG is tried.
    #[arg(long, env = "KVM_PROBE_TIMEOUT", default_value_t = settings::KVM_PROBE_TIMEOUT_S)]
    pub kvm_probe_timeout: u64,
    /// Snapshots (QEMU): auto = restore from a matching snapshot, else boot
    /// and save one when ready; refresh = boot and replace it; off = neither.
    #[arg(long, env = "SNAPSHOT", value_enum, default_value_t = SnapshotMode::Off)]
    pub snapshot: SnapshotMode,
    /// The node-local snapshot cache directory (needed unless --snapshot off).
    #[arg(long, env = "SNAPSHOT_CACHE")]
    pub snapshot_cache: Option<PathBuf>,
    /// The image's sha256 (64 hex digits), keying snapshots when no manifest.json is beside the rootfs.
    #[arg(long, env = "IMAGE_SHA256", value_name = "HEX")]
    pub image_sha256: Option<String>,
}

/// `dozlab vm status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The supervisor's state directory.
    #[arg(long, env = "DOZLAB_VM_STATE_DIR", default_value = settings::STATE_DIR)]
    pub state_dir: PathBuf,
    /// Print status.json instead of text.
    #[arg(long)]
    pub json: bool,
}

impl From<RunArgs> for RunSettings {
    fn from(a: RunArgs) -> Self {
        Self {
            rootfs: a.rootfs,
            kernel: a.kernel,
            initrd: a.initrd,
            cpus: a.cpus,
            memory: a.memory,
            tap: a.tap,
            vm_ip: a.vm_ip,
            gateway_ip: a.gateway_ip,
            prefix_len: a.prefix_len,
            mac: a.mac,
            session_id: a.session_id,
            vmm: a.vmm,
            accel: a.accel,
            machine: a.machine,
            network_config: a.network_config,
            state_dir: a.state_dir,
            status_listen: a.status_listen,
            ssh_key_out: a.ssh_key_out,
            known_hosts_out: a.known_hosts_out,
            console_log: a.console_log,
            forward_ports: a.forward_ports,
            ssh_port: a.ssh_port,
            docker_check: a.docker_check,
            append: a.append,
            qemu_bin: a.qemu_bin,
            firecracker_bin: a.firecracker_bin,
            jailer: a.jailer,
            jailer_uid: a.jailer_uid,
            jailer_gid: a.jailer_gid,
            jailer_chroot_base: a.jailer_chroot_base,
            boot_timeout: a.boot_timeout,
            stop_timeout: a.stop_timeout,
            kvm_probe_timeout: a.kvm_probe_timeout,
            snapshot: a.snapshot,
            snapshot_cache: a.snapshot_cache,
            image_sha256: a.image_sha256.filter(|s| !s.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        a: RunArgs,
    }

    /// Parses `argv` with every environment fallback switched off.
    fn parse(argv: &[&str]) -> RunSettings {
        let cmd = Wrap::command().mut_args(|a| a.env(None::<&str>));
        let m = cmd.try_get_matches_from(argv).unwrap();
        Wrap::from_arg_matches(&m).unwrap().a.into()
    }

    #[test]
    fn flag_defaults_are_the_settings_defaults() {
        assert_eq!(
            parse(&["x", "--rootfs", "/r.ext4"]),
            RunSettings::new("/r.ext4")
        );
    }

    #[test]
    fn flags_land_in_their_settings() {
        let s = parse(&[
            "x",
            "--rootfs",
            "/r",
            "--vm-ip",
            "10.0.0.5",
            "--tap",
            "tap3",
            "--memory",
            "2048",
            "--vmm",
            "qemu",
            "--accel",
            "tcg",
            "--forward-port",
            "8000:80,22",
        ]);
        let want = RunSettings {
            vm_ip: Some(Ipv4Addr::new(10, 0, 0, 5)),
            tap: Some("tap3".into()),
            memory: 2048,
            vmm: VmmChoice::Qemu,
            accel: AccelChoice::Tcg,
            forward_ports: vec!["8000:80".parse().unwrap(), "22".parse().unwrap()],
            ..RunSettings::new("/r")
        };
        assert_eq!(s, want);
    }
}
