//! The lab as the terminal page shows it: every page rendered to sanitised
//! HTML with its actions, in one serialisable value (what `GET /api/lab`
//! can return beside the learner's progress), plus the set of lab files the
//! pages reference (the only ones a server should publish: scripts, which
//! hold the checks and solutions, are never among them unless a page links
//! them on purpose).

use crate::markdown::{Action, RenderOptions, render};
use crate::model::{Lab, Page, PageId};
use serde::Serialize;
use std::collections::BTreeSet;

/// One rendered page.
#[derive(Debug, Clone, Serialize)]
pub struct PageView {
    /// Which page.
    pub id: PageId,
    /// Its title.
    pub title: String,
    /// Sanitised HTML of its Markdown (empty when it has none).
    pub html: String,
    /// Its clickable actions; `data-lab-index` in `html` indexes this list.
    pub actions: Vec<Action>,
    /// Whether it has a `verify` script ("Check" is offered).
    pub has_verify: bool,
    /// Its `foreground` script's text, typed into the terminal when the page starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foreground: Option<String>,
}

/// The whole lab, rendered.
#[derive(Debug, Clone, Serialize)]
pub struct LabView {
    /// `title`.
    pub title: String,
    /// `description`.
    pub description: String,
    /// Intro (when present), steps, finish (when present), in order.
    pub pages: Vec<PageView>,
    /// Lab files referenced by the pages (relative paths): publish only these.
    pub files: Vec<String>,
}

/// Why a page could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {file} ({page})")]
pub struct ViewError {
    /// The file.
    pub file: String,
    /// The page naming it.
    pub page: PageId,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

impl LabView {
    /// Renders every page of `lab`; relative links and images point under
    /// `files_prefix` (e.g. `/lab/files/`).
    pub fn build(lab: &Lab, files_prefix: &str) -> Result<LabView, ViewError> {
        let mut files = BTreeSet::new();
        let mut pages = Vec::new();
        for page in lab.pages() {
            let (view, used) = page_view(lab, page, files_prefix)?;
            files.extend(used);
            pages.push(view);
        }
        Ok(LabView {
            title: lab.title.clone(),
            description: lab.description.clone(),
            pages,
            files: files.into_iter().collect(),
        })
    }
}

fn page_view(lab: &Lab, page: &Page, prefix: &str) -> Result<(PageView, Vec<String>), ViewError> {
    let err = |file: &str, source| ViewError {
        file: file.to_string(),
        page: page.id,
        source,
    };
    let (html, actions, files) = match &page.text {
        Some(rel) => {
            let md = lab.read(rel).map_err(|e| err(rel, e))?;
            let r = render(
                &md,
                &RenderOptions {
                    files_prefix: prefix.to_string(),
                    file: rel.clone(),
                },
            );
            (r.html, r.actions, r.files)
        }
        None => Default::default(),
    };
    let foreground = match &page.foreground {
        Some(rel) => Some(lab.read(rel).map_err(|e| err(rel, e))?),
        None => None,
    };
    Ok((
        PageView {
            id: page.id,
            title: page.title.clone(),
            html,
            actions,
            has_verify: page.verify.is_some(),
            foreground,
        },
        files,
    ))
}
