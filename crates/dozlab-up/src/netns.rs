//! Named network namespaces (the session's "pod"), made the way `ip netns`
//! makes them: a file under `/run/netns/` bind-mounted from a namespace that
//! a short-lived thread unshared. No `ip` process is run.
//!
//! Entering a namespace is per thread (`setns`), so the rest of the process
//! stays on the host; sockets keep the namespace they were created in.

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where named namespaces live (shared with iproute2).
pub const NETNS_DIR: &str = "/run/netns";

/// A namespace operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {0} already exists")]
    Exists(String),
    #[error("cannot {what} network namespace {name}")]
    Sys {
        what: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
}

fn sys<'a>(what: &'static str, name: &'a str) -> impl FnOnce(std::io::Error) -> NetnsError + 'a {
    move |source| NetnsError::Sys {
        what,
        name: name.to_string(),
        source,
    }
}

/// Path of the named namespace.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether the named namespace exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Creates the named namespace with only `lo` in it.
pub fn create(name: &str) -> Result<(), NetnsError> {
    let target = path(name);
    std::fs::create_dir_all(NETNS_DIR).map_err(sys("create the directory of", name))?;
    make_dir_shared();
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(NetnsError::Exists(name.into()));
        }
        Err(e) => return Err(sys("create", name)(e)),
    }
    let bind_target = target.clone();
    let result = std::thread::spawn(move || -> std::io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        // /proc/thread-self: this thread's namespace, not the main thread's.
        mount(
            Some("/proc/thread-self/ns/net"),
            &bind_target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&target);
        return Err(sys("create", name)(e));
    }
    Ok(())
}

/// Makes `/run/netns` a shared mount point, as iproute2 does, so the
/// namespace mounts propagate to other mount namespaces. Best effort.
fn make_dir_shared() {
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>).is_err() {
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        let _ = mount(Some(NETNS_DIR), NETNS_DIR, None::<&str>, bind, None::<&str>);
        let _ = mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>);
    }
}

/// Removes the named namespace (idempotent). The kernel frees it, with its
/// devices and nftables tables, once no process is left inside.
pub fn delete(name: &str) -> Result<(), NetnsError> {
    let target = path(name);
    if !target.exists() {
        return Ok(());
    }
    let _ = umount2(&target, MntFlags::MNT_DETACH);
    match std::fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(sys("remove", name)(e)),
    }
}

/// Opens the namespace (for `setns` and `setns_by_fd`).
pub fn open(name: &str) -> Result<OwnedFd, NetnsError> {
    File::open(path(name))
        .map(OwnedFd::from)
        .map_err(sys("open", name))
}

/// Inode of the namespace: what `/proc/PID/ns/net` links to as `net:[INO]`.
pub fn inode(name: &str) -> Option<u64> {
    std::fs::metadata(path(name)).ok().map(|m| m.ino())
}

/// Runs `f` on a new thread that has entered the namespace.
pub fn run_in<F, R>(name: &str, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let fd = open(name)?;
    std::thread::spawn(move || {
        setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)
            .map(|()| f())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
    .map_err(sys("enter", name))
}

/// Pids of the processes whose network namespace has inode `ino`.
pub fn pids_in(ino: u64) -> Vec<u32> {
    let want = format!("net:[{ino}]");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|l| l.as_os_str() == want.as_str())
        })
        .collect()
}

/// SIGKILLs every process left in the namespace (they are all the
/// session's: nothing else ever enters it) and waits briefly for them.
pub fn kill_all_in(name: &str) -> usize {
    let Some(ino) = inode(name) else { return 0 };
    let host = std::fs::read_link("/proc/self/ns/net").ok();
    if host
        .as_deref()
        .map(|l| l.as_os_str().to_string_lossy().into_owned())
        == Some(format!("net:[{ino}]"))
    {
        return 0; // never sweep the host's namespace
    }
    let pids = pids_in(ino);
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for _ in 0..100 {
        for pid in &pids {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(*pid as i32),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
        if pids_in(ino).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    pids.len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deletes the test's namespace even when an assertion fails.
    pub(crate) struct Guard(pub(crate) String);

    impl Drop for Guard {
        fn drop(&mut self) {
            kill_all_in(&self.0);
            let _ = delete(&self.0);
        }
    }

    #[test]
    fn root_create_enter_and_delete() {
        dozlab_testkit::require_root!("creating a network namespace needs root");
        let name = format!("dozlab-t-ns-{}", std::process::id());
        create(&name).unwrap();
        let _guard = Guard(name.clone());
        assert!(matches!(create(&name), Err(NetnsError::Exists(_))));
        let ino = inode(&name).unwrap();
        let inside = run_in(&name, || {
            std::fs::read_link("/proc/thread-self/ns/net").unwrap()
        })
        .unwrap();
        assert_eq!(inside.to_string_lossy(), format!("net:[{ino}]"));
        // A process inside is found and swept.
        let fd = open(&name).unwrap();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("60");
        crate::child::enter_netns_on_exec(&mut cmd, fd);
        let mut child = cmd.spawn().unwrap();
        assert_eq!(pids_in(ino), vec![child.id()]);
        assert_eq!(kill_all_in(&name), 1);
        assert!(pids_in(ino).is_empty());
        let _ = child.wait();
        delete(&name).unwrap();
        assert!(!exists(&name));
        delete(&name).unwrap();
    }
}
