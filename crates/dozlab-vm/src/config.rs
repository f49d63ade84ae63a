//! Turns `vm run`'s [`RunSettings`] (and `/shared/network-config`) into a
//! checked [`Plan`]. Every user mistake is found here, before anything is
//! created: no key written, no VMM started. The planner reads no
//! environment variable: the settings are all it is asked.
//!
//! Precedence for network values: the settings (from a flag or its
//! environment variable, parsed by the caller), then the network config file
//! (when it exists), then the defaults (`tap0`, `172.16.0.2`, `172.16.0.1`,
//! `/24`, a MAC derived from the VM IP).

use crate::bootfiles::{self, BootFilesError};
use crate::cmdline::{GuestNet, mac_for, same_subnet, valid_mac};
use crate::qemu::{Accel, Machine};
use crate::settings::{AccelChoice, DockerCheck, RunSettings, VmmChoice};
use dozlab_core::exe::which;
use dozlab_core::netconfig::NetworkConfig;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A user mistake found before start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--cpus {0} is out of range: use 1 to 32")]
    Cpus(u32),
    #[error("--memory {0} MiB is out of range: use 128 to {1} MiB")]
    Memory(u32, u64),
    #[error("--session-id {0:?}: use 1-64 letters, digits, '-', '_' or '.'")]
    SessionId(String),
    #[error("cannot read the network config {path}: {why}")]
    NetConfig { path: PathBuf, why: String },
    #[error("{0}")]
    Network(String),
    #[error(
        "tap device {0:?} does not exist (or is not a tap): run `dozlab network-setup` first, or pass --tap"
    )]
    NoTap(String),
    #[error("rootfs {path}: {why}; pass --rootfs (ROOTFS_PATH) pointing at the rootfs.ext4 image")]
    Rootfs { path: PathBuf, why: String },
    #[error(transparent)]
    Image(#[from] BootFilesError),
    #[error("{what} {path} does not exist or is not a readable file")]
    BootFile { what: &'static str, path: PathBuf },
    #[error("{0}")]
    Vmm(String),
    #[error("{0}")]
    Machine(String),
    #[error("{0}")]
    Snapshot(String),
}

/// Where a kernel or initrd comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFile {
    /// A file on the host.
    Host(PathBuf),
    /// A path inside the image, extracted to the state directory before boot.
    Image(String),
}

/// The VMM of one boot attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    Firecracker,
    Qemu,
}

impl Vmm {
    /// `firecracker` or `qemu`.
    pub fn as_str(self) -> &'static str {
        match self {
            Vmm::Firecracker => "firecracker",
            Vmm::Qemu => "qemu",
        }
    }
}

/// One way to boot; `Plan::attempts` lists them in the order tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub vmm: Vmm,
    pub accel: Accel,
}

/// Running Firecracker under its jailer.
#[derive(Debug, Clone)]
pub struct Jailer {
    pub bin: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub chroot_base: PathBuf,
}

/// A checked description of the VM to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub session_id: String,
    pub rootfs: PathBuf,
    pub kernel: BootFile,
    pub initrd: Option<BootFile>,
    pub cpus: u32,
    pub memory_mib: u32,
    pub net: GuestNet,
    pub tap: String,
    pub attempts: Vec<Attempt>,
    pub qemu_bin: Option<PathBuf>,
    pub firecracker_bin: Option<PathBuf>,
    pub jailer: Option<Jailer>,
    /// The QEMU machine, resolved (`auto` → `microvm` or `q35`).
    pub machine: Machine,
    /// The ELF kernel for Firecracker when one ships beside the kernel
    /// (the Dozlab kernel's `vmlinux`); otherwise it is extracted from the bzImage.
    pub vmlinux: Option<BootFile>,
    pub state_dir: PathBuf,
    pub status_listen: Option<SocketAddr>,
    pub ssh_key_out: PathBuf,
    pub known_hosts_out: PathBuf,
    pub console_log: Option<PathBuf>,
    pub ssh_port: u16,
    /// Guest ports (other than ssh and docker) that must accept connections.
    pub tcp_ports: Vec<u16>,
    pub docker: bool,
    pub append: Option<String>,
    pub boot_timeout: Duration,
    pub stop_timeout: Duration,
    pub kvm_probe_timeout: Duration,
    /// Where snapshots are read and written; `None` when snapshots are off.
    pub snapshot: Option<SnapshotPlan>,
}

