//! The QEMU backend: the `qemu-system-x86_64` command line and a minimal QMP
//! client (capabilities handshake + `system_powerdown`, the ACPI power button).
//!
//! QEMU is the backend that boots on machines without usable KVM (TCG), and
//! on any machine without Firecracker. The serial console goes to QEMU's
//! stdout, which the supervisor reads; `-no-reboot` turns a guest reboot or a
//! `panic=1` reset into a QEMU exit the supervisor sees.

pub use crate::qmp::QmpError;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Hardware accelerator of one boot attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// `kvm` or `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Machine {
    /// `microvm` when the kernel can boot on virtio-mmio (it boots faster,
    /// see docs/vm.md), else `q35`.
    Auto,
    /// PC with PCIe: virtio-pci devices; works with any kernel.
    Q35,
    /// Firecracker's device model: virtio-mmio described by ACPI
    /// (`microvm,acpi=on`), no PCI; the kernel needs virtio_mmio.
    Microvm,
}

impl Machine {
    /// `auto`, `q35` or `microvm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Auto => "auto",
            Machine::Q35 => "q35",
            Machine::Microvm => "microvm",
        }
    }

    /// The machine to boot: `auto` becomes `microvm` when the kernel
    /// supports virtio-mmio and `q35` otherwise (or when that is unknown);
    /// an explicit `microvm` with a kernel that cannot boot on it is an error
    /// naming what the kernel lacks.
    pub fn resolve(self, mmio: &crate::bootfiles::MmioSupport) -> Result<Machine, String> {
        use crate::bootfiles::MmioSupport;
        match (self, mmio) {
            (Machine::Auto, MmioSupport::Yes) => Ok(Machine::Microvm),
            (Machine::Auto, _) => Ok(Machine::Q35),
            (Machine::Microvm, MmioSupport::No(why)) => Err(format!(
                "--machine microvm: the guest kernel cannot boot on virtio-mmio ({}); \
                 use --machine q35 (or auto), or an image built with kernel = \"dozlab\"",
                why.join("; ")
            )),
            (m, _) => Ok(m),
        }
    }
}

/// Everything one QEMU boot needs.
#[derive(Debug, Clone)]
pub struct QemuPlan {
    pub bin: PathBuf,
    pub name: String,
    pub machine: Machine,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub rootfs: PathBuf,
    pub tap: String,
    pub mac: String,
    pub qmp_socket: PathBuf,
    /// The guest agent's chardev socket: adds a virtio-serial port
    /// `org.qemu.guest_agent.0` and a `vmgenid` device (what snapshots need;
    /// the devices of a restored VM must be those of the one saved).
    pub agent_socket: Option<PathBuf>,
    /// Restore from this migration stream (`-incoming exec:cat FILE`),
    /// paused (`-S`) until the supervisor says `cont`.
    pub incoming: Option<PathBuf>,
}

impl QemuPlan {
    /// The arguments after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let (machine, cpu, blk, net, rng, serial) = match self.machine {
            Machine::Q35 => (
                "q35",
                "max",
                "virtio-blk-pci",
                "virtio-net-pci",
                "virtio-rng-pci",
                "virtio-serial-pci",
            ),
            // microvm: the RTC gives the wall clock at boot; an invariant TSC
            // is the guest's clocksource (kvm-clock under KVM).
            Machine::Microvm | Machine::Auto => (
                "microvm,acpi=on,rtc=on",
                "max,+invtsc",
                "virtio-blk-device",
                "virtio-net-device",
                "virtio-rng-device",
                "virtio-serial-device",
            ),
        };
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        push(&[
            "-name",
            &self.name,
            "-M",
            machine,
            "-accel",
            self.accel.as_str(),
        ]);
        push(&["-cpu", cpu, "-m", &self.memory_mib.to_string()]);
        push(&["-smp", &self.cpus.to_string()]);
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        push(&["-serial", "stdio", "-no-reboot"]);
        a.push("-kernel".into());
        a.push(self.kernel.clone().into());
        if let Some(initrd) = &self.initrd {
            a.push("-initrd".into());
            a.push(initrd.clone().into());
        }
        a.push("-append".into());
        a.push(self.cmdline.clone().into());
        a.push("-drive".into());
        a.push(drive_arg(&self.rootfs));
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        push(&["-device", &format!("{blk},drive=d0")]);
        let netdev = format!("tap,id=n0,ifname={},script=no,downscript=no", self.tap);
        push(&["-netdev", &netdev]);
        push(&["-device", &format!("{net},netdev=n0,mac={}", self.mac)]);
        // Entropy from the host, so the guest's CRNG is ready early.
        push(&["-object", "rng-random,id=rng0,filename=/dev/urandom"]);
        push(&["-device", &format!("{rng},rng=rng0")]);
        let mut qmp = OsString::from("unix:");
        qmp.push(&self.qmp_socket);
        qmp.push(",server=on,wait=off");
        a.push("-qmp".into());
        a.push(qmp);
        if let Some(agent) = &self.agent_socket {
            let mut chardev = OsString::from("socket,id=qga0,path=");
            chardev.push(agent.to_string_lossy().replace(',', ",,"));
            chardev.push(",server=on,wait=off");
            a.push("-chardev".into());
            a.push(chardev);
            let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
            push(&["-device", &format!("{serial},id=vser0")]);
            push(&[
                "-device",
                "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
            ]);
            // A new generation id in every QEMU process: a kernel with
            // CONFIG_VMGENID reseeds its RNG when a restored VM runs.
            push(&["-device", "vmgenid,guid=auto"]);
        }
        if let Some(file) = &self.incoming {
            a.push("-S".into());
            a.push("-incoming".into());
            a.push(format!("exec:cat {}", shell_quote(&file.to_string_lossy())).into());
        }
        a
    }
}

