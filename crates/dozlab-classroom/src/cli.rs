//! Command-line arguments and entry points: `dozlab classroom render` and
//! `dozlab session values`.
//!
//! Exit codes: 0 success; 2 bad flags, roster or existing output (nothing
//! written); 1 an I/O failure while writing (nothing left behind).

use crate::classroom::{self, Options};
use crate::lab::LabSource;
use crate::values::{self, SessionValues};
use dozlab_core::failure::{CmdResult, Failure};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// `dozlab classroom ...`
#[derive(Debug, clap::Args)]
pub struct ClassroomArgs {
    #[command(subcommand)]
    pub command: ClassroomCommand,
}

/// Subcommands of `dozlab classroom`.
#[derive(Debug, clap::Subcommand)]
pub enum ClassroomCommand {
    /// One FluxCD HelmRelease per student, a Secret per student with a
    /// generated password, and a private credentials file.
    Render(RenderArgs),
}

/// `dozlab classroom render`
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Roster CSV with a header row: id (required), user, name, email.
    #[arg(long, value_name = "FILE.csv")]
    pub roster: PathBuf,
    /// URL of the rootfs image every session boots (http, https or file).
    #[arg(long, value_name = "URL")]
    pub image_url: String,
    /// New (or empty) directory to write helmreleases/, secrets/ and credentials.csv into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Course label on every session (e.g. kubernetes-101); also prefixes the session ids.
    #[arg(long, value_name = "C")]
    pub course: Option<String>,
    /// Cohort label on every session (e.g. 2024-spring).
    #[arg(long, value_name = "K")]
    pub cohort: Option<String>,
    /// Name of the Flux GitRepository that holds the chart.
    #[arg(long, value_name = "NAME", default_value = "dozlab-infra")]
    pub chart_source: String,
    /// Namespace of that GitRepository.
    #[arg(long, value_name = "NS", default_value = "flux-system")]
    pub chart_source_namespace: String,
    /// Path of the chart inside the GitRepository.
    #[arg(long, value_name = "PATH", default_value = "charts/dozlab-session")]
    pub chart: String,
    /// Namespace of the HelmReleases, Secrets and session pods.
    #[arg(long, value_name = "NS", default_value = "default")]
    pub namespace: String,
    /// Also write seal-secrets.sh, which turns each Secret into a SealedSecret (kubeseal).
    #[arg(long)]
    pub sealed: bool,
    /// http(s) URL of a lab (.tar.gz) every session shows beside its terminal (lab.url).
    #[arg(long, value_name = "URL")]
    pub lab: Option<String>,
    /// Expected SHA-256 of the lab's .tar.gz (lab.sha256; needs --lab).
    #[arg(long, value_name = "HEX")]
    pub lab_sha256: Option<String>,
}

/// `dozlab session ...`
#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    #[command(subcommand)]
    pub command: SessionCommand,
}

/// Subcommands of `dozlab session`.
#[derive(Debug, clap::Subcommand)]
pub enum SessionCommand {
    /// Write a values file for `helm install ... -f FILE` with a generated password.
    Values(ValuesArgs),
}

/// `dozlab session values`
#[derive(Debug, clap::Args)]
pub struct ValuesArgs {
    /// Session id (lowercase letters, digits, '-'; at most 51 characters).
    #[arg(long)]
    pub id: String,
    /// User id (a Kubernetes label value).
    #[arg(long)]
    pub user: String,
    /// URL of the rootfs image (http, https or file).
    #[arg(long, value_name = "URL")]
    pub image_url: String,
    /// Expected SHA-256 of the image.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Session lifetime (session.ttl): seconds or d/h/m/s parts, e.g. 2h.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// http(s) URL of a lab (.tar.gz) shown beside the terminal (lab.url).
    #[arg(long, value_name = "URL")]
    pub lab: Option<String>,
    /// Expected SHA-256 of the lab's .tar.gz (lab.sha256; needs --lab).
    #[arg(long, value_name = "HEX")]
    pub lab_sha256: Option<String>,
    /// Write the values here (mode 0600) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Entry point of `dozlab classroom`.
pub fn run_classroom(args: ClassroomArgs) -> CmdResult {
    match args.command {
        ClassroomCommand::Render(a) => render(a),
    }
}

fn render(a: RenderArgs) -> CmdResult {
    let lab =
        LabSource::from_flags(a.lab.as_deref(), a.lab_sha256.as_deref()).map_err(Failure::usage)?;
    let opts = Options {
        roster: a.roster,
        image_url: a.image_url,
        out: a.out,
        course: a.course,
        cohort: a.cohort,
        chart_source: a.chart_source,
        chart_source_namespace: a.chart_source_namespace,
        chart: a.chart,
        namespace: a.namespace,
        sealed: a.sealed,
        lab,
    };
    let summary = classroom::render(&opts).map_err(|e| Failure::usage_if(e.is_usage(), e))?;
    let out = summary.out.display();
    println!("rendered {} session(s) into {out}", summary.sessions.len());
    for s in &summary.sessions {
        println!(
            "  line {:>3}  {:<24} -> {}",
            s.student.line, s.student.raw_id, s.name
        );
    }
    println!(
        "next:\n  1. kubectl apply -f {out}/secrets/   {}\n  2. commit {out}/helmreleases/ to the Flux repository (never secrets/ or credentials.csv)\n  3. hand out {out}/credentials.csv (mode 0600), then delete it",
        if opts.sealed {
            "(or: sh seal-secrets.sh and commit the sealed files)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Entry point of `dozlab session`.
pub fn run_session(args: SessionArgs) -> CmdResult {
    match args.command {
        SessionCommand::Values(a) => session_values(a),
    }
}

fn session_values(a: ValuesArgs) -> CmdResult {
    let lab =
        LabSource::from_flags(a.lab.as_deref(), a.lab_sha256.as_deref()).map_err(Failure::usage)?;
    let v = SessionValues {
        id: a.id,
        user: a.user,
        image_url: a.image_url,
        sha256: a.sha256,
        ttl: a.ttl,
        lab,
    };
    let text = values::write(&v, a.out.as_deref(), a.force)
        .map_err(|e| Failure::usage_if(e.is_usage(), e))?;
    match &a.out {
        Some(p) => eprintln!(
            "wrote {} (mode 0600); deploy with: helm install lab-{} charts/dozlab-session -f {}",
            p.display(),
            v.id,
            p.display()
        ),
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}
