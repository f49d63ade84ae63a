//! The Dozlab guest kernel: built from Debian's `linux-source-6.1` with the
//! small microVM config in `crates/dozlab-image/kernel/microvm.config`,
//! cached by config hash under `<cache>/kernels/<key>/` (built once per
//! machine).
//!
//! Steps: unpack the source tarball in a work directory, `make tinyconfig`,
//! append the fragment, `make olddefconfig`, check that every option the
//! fragment sets survived ([`fragment::Fragment::dropped_in`]), then
//! `make bzImage`. A finished entry holds `bzImage` (for QEMU), `vmlinux`
//! (the uncompressed ELF Firecracker boots), `config` and `release`. Like
//! the image cache, a directory named `<key>` is always complete: builds go
//! to `.tmp-<key>-<pid>` under an exclusive lock and are renamed into place.

pub mod fragment;

use crate::build::{StagingGuard, remove_stale_staging, sha256_fast};
use crate::host::{self, HostError, find_on_path};
use fragment::{Dropped, Fragment, FragmentError};
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shipped config fragment.
pub const FRAGMENT: &str = include_str!("../../kernel/microvm.config");
/// Where the shipped fragment lives in the repository (for messages).
pub const FRAGMENT_PATH: &str = "crates/dozlab-image/kernel/microvm.config";
/// Bumped when the build steps change the output for the same inputs.
pub const KERNEL_BUILDER_VERSION: &str = "dozlab-kernel-1";
/// Debian's kernel source tarball (package `linux-source-6.1`).
pub const DEFAULT_SOURCE: &str = "/usr/src/linux-source-6.1.tar.xz";
/// Environment variable naming another source tarball.
pub const SOURCE_ENV: &str = "DOZLAB_KERNEL_SOURCE";

/// Files of a finished kernel entry.
pub const BZIMAGE: &str = "bzImage";
/// The uncompressed ELF kernel.
pub const VMLINUX: &str = "vmlinux";
/// The final `.config`.
pub const CONFIG: &str = "config";
/// One line: the kernel release, e.g. `6.1.158-dozlab`.
pub const RELEASE: &str = "release";
/// One line: how many seconds the (cold) build took on this machine.
pub const BUILD_SECONDS: &str = "build-seconds";

/// Tools the kernel build needs: (program, Debian package).
const TOOLS: &[(&str, &str)] = &[
    ("make", "make"),
    ("gcc", "build-essential"),
    ("bc", "bc"),
    ("bison", "bison"),
    ("flex", "flex"),
    ("tar", "tar"),
    ("xz", "xz-utils"),
    ("perl", "perl"),
];

/// Why the kernel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "kernel sources {0} not found: install Debian's linux-source-6.1 \
         (apt-get install linux-source-6.1) or point {SOURCE_ENV} at a linux-*.tar.xz"
    )]
    NoSource(PathBuf),
    #[error(
        "the kernel build needs libelf's headers (/usr/include/gelf.h): apt-get install libelf-dev"
    )]
    NoLibelf,
    #[error(transparent)]
    Fragment(#[from] FragmentError),
    #[error(
        "the kernel config lost {} required option(s) in make olddefconfig: {}; \
         a dependency is missing from the fragment or the option does not exist in these sources \
         (fix {FRAGMENT_PATH})",
        .0.len(),
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    Dropped(Vec<Dropped>),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError::Io { what, source }
}

/// What to build: sources and config fragment.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// The source tarball.
    pub source: PathBuf,
    /// The fragment's text.
    pub fragment: String,
}

impl Default for KernelSpec {
    fn default() -> Self {
        Self::from_env()
    }
}

impl KernelSpec {
    /// The shipped fragment and `$DOZLAB_KERNEL_SOURCE` (else Debian's tarball).
    pub fn from_env() -> Self {
        let source = std::env::var_os(SOURCE_ENV)
            .filter(|s| !s.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_SOURCE), PathBuf::from);
        Self {
            source,
            fragment: FRAGMENT.to_string(),
        }
    }

    /// The cache key: sha256 of the builder version, the fragment and the
    /// source tarball's sha256.
    pub fn cache_key(&self) -> Result<String, KernelError> {
        if !self.source.is_file() {
            return Err(KernelError::NoSource(self.source.clone()));
        }
        let (_, source_sha) = sha256_fast(&self.source)
            .map_err(io_err(format!("cannot hash {}", self.source.display())))?;
        let mut h = Sha256::new();
        h.update(KERNEL_BUILDER_VERSION);
        h.update(b"\0fragment=");
        h.update(&self.fragment);
        h.update(b"\0source=");
        h.update(source_sha);
        Ok(hex::encode(h.finalize()))
    }
}

