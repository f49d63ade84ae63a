//! `image build`: recipe → Debian tree (mmdebstrap) → ext4 (`mkfs.ext4 -d`)
//! → zstd → manifest.json.
//!
//! Everything happens inside a staging directory on the same filesystem as
//! the destination; only complete results are renamed into place, so an
//! interrupted or failed build never leaves a file at a final path.

use crate::customize;
use crate::fetch;
use crate::host::{self, HostError, Progress, shell_quote};
use crate::kernel::{self, BuiltKernel, KernelError, KernelSpec};
use crate::recipe::{KernelChoice, Recipe};
use crate::tree;
use dozlab_core::ByteSize;
use dozlab_core::manifest::{Artifact, Features, MANIFEST_FILE, Manifest};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Bumped whenever the builder's output changes for the same recipe (part of the cache key).
pub const BUILDER_VERSION: &str = "dozlab-image-builder-3";
/// File name of the raw image.
pub const IMAGE_FILE: &str = "rootfs.ext4";
/// File name of the compressed image.
pub const IMAGE_ZST_FILE: &str = "rootfs.ext4.zst";
/// Filesystem label of the root filesystem.
pub const ROOT_LABEL: &str = "rootfs";

const MIB: u64 = 1024 * 1024;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error("cannot build the Dozlab kernel")]
    Kernel(#[from] KernelError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the built tree is unusable: {0}")]
    Tree(String),
    #[error(
        "--size {size} is too small for the tree ({tree}); use at least {need} or leave --size out"
    )]
    TooSmall {
        size: ByteSize,
        tree: String,
        need: ByteSize,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Io { what, source }
}

/// Options beside the recipe.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Debian suite overriding the recipe's.
    pub suite: Option<String>,
    /// Apparent size of the ext4 image (default: tree size plus headroom).
    pub size: Option<ByteSize>,
    /// Debian mirror URL passed to mmdebstrap (default: mmdebstrap's own default).
    pub mirror: Option<String>,
    /// Where pinned downloads are kept between builds.
    pub download_cache: Option<PathBuf>,
    /// Where the tree is assembled (default: see [`work_dir_for`]).
    pub work_dir: Option<PathBuf>,
    /// Cache directory holding built kernels (`kernels/<key>`) for
    /// `kernel = "dozlab"` recipes (default: [`crate::cache::default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
}

impl BuildOptions {
    /// The suite actually used.
    pub fn suite<'a>(&'a self, recipe: &'a Recipe) -> &'a str {
        self.suite.as_deref().unwrap_or(&recipe.suite)
    }
}

/// The cache key: sha256 of the recipe content, suite, size, mirror and builder version.
pub fn cache_key(recipe: &Recipe, opts: &BuildOptions) -> String {
    let mut h = Sha256::new();
    h.update(recipe.content_sha256());
    h.update(b"\0suite=");
    h.update(opts.suite(recipe));
    h.update(b"\0size=");
    h.update(
        opts.size
            .map(|s| s.0.to_string())
            .unwrap_or_else(|| "auto".into()),
    );
    if let Some(m) = &opts.mirror {
        h.update(b"\0mirror=");
        h.update(m);
    }
    h.update(b"\0builder=");
    h.update(BUILDER_VERSION);
    if recipe.kernel == KernelChoice::Dozlab {
        // The kernel's own key (fragment + sources): a new config rebuilds the image.
        let k = KernelSpec::from_env().cache_key();
        h.update(b"\0kernel=");
        h.update(k.as_deref().unwrap_or("unavailable"));
    }
    hex::encode(h.finalize())
}

const WORK_PREFIX: &str = "dozlab-image-work-";
const SHM: &str = "/dev/shm";
/// Free space (and available memory) /dev/shm needs to hold a tree.
const SHM_MIN_FREE: u64 = 4 << 30;

