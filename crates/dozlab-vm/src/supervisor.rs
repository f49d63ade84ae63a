//! `dozlab vm run`: the supervisor. Checks the input, prepares the image and
//! kernel offline, boots the VM (falling back from KVM to TCG when the guest
//! cannot start under KVM), reports readiness, and on SIGTERM/SIGINT shuts
//! the guest down cleanly.
//!
//! Exit codes: 0 stopped cleanly on request; 1 internal error; 2 bad input;
//! 3 the VM failed (VMM exited, kernel panic, not ready in time); 4 stopped,
//! but the guest had to be killed after `--stop-timeout`.
//!
//! It runs on a current-thread tokio runtime and never holds the image or
//! kernel in memory, to stay small next to the VMM.

use crate::config::{self, Attempt, BootFile, Host, Plan, Vmm};
use crate::console::Tail;
use crate::identity::Identity;
use crate::qemu::Accel;
use crate::qga::Rekey;
use crate::ready::{DOCKER_PORT, ReadyCheck};
use crate::settings::RunSettings;
use crate::snapcache::Entry;
use crate::snapshot::{self, Snapper};
use crate::vmm::{self, Launch, Running};
use crate::vmspec::{Bus, FcTarget, QemuTarget, SpecInputs, VmSpec};
use crate::{bootfiles, inject, statusd, vmlinux};
use anyhow::Context as _;
use dozlab_core::failure::{CmdResult, Failure};
use dozlab_core::vmstatus::{Phase, VmStatus};
use nix::fcntl::{Flock, FlockArg};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// Exit code: the VM failed.
pub const EXIT_VM_FAILED: u8 = 3;
/// Exit code: the guest had to be killed on stop.
pub const EXIT_KILLED: u8 = 4;
const POLL: Duration = Duration::from_millis(200);

/// Entry point of `dozlab vm run`.
pub fn main(args: RunSettings) -> CmdResult {
    let t0 = Instant::now();
    let plan = config::plan(&args, &Host::probe()).map_err(Failure::usage)?;
    for var in ["SNAPSHOT_PATH", "MEM_FILE_PATH"] {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            tracing::warn!(
                "{var} is ignored: dozlab shuts the guest down cleanly on SIGTERM instead of snapshotting it"
            );
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run(plan, t0))
}

/// The supervisor's state: what to run and what was reported.
struct Supervisor {
    plan: Plan,
    t0: Instant,
    status: watch::Sender<VmStatus>,
    tail: Tail,
    check: ReadyCheck,
    launches: Vec<(Attempt, Launch)>,
    identity: Identity,
    /// Snapshots (`--snapshot auto|refresh`), and the entry to restore.
    snapper: Option<Snapper>,
    restore: Option<(usize, Entry)>,
}

async fn run(plan: Plan, t0: Instant) -> CmdResult {
    let listener = match plan.status_listen {
        Some(addr) => Some(statusd::bind(addr).await.map_err(|e| {
            Failure::usage(anyhow::anyhow!(
                "cannot listen on --status-listen {addr}: {e}"
            ))
        })?),
        None => None,
    };
    std::fs::create_dir_all(&plan.state_dir)
        .with_context(|| format!("cannot create state dir {}", plan.state_dir.display()))?;
    let _locks = lock(&plan)?;
    let mut signals = Signals::new()?;
    let sup = Supervisor::prepare(plan, t0)?;
    tracing::info!(
        "kernel, initrd and SSH identity ready after {} ms",
        t0.elapsed().as_millis()
    );
    if let Some(l) = listener {
        tokio::spawn(statusd::serve(l, sup.status.subscribe()));
    }
    sup.boot_and_supervise(&mut signals).await
}

/// Exclusive locks on the state dir and the rootfs: one supervisor per VM.
fn lock(plan: &Plan) -> Result<(Flock<std::fs::File>, Flock<std::fs::File>), Failure> {
    let take = |path: &Path, what: &str| {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|_| {
            Failure::usage(anyhow::anyhow!(
                "{what} {} is in use by another `dozlab vm run`",
                path.display()
            ))
        })
    };
    Ok((
        take(&plan.state_dir.join("lock"), "state dir lock")?,
        take(&plan.rootfs, "rootfs")?,
    ))
}

