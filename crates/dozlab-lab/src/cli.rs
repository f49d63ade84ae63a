//! `dozlab lab validate|test`: flags and entry points.
//!
//! Exit codes: `validate` 0 valid (warnings allowed), 1 problems found, 2
//! the lab cannot be read. `test` 0 every step passed, 1 a step failed or
//! the session could not be booted/reached, 2 the lab is unreadable or
//! invalid (run `lab validate`) or the flags are wrong.

use crate::labtest;
use crate::remote::Vm;
use crate::session::{BootOptions, Session};
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
    }
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