/// The directory the tree is assembled in: under `--work-dir` when given,
/// else under /dev/shm when it is a tmpfs with room (RAM: fast to write and,
/// above all, fast to delete), else `staging/work`.
pub fn work_dir_for(opts: &BuildOptions, staging: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let root = match &opts.work_dir {
        Some(dir) => dir.clone(),
        None if shm_has_room() => PathBuf::from(SHM),
        None => return staging.join("work"),
    };
    remove_stale_staging(&root, WORK_PREFIX);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    root.join(format!("{WORK_PREFIX}{n}-{}", std::process::id()))
}

fn shm_has_room() -> bool {
    let is_tmpfs = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(4) == Some(&SHM) && f.iter().skip_while(|x| **x != "-").nth(1) == Some(&"tmpfs")
        });
    let free = Command::new("df")
        .args(["-B1", "--output=avail", SHM])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .and_then(|l| l.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let mem_available = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    is_tmpfs && free >= SHM_MIN_FREE && mem_available >= SHM_MIN_FREE
}

/// Builds `recipe` inside `staging` (created; must not hold an earlier build).
/// On success `staging` holds exactly rootfs.ext4, rootfs.ext4.zst and manifest.json.
pub fn build_in(
    recipe: &Recipe,
    opts: &BuildOptions,
    staging: &Path,
) -> Result<Manifest, BuildError> {
    host::preflight()?;
    let dozlab_kernel = recipe.kernel == KernelChoice::Dozlab;
    let mut progress = Progress::new(6 + usize::from(dozlab_kernel));
    let built_kernel = if dozlab_kernel {
        Some(dozlab_kernel_for(opts, &mut progress)?)
    } else {
        None
    };
    fs::create_dir_all(staging).map_err(io_err(format!("cannot create {}", staging.display())))?;
    let work = work_dir_for(opts, staging);
    remove_tree_safely(&work);
    let work_guard = StagingGuard(work.clone());
    let tree = work.join("tree");
    let overlay = work.join("overlay");

    progress.phase("prepare: base configuration and pinned files");
    let early = work.join("early");
    customize::write_early_overlay(&early).map_err(io_err("cannot write the early overlay"))?;
    customize::write_overlay(&overlay).map_err(io_err("cannot write the overlay"))?;
    fetch::fetch_files(&recipe.files, &overlay, opts.download_cache.as_deref())?;
    let script = work.join("customize.sh");
    fs::write(&script, customize::chroot_script(recipe))
        .map_err(io_err("cannot write the customize script"))?;
    progress.done(&format!("{} pinned file(s)", recipe.files.len()));

    host::interrupted()?;
    progress.phase(&format!(
        "bootstrap: mmdebstrap {} ({} packages)",
        opts.suite(recipe),
        recipe.packages.len()
    ));
    let dirs = HookDirs {
        early: &early,
        overlay: &overlay,
        script: &script,
    };
    host::run(&mut mmdebstrap_command(recipe, opts, &tree, &dirs))?;
    progress.done("");

    progress.phase("finalize and inspect the tree");
    customize::finalize_tree(&tree).map_err(io_err("cannot finalize the tree"))?;
    if let Some(k) = &built_kernel {
        install_kernel(k, &tree).map_err(io_err("cannot copy the Dozlab kernel into /boot"))?;
    }
    let kernel = tree::find_kernel(&tree).map_err(BuildError::Tree)?;
    let packages =
        tree::installed_packages(&tree).map_err(io_err("cannot read the tree's dpkg status"))?;
    let tree_bytes = tree::allocated_bytes(&tree).map_err(io_err("cannot measure the tree"))?;
    progress.done(&format!(
        "kernel {}, {} packages, tree {}",
        kernel.version,
        packages.len(),
        dozlab_core::size::human(tree_bytes)
    ));

    progress.phase("mkfs.ext4 -d (no mount)");
    let size = image_size(tree_bytes, opts.size)?;
    let image = staging.join(IMAGE_FILE);
    host::run(&mut mkfs_command(&tree, &image, size))?;
    progress.done(&format!("{IMAGE_FILE}, {size} apparent"));

    progress.phase("compress (zstd) and checksum, remove the tree");
    // Deleting tens of thousands of files can take long on a busy disk: do it
    // while zstd compresses.
    let cleaner = std::thread::spawn(move || drop(work_guard));
    let zst = staging.join(IMAGE_ZST_FILE);
    let compressed = compress_and_hash(&image, &zst);
    cleaner.join().expect("tree removal does not panic");
    let (raw, compressed) = compressed?;
    progress.done(&format!(
        "{IMAGE_ZST_FILE} {}",
        dozlab_core::size::human(compressed.size)
    ));

    progress.phase("manifest.json");
    let manifest = Manifest {
        name: recipe.name.clone(),
        profile: recipe.profile.clone(),
        created: now_rfc3339(),
        kernel,
        packages,
        artifacts: vec![raw, compressed],
        features: Features {
            docker: recipe.docker,
        },
        recipe_sha256: Some(cache_key(recipe, opts)),
    };
    fs::write(staging.join(MANIFEST_FILE), manifest.to_json())
        .map_err(io_err("cannot write manifest.json"))?;
    progress.done("");
    eprintln!("   build finished in {:.1}s", progress.total_secs());
    Ok(manifest)
}