impl Supervisor {
    /// Extracts boot files, injects the identity, writes the keys.
    fn prepare(plan: Plan, t0: Instant) -> Result<Self, Failure> {
        let (kernel, initrd) = boot_files(&plan)?;
        let id = Identity::generate(&plan.session_id);
        let launches = launches(&plan, &kernel, initrd.as_deref())?;
        let snapper = plan
            .snapshot
            .as_ref()
            .map(|sp| Snapper::new(sp, &plan.rootfs, &kernel, initrd.as_deref()));
        let restore = snapper.as_ref().and_then(|s| s.find(&launches));
        if restore.is_none() {
            inject_identity(&plan, &id)?;
        }
        id.write_client_key(&plan.ssh_key_out)
            .map_err(anyhow::Error::from)?;
        id.write_known_hosts(&plan.known_hosts_out, plan.net.vm_ip, plan.ssh_port)
            .map_err(anyhow::Error::from)?;
        let ip = plan.net.vm_ip;
        let check = ReadyCheck {
            ssh: SocketAddr::from((ip, plan.ssh_port)),
            host_key: id.host.public_key().clone(),
            client_key: Arc::new(id.client.clone()),
            docker: plan.docker.then_some(SocketAddr::from((ip, DOCKER_PORT))),
            tcp: plan
                .tcp_ports
                .iter()
                .map(|p| SocketAddr::from((ip, *p)))
                .collect(),
        };
        let first = plan.attempts[0];
        let status = VmStatus {
            phase: Phase::Booting,
            vmm: first.vmm.as_str().into(),
            accel: first.accel.as_str().into(),
            pid: std::process::id(),
            vmm_pid: None,
            started_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            boot_ms: None,
            vm_ip: ip.to_string(),
            message: None,
        };
        let (status, _) = watch::channel(status);
        let sup = Self {
            plan,
            t0,
            status,
            tail: Tail::default(),
            check,
            launches,
            identity: id,
            snapper,
            restore,
        };
        sup.set(|_| {});
        Ok(sup)
    }

    /// Updates status.json and the probe server.
    fn set(&self, f: impl FnOnce(&mut VmStatus)) {
        self.status.send_modify(f);
        if let Err(e) = self.status.borrow().store(&self.plan.state_dir) {
            tracing::warn!("cannot write status.json: {e}");
        }
    }

    fn fail(&self, code: u8, e: anyhow::Error) -> Failure {
        let msg = format!("{e:#}");
        self.set(|s| {
            s.phase = Phase::Failed;
            s.message = Some(msg);
        });
        Failure::new(code, e)
    }

    fn vm_error(&self, what: String) -> Failure {
        let tail = self.tail.last(20);
        let e = anyhow::anyhow!("{what}; last console lines:\n{tail}");
        self.fail(EXIT_VM_FAILED, e)
    }

    async fn boot_and_supervise(mut self, signals: &mut Signals) -> CmdResult {
        let deadline = tokio::time::Instant::from_std(self.t0 + self.plan.boot_timeout);
        if let Some((i, entry)) = self.restore.take() {
            match self.warm(i, &entry, deadline, signals).await {
                Warm::Ready(vm) => return self.supervise(vm, signals).await,
                Warm::Signal(vm) => return self.stop(vm, false, signals).await,
                Warm::Failed(why) => {
                    if let Some(s) = &self.snapper {
                        s.discard(&entry.meta.key, &why);
                    }
                    inject_identity(&self.plan, &self.identity)?;
                }
            }
        }
        let n = self.launches.len();
        for (i, (attempt, launch)) in self.launches.iter().enumerate() {
            let more = i + 1 < n;
            announce(*attempt, launch, i > 0);
            self.set(|s| {
                s.phase = Phase::Booting;
                s.vmm = attempt.vmm.as_str().into();
                s.accel = attempt.accel.as_str().into();
                s.vmm_pid = None;
            });
            let console = self.plan.console_log.as_deref();
            let mut vm = match vmm::start(*attempt, launch, console, &self.tail).await {
                Ok(vm) => vm,
                Err(e) if more => {
                    loud(&format!(
                        "{} failed to start: {e:#}; trying the next way",
                        vmm::label(*attempt)
                    ));
                    continue;
                }
                Err(e) => return Err(self.fail(EXIT_VM_FAILED, e.into())),
            };
            self.set(|s| s.vmm_pid = vm.pid);
            match self.wait_boot(&mut vm, more, deadline, signals).await {
                Boot::Ready => {
                    self.save_snapshot(*attempt, launch).await;
                    return self.supervise(vm, signals).await;
                }
                Boot::Fallback(why) => {
                    loud(&format!("{} did not boot: {why}; falling back", vm.label()));
                    vm.kill().await;
                }
                Boot::Died(why) => return Err(self.vm_error(why)),
                Boot::Timeout(last) => {
                    vm.kill().await;
                    let s = self.plan.boot_timeout.as_secs();
                    return Err(
                        self.vm_error(format!("the VM was not ready within {s} s ({last})"))
                    );
                }
                Boot::Signal => return self.stop(vm, false, signals).await,
            }
        }
        Err(self.vm_error("no way to boot the VM worked".into()))
    }