/// `--snapshot auto|refresh` with its cache (see `crate::snapshot`).
#[derive(Debug, Clone)]
pub struct SnapshotPlan {
    pub cache: PathBuf,
    /// `refresh`: never restore, always save a new snapshot.
    pub refresh: bool,
    /// The image has Docker: a snapshot is saved only once it answers.
    pub docker: bool,
    /// `--image-sha256`, lowercase.
    pub image_sha256: Option<String>,
}

/// Host facts the checks depend on (swappable in tests).
#[derive(Debug, Clone)]
pub struct Host {
    /// MemTotal in MiB.
    pub memory_mib: u64,
    /// Whether /dev/kvm opens read-write.
    pub kvm: bool,
    /// Directory of network interfaces (`/sys/class/net`).
    pub sys_net: PathBuf,
}

impl Host {
    /// Reads the real host.
    pub fn probe() -> Self {
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map(|kib| kib / 1024)
            .unwrap_or(u64::MAX);
        let kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        Self {
            memory_mib,
            kvm,
            sys_net: "/sys/class/net".into(),
        }
    }
}

/// Builds and checks the plan.
pub fn plan(a: &RunSettings, host: &Host) -> Result<Plan, ConfigError> {
    check_session_id(&a.session_id)?;
    let snapshot = snapshot_plan(a, false)?;
    if !(1..=32).contains(&a.cpus) {
        return Err(ConfigError::Cpus(a.cpus));
    }
    let max_mem = host.memory_mib.min(65536);
    if a.memory < 128 || u64::from(a.memory) > max_mem {
        return Err(ConfigError::Memory(a.memory, max_mem));
    }
    let file = load_netconfig(&a.network_config)?;
    let (net, tap) = network(a, file.as_ref())?;
    check_rootfs(&a.rootfs)?;
    let fs4 = bootfiles::open_image(&a.rootfs)?;
    let (kernel, initrd) = boot_files(a, &fs4)?;
    let (machine, vmlinux) = machine_and_vmlinux(a, &fs4, &kernel, initrd.is_some())?;
    let docker = match a.docker_check {
        DockerCheck::On => true,
        DockerCheck::Off => false,
        DockerCheck::Auto => bootfiles::image_has_docker(&fs4, &a.rootfs),
    };
    // A snapshot is of a VM whose Docker is up, whatever readiness waits for.
    let image_docker = a.snapshot != crate::settings::SnapshotMode::Off
        && bootfiles::image_has_docker(&fs4, &a.rootfs);
    drop(fs4);
    let (attempts, qemu_bin, firecracker_bin) = attempts(a, host)?;
    if !host.sys_net.join(&tap).join("tun_flags").exists() {
        return Err(ConfigError::NoTap(tap));
    }
    let forwards = if a.forward_ports.is_empty() {
        file.map(|f| f.forward_ports).unwrap_or_default()
    } else {
        a.forward_ports.clone()
    };
    let mut tcp_ports: Vec<u16> = forwards
        .iter()
        .map(|f| f.vm)
        .filter(|p| *p != a.ssh_port && *p != crate::ready::DOCKER_PORT)
        .collect();
    tcp_ports.sort_unstable();
    tcp_ports.dedup();
    let jailer = match &a.jailer {
        Some(bin) => Some(Jailer {
            bin: which(bin)
                .ok_or_else(|| ConfigError::Vmm(format!("jailer {} not found", bin.display())))?,
            uid: a.jailer_uid,
            gid: a.jailer_gid,
            chroot_base: a.jailer_chroot_base.clone(),
        }),
        None => None,
    };
    Ok(Plan {
        session_id: a.session_id.clone(),
        rootfs: a.rootfs.clone(),
        kernel,
        initrd,
        cpus: a.cpus,
        memory_mib: a.memory,
        net,
        tap,
        attempts,
        qemu_bin,
        firecracker_bin,
        jailer,
        machine,
        vmlinux,
        state_dir: a.state_dir.clone(),
        status_listen: a.status_listen,
        ssh_key_out: a.ssh_key_out.clone(),
        known_hosts_out: a.known_hosts_out.clone(),
        console_log: a.console_log.clone(),
        ssh_port: a.ssh_port,
        tcp_ports,
        docker,
        append: a.append.clone(),
        boot_timeout: Duration::from_secs(a.boot_timeout.max(1)),
        stop_timeout: Duration::from_secs(a.stop_timeout.max(1)),
        kvm_probe_timeout: Duration::from_secs(a.kvm_probe_timeout.max(1)),
        snapshot: snapshot.map(|s| SnapshotPlan {
            docker: image_docker,
            ..s
        }),
    })
}