/// The cached Dozlab kernel, building it first when absent (phase output).
fn dozlab_kernel_for(
    opts: &BuildOptions,
    progress: &mut Progress,
) -> Result<BuiltKernel, BuildError> {
    let spec = KernelSpec::from_env();
    let cache = opts
        .cache_dir
        .clone()
        .unwrap_or_else(crate::cache::default_cache_dir);
    progress.phase("kernel: the Dozlab microVM kernel (cached by config hash)");
    let k = kernel::ensure_built(&spec, &cache)?;
    progress.done(&format!("{} in {}", k.release, k.dir.display()));
    Ok(k)
}

/// Copies the kernel into the tree's `/boot`: `vmlinuz-<rel>` (bzImage, for
/// QEMU), `vmlinux-<rel>` (ELF, for Firecracker) and `config-<rel>`.
pub fn install_kernel(k: &BuiltKernel, tree: &Path) -> io::Result<()> {
    let boot = tree.join("boot");
    fs::create_dir_all(&boot)?;
    let rel = &k.release;
    fs::copy(k.bzimage(), boot.join(format!("vmlinuz-{rel}")))?;
    fs::copy(k.vmlinux(), boot.join(format!("vmlinux-{rel}")))?;
    fs::copy(k.config(), boot.join(format!("config-{rel}")))?;
    Ok(())
}

/// What the mmdebstrap hooks copy in and run.
struct HookDirs<'a> {
    early: &'a Path,
    overlay: &'a Path,
    script: &'a Path,
}

fn mmdebstrap_command(
    recipe: &Recipe,
    opts: &BuildOptions,
    tree: &Path,
    dirs: &HookDirs,
) -> Command {
    let q = |p: &Path| shell_quote(&p.to_string_lossy());
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg("--mode=root")
        .arg("--format=directory")
        .arg(format!("--variant={}", recipe.variant))
        .arg(format!("--include={}", recipe.packages.join(",")))
        // Our early files pre-exist the packages' conffiles: keep ours, never prompt.
        .arg("--dpkgopt=force-confdef")
        .arg("--dpkgopt=force-confold")
        .arg(format!(
            "--essential-hook=cp -a {}/. \"$1\"/",
            q(dirs.early)
        ))
        .arg(format!(
            "--customize-hook=cp -a {}/. \"$1\"/",
            q(dirs.overlay)
        ))
        .arg(format!(
            "--customize-hook=chroot \"$1\" /bin/sh -e < {}",
            q(dirs.script)
        ))
        .arg(opts.suite(recipe))
        .arg(tree);
    if let Some(m) = &opts.mirror {
        cmd.arg(m);
    }
    cmd.env("LC_ALL", "C.UTF-8");
    cmd
}