    /// Restores launch `i` from `entry` and waits until the re-keyed guest
    /// is ready (at most a minute: a cold boot must still fit).
    async fn warm(
        &mut self,
        i: usize,
        entry: &Entry,
        deadline: tokio::time::Instant,
        signals: &mut Signals,
    ) -> Warm {
        let (attempt, launch) = self.launches[i].clone();
        let Launch::Qemu(q) = &launch else {
            return Warm::Failed("not a QEMU launch".into());
        };
        let t = Instant::now();
        loud(&format!(
            "restoring snapshot {} with {}",
            entry.meta.key,
            vmm::label(attempt)
        ));
        self.set(|s| {
            s.vmm = attempt.vmm.as_str().into();
            s.accel = attempt.accel.as_str().into();
        });
        let rekey = match Rekey::for_identity(&self.identity) {
            Ok(r) => r,
            Err(e) => return Warm::Failed(format!("{e:#}")),
        };
        let console = self.plan.console_log.clone();
        let restored = snapshot::restore(
            entry,
            attempt,
            q,
            &self.plan.rootfs,
            &rekey,
            console.as_deref(),
            &self.tail,
        );
        let mut vm = match restored.await {
            Ok(r) => r.vm,
            Err(e) => return Warm::Failed(format!("{e:#}")),
        };
        self.set(|s| s.vmm_pid = vm.pid);
        let limit = deadline.min(tokio::time::Instant::now() + Duration::from_secs(60));
        match self.wait_boot(&mut vm, false, limit, signals).await {
            Boot::Ready => {
                let key = entry.meta.key.clone();
                loud(&format!(
                    "restored from snapshot {key} and re-keyed in {:.1} s",
                    t.elapsed().as_secs_f64()
                ));
                self.set(|s| s.message = Some(format!("restored from snapshot {key}")));
                Warm::Ready(vm)
            }
            Boot::Signal => Warm::Signal(vm),
            Boot::Fallback(why) | Boot::Died(why) | Boot::Timeout(why) => {
                vm.kill().await;
                Warm::Failed(format!("the restored VM did not get ready: {why}"))
            }
        }
    }

    /// Saves a snapshot of the ready VM when snapshots are on and the cache
    /// has none for it; a failure is reported and costs nothing else.
    async fn save_snapshot(&self, attempt: Attempt, launch: &Launch) {
        let Some(snapper) = &self.snapper else { return };
        let Some(inputs) = snapper.to_save(attempt, launch) else {
            return;
        };
        let Launch::Qemu(q) = launch else { return };
        let key = inputs.key();
        if !self.snapshot_docker_up().await {
            loud("no snapshot saved: the guest's Docker did not answer within the boot timeout");
            return;
        }
        let t = Instant::now();
        let saved = snapshot::save(
            &snapper.cache,
            inputs,
            &q.qmp_socket,
            q.agent_socket.as_deref(),
            &self.plan.rootfs,
        )
        .await;
        match saved {
            Ok(m) => loud(&format!(
                "saved snapshot {key} in {:.1} s (VM paused {} ms): memory {} MiB, disk {} MiB",
                t.elapsed().as_secs_f64(),
                m.pause_ms,
                m.memory.size >> 20,
                m.disk.size >> 20
            )),
            Err(e) => loud(&format!(
                "could not save a snapshot ({e:#}); the VM runs on"
            )),
        }
    }

