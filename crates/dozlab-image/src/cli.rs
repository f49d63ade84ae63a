//! `dozlab image build|cached|verify|serve`: flags and entry points.
//!
//! Exit codes: 0 success; 1 build failure or a verify rule failed; 2 bad
//! usage, bad recipe, or (verify) a file that is not a readable ext4 image.

use crate::build::{self, BuildOptions};
use crate::cache;
use crate::recipe::Recipe;
use crate::serve;
use crate::verify;
use anyhow::Context;
use dozlab_core::ByteSize;
use dozlab_core::failure::{CmdResult, Failure};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Build, verify and serve guest rootfs images.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// The image subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build rootfs.ext4, rootfs.ext4.zst and manifest.json from a recipe (needs root).
    Build(BuildArgs),
    /// Print the directory of a cached build of a profile, building it first if needed.
    Cached(CachedArgs),
    /// Check offline (no mount, no root) that an ext4 image meets the guest requirements.
    Verify(VerifyArgs),
    /// Serve built images over HTTP (Range requests) with an index.json catalog.
    Serve(ServeArgs),
    /// Print a resolved recipe (extends applied) and its cache key as JSON.
    Recipe(RecipeArgs),
    /// Build (once per machine, cached) the Dozlab microVM kernel and print its directory.
    Kernel(KernelArgs),
}

/// `image kernel`.
#[derive(Debug, clap::Args)]
pub struct KernelArgs {
    /// Cache directory (default: $DOZLAB_CACHE, else ~/.cache/dozlab); the
    /// kernel goes to <cache>/kernels/<key>/ (bzImage, vmlinux, config, release).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Kernel source tarball [default: /usr/src/linux-source-6.1.tar.xz].
    #[arg(long, env = "DOZLAB_KERNEL_SOURCE")]
    pub source: Option<PathBuf>,
    /// Config fragment applied on top of tinyconfig instead of the shipped
    /// one (crates/dozlab-image/kernel/microvm.config); its key differs.
    #[arg(long)]
    pub fragment: Option<PathBuf>,
    /// Only configure and check that every option of the fragment survived
    /// `make olddefconfig`; build nothing, cache nothing.
    #[arg(long)]
    pub check_config: bool,
}

/// `image serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory holding builds (itself and up to two levels of subdirectories are indexed).
    pub dir: PathBuf,
    /// Address to listen on (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8700")]
    pub listen: std::net::SocketAddr,
}

/// `image verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The ext4 image (rootfs.ext4).
    pub image: PathBuf,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Skip the requirements of a feature the image is meant to lack (only `docker`).
    #[arg(long, value_name = "FEATURE", value_parser = ["docker"])]
    pub without: Vec<String>,
}

/// Recipe and build options shared by `build` and `cached`.
#[derive(Debug, clap::Args)]
pub struct RecipeArgs {
    /// Built-in profile (minimal, vm, k8s) or a recipe file ending in .toml.
    #[arg(long, default_value = "minimal")]
    pub profile: String,
    /// Apparent size of the ext4 image, e.g. 2G (default: content plus headroom).
    #[arg(long)]
    pub size: Option<ByteSize>,
    /// Debian suite (default: the recipe's, normally bookworm).
    #[arg(long)]
    pub suite: Option<String>,
    /// Debian mirror URL for mmdebstrap (default: mmdebstrap's own choice).
    #[arg(long)]
    pub mirror: Option<String>,
    /// Where to assemble the tree (default: /dev/shm when it is a tmpfs with
    /// 4 GiB free, else inside the output's staging directory).
    #[arg(long, env = "DOZLAB_IMAGE_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
}

/// `image build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub recipe: RecipeArgs,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Cache directory: reuse a build with the same key, keep pinned downloads.
    #[arg(long, env = "DOZLAB_CACHE")]
    pub cache: Option<PathBuf>,
}