fn mkfs_command(tree: &Path, image: &Path, size: ByteSize) -> Command {
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-L", ROOT_LABEL, "-m", "1", "-J", "size=16"])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1", "-d"])
        .arg(tree)
        .arg(image)
        .arg(format!("{}k", size.0 / 1024));
    cmd
}

/// Image size: `--size` when given (checked against the tree), else the tree plus headroom.
pub fn image_size(tree_bytes: u64, requested: Option<ByteSize>) -> Result<ByteSize, BuildError> {
    let need = round_up(tree_bytes + tree_bytes / 8 + 64 * MIB, 64 * MIB);
    match requested {
        Some(size) if size.0 < need => Err(BuildError::TooSmall {
            size,
            tree: dozlab_core::size::human(tree_bytes),
            need: ByteSize(need),
        }),
        Some(size) => Ok(ByteSize(round_up(size.0, MIB))),
        None => Ok(ByteSize(round_up(
            tree_bytes + tree_bytes / 4 + 256 * MIB,
            64 * MIB,
        ))),
    }
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Compresses `image` to `zst` with the zstd tool while hashing `image`.
fn compress_and_hash(image: &Path, zst: &Path) -> Result<(Artifact, Artifact), BuildError> {
    let image_owned = image.to_path_buf();
    let hasher = std::thread::spawn(move || sha256_fast(&image_owned));
    let mut cmd = Command::new("zstd");
    cmd.args(["-q", "-f", "-T0", "-3", "-o"])
        .arg(zst)
        .arg(image);
    let compressed = host::run(&mut cmd);
    let raw_hash = hasher.join().expect("hash thread does not panic");
    compressed?;
    let (raw_size, raw_sha) = raw_hash.map_err(io_err("cannot hash rootfs.ext4"))?;
    let (zst_size, zst_sha) = sha256_fast(zst).map_err(io_err("cannot hash rootfs.ext4.zst"))?;
    let raw = Artifact {
        path: IMAGE_FILE.into(),
        size: raw_size,
        sha256: raw_sha.clone(),
        uncompressed_size: None,
        uncompressed_sha256: None,
    };
    let compressed = Artifact {
        path: IMAGE_ZST_FILE.into(),
        size: zst_size,
        sha256: zst_sha,
        uncompressed_size: Some(raw_size),
        uncompressed_sha256: Some(raw_sha),
    };
    Ok((raw, compressed))
}

/// Like [`sha256_file`], using coreutils' `sha256sum` when present: it is
/// several times faster than unoptimised (debug-build) Rust on a multi-GB image.
pub fn sha256_fast(path: &Path) -> io::Result<(u64, String)> {
    let size = fs::metadata(path)?.len();
    let out = Command::new("sha256sum").arg("--").arg(path).output();
    if let Ok(out) = out
        && out.status.success()
        && let Some(sum) = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
        && sum.len() == 64
    {
        return Ok((size, sum.to_string()));
    }
    sha256_file(path)
}

/// (size, lower-case hex sha256) of a file.
pub fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(h.finalize())))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Builds into `out` (created if missing): a staging directory inside `out`,
/// then renames the files into place, manifest last.
pub fn build_to_dir(
    recipe: &Recipe,
    opts: &BuildOptions,
    out: &Path,
) -> Result<Manifest, BuildError> {
    host::preflight()?;
    fs::create_dir_all(out).map_err(io_err(format!("cannot create --out {}", out.display())))?;
    remove_stale_staging(out, ".dozlab-build-");
    let staging = out.join(format!(".dozlab-build-{}", std::process::id()));
    let guard = StagingGuard(staging.clone());
    let manifest = build_in(recipe, opts, &staging)?;
    publish_files(&staging, out)?;
    drop(guard);
    Ok(manifest)
}

/// Moves the three build files from `from` into `to`, the manifest last.
pub fn publish_files(from: &Path, to: &Path) -> Result<(), BuildError> {
    for name in [IMAGE_FILE, IMAGE_ZST_FILE, MANIFEST_FILE] {
        fs::rename(from.join(name), to.join(name))
            .map_err(io_err(format!("cannot move {name} into {}", to.display())))?;
    }
    Ok(())
}