fn snapshot_plan(a: &RunSettings, docker: bool) -> Result<Option<SnapshotPlan>, ConfigError> {
    use crate::settings::SnapshotMode;
    let refresh = match a.snapshot {
        SnapshotMode::Off => return Ok(None),
        SnapshotMode::Auto => false,
        SnapshotMode::Refresh => true,
    };
    let Some(cache) = a.snapshot_cache.clone() else {
        return Err(ConfigError::Snapshot(format!(
            "--snapshot {} needs --snapshot-cache DIR (env SNAPSHOT_CACHE); or use --snapshot off",
            a.snapshot.as_str()
        )));
    };
    if cache.exists() && !cache.is_dir() {
        return Err(ConfigError::Snapshot(format!(
            "--snapshot-cache {} is not a directory",
            cache.display()
        )));
    }
    let image_sha256 = match &a.image_sha256 {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(h.to_ascii_lowercase())
        }
        Some(h) => {
            return Err(ConfigError::Snapshot(format!(
                "--image-sha256 {h:?} is not 64 hex digits"
            )));
        }
        None => None,
    };
    Ok(Some(SnapshotPlan {
        cache,
        refresh,
        docker,
        image_sha256,
    }))
}

fn check_session_id(id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    ok.then_some(())
        .ok_or_else(|| ConfigError::SessionId(id.into()))
}

fn load_netconfig(path: &Path) -> Result<Option<NetworkConfig>, ConfigError> {
    if !path.exists() {
        return Ok(None);
    }
    NetworkConfig::load(path)
        .map(Some)
        .map_err(|e| ConfigError::NetConfig {
            path: path.to_path_buf(),
            why: format!("{e:#}"),
        })
}

fn network(a: &RunSettings, f: Option<&NetworkConfig>) -> Result<(GuestNet, String), ConfigError> {
    let vm_ip = a
        .vm_ip
        .or(f.map(|f| f.vm_ip))
        .unwrap_or(Ipv4Addr::new(172, 16, 0, 2));
    let gateway_ip = a
        .gateway_ip
        .or(f.map(|f| f.gateway_ip))
        .unwrap_or(Ipv4Addr::new(172, 16, 0, 1));
    let prefix_len = a.prefix_len.or(f.map(|f| f.prefix_len)).unwrap_or(24);
    let tap = a
        .tap
        .clone()
        .or(f.map(|f| f.tap_device.clone()))
        .unwrap_or_else(|| "tap0".into());
    let mac = a
        .mac
        .clone()
        .or(f.and_then(|f| f.vm_mac.clone()))
        .unwrap_or_else(|| mac_for(vm_ip))
        .to_ascii_lowercase();
    let bad = |m: String| Err(ConfigError::Network(m));
    if !(1..=30).contains(&prefix_len) {
        return bad(format!("--prefix-len {prefix_len}: use 1 to 30"));
    }
    if vm_ip == gateway_ip {
        return bad(format!(
            "--vm-ip and --gateway-ip are both {vm_ip}: they must differ"
        ));
    }
    if !same_subnet(vm_ip, gateway_ip, prefix_len) {
        return bad(format!(
            "--vm-ip {vm_ip} is not in the gateway's network {gateway_ip}/{prefix_len}"
        ));
    }
    if !valid_mac(&mac) {
        return bad(format!(
            "--mac {mac:?}: write a unicast MAC like 06:00:ac:10:00:02"
        ));
    }
    let net = GuestNet {
        vm_ip,
        gateway_ip,
        prefix_len,
        mac,
    };
    Ok((net, tap))
}