/// `'PATH'` for `sh -c` (QEMU runs `exec:` URIs with /bin/sh).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `file=PATH,format=raw,if=none,id=d0` with QEMU's comma escaping.
fn drive_arg(rootfs: &Path) -> OsString {
    let path = rootfs.to_string_lossy().replace(',', ",,");
    OsString::from(format!("file={path},format=raw,if=none,id=d0"))
}

/// Sends one command (after the capabilities handshake) and waits for its
/// reply: the one-shot case of [`crate::qmp::Session`].
pub async fn qmp_execute(socket: &Path, command: &str) -> Result<(), QmpError> {
    let mut s = crate::qmp::Session::qmp(socket).await?;
    s.execute(command, serde_json::Value::Null).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    fn plan() -> QemuPlan {
        QemuPlan {
            bin: "qemu-system-x86_64".into(),
            name: "dozlab-s1".into(),
            machine: Machine::Q35,
            accel: Accel::Tcg,
            cpus: 2,
            memory_mib: 1024,
            kernel: "/state/vmlinuz".into(),
            initrd: Some("/state/initrd.img".into()),
            cmdline: "console=ttyS0 root=/dev/vda".into(),
            rootfs: "/srv/a,b.ext4".into(),
            tap: "tap0".into(),
            mac: "06:00:ac:10:00:02".into(),
            qmp_socket: "/state/qmp.sock".into(),
            agent_socket: None,
            incoming: None,
        }
    }

    fn joined(p: &QemuPlan) -> String {
        p.args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn q35_argv() {
        assert_eq!(
            joined(&plan()),
            "-name dozlab-s1 -M q35 -accel tcg -cpu max -m 1024 -smp 2 \
             -nodefaults -no-user-config -display none -serial stdio -no-reboot \
             -kernel /state/vmlinuz -initrd /state/initrd.img -append console=ttyS0 root=/dev/vda \
             -drive file=/srv/a,,b.ext4,format=raw,if=none,id=d0 -device virtio-blk-pci,drive=d0 \
             -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
             -device virtio-net-pci,netdev=n0,mac=06:00:ac:10:00:02 \
             -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0 \
             -qmp unix:/state/qmp.sock,server=on,wait=off"
        );
    }

    #[test]
    fn microvm_kvm_argv_without_initrd() {
        let mut p = plan();
        p.machine = Machine::Microvm;
        p.accel = Accel::Kvm;
        p.initrd = None;
        let s = joined(&p);
        assert!(
            s.contains("-M microvm,acpi=on,rtc=on -accel kvm -cpu max,+invtsc"),
            "{s}"
        );
        assert!(s.contains("-device virtio-rng-device,rng=rng0"), "{s}");
        assert!(s.contains("-device virtio-blk-device,drive=d0"), "{s}");
        assert!(s.contains("-device virtio-net-device,netdev=n0"), "{s}");
        assert!(!s.contains("-initrd"));
    }

    #[test]
    fn snapshot_devices_and_incoming() {
        let mut p = plan();
        p.agent_socket = Some("/state/qga.sock".into());
        p.incoming = Some("/cache/k/it's.bin".into());
        let s = joined(&p);
        assert!(
            s.ends_with(
                "-chardev socket,id=qga0,path=/state/qga.sock,server=on,wait=off \
                 -device virtio-serial-pci,id=vser0 \
                 -device virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0 \
                 -device vmgenid,guid=auto -S -incoming exec:cat '/cache/k/it'\\''s.bin'"
            ),
            "{s}"
        );
        p.machine = Machine::Microvm;
        assert!(joined(&p).contains("-device virtio-serial-device,id=vser0"));
    }

    #[test]
    fn auto_picks_microvm_only_for_kernels_that_boot_on_it() {
        use crate::bootfiles::MmioSupport;
        let no = MmioSupport::No(vec!["CONFIG_VIRTIO_MMIO is not set".into()]);
        assert_eq!(
            Machine::Auto.resolve(&MmioSupport::Yes),
            Ok(Machine::Microvm)
        );
        assert_eq!(Machine::Auto.resolve(&no), Ok(Machine::Q35));
        assert_eq!(
            Machine::Auto.resolve(&MmioSupport::Unknown),
            Ok(Machine::Q35)
        );
        assert_eq!(Machine::Q35.resolve(&no), Ok(Machine::Q35));
        assert_eq!(
            Machine::Microvm.resolve(&MmioSupport::Unknown),
            Ok(Machine::Microvm)
        );
        let e = Machine::Microvm.resolve(&no).unwrap_err();
        assert!(
            e.contains("CONFIG_VIRTIO_MMIO is not set") && e.contains("--machine q35"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn qmp_handshake_then_command() {
        use tokio::net::UnixListener;
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("qmp.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .await
                .unwrap();
            let mut seen = Vec::new();
            while let Some(l) = lines.next_line().await.unwrap() {
                seen.push(l.clone());
                if l.contains("system_powerdown") {
                    w.write_all(b"{\"event\": \"POWERDOWN\"}\r\n")
                        .await
                        .unwrap();
                }
                w.write_all(b"{\"return\": {}}\r\n").await.unwrap();
            }
            seen
        });
        qmp_execute(&sock, "system_powerdown").await.unwrap();
        let seen = server.await.unwrap();
        assert_eq!(
            seen,
            [
                "{\"execute\":\"qmp_capabilities\"}",
                "{\"execute\":\"system_powerdown\"}"
            ]
        );
    }
}