/// Removes leftovers of builds whose process is gone (`<prefix><pid>` dirs in `dir`).
pub fn remove_stale_staging(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.rsplit('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            remove_tree_safely(&e.path());
        }
    }
}

/// Removes a staging tree unless something is still mounted inside it (a
/// killed mmdebstrap can leave /proc, /sys or /dev mounted in its chroot;
/// deleting through those would touch the host).
pub fn remove_tree_safely(path: &Path) {
    let mounted = mounts_under(path);
    if mounted.is_empty() {
        let _ = fs::remove_dir_all(path);
    } else {
        eprintln!(
            "warning: not removing {}: still mounted inside it: {} (umount them, then delete it)",
            path.display(),
            mounted.join(", ")
        );
    }
}

/// Mount points at or below `path`, from /proc/self/mountinfo.
pub fn mounts_under(path: &Path) -> Vec<String> {
    let Ok(abs) = std::path::absolute(path) else {
        return vec![];
    };
    let prefix = abs.to_string_lossy().trim_end_matches('/').to_string();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

/// Removes a staging directory when dropped (on success it is empty anyway).
#[derive(Debug)]
pub struct StagingGuard(pub PathBuf);

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if self.0.exists() {
            remove_tree_safely(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_has_headroom_and_checks_requests() {
        let tree = 600 * MIB;
        let auto = image_size(tree, None).unwrap();
        assert!(auto.0 > tree + 200 * MIB && auto.0.is_multiple_of(64 * MIB));
        assert!(matches!(
            image_size(tree, Some(ByteSize(100 * MIB))),
            Err(BuildError::TooSmall { .. })
        ));
        assert_eq!(
            image_size(tree, Some(ByteSize(2048 * MIB))).unwrap().0,
            2048 * MIB
        );
    }

    #[test]
    fn key_depends_on_inputs() {
        let r = Recipe::load("minimal").unwrap();
        let base = BuildOptions::default();
        let k = cache_key(&r, &base);
        assert_eq!(k, cache_key(&r, &base));
        let other_suite = BuildOptions {
            suite: Some("trixie".into()),
            ..Default::default()
        };
        assert_ne!(k, cache_key(&r, &other_suite));
        let other_size = BuildOptions {
            size: Some(ByteSize(4 << 30)),
            ..Default::default()
        };
        assert_ne!(k, cache_key(&r, &other_size));
        assert_ne!(k, cache_key(&Recipe::load("vm").unwrap(), &base));
    }

    #[test]
    fn both_hashes_agree() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, vec![7u8; 3 << 20]).unwrap();
        assert_eq!(sha256_fast(&p).unwrap(), sha256_file(&p).unwrap());
    }

    #[test]
    fn mounts_are_found_under_a_path() {
        assert!(mounts_under(Path::new("/proc")).contains(&"/proc".to_string()));
        let d = tempfile::tempdir().unwrap();
        assert!(mounts_under(d.path()).is_empty());
    }

    #[test]
    fn work_dir_follows_the_option_and_is_unique() {
        let d = tempfile::tempdir().unwrap();
        let opts = BuildOptions {
            work_dir: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        let a = work_dir_for(&opts, Path::new("/nonexistent"));
        let b = work_dir_for(&opts, Path::new("/nonexistent"));
        assert!(a.starts_with(d.path()) && a != b);
        assert!(
            a.file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with(&format!("-{}", std::process::id()))
        );
    }

    #[test]
    fn stale_staging_of_dead_processes_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let dead = d.path().join(".dozlab-build-999999999");
        let alive = d
            .path()
            .join(format!(".dozlab-build-{}", std::process::id()));
        fs::create_dir(&dead).unwrap();
        fs::create_dir(&alive).unwrap();
        remove_stale_staging(d.path(), ".dozlab-build-");
        assert!(!dead.exists() && alive.exists());
    }
}
