//! Loading `index.json` into a [`Lab`]: the Killercoda scenario keys, the
//! Dozlab extensions under the one `dozlab` key, and every other key kept
//! (in [`Lab::raw`]) and reported as a warning, never an error.

use crate::assets::{AssetRule, Chmod};
use crate::image;
use crate::model::{ImageChoice, Lab, Page, PageId, Timeouts};
use crate::problem::{Problem, line_of, line_of_string};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The lab's description file.
pub const INDEX: &str = "index.json";

/// Why a lab could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory or its `index.json` cannot be read at all.
    #[error("cannot read {path}")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `index.json` was read but does not describe a lab.
    #[error("{} in {}:\n{}", plural(.problems.len()), .dir.display(), list(.problems))]
    Invalid {
        /// The lab directory.
        dir: PathBuf,
        /// What is wrong (errors, then warnings).
        problems: Vec<Problem>,
    },
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 problem".into()
    } else {
        format!("{n} problems")
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl LoadError {
    /// True when the lab could not be read (exit 2), false when it was read
    /// and is wrong (exit 1).
    pub fn is_unreadable(&self) -> bool {
        matches!(self, LoadError::Unreadable { .. })
    }
}

type Extra = BTreeMap<String, Value>;

#[derive(Debug, Deserialize)]
struct RawIndex {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    details: Option<RawDetails>,
    #[serde(default)]
    backend: Option<RawBackend>,
    #[serde(default)]
    dozlab: Option<RawDozlab>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Deserialize)]
struct RawDetails {
    #[serde(default)]
    intro: Option<RawPage>,
    #[serde(default)]
    steps: Option<Vec<RawPage>>,
    #[serde(default)]
    finish: Option<RawPage>,
    #[serde(default)]
    assets: Option<RawAssets>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Default, Deserialize)]
struct RawPage {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    background: Option<String>,
    #[serde(default)]
    foreground: Option<String>,
    #[serde(default)]
    verify: Option<String>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Deserialize)]
struct RawAssets {
    #[serde(default)]
    host01: Vec<RawAsset>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Deserialize)]
struct RawAsset {
    file: String,
    target: String,
    #[serde(default)]
    chmod: Option<String>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Deserialize)]