/// `image cached`.
#[derive(Debug, clap::Args)]
pub struct CachedArgs {
    #[command(flatten)]
    pub recipe: RecipeArgs,
    /// Cache directory (default: $DOZLAB_CACHE, else ~/.cache/dozlab).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// Entry point of `dozlab image`.
pub fn run(args: ImageArgs) -> CmdResult {
    match args.command {
        ImageCommand::Build(a) => run_build(a),
        ImageCommand::Cached(a) => run_cached(a),
        ImageCommand::Verify(a) => run_verify(a),
        ImageCommand::Serve(a) => run_serve(a),
        ImageCommand::Recipe(a) => run_recipe(a),
        ImageCommand::Kernel(a) => run_kernel(a),
    }
}

fn run_recipe(args: RecipeArgs) -> CmdResult {
    let (recipe, opts) = load(&args)?;
    let out = serde_json::json!({
        "recipe": recipe,
        "suite": opts.suite(&recipe),
        "cache_key": build::cache_key(&recipe, &opts),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).context("cannot encode the recipe")?
    );
    Ok(ExitCode::SUCCESS)
}

fn run_serve(args: ServeArgs) -> CmdResult {
    if !args.dir.is_dir() {
        return Err(Failure::usage(serve::ServeError::NotADirectory(
            args.dir.display().to_string(),
        )));
    }
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let dir = args.dir.clone();
    rt.block_on(serve::serve(&dir, args.listen, |bound| {
        println!("listening on http://{bound}");
        eprintln!(
            "serving {} (index: http://{bound}/index.json); Ctrl-C to stop",
            dir.display()
        );
    }))
    .map_err(anyhow::Error::from)?;
    Ok(ExitCode::SUCCESS)
}

fn run_verify(args: VerifyArgs) -> CmdResult {
    let without_docker = args.without.iter().any(|w| w == "docker");
    let report = verify::verify(&args.image, without_docker).map_err(Failure::usage)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("cannot encode the report")?
        );
    } else {
        print!("{}", verify::render_table(&report));
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn load(args: &RecipeArgs) -> Result<(Recipe, BuildOptions), Failure> {
    let recipe = Recipe::load(&args.profile).map_err(Failure::usage)?;
    let opts = BuildOptions {
        suite: args.suite.clone(),
        size: args.size,
        mirror: args.mirror.clone(),
        download_cache: None,
        work_dir: args.work_dir.clone(),
        cache_dir: None,
    };
    Ok((recipe, opts))
}

/// Exit code of a build stopped by SIGINT/SIGTERM.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Maps a build error to its exit code (130 when interrupted, else 1).
fn build_failure(e: impl Into<anyhow::Error>) -> Failure {
    let e = e.into();
    use crate::build::BuildError;
    use crate::host::HostError::Interrupted;
    let interrupted = e.chain().any(|c| {
        matches!(c.downcast_ref(), Some(Interrupted))
            || matches!(c.downcast_ref(), Some(BuildError::Host(Interrupted)))
            || matches!(
                c.downcast_ref(),
                Some(cache::CacheError::Build(BuildError::Host(Interrupted)))
            )
    });
    Failure::new(if interrupted { EXIT_INTERRUPTED } else { 1 }, e)
}

fn run_build(args: BuildArgs) -> CmdResult {
    let (recipe, mut opts) = load(&args.recipe)?;
    crate::host::catch_interrupts();
    match &args.cache {
        Some(cache_dir) => {
            let dir =
                cache::ensure_cached_with(&recipe, &opts, cache_dir).map_err(build_failure)?;
            copy_build(&dir, &args.out)?;
        }
        None => {
            opts.download_cache = None;
            build::build_to_dir(&recipe, &opts, &args.out).map_err(build_failure)?;
        }
    }
    println!("{}", absolute(&args.out).display());
    Ok(ExitCode::SUCCESS)
}

fn run_kernel(args: KernelArgs) -> CmdResult {
    use crate::kernel::{self, KernelSpec};
    let mut spec = KernelSpec::from_env();
    if let Some(s) = args.source {
        spec.source = s;
    }
    if let Some(f) = &args.fragment {
        spec.fragment = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read --fragment {}", f.display()))
            .map_err(Failure::usage)?;
    }
    kernel::fragment::Fragment::parse(&spec.fragment).map_err(Failure::usage)?;
    crate::host::catch_interrupts();
    if args.check_config {
        kernel::preflight(&spec).map_err(Failure::usage)?;
        let base = std::env::temp_dir().join(format!("dozlab-kernel-check-{}", std::process::id()));
        let _base_guard = build::StagingGuard(base.clone());
        let work = build::work_dir_for(&BuildOptions::default(), &base);
        let _work_guard = build::StagingGuard(work.clone());
        let src = kernel::unpack(&spec, &work).map_err(build_failure)?;
        kernel::configure(&src, &spec.fragment).map_err(build_failure)?;
        eprintln!("every option of the fragment survived make olddefconfig");
        return Ok(ExitCode::SUCCESS);
    }
    kernel::preflight(&spec).map_err(Failure::usage)?;
    let cache_dir = args.cache.unwrap_or_else(cache::default_cache_dir);
    let k = kernel::ensure_built(&spec, &cache_dir).map_err(build_failure)?;
    eprintln!("kernel {}", k.release);
    println!("{}", absolute(&k.dir).display());
    Ok(ExitCode::SUCCESS)
}

fn run_cached(args: CachedArgs) -> CmdResult {
    let (recipe, opts) = load(&args.recipe)?;
    crate::host::catch_interrupts();
    let cache_dir = args.cache.unwrap_or_else(cache::default_cache_dir);
    let dir = cache::ensure_cached_with(&recipe, &opts, &cache_dir).map_err(build_failure)?;
    println!("{}", absolute(&dir).display());
    Ok(ExitCode::SUCCESS)
}

/// Copies a cached build into `out` (sparse, reflinked where possible), via staging.
fn copy_build(from: &Path, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create --out {}", out.display()))?;
    let staging = out.join(format!(".dozlab-copy-{}", std::process::id()));
    let guard = build::StagingGuard(staging.clone());
    std::fs::create_dir_all(&staging)?;
    let status = Command::new("cp")
        .args(["--sparse=always", "--reflink=auto", "--"])
        .arg(from.join(build::IMAGE_FILE))
        .arg(from.join(build::IMAGE_ZST_FILE))
        .arg(from.join(dozlab_core::manifest::MANIFEST_FILE))
        .arg(&staging)
        .status()
        .context("cannot run cp")?;
    anyhow::ensure!(
        status.success(),
        "copying the cached build from {} failed",
        from.display()
    );
    build::publish_files(&staging, out)?;
    drop(guard);
    eprintln!("reused the cached build {}", from.display());
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::BuildError;
    use crate::host::HostError;

    #[test]
    fn interrupted_builds_exit_130_wherever_the_error_is_wrapped() {
        let direct = build_failure(BuildError::Host(HostError::Interrupted));
        assert_eq!(direct.code, EXIT_INTERRUPTED);
        let cached = build_failure(cache::CacheError::Build(BuildError::Host(
            HostError::Interrupted,
        )));
        assert_eq!(cached.code, EXIT_INTERRUPTED);
        let other = build_failure(BuildError::Tree("no kernel".into()));
        assert_eq!(other.code, 1);
    }
}
