//! `dozlab lab validate`: every check that needs no VM. `index.json` is valid
//! JSON of the right shape, every file it names exists and is UTF-8 text,
//! every asset glob matches, every Markdown page parses (fences closed,
//! known actions, relative links and images present) and every script has a
//! shebang or is valid `bash`. Problems name the file and, where there is
//! one, the line.

use crate::index::{INDEX, LoadError, load_index};
use crate::markdown::{RenderOptions, render};
use crate::model::{Lab, Page, PageId, read_text};
use crate::problem::{Problem, line_of_string};
use crate::script;
use serde::Serialize;
use std::path::Path;

/// The outcome of a validation.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The lab, when `index.json` could be loaded.
    #[serde(skip)]
    pub lab: Option<Lab>,
    /// Errors first, then warnings.
    pub problems: Vec<Problem>,
}

impl Report {
    /// True when there is no error (warnings allowed).
    pub fn passed(&self) -> bool {
        !self.problems.iter().any(Problem::is_error)
    }

    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.problems.iter().filter(|p| p.is_error()).count()
    }
}

/// Validates the lab in `dir`. Only an unreadable directory or
/// `index.json` is an `Err` (exit 2); everything else is in the report.
pub fn validate(dir: &Path) -> Result<Report, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::Unreadable {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let (lab, index_text) = match load_index(dir) {
        Ok(loaded) => loaded,
        Err(LoadError::Invalid { problems, .. }) => {
            return Ok(Report {
                lab: None,
                problems,
            });
        }
        Err(e) => return Err(e),
    };
    let mut problems = Vec::new();
    for page in lab.pages() {
        check_page(&lab, page, &index_text, &mut problems);
    }
    for (i, rule) in lab.assets.iter().enumerate() {
        if let Err(e) = rule.expand(dir) {
            problems.push(
                Problem::error(INDEX, format!("`details.assets.host01[{i}].file`: {e}"))
                    .at(rule.line),
            );
        }
    }
    problems.extend(lab.warnings.iter().cloned());
    problems.sort_by_key(|p| !p.is_error());
    Ok(Report {
        lab: Some(lab),
        problems,
    })
}

fn check_page(lab: &Lab, page: &Page, index_text: &str, out: &mut Vec<Problem>) {
    let mut exec_blocks = 0;
    if let Some(rel) = &page.text
        && let Some(md) = read_file(lab, rel, index_text, out)
    {
        exec_blocks = check_markdown(lab, rel, &md, out);
    }
    for (_key, rel) in page.scripts() {
        if let Some(text) = read_file(lab, rel, index_text, out) {
            out.extend(script::check(&lab.dir, rel, &text));
        }
    }
    if let PageId::Step(i) = page.id
        && page.verify.is_some()
        && exec_blocks == 0
        && page.solution.is_none()
    {
        out.push(Problem::warning(
                INDEX,
                format!(
                    "step {} has a `verify` but no {{{{exec}}}} block and no `dozlab.steps[{i}].solution`: `lab test` cannot do it and will report it failed",
                    i + 1
                ),
            ));
    }
}

/// Reads a file named by `index.json`, reporting a missing or binary one
/// at the line of `index.json` that names it.
fn read_file(lab: &Lab, rel: &str, index_text: &str, out: &mut Vec<Problem>) -> Option<String> {
    match read_text(&lab.dir, rel) {
        Ok(t) => Some(t),
        Err(e) => {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "does not exist".to_string(),
                std::io::ErrorKind::InvalidData => "is not UTF-8 text".to_string(),
                _ => format!("cannot be read: {e}"),
            };
            out.push(
                Problem::error(INDEX, format!("{rel:?} {why}")).at(line_of_string(index_text, rel)),
            );
            None
        }
    }
}

/// Renders the page for its problems; checks the files it links. Returns
/// the number of exec blocks.
fn check_markdown(lab: &Lab, rel: &str, md: &str, out: &mut Vec<Problem>) -> usize {
    let r = render(
        md,
        &RenderOptions {
            files_prefix: String::new(),
            file: rel.to_string(),
        },
    );
    out.extend(r.problems.iter().cloned());
    for f in &r.files {
        if !lab.dir.join(f).exists() {
            let shown = f.rsplit('/').next().unwrap_or(f);
            let line = md.find(shown).map(|at| md[..at].matches('\n').count() + 1);
            out.push(
                Problem::error(rel, format!("links to {f:?}, which is not in the lab")).at(line),
            );
        }
    }
    r.exec_blocks().count()
}

/// The report as text: one problem per line and a summary.
pub fn render_text(dir: &Path, report: &Report) -> String {
    let mut s = String::new();
    for p in &report.problems {
        s.push_str(&format!("{}: {p}\n", dir.display()));
    }
    let warnings = report.problems.len() - report.errors();
    if report.passed() {
        let steps = report.lab.as_ref().map_or(0, |l| l.steps.len());
        s.push_str(&format!(
            "{}: valid ({steps} step{}, {warnings} warning{})\n",
            dir.display(),
            if steps == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" }
        ));
    } else {
        s.push_str(&format!(
            "{}: {} error{}, {warnings} warning{}\n",
            dir.display(),
            report.errors(),
            if report.errors() == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" }
        ));
    }
    s
}
