//! `image verify`: proves offline (no mount, no root) that an ext4 image meets
//! the guest requirements, as a table or JSON.
//!
//! Exit codes: 0 every rule passes, 1 a rule fails, 2 the file is not a
//! readable ext4 image.

pub mod image;
pub mod initrd;
pub mod rules;
pub mod systemd;

pub use image::{Image, ImageError};
pub use rules::{Check, Status};

use dozlab_core::manifest::{MANIFEST_FILE, Manifest};
use serde::Serialize;
use std::path::Path;

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The image checked.
    pub image: String,
    /// Whether Docker rules were checked.
    pub docker: bool,
    /// Why Docker rules were skipped, if they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_skipped_because: Option<String>,
    /// True when no rule failed.
    pub passed: bool,
    /// Every rule's result.
    pub checks: Vec<Check>,
}

/// Verifies `path`. `without_docker` skips the Docker rules; so does a
/// `manifest.json` beside the image saying `features.docker: false`.
pub fn verify(path: &Path, without_docker: bool) -> Result<Report, ImageError> {
    let img = Image::open(path)?;
    let skipped = if without_docker {
        Some("--without docker".to_string())
    } else {
        manifest_without_docker(path)
    };
    let docker = skipped.is_none();
    let checks = rules::run_all(&img, docker);
    if let Some(damage) = img.damage() {
        return Err(damage);
    }
    Ok(Report {
        image: path.display().to_string(),
        docker,
        docker_skipped_because: skipped,
        passed: checks.iter().all(|c| c.status != Status::Fail),
        checks,
    })
}

fn manifest_without_docker(image: &Path) -> Option<String> {
    let path = image.parent()?.join(MANIFEST_FILE);
    let manifest = Manifest::load(&path).ok()?;
    (!manifest.features.docker).then(|| format!("{} says features.docker = false", path.display()))
}

/// Renders the report as a text table (fix column only for failures).
pub fn render_table(report: &Report) -> String {
    let mut out = format!("image: {}\n", report.image);
    if let Some(why) = &report.docker_skipped_because {
        out.push_str(&format!("docker checks skipped: {why}\n"));
    }
    let width = report
        .checks
        .iter()
        .map(|c| c.requirement.len())
        .max()
        .unwrap_or(10);
    out.push_str(&format!("{:<width$}  RESULT  FOUND\n", "REQUIREMENT"));
    for c in &report.checks {
        let status = match c.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        out.push_str(&format!(
            "{:<width$}  {status:<6}  {}\n",
            c.requirement, c.found
        ));
        if c.status == Status::Fail {
            out.push_str(&format!("{:<width$}  {:<6}  fix: {}\n", "", "", c.fix));
        }
    }
    let failed = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .count();
    out.push_str(&if failed == 0 {
        "all requirements met\n".to_string()
    } else {
        format!("{failed} requirement(s) not met\n")
    });
    out
}

#[cfg(test)]
mod tests;