struct RawBackend {
    #[serde(default)]
    imageid: Option<String>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDozlab {
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    verify_timeout: Option<f64>,
    #[serde(default)]
    background_timeout: Option<f64>,
    #[serde(default)]
    exec_timeout: Option<f64>,
    #[serde(default)]
    steps: Vec<RawDozlabStep>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDozlabStep {
    #[serde(default)]
    solution: Option<String>,
    #[serde(default)]
    verify_timeout: Option<f64>,
    #[serde(flatten)]
    extra: Extra,
}

/// Reads and checks `dir/index.json`, and that every page's Markdown file
/// and script exists (their contents are [`crate::validate`]'s business).
/// Warnings are kept in [`Lab::warnings`].
pub fn load(dir: &Path) -> Result<Lab, LoadError> {
    let (lab, text) = load_index(dir)?;
    let missing = missing_files(&lab, &text);
    if missing.is_empty() {
        return Ok(lab);
    }
    let mut problems = missing;
    problems.extend(lab.warnings);
    Err(LoadError::Invalid {
        dir: dir.to_path_buf(),
        problems,
    })
}

/// [`load`] without the check of the files `index.json` names (validation
/// reports those itself, with the rest); also returns the text.
pub(crate) fn load_index(dir: &Path) -> Result<(Lab, String), LoadError> {
    let path = dir.join(INDEX);
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Unreadable {
        path: path.clone(),
        source,
    })?;
    Ok((parse(dir, &text)?, text))
}

/// An error for every page file (Markdown, script) that is not a file in
/// the lab, at the line of `index.json` naming it.
pub fn missing_files(lab: &Lab, index_text: &str) -> Vec<Problem> {
    let mut out: Vec<Problem> = Vec::new();
    for page in lab.pages() {
        let files = page.text.iter().map(String::as_str);
        for rel in files.chain(page.scripts().into_iter().map(|(_, r)| r)) {
            let p = Problem::error(INDEX, format!("{rel:?} does not exist"))
                .at(line_of_string(index_text, rel));
            if !lab.dir.join(rel).is_file() && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// [`load`] from the text of `index.json`.
pub fn parse(dir: &Path, text: &str) -> Result<Lab, LoadError> {
    let invalid = |problems| LoadError::Invalid {
        dir: dir.to_path_buf(),
        problems,
    };
    let raw_value: Value =
        serde_json::from_str(text).map_err(|e| invalid(vec![json_problem(&e)]))?;
    let raw: RawIndex = serde_json::from_value(raw_value.clone())
        .map_err(|e| invalid(vec![shape_problem(text, &e)]))?;
    let mut b = Builder {
        text,
        problems: Vec::new(),
    };
    let lab = b.lab(dir, raw, raw_value);
    if b.problems.iter().any(Problem::is_error) {
        let mut problems = b.problems;
        problems.sort_by_key(|p| !p.is_error());
        return Err(invalid(problems));
    }
    Ok(Lab {
        warnings: b.problems,
        ..lab
    })
}

fn json_problem(e: &serde_json::Error) -> Problem {
    Problem::error(INDEX, format!("not valid JSON: {e}")).at_column(e.line(), e.column())
}

/// A JSON value of the wrong type. Re-reading from the text (not the
/// `Value`) gives serde's line and column.
fn shape_problem(text: &str, e: &serde_json::Error) -> Problem {
    match serde_json::from_str::<RawIndex>(text) {
        Err(e2) if e2.line() > 0 => {
            Problem::error(INDEX, format!("{e2}")).at_column(e2.line(), e2.column())
        }
        _ => Problem::error(INDEX, format!("{e}")),
    }
}

struct Builder<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Builder<'_> {
    fn error(&mut self, line: Option<usize>, msg: String) {
        self.problems.push(Problem::error(INDEX, msg).at(line));
    }

    fn warn_unknown(&mut self, at: &str, extra: &Extra) {
        for key in extra.keys() {
            let line = line_of(self.text, &format!("\"{key}\""));
            let name = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            self.problems.push(
                Problem::warning(
                    INDEX,
                    format!("key `{name}` is not used by Dozlab: kept and ignored"),
                )
                .at(line),
            );
        }
    }

    fn lab(&mut self, dir: &Path, raw: RawIndex, raw_value: Value) -> Lab {
        self.warn_unknown("", &raw.extra);
        let ext = raw.dozlab.unwrap_or_default();
        self.warn_unknown("dozlab", &ext.extra);
        let details = match raw.details {
            Some(d) => d,
            None => {
                self.error(None, "no `details`: a lab needs `details.steps`".into());
                RawDetails {
                    intro: None,
                    steps: None,
                    finish: None,
                    assets: None,
                    extra: Extra::new(),
                }
            }
        };
        self.warn_unknown("details", &details.extra);
        let default_verify = self.seconds("dozlab.verifyTimeout", ext.verify_timeout);
        let timeouts = Timeouts {
            background: self
                .seconds("dozlab.backgroundTimeout", ext.background_timeout)
                .unwrap_or(Timeouts::default().background),
            exec: self
                .seconds("dozlab.execTimeout", ext.exec_timeout)
                .unwrap_or(Timeouts::default().exec),
        };
        let raw_steps = details.steps.unwrap_or_else(|| {
            self.error(
                None,
                "`details.steps` is missing: a lab needs at least one step".into(),
            );
            Vec::new()
        });
        if raw_steps.is_empty() && raw_value.pointer("/details/steps").is_some() {
            self.error(
                line_of(self.text, "\"steps\""),
                "`details.steps` is empty: a lab needs at least one step".into(),
            );
        }
        if ext.steps.len() > raw_steps.len() {
            self.error(
                line_of(self.text, "\"dozlab\""),
                format!(
                    "`dozlab.steps` has {} entries but the lab has {} steps",
                    ext.steps.len(),
                    raw_steps.len()
                ),
            );
        }
        let mut steps = Vec::new();
        for (i, rs) in raw_steps.into_iter().enumerate() {
            let mut page = self.page(PageId::Step(i), rs, true);
            if let Some(t) = default_verify {
                page.verify_timeout = t;
            }
            if let Some(x) = ext.steps.get(i) {
                self.step_ext(&mut page, i, x);
            }
            steps.push(page);
        }
        let mut intro = details.intro.map(|p| self.page(PageId::Intro, p, false));
        let mut finish = details.finish.map(|p| self.page(PageId::Finish, p, false));
        for p in intro.iter_mut().chain(finish.iter_mut()) {
            if let Some(t) = default_verify {
                p.verify_timeout = t;
            }
        }
        let assets = details.assets.map(|a| self.assets(a)).unwrap_or_default();
        let image = self.image(raw.backend, ext.image);
        Lab {
            dir: dir.to_path_buf(),
            title: raw.title.unwrap_or_default(),
            description: raw.description.unwrap_or_default(),
            intro,
            steps,
            finish,
            assets,
            image,
            timeouts,
            warnings: Vec::new(),
            raw: raw_value,
        }
    }

    fn seconds(&mut self, key: &str, v: Option<f64>) -> Option<Duration> {
        let v = v?;
        if v.is_finite() && v > 0.0 && v <= 86_400.0 {
            Some(Duration::from_secs_f64(v))
        } else {
            let name = key.rsplit('.').next().unwrap_or(key);
            self.error(
                line_of(self.text, &format!("\"{name}\"")),
                format!("`{key}` must be a number of seconds between 0 and 86400, not {v}"),
            );
            None
        }
    }

    fn step_ext(&mut self, page: &mut Page, i: usize, x: &RawDozlabStep) {
        self.warn_unknown(&format!("dozlab.steps[{i}]"), &x.extra);
        if let Some(s) = &x.solution {
            page.solution = self.rel_path(&format!("dozlab.steps[{i}].solution"), s);
        }
        if let Some(t) = self.seconds(
            &format!("dozlab.steps[{i}].verifyTimeout"),
            x.verify_timeout,
        ) {
            page.verify_timeout = t;
        }
    }

    fn page(&mut self, id: PageId, raw: RawPage, is_step: bool) -> Page {
        let key = match id {
            PageId::Intro => "details.intro".to_string(),
            PageId::Step(i) => format!("details.steps[{i}]"),
            PageId::Finish => "details.finish".to_string(),
        };
        self.warn_unknown(&key, &raw.extra);
        let mut page = Page::new(id);
        page.title = raw.title.unwrap_or_default();
        if is_step && page.title.is_empty() {
            self.problems
                .push(Problem::warning(INDEX, format!("`{key}` has no `title`")));
        }
        let field = |b: &mut Self, name: &str, v: Option<String>| {
            v.and_then(|v| b.rel_path(&format!("{key}.{name}"), &v))
        };
        page.text = field(self, "text", raw.text);
        if is_step && page.text.is_none() {
            self.error(None, format!("`{key}` has no `text` (its Markdown file)"));
        }
        page.background = field(self, "background", raw.background);
        page.foreground = field(self, "foreground", raw.foreground);
        page.verify = field(self, "verify", raw.verify);
        page
    }

    /// A path relative to the lab directory that stays inside it.
    fn rel_path(&mut self, key: &str, v: &str) -> Option<String> {
        let line = line_of_string(self.text, v);
        match check_rel(v) {
            Ok(p) => Some(p),
            Err(why) => {
                self.error(line, format!("`{key}`: {v:?} {why}"));
                None
            }
        }
    }

    fn assets(&mut self, a: RawAssets) -> Vec<AssetRule> {
        self.warn_unknown("details.assets", &a.extra);
        let mut rules = Vec::new();
        for (i, ra) in a.host01.into_iter().enumerate() {
            let key = format!("details.assets.host01[{i}]");
            self.warn_unknown(&key, &ra.extra);
            let line = line_of_string(self.text, &ra.file);
            if let Err(why) = check_rel(&ra.file) {
                self.error(line, format!("`{key}.file`: {:?} {why}", ra.file));
                continue;
            }
            if !ra.target.starts_with('/') && ra.target != "~" && !ra.target.starts_with("~/") {
                self.error(
                    line_of_string(self.text, &ra.target),
                    format!(
                        "`{key}.target`: {:?} must be an absolute directory or start with `~`",
                        ra.target
                    ),
                );
                continue;
            }
            let chmod = match ra.chmod.as_deref().map(Chmod::parse).transpose() {
                Ok(c) => c,
                Err(e) => {
                    let line = ra
                        .chmod
                        .as_deref()
                        .and_then(|c| line_of_string(self.text, c));
                    self.error(line, format!("`{key}.chmod`: {e}"));
                    continue;
                }
            };
            rules.push(AssetRule {
                file: ra.file,
                target: ra.target,
                chmod,
                line,
            });
        }
        rules
    }

    fn image(&mut self, backend: Option<RawBackend>, ext_image: Option<String>) -> ImageChoice {
        let imageid = backend.and_then(|b| {
            self.warn_unknown("backend", &b.extra);
            b.imageid
        });
        if let Some(img) = ext_image {
            return ImageChoice {
                imageid,
                image: img,
            };
        }
        let (profile, known) = image::profile_for(imageid.as_deref());
        if !known {
            let id = imageid.as_deref().unwrap_or_default();
            self.problems.push(
                Problem::warning(
                    INDEX,
                    format!(
                        "`backend.imageid` {id:?} is not known to Dozlab: using the default image `{profile}` (set `dozlab.image` to choose one)"
                    ),
                )
                .at(line_of_string(self.text, id)),
            );
        }
        ImageChoice {
            imageid,
            image: profile.to_string(),
        }
    }
}

/// Checks that `v` is a relative path inside the lab (no `..`, not
/// absolute) and returns it normalised (`./a/b` → `a/b`).
pub fn check_rel(v: &str) -> Result<String, &'static str> {
    if v.is_empty() {
        return Err("is empty");
    }
    let p = Path::new(v);
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err("leaves the lab directory (`..`)"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("is absolute: give a path relative to the lab directory");
            }
        }
    }
    if parts.is_empty() {
        return Err("names no file");
    }
    Ok(parts.join("/"))
}