/// A finished kernel in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltKernel {
    /// `<cache>/kernels/<key>`.
    pub dir: PathBuf,
    /// The kernel release (`uname -r` in the guest).
    pub release: String,
}

impl BuiltKernel {
    /// Reads a complete entry, `None` when `dir` is not one.
    pub fn open(dir: &Path) -> Option<Self> {
        let release = fs::read_to_string(dir.join(RELEASE)).ok()?;
        let complete = [BZIMAGE, VMLINUX, CONFIG]
            .iter()
            .all(|f| dir.join(f).is_file());
        complete.then(|| Self {
            dir: dir.to_path_buf(),
            release: release.trim().to_string(),
        })
    }

    /// The compressed kernel QEMU boots.
    pub fn bzimage(&self) -> PathBuf {
        self.dir.join(BZIMAGE)
    }

    /// The ELF kernel Firecracker boots.
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join(VMLINUX)
    }

    /// The final `.config`.
    pub fn config(&self) -> PathBuf {
        self.dir.join(CONFIG)
    }
}

/// Where a kernel with `key` lives in the cache.
pub fn cached_dir(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join("kernels").join(key)
}

/// The cached kernel for `spec`, building it first when absent.
pub fn ensure_built(spec: &KernelSpec, cache_dir: &Path) -> Result<BuiltKernel, KernelError> {
    let key = spec.cache_key()?;
    let done = cached_dir(cache_dir, &key);
    if let Some(k) = BuiltKernel::open(&done) {
        return Ok(k);
    }
    let kernels = cache_dir.join("kernels");
    fs::create_dir_all(&kernels).map_err(io_err(format!("cannot create {}", kernels.display())))?;
    let lock_path = kernels.join(format!("{key}.lock"));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(format!("cannot open {}", lock_path.display())))?;
    if lock.try_lock().is_err() {
        eprintln!("another process is building this kernel; waiting for it ...");
        lock.lock()
            .map_err(io_err(format!("cannot lock {}", lock_path.display())))?;
    }
    if let Some(k) = BuiltKernel::open(&done) {
        return Ok(k);
    }
    remove_stale_staging(&kernels, &format!(".tmp-{key}-"));
    let staging = kernels.join(format!(".tmp-{key}-{}", std::process::id()));
    let guard = StagingGuard(staging.clone());
    build_into(spec, &staging)?;
    if done.exists() {
        fs::remove_dir_all(&done).map_err(io_err(format!("cannot replace {}", done.display())))?;
    }
    fs::rename(&staging, &done).map_err(io_err(format!("cannot publish {}", done.display())))?;
    drop(guard);
    BuiltKernel::open(&done).ok_or_else(|| KernelError::Io {
        what: format!("{} is incomplete after the build", done.display()),
        source: io::ErrorKind::NotFound.into(),
    })
}

/// Fails unless the tools, libelf's headers and the sources are there.
pub fn preflight(spec: &KernelSpec) -> Result<(), KernelError> {
    for (tool, package) in TOOLS {
        if find_on_path(tool).is_none() {
            return Err(HostError::MissingTool { tool, package }.into());
        }
    }
    if !Path::new("/usr/include/gelf.h").exists() {
        return Err(KernelError::NoLibelf);
    }
    if !spec.source.is_file() {
        return Err(KernelError::NoSource(spec.source.clone()));
    }
    Ok(())
}

/// Unpacks the sources into a fresh directory under `work` and returns it.
pub fn unpack(spec: &KernelSpec, work: &Path) -> Result<PathBuf, KernelError> {
    let src = work.join("linux");
    fs::create_dir_all(&src).map_err(io_err(format!("cannot create {}", src.display())))?;
    host::run(
        Command::new("tar")
            .arg("-xf")
            .arg(&spec.source)
            .arg("-C")
            .arg(&src)
            .arg("--strip-components=1"),
    )?;
    Ok(src)
}

fn make(src: &Path) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(src)
        .arg("-s")
        .env("KBUILD_BUILD_USER", "dozlab")
        .env("KBUILD_BUILD_HOST", "dozlab")
        .env("LC_ALL", "C");
    cmd
}

