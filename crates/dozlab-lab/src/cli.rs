//! `dozlab lab validate|test|fetch`: flags and entry points.
//!
//! Exit codes: `validate` 0 valid (warnings allowed), 1 problems found, 2
//! the lab cannot be read. `test` 0 every step passed, 1 a step failed or
//! the session could not be booted/reached, 2 the lab is unreadable or
//! invalid (run `lab validate`) or the flags are wrong. `fetch` 0 the lab
//! is in place, 1 it could not be fetched, was refused or is invalid, 2
//! bad flags, a missing source or an unusable `--dest`.

use crate::fetch::{FetchRequest, LabSource, fetch_lab_until_stopped};
use crate::labtest;
use crate::remote::Vm;
use crate::session::{BootOptions, Session};
use crate::unpack::Limits;
use crate::validate::{render_text, validate};
use anyhow::Context;
use dozlab_core::failure::{CmdResult, Failure};
use std::path::PathBuf;
use std::process::ExitCode;

/// Labs in the Killercoda scenario format.
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LabCommand {
    /// Check a lab directory without a VM: JSON, files, globs, Markdown, scripts.
    Validate(ValidateArgs),
    /// Run a lab headless in a session: every step's verify must fail, then pass.
    Test(TestArgs),
    /// Fetch a lab (URL, archive or directory), check and validate it into --dest.
    Fetch(FetchArgs),
}

/// `dozlab lab fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// The lab: an http(s) URL or a path of a .tar.gz, or a directory (a lab,
    /// or one holding a single lab.tar.gz, as a ConfigMap mount does).
    #[arg(env = "LAB_URL")]
    pub source: String,
    /// The lab directory to create, or an empty directory to fill.
    #[arg(long, env = "LAB_DIR")]
    pub dest: PathBuf,
    /// Expected sha256 of the archive (as stored or decompressed); strongly
    /// recommended for URLs.
    #[arg(long, env = "LAB_SHA256", value_name = "HEX")]
    pub sha256: Option<String>,
    /// Download cache (used with --sha256).
    #[arg(long, env = "DOZLAB_CACHE")]
    pub cache: Option<PathBuf>,
    /// Largest unpacked lab accepted.
    #[arg(long, default_value = "256M")]
    pub max_size: dozlab_core::ByteSize,
}

/// `dozlab lab validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The lab directory (holding index.json).
    pub dir: PathBuf,
    /// Print the problems as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `dozlab lab test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The lab directory (holding index.json).
    pub dir: PathBuf,
    /// Run in this running `dozlab up` session instead of booting one.
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
    /// Image for the booted session [default: the lab's `backend.imageid` mapping].
    #[arg(long)]
    pub image: Option<String>,
    /// Accelerator for the booted session (auto, kvm, tcg).
    #[arg(long)]
    pub accel: Option<String>,
    /// Name of the booted session [default: labtest-PID].
    #[arg(long)]
    pub name: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Entry point of `dozlab lab`.
pub fn run(args: LabArgs) -> CmdResult {
    match args.command {
        LabCommand::Validate(a) => run_validate(a),
        LabCommand::Test(a) => run_test(a),
        LabCommand::Fetch(a) => run_fetch(a),
    }
}

fn run_fetch(args: FetchArgs) -> CmdResult {
    let source = LabSource::parse(&args.source).map_err(Failure::usage)?;
    let sha256 = args.sha256.filter(|s| !s.trim().is_empty());
    if source.is_url() && sha256.is_none() {
        eprintln!(
            "warning: {source} is not verified: give --sha256 (the sha256sum of the archive) so a changed or corrupted download is refused"
        );
    }
    let req = FetchRequest {
        source,
        dest: args.dest,
        sha256,
        cache: args.cache.map(|c| c.join("downloads")),
        limits: Limits {
            max_bytes: args.max_size.0,
            ..Limits::default()
        },
    };
    // A stop (Ctrl-C, the kubelet's SIGTERM) drops the fetch, which
    // removes everything it staged.
    let Some(result) = fetch_lab_until_stopped(&req)? else {
        return Err(Failure::new(
            130,
            anyhow::anyhow!("interrupted: nothing was left at {}", req.dest.display()),
        ));
    };
    let fetched = result.map_err(|e| {
        let code = if e.is_usage() { 2 } else { 1 };
        Failure::new(code, anyhow::Error::new(e))
    })?;
    for w in &fetched.warnings {
        eprintln!("{w}");
    }
    println!(
        "lab {:?} ({} step{}, {} files) from {} in {}{}",
        fetched.title,
        fetched.steps,
        if fetched.steps == 1 { "" } else { "s" },
        fetched.files,
        req.source,
        fetched.dir.display(),
        fetched
            .sha256
            .map(|s| format!(" (sha256 {s})"))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_validate(args: ValidateArgs) -> CmdResult {
    let report = validate(&args.dir).map_err(Failure::usage)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("cannot encode the report")?
        );
    } else {
        print!("{}", render_text(&args.dir, &report));
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_test(args: TestArgs) -> CmdResult {
    let report = validate(&args.dir).map_err(Failure::usage)?;
    if !report.passed() {
        eprint!("{}", render_text(&args.dir, &report));
        return Err(Failure::usage(anyhow::anyhow!(
            "the lab is not valid: fix the errors above (`dozlab lab validate {}`)",
            args.dir.display()
        )));
    }
    for w in &report.problems {
        eprintln!("{}: {w}", args.dir.display());
    }
    let lab = report.lab.expect("a valid report has its lab");
    let bin = std::env::current_exe().context("cannot find the dozlab binary")?;
    let session = match &args.session {
        Some(name) => Session::attach(&bin, name).map_err(Failure::usage)?,
        None => {
            let name = args
                .name
                .clone()
                .unwrap_or_else(|| format!("labtest-{}", std::process::id()));
            let opts = BootOptions {
                bin: bin.clone(),
                image: args
                    .image
                    .clone()
                    .unwrap_or_else(|| lab.image.image.clone()),
                accel: args.accel.clone(),
                wait_docker: labtest::uses_docker(&lab),
                extra: Vec::new(),
            };
            eprintln!("booting session {name} (image {}) ...", opts.image);
            Session::boot(&name, &opts).map_err(anyhow::Error::from)?
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = rt.block_on(async {
        tokio::select! {
            r = async {
                let vm = Vm::connect(&session.ssh).await?;
                labtest::run(&vm, &lab).await
            } => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    session.finish();
    let result = match outcome {
        None => return Err(Failure::new(130, anyhow::anyhow!("interrupted"))),
        Some(r) => r.with_context(|| format!("lab test in session {}", session.name))?,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).context("cannot encode the report")?
        );
    } else {
        print!("{}", crate::runner::table(&result.rows));
        println!("total {:.1}s", result.seconds);
    }
    if result.passed() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Failure::new(
            1,
            anyhow::anyhow!("lab test failed: {}", args.dir.display()),
        ))
    }
}