    /// Waits (within `--boot-timeout`) for the guest's Docker when the image
    /// has one and readiness did not already wait for it.
    async fn snapshot_docker_up(&self) -> bool {
        let wanted = self.plan.snapshot.as_ref().is_some_and(|s| s.docker);
        if !wanted || self.check.docker.is_some() {
            return true;
        }
        let addr = SocketAddr::from((self.plan.net.vm_ip, DOCKER_PORT));
        let deadline = self.t0 + self.plan.boot_timeout;
        loop {
            if crate::ready::docker_ping(addr).await.is_ok() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_boot(
        &self,
        vm: &mut Running,
        more: bool,
        deadline: tokio::time::Instant,
        signals: &mut Signals,
    ) -> Boot {
        let kvm_probe = vm.attempt.accel == Accel::Kvm && more;
        let mut last = String::from("no answer yet");
        let started = vm.kernel_started.clone();
        let probe_limit = self.plan.kvm_probe_timeout;
        let ready = async {
            loop {
                match self.check.probe().await {
                    Ok(()) => return,
                    Err(e) => {
                        if matches!(e, crate::ready::NotReady::WrongHostKey(_)) {
                            tracing::warn!("{e}");
                        }
                        last = e.to_string();
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        };
        let kernel_silent = async {
            if kvm_probe {
                tokio::time::sleep(probe_limit).await;
                if !*started.borrow() {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        let outcome = tokio::select! {
            () = ready => Boot::Ready,
            st = vm.child.wait() => {
                let st = st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                vm.drain().await;
                if kvm_probe {
                    Boot::Fallback(format!("the VMM exited ({st}) before the guest was ready"))
                } else {
                    Boot::Died(format!("the VMM exited ({st}) before the guest was ready"))
                }
            }
            () = kernel_silent => Boot::Fallback(format!(
                "no kernel output within {} s", probe_limit.as_secs()
            )),
            () = tokio::time::sleep_until(deadline) => Boot::Timeout(String::new()),
            () = signals.recv() => Boot::Signal,
        };
        match outcome {
            Boot::Timeout(_) => Boot::Timeout(last),
            o => o,
        }
    }

    async fn supervise(self, mut vm: Running, signals: &mut Signals) -> CmdResult {
        let ms = self.t0.elapsed().as_millis() as u64;
        self.set(|s| {
            s.phase = Phase::Ready;
            s.boot_ms = Some(ms);
        });
        loud(&format!(
            "VM ready after {:.1} s on {}: ssh -i {} root@{}",
            ms as f64 / 1000.0,
            vm.label(),
            self.plan.ssh_key_out.display(),
            self.plan.net.vm_ip
        ));
        tokio::select! {
            st = vm.wait() => {
                let st = st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                vm.drain().await;
                Err(self.vm_error(format!("the VM stopped unexpectedly ({st})")))
            }
            () = signals.recv() => self.stop(vm, true, signals).await,
        }
    }

    /// Power button (or Ctrl-Alt-Del), then `poweroff` over SSH halfway
    /// through the timeout, then SIGKILL. A second signal kills at once.
    async fn stop(&self, mut vm: Running, was_ready: bool, signals: &mut Signals) -> CmdResult {
        self.set(|s| s.phase = Phase::Stopping);
        loud(&format!(
            "stopping the VM (up to {} s)",
            self.plan.stop_timeout.as_secs()
        ));
        if let Err(e) = vm.request_shutdown().await {
            tracing::warn!("cannot ask the guest to shut down: {e:#}");
        }
        let half = self.plan.stop_timeout / 2;
        let mut clean = self.wait_exit(&mut vm, half, signals).await;
        if clean.is_none() {
            if was_ready {
                tracing::info!("the guest ignored the power button; running poweroff over SSH");
                let _ = self.check.exec("systemctl poweroff || poweroff").await;
            }
            clean = self.wait_exit(&mut vm, half, signals).await;
        }
        match clean {
            Some(true) => {
                self.set(|s| {
                    s.phase = Phase::Stopped;
                    s.message = None;
                });
                loud("the VM shut down cleanly");
                Ok(ExitCode::SUCCESS)
            }
            _ => {
                vm.kill().await;
                let msg = "the guest did not shut down in time and was killed";
                self.set(|s| {
                    s.phase = Phase::Stopped;
                    s.message = Some(msg.into());
                });
                Err(Failure::new(EXIT_KILLED, anyhow::anyhow!(msg)))
            }
        }
    }

    /// Some(true) when the VMM exited, Some(false) on a second signal, None on timeout.
    async fn wait_exit(
        &self,
        vm: &mut Running,
        limit: Duration,
        signals: &mut Signals,
    ) -> Option<bool> {
        tokio::select! {
            _ = vm.wait() => Some(true),
            () = signals.recv() => Some(false),
            () = tokio::time::sleep(limit) => None,
        }
    }
}

/// How a restore ended.
enum Warm {
    Ready(Running),
    Signal(Running),
    Failed(String),
}

/// Puts the session's SSH identity into the rootfs (before a cold boot).
fn inject_identity(plan: &Plan, id: &Identity) -> Result<(), Failure> {
    inject::inject(&plan.rootfs, id, &plan.state_dir)
        .with_context(|| format!("cannot put the SSH identity into {}", plan.rootfs.display()))?;
    Ok(())
}

/// How one boot attempt ended.
enum Boot {
    Ready,
    Fallback(String),
    Died(String),
    Timeout(String),
    Signal,
}

/// SIGTERM or SIGINT.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> Result<Self, Failure> {
        let term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(Self { term, int })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Prints to stderr where operators look first.
fn loud(msg: &str) {
    eprintln!("==> dozlab vm: {msg}");
}

fn announce(a: Attempt, launch: &Launch, fallback: bool) {
    let how = match (a.vmm, a.accel) {
        (Vmm::Firecracker, _) => "Firecracker with KVM",
        (Vmm::Qemu, Accel::Kvm) => "QEMU with KVM (hardware virtualisation)",
        (Vmm::Qemu, Accel::Tcg) => "QEMU with TCG (software emulation, slower; no usable KVM)",
    };
    let again = if fallback {
        "retrying with"
    } else {
        "booting with"
    };
    let machine = match launch {
        Launch::Qemu(q) => format!(" on the {} machine", q.machine.as_str()),
        Launch::Firecracker(_) => String::new(),
    };
    loud(&format!("{again} {how}{machine}"));
}

/// Host paths of the kernel and initrd, extracting them from the image when needed.
fn boot_files(plan: &Plan) -> Result<(PathBuf, Option<PathBuf>), Failure> {
    let needs_image = matches!(plan.kernel, BootFile::Image(_))
        || matches!(plan.initrd, Some(BootFile::Image(_)));
    let fs4 = if needs_image {
        Some(bootfiles::open_image(&plan.rootfs).map_err(Failure::usage)?)
    } else {
        None
    };
    let get = |f: &BootFile, name: &str| -> Result<PathBuf, Failure> {
        match (f, &fs4) {
            (BootFile::Host(p), _) => Ok(p.clone()),
            (BootFile::Image(inner), Some(fs4)) => {
                let to = plan.state_dir.join(name);
                bootfiles::extract(fs4, inner, &to).map_err(anyhow::Error::from)?;
                Ok(to)
            }
            (BootFile::Image(_), None) => unreachable!("image opened above"),
        }
    };
    let kernel = get(&plan.kernel, "vmlinuz")?;
    let initrd = plan
        .initrd
        .as_ref()
        .map(|i| get(i, "initrd.img"))
        .transpose()?;
    Ok((kernel, initrd))
}

fn launches(
    plan: &Plan,
    kernel: &Path,
    initrd: Option<&Path>,
) -> Result<Vec<(Attempt, Launch)>, Failure> {
    let inputs = |bus| {
        VmSpec::new(
            SpecInputs {
                kernel: kernel.to_path_buf(),
                initrd: initrd.map(Path::to_path_buf),
                rootfs: plan.rootfs.clone(),
                net: &plan.net,
                tap: plan.tap.clone(),
                cpus: plan.cpus,
                memory_mib: plan.memory_mib,
                append: plan.append.as_deref(),
            },
            bus,
        )
    };
    let mut out = Vec::new();
    for a in &plan.attempts {
        let launch = match a.vmm {
            Vmm::Qemu => Launch::Qemu(
                inputs(Bus::of(plan.machine)).qemu(
                    QemuTarget {
                        bin: plan.qemu_bin.clone().expect("checked in config"),
                        name: format!("dozlab-{}", plan.session_id),
                        machine: plan.machine,
                        accel: a.accel,
                        qmp_socket: plan.state_dir.join("qmp.sock"),
                        agent_socket: plan
                            .snapshot
                            .as_ref()
                            .map(|_| plan.state_dir.join("qga.sock")),
                    },
                    None,
                ),
            ),
            Vmm::Firecracker => {
                let elf = firecracker_kernel(plan, kernel)?;
                Launch::Firecracker(inputs(Bus::Mmio).firecracker(
                    FcTarget {
                        bin: plan.firecracker_bin.clone().expect("checked in config"),
                        jailer: plan.jailer.clone(),
                        session_id: plan.session_id.clone(),
                        api_socket: plan.state_dir.join("firecracker.sock"),
                    },
                    elf,
                ))
            }
        };
        out.push((*a, launch));
    }
    Ok(out)
}

/// The ELF kernel for Firecracker: the one shipped beside the kernel (image
/// `/boot/vmlinux-<ver>` or a host `vmlinux`), else extracted from the bzImage.
fn firecracker_kernel(plan: &Plan, kernel: &Path) -> Result<PathBuf, Failure> {
    let elf = plan.state_dir.join("vmlinux");
    match &plan.vmlinux {
        Some(BootFile::Host(p)) => return Ok(p.clone()),
        Some(BootFile::Image(inner)) => {
            let fs4 = bootfiles::open_image(&plan.rootfs).map_err(Failure::usage)?;
            bootfiles::extract(&fs4, inner, &elf).map_err(anyhow::Error::from)?;
        }
        None => {
            vmlinux::extract_vmlinux(kernel, &elf)
                .context("cannot make a vmlinux for Firecracker")?;
        }
    }
    Ok(elf)
}