/// `make tinyconfig`, the fragment, `make olddefconfig`, then the check that
/// every option the fragment sets survived.
pub fn configure(src: &Path, fragment_text: &str) -> Result<(), KernelError> {
    let fragment = Fragment::parse(fragment_text)?;
    host::run(make(src).arg("tinyconfig"))?;
    let config = src.join(".config");
    let base = fs::read_to_string(&config).map_err(io_err("cannot read the tinyconfig .config"))?;
    let mut text = fragment.without_own_options(&base);
    text.push_str(&fragment.to_config_lines());
    fs::write(&config, text).map_err(io_err("cannot write .config"))?;
    host::run(make(src).arg("olddefconfig"))?;
    let done = fs::read_to_string(&config).map_err(io_err("cannot read the final .config"))?;
    let dropped = fragment.dropped_in(&done);
    if dropped.is_empty() {
        Ok(())
    } else {
        Err(KernelError::Dropped(dropped))
    }
}

/// Builds the kernel of `spec` into `out` (created): unpack, configure and
/// check, compile, copy the results.
pub fn build_into(spec: &KernelSpec, out: &Path) -> Result<BuiltKernel, KernelError> {
    preflight(spec)?;
    let started = std::time::Instant::now();
    fs::create_dir_all(out).map_err(io_err(format!("cannot create {}", out.display())))?;
    let work = crate::build::work_dir_for(&crate::build::BuildOptions::default(), out);
    let _work_guard = StagingGuard(work.clone());
    eprintln!("   kernel: unpacking {}", spec.source.display());
    let src = unpack(spec, &work)?;
    eprintln!("   kernel: tinyconfig + {FRAGMENT_PATH}, olddefconfig, check");
    configure(&src, &spec.fragment)?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("   kernel: make -j{jobs} bzImage (a few minutes, once per machine)");
    host::run(make(&src).arg(format!("-j{jobs}")).arg("bzImage"))?;
    let release = capture(make(&src).arg("kernelrelease"))?;
    for (from, to) in [
        ("arch/x86/boot/bzImage", BZIMAGE),
        ("vmlinux", VMLINUX),
        (".config", CONFIG),
    ] {
        fs::copy(src.join(from), out.join(to))
            .map_err(io_err(format!("cannot copy {from} out of the kernel tree")))?;
    }
    fs::write(out.join(RELEASE), format!("{release}\n"))
        .map_err(io_err("cannot write the release file"))?;
    let secs = started.elapsed().as_secs_f64();
    // Informational (bench/vm-boot prints it): how long this cold build took here.
    let _ = fs::write(out.join(BUILD_SECONDS), format!("{secs:.0}\n"));
    eprintln!("   kernel: {release} built in {secs:.0} s");
    Ok(BuiltKernel {
        dir: out.to_path_buf(),
        release,
    })
}

fn capture(cmd: &mut Command) -> Result<String, KernelError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|source| HostError::Spawn {
        program: program.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(HostError::Failed {
            program,
            status: out.status.to_string(),
        }
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_follows_fragment_and_source() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("linux.tar.xz");
        fs::write(&src, b"sources v1").unwrap();
        let spec = KernelSpec {
            source: src.clone(),
            fragment: FRAGMENT.into(),
        };
        let k = spec.cache_key().unwrap();
        assert_eq!(k, spec.cache_key().unwrap());
        let other_fragment = KernelSpec {
            fragment: format!("{FRAGMENT}CONFIG_X=y\n"),
            ..spec.clone()
        };
        assert_ne!(k, other_fragment.cache_key().unwrap());
        fs::write(&src, b"sources v2").unwrap();
        assert_ne!(k, spec.cache_key().unwrap());
        let missing = KernelSpec {
            source: t.path().join("none.tar.xz"),
            ..spec
        };
        let e = missing.cache_key().unwrap_err();
        assert!(
            e.to_string().contains("apt-get install linux-source-6.1"),
            "{e}"
        );
    }

    #[test]
    fn a_complete_entry_needs_all_four_files() {
        let t = tempfile::tempdir().unwrap();
        assert!(BuiltKernel::open(t.path()).is_none());
        for f in [BZIMAGE, VMLINUX, CONFIG] {
            fs::write(t.path().join(f), b"x").unwrap();
        }
        assert!(BuiltKernel::open(t.path()).is_none());
        fs::write(t.path().join(RELEASE), "6.1.1-dozlab\n").unwrap();
        let k = BuiltKernel::open(t.path()).unwrap();
        assert_eq!(k.release, "6.1.1-dozlab");
        assert_eq!(k.vmlinux(), t.path().join(VMLINUX));
    }
}