fn check_rootfs(path: &Path) -> Result<(), ConfigError> {
    let why = |why: String| ConfigError::Rootfs {
        path: path.to_path_buf(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| why(e.to_string()))?;
    if !meta.is_file() {
        return Err(why("not a regular file".into()));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| why(format!("cannot open it read-write ({e})")))?;
    Ok(())
}

/// What the kernel's config says about virtio-mmio, the machine it boots on
/// (an explicit `microvm` with a kernel that cannot is refused here), and the
/// ELF kernel Firecracker can boot as is.
fn machine_and_vmlinux(
    a: &RunSettings,
    fs4: &ext4_view::Ext4,
    kernel: &BootFile,
    initramfs: bool,
) -> Result<(Machine, Option<BootFile>), ConfigError> {
    let (config, vmlinux) = match kernel {
        BootFile::Image(_) => {
            let boot = bootfiles::find_boot(fs4, &a.rootfs)?;
            let config = boot
                .config
                .as_deref()
                .and_then(|c| bootfiles::read_text(fs4, c));
            (config, boot.vmlinux.map(BootFile::Image))
        }
        BootFile::Host(k) => {
            let name = k.file_name().unwrap_or_default().to_string_lossy();
            let mut configs = vec![
                k.with_file_name("config"),
                PathBuf::from(format!("{}.config", k.display())),
            ];
            if let Some(ver) = name.strip_prefix("vmlinuz-") {
                configs.push(k.with_file_name(format!("config-{ver}")));
            }
            let config = configs
                .into_iter()
                .find_map(|p| std::fs::read_to_string(p).ok());
            let elf = k.with_file_name("vmlinux");
            let vmlinux = (elf.is_file() && elf != *k).then_some(BootFile::Host(elf));
            (config, vmlinux)
        }
    };
    let mmio = config.map_or(bootfiles::MmioSupport::Unknown, |c| {
        bootfiles::MmioSupport::from_config(&c, initramfs)
    });
    let machine = a.machine.resolve(&mmio).map_err(ConfigError::Machine)?;
    Ok((machine, vmlinux))
}

fn boot_files(
    a: &RunSettings,
    fs4: &ext4_view::Ext4,
) -> Result<(BootFile, Option<BootFile>), ConfigError> {
    let host_file = |what, p: &PathBuf| {
        if std::fs::File::open(p).is_ok_and(|_| p.is_file()) {
            Ok(BootFile::Host(p.clone()))
        } else {
            Err(ConfigError::BootFile {
                what,
                path: p.clone(),
            })
        }
    };
    if let Some(k) = &a.kernel {
        let initrd = a
            .initrd
            .as_ref()
            .map(|i| host_file("initrd", i))
            .transpose()?;
        return Ok((host_file("kernel", k)?, initrd));
    }
    let boot = bootfiles::find_boot(fs4, &a.rootfs)?;
    let initrd = match &a.initrd {
        Some(i) => Some(host_file("initrd", i)?),
        None => boot.initrd.map(BootFile::Image),
    };
    Ok((BootFile::Image(boot.kernel), initrd))
}

type Attempts = (Vec<Attempt>, Option<PathBuf>, Option<PathBuf>);

fn attempts(a: &RunSettings, host: &Host) -> Result<Attempts, ConfigError> {
    let qemu = which(&a.qemu_bin);
    let fc = which(&a.firecracker_bin);
    let qemu_list = |accel: AccelChoice| -> Result<Vec<Attempt>, ConfigError> {
        let q = |accel| Attempt {
            vmm: Vmm::Qemu,
            accel,
        };
        match accel {
            AccelChoice::Tcg => Ok(vec![q(Accel::Tcg)]),
            AccelChoice::Kvm if host.kvm => Ok(vec![q(Accel::Kvm)]),
            AccelChoice::Kvm => Err(ConfigError::Vmm(
                "--accel kvm but /dev/kvm cannot be opened: use --accel tcg or auto".into(),
            )),
            AccelChoice::Auto if host.kvm => Ok(vec![q(Accel::Kvm), q(Accel::Tcg)]),
            AccelChoice::Auto => Ok(vec![q(Accel::Tcg)]),
        }
    };
    let no_qemu = || {
        ConfigError::Vmm(format!(
            "QEMU binary {} not found: install qemu-system-x86 or pass --qemu-bin",
            a.qemu_bin.display()
        ))
    };
    let fc_attempt = Attempt {
        vmm: Vmm::Firecracker,
        accel: Accel::Kvm,
    };
    let list = match a.vmm {
        VmmChoice::Qemu => {
            qemu.as_ref().ok_or_else(no_qemu)?;
            qemu_list(a.accel)?
        }
        VmmChoice::Firecracker => {
            fc.as_ref().ok_or_else(|| {
                ConfigError::Vmm(format!(
                    "Firecracker binary {} not found: install it or pass --firecracker-bin, or use --vmm qemu",
                    a.firecracker_bin.display()
                ))
            })?;
            if a.accel == AccelChoice::Tcg || !host.kvm {
                return Err(ConfigError::Vmm(
                    "Firecracker needs KVM (/dev/kvm): use --vmm qemu for TCG".into(),
                ));
            }
            vec![fc_attempt]
        }
        VmmChoice::Auto => {
            let mut list = Vec::new();
            if fc.is_some() && host.kvm && a.accel != AccelChoice::Tcg {
                list.push(fc_attempt);
            }
            if qemu.is_some() {
                list.extend(qemu_list(a.accel)?);
            }
            if list.is_empty() {
                return Err(no_qemu());
            }
            list
        }
    };
    Ok((list, qemu, fc))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
