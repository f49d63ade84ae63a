//! The lab model: what a loaded `index.json` means once its paths, defaults
//! and Dozlab extensions are resolved (pages with their scripts, asset rules,
//! the image profile, timeouts). I/O-free; see [`crate::index`] for loading.

use crate::assets::AssetRule;
use crate::problem::Problem;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default time a `verify` script may take.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(20);
/// Default time a `background` or `foreground` script may take (in `lab test`).
pub const DEFAULT_BACKGROUND_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time one `{{exec}}` block or solution script may take (in `lab test`).
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(120);

/// Which page of a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "index", rename_all = "lowercase")]
pub enum PageId {
    /// `details.intro`.
    Intro,
    /// `details.steps[i]` (0-based).
    Step(usize),
    /// `details.finish`.
    Finish,
}

impl std::fmt::Display for PageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageId::Intro => f.write_str("intro"),
            PageId::Step(i) => write!(f, "step {}", i + 1),
            PageId::Finish => f.write_str("finish"),
        }
    }
}

/// One page: the intro, a step or the finish.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    /// Which page this is.
    pub id: PageId,
    /// Its title (may be empty for intro and finish).
    pub title: String,
    /// The Markdown file, relative to the lab directory.
    pub text: Option<String>,
    /// Script run in the VM when the page starts, not shown to the learner.
    pub background: Option<String>,
    /// Script typed into the learner's terminal when the page starts.
    pub foreground: Option<String>,
    /// Script run in the VM on "Check": exit 0 means done.
    pub verify: Option<String>,
    /// Dozlab extension: a script that does the step (used by `lab test`
    /// instead of the page's `{{exec}}` blocks).
    pub solution: Option<String>,
    /// How long `verify` may take.
    #[serde(with = "secs")]
    pub verify_timeout: Duration,
}

impl Page {
    /// An empty page `id` with the default timeout.
    pub fn new(id: PageId) -> Self {
        Self {
            id,
            title: String::new(),
            text: None,
            background: None,
            foreground: None,
            verify: None,
            solution: None,
            verify_timeout: DEFAULT_VERIFY_TIMEOUT,
        }
    }

    /// The scripts this page names, with the key they are under.
    pub fn scripts(&self) -> Vec<(&'static str, &str)> {
        [
            ("background", &self.background),
            ("foreground", &self.foreground),
            ("verify", &self.verify),
            ("solution", &self.solution),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// The image a lab asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageChoice {
    /// `backend.imageid` as written, if any.
    pub imageid: Option<String>,
    /// What `dozlab up --image` gets: a profile name, or `dozlab.image`.
    pub image: String,
}

/// Timeouts of a lab (Dozlab extension, with defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// `dozlab.backgroundTimeout`: background and foreground scripts in `lab test`.
    #[serde(with = "secs")]
    pub background: Duration,
    /// `dozlab.execTimeout`: one `{{exec}}` block or solution script in `lab test`.
    #[serde(with = "secs")]
    pub exec: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            background: DEFAULT_BACKGROUND_TIMEOUT,
            exec: DEFAULT_EXEC_TIMEOUT,
        }
    }
}

/// A loaded lab.
#[derive(Debug, Clone, Serialize)]
pub struct Lab {
    /// The lab directory (holding `index.json`).
    #[serde(skip)]
    pub dir: PathBuf,
    /// `title`.
    pub title: String,
    /// `description`.
    pub description: String,
    /// `details.intro`.
    pub intro: Option<Page>,
    /// `details.steps`, in order.
    pub steps: Vec<Page>,
    /// `details.finish`.
    pub finish: Option<Page>,
    /// `details.assets.host01`.
    pub assets: Vec<AssetRule>,
    /// `backend.imageid` and the image it maps to.
    pub image: ImageChoice,
    /// Timeouts for `lab test`.
    pub timeouts: Timeouts,
    /// Unknown keys (kept and ignored), guesses and other warnings.
    pub warnings: Vec<Problem>,
    /// `index.json` as written, unknown keys included.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

impl Lab {
    /// Every page in order: intro, steps, finish.
    pub fn pages(&self) -> impl Iterator<Item = &Page> {
        self.intro
            .iter()
            .chain(self.steps.iter())
            .chain(self.finish.iter())
    }

    /// The page `id`.
    pub fn page(&self, id: PageId) -> Option<&Page> {
        match id {
            PageId::Intro => self.intro.as_ref(),
            PageId::Step(i) => self.steps.get(i),
            PageId::Finish => self.finish.as_ref(),
        }
    }

    /// A file of the lab by its relative path.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The text of a lab file (a script or Markdown page).
    pub fn read(&self, rel: &str) -> std::io::Result<String> {
        read_text(&self.dir, rel)
    }
}

/// Reads `dir/rel` as UTF-8 text.
pub fn read_text(dir: &Path, rel: &str) -> std::io::Result<String> {
    let bytes = std::fs::read(dir.join(rel))?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Durations as whole or fractional seconds in JSON.
mod secs {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}
