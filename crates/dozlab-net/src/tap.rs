//! Creating the VM's persistent tap device through `/dev/net/tun`
//! (`TUNSETIFF`, `TUNSETOWNER`, `TUNSETPERSIST`), the way `ip tuntap add`
//! does; the kernel refuses to create tun/tap devices over rtnetlink.
//!
//! The device is created without `IFF_VNET_HDR` and without multi-queue:
//! the VMM sets the per-queue flags it wants when it attaches.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const TUN_PATH: &str = "/dev/net/tun";

nix::ioctl_write_ptr_bad!(
    tunsetiff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
    libc::ifreq
);
nix::ioctl_write_int_bad!(
    tunsetpersist,
    nix::request_code_write!(b'T', 203, std::mem::size_of::<libc::c_int>())
);
nix::ioctl_write_int_bad!(
    tunsetowner,
    nix::request_code_write!(b'T', 204, std::mem::size_of::<libc::c_int>())
);

/// The tap device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "cannot open {TUN_PATH}: the pod needs the tun device (mount /dev/net/tun or allow `mknod /dev/net/tun c 10 200`)"
    )]
    Open(#[source] std::io::Error),
    #[error("cannot create tap device {name} (TUNSETIFF)")]
    SetIff {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot configure tap device {name} ({what})")]
    Configure {
        name: String,
        what: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// Creates the persistent tap device `name` owned by user `owner`. Fails if
/// a device of that name already exists (`IFF_TUN_EXCL`).
pub fn create_persistent_tap(name: &str, owner: u32) -> Result<(), TapError> {
    ensure_tun_node();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(TapError::Open)?;
    let fd = file.as_raw_fd();
    let ifr = ifreq(name, libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_TUN_EXCL);
    // SAFETY: `fd` is an open /dev/net/tun descriptor and `ifr` is a valid,
    // initialised ifreq that lives for the duration of the call.
    unsafe { tunsetiff(fd, &ifr) }.map_err(|source| TapError::SetIff {
        name: name.into(),
        source,
    })?;
    let configure = |what, source| TapError::Configure {
        name: name.into(),
        what,
        source,
    };
    let owner =
        libc::c_int::try_from(owner).map_err(|_| configure("TUNSETOWNER", nix::Error::EINVAL))?;
    // SAFETY: plain integer ioctls on the descriptor attached to our device.
    unsafe { tunsetowner(fd, owner) }.map_err(|e| configure("TUNSETOWNER", e))?;
    // SAFETY: as above.
    unsafe { tunsetpersist(fd, 1) }.map_err(|e| configure("TUNSETPERSIST", e))?;
    Ok(())
}

/// Creates `/dev/net/tun` when a container runtime did not provide it and
/// we may (`CAP_MKNOD`); otherwise the open below reports the problem.
fn ensure_tun_node() {
    let path = Path::new(TUN_PATH);
    if path.exists() {
        return;
    }
    let _ = std::fs::create_dir_all("/dev/net");
    let dev = nix::sys::stat::makedev(10, 200);
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
    if nix::sys::stat::mknod(path, nix::sys::stat::SFlag::S_IFCHR, mode, dev).is_ok() {
        tracing::info!("created {TUN_PATH} (it was missing)");
    }
}

fn ifreq(name: &str, flags: libc::c_int) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    ifr
}
