//! The lab panel's server side: the loaded lab (`--lab-dir`), the learner's
//! progress kept beside the session (a JSON file in `--lab-state`, written
//! atomically), the `/api/lab` routes (view + progress, "Check" over SSH,
//! moving between pages), the per-page check counters and the lab files the
//! pages show.
//!
//! Every route requires the session cookie and refuses a foreign Origin
//! ([`AppState::guard`]). Only files the rendered pages reference are
//! published under [`FILES_PREFIX`]; scripts (verify, solutions) never are
//! unless a page links them, and then only as downloads.

use crate::labsetup::Setup;
use crate::web::AppState;
use axum::extract::{FromRequestParts, Path as UrlPath, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use dozlab_lab::runner::{self, CheckResult};
use dozlab_lab::{Lab, LabView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// URL prefix the lab's files (images, linked files) are served under.
pub const FILES_PREFIX: &str = "/lab/files/";

/// Why the lab panel cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab does not load (see `dozlab lab validate`).
    #[error("the lab in {dir} does not load (run `dozlab lab validate {dir}` for details)")]
    Load {
        /// The lab directory.
        dir: String,
        /// The cause.
        #[source]
        source: dozlab_lab::LoadError,
    },
    /// A page of the lab cannot be rendered.
    #[error("the lab in {dir} cannot be rendered")]
    View {
        /// The lab directory.
        dir: String,
        /// The cause.
        #[source]
        source: dozlab_lab::view::ViewError,
    },
    /// The progress file cannot be read or written.
    #[error("cannot use the lab progress file {path} (choose another --lab-state directory)")]
    State {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The learner's progress, as stored and as `GET /api/lab` returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Index (in `lab.pages`) of the page shown.
    pub current: usize,
    /// Pages whose check passed.
    pub passed: BTreeSet<usize>,
    /// Pages whose foreground script was already typed into the terminal.
    #[serde(default)]
    pub started: BTreeSet<usize>,
    /// Pages whose background script was started ([`crate::labsetup`]).
    #[serde(default)]
    pub backgrounds: BTreeSet<usize>,
    /// The assets and the intro's background are in the VM (`--lab-prepare`).
    #[serde(default)]
    pub prepared: bool,
}

/// The loaded lab, its rendering and the learner's progress.
#[derive(Debug)]
pub struct LabPanel {
    lab: Lab,
    view: LabView,
    store: PathBuf,
    progress: Mutex<Progress>,
    /// (page label, result) → count.
    counters: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// (page label, ok) → how many of its backgrounds ended so.
    backgrounds: Mutex<BTreeMap<(String, bool), u64>>,
    /// Where the set-up in the VM stands.
    setup: Mutex<Setup>,
}

impl LabPanel {
    /// Loads the lab in `dir` and the progress saved for `session` in `state_dir`.
    pub fn open(dir: &Path, state_dir: &Path, session: &str) -> Result<LabPanel, LabError> {
        let shown = dir.display().to_string();
        let lab = dozlab_lab::load(dir).map_err(|source| LabError::Load {
            dir: shown.clone(),
            source,
        })?;
        let view = LabView::build(&lab, FILES_PREFIX)
            .map_err(|source| LabError::View { dir: shown, source })?;
        let store = state_dir.join(format!("lab-progress-{}.json", file_safe(session)));
        let state_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LabError::State { path, source }
        };
        std::fs::create_dir_all(state_dir).map_err(state_err(&store))?;
        let mut progress = match std::fs::read(&store) {
            Ok(bytes) => serde_json::from_slice::<Progress>(&bytes).unwrap_or_else(|e| {
                tracing::warn!("ignoring unreadable lab progress {}: {e}", store.display());
                Progress::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Progress::default(),
            Err(e) => return Err(state_err(&store)(e)),
        };
        let n = view.pages.len();
        progress.current = progress.current.min(n.saturating_sub(1));
        progress.passed.retain(|p| *p < n);
        progress.started.retain(|p| *p < n);
        let panel = LabPanel {
            lab,
            view,
            store,
            progress: Mutex::new(progress),
            counters: Mutex::new(BTreeMap::new()),
            backgrounds: Mutex::new(BTreeMap::new()),
            setup: Mutex::new(Setup::None),
        };
        // Proves the state directory is writable now rather than at the first check.
        let p = panel.progress();
        panel.save(&p).map_err(state_err(&panel.store))?;
        Ok(panel)
    }

    /// The progress now.
    pub fn progress(&self) -> Progress {
        self.progress.lock().expect("lock").clone()
    }

    /// Where the progress is kept.
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// The lab.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// Its rendering.
    pub fn view(&self) -> &LabView {
        &self.view
    }

    /// Where the set-up in the VM stands.
    pub fn setup(&self) -> Setup {
        self.setup.lock().expect("lock").clone()
    }

    pub(crate) fn set_setup(&self, s: Setup) {
        *self.setup.lock().expect("lock") = s;
    }

    pub(crate) fn count_background(&self, page: usize, ok: bool) {
        self.bump(&self.backgrounds, page, ok);
    }

    /// Adds one to the count of page `page` (by its label) and `outcome`.
    fn bump<K: Ord>(&self, counts: &Mutex<BTreeMap<(String, K), u64>>, page: usize, outcome: K) {
        let label = self.view.pages[page].id.to_string();
        let mut counts = counts.lock().expect("lock");
        *counts.entry((label, outcome)).or_default() += 1;
    }

    fn save(&self, p: &Progress) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(p).map_err(std::io::Error::other)?;
        dozlab_core::atomic::write_atomic(&self.store, &json, 0o600)
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Progress)) -> Progress {
        let mut guard = self.progress.lock().expect("lock");
        f(&mut guard);
        let p = guard.clone();
        if let Err(e) = self.save(&p) {
            tracing::error!("cannot save the lab progress {}: {e}", self.store.display());
        }
        p
    }

    /// The first page that cannot be shown yet: every page before it has no
    /// check or passed it.
    fn unlocked(&self, p: &Progress) -> usize {
        let pages = &self.view.pages;
        pages
            .iter()
            .enumerate()
            .position(|(i, v)| v.has_verify && !p.passed.contains(&i))
            .map_or(pages.len(), |i| i + 1)
    }

    fn state(&self, p: Progress) -> ProgressView {
        ProgressView {
            unlocked: self.unlocked(&p),
            setup: self.setup(),
            progress: p,
        }
    }

    fn count(&self, page: usize, result: &'static str) {
        self.bump(&self.counters, page, result);
    }

    /// The counters in the Prometheus text format.
    pub fn metrics(&self) -> String {
        let mut out = String::from(
            "# HELP dozlab_lab_checks_total Lab checks run from the terminal page, by page and result.\n# TYPE dozlab_lab_checks_total counter\n",
        );
        let counters = self.counters.lock().expect("lock");
        for page in &self.view.pages {
            if !page.has_verify {
                continue;
            }
            let label = page.id.to_string();
            for result in ["passed", "failed", "timed_out", "error"] {
                let n = counters.get(&(label.clone(), result)).copied().unwrap_or(0);
                out.push_str(&format!(
                    "dozlab_lab_checks_total{{page=\"{label}\",result=\"{result}\"}} {n}\n"
                ));
            }
        }
        out.push_str(
            "# HELP dozlab_lab_backgrounds_total Page background scripts run from the terminal, by page and result.\n# TYPE dozlab_lab_backgrounds_total counter\n",
        );
        let backgrounds = self.backgrounds.lock().expect("lock");
        for ((label, ok), n) in backgrounds.iter() {
            let result = if *ok { "ok" } else { "failed" };
            out.push_str(&format!(
                "dozlab_lab_backgrounds_total{{page=\"{label}\",result=\"{result}\"}} {n}\n"
            ));
        }
        out
    }
}

fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The progress as the page gets it.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressView {
    /// What is stored.
    #[serde(flatten)]
    pub progress: Progress,
    /// Pages `0..unlocked` may be shown ("Next" beyond is locked until the check passes).
    pub unlocked: usize,
    /// Where the set-up in the VM stands (`--lab-prepare`).
    pub setup: Setup,
}

/// `GET /api/lab`.
#[derive(Debug, Serialize)]
struct LabResponse<'a> {
    lab: &'a LabView,
    progress: ProgressView,
}

/// Body of `POST /api/lab/check` and `POST /api/lab/goto`.
#[derive(Debug, Deserialize)]
struct PageRequest {
    page: usize,
}

/// `POST /api/lab/check`.
#[derive(Debug, Serialize)]
struct CheckResponse {
    page: usize,
    result: CheckResult,
    progress: ProgressView,
}

/// The lab routes; `web::app_with_lab` mounts them.
pub fn routes(panel: Arc<LabPanel>) -> Router<AppState> {
    Router::new()
        .route("/api/lab", get(show))
        .route("/api/lab/check", post(check))
        .route("/api/lab/goto", post(goto))
        .route("/api/lab/metrics", get(metrics))
        .route("/lab/files/{*path}", get(file))
        .layer(Extension(panel))
}

/// Proof that a request may use the lab: the terminal's Origin and login
/// checks passed. As the first extractor of every lab route, it refuses
/// (403, then 401) before anything else of the request is read.
struct Allowed;

impl FromRequestParts<AppState> for Allowed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Response> {
        st.guard(&parts.headers)
            .map(|()| Allowed)
            .map_err(IntoResponse::into_response)
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Page `page` of the lab for a page request (`goto`, `check`), or the
/// answer refusing it: no such page (404), or a page still locked behind
/// the check of one before it (409).
fn open_page(panel: &LabPanel, page: usize) -> Result<&dozlab_lab::view::PageView, Box<Response>> {
    let n = panel.view.pages.len();
    let Some(view) = panel.view.pages.get(page) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("no page {page} (the lab has {n})"),
        )));
    };
    if page >= panel.unlocked(&panel.progress()) {
        return Err(Box::new(error(
            StatusCode::CONFLICT,
            "this page is locked: pass the check of the page before it first",
        )));
    }
    Ok(view)
}

async fn show(_: Allowed, Extension(panel): Extension<Arc<LabPanel>>) -> Response {
    let body = LabResponse {
        lab: &panel.view,
        progress: panel.state(panel.progress()),
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

async fn goto(
    _: Allowed,
    State(st): State<AppState>,
    Extension(panel): Extension<Arc<LabPanel>>,
    Json(req): Json<PageRequest>,
) -> Response {
    if let Err(r) = open_page(&panel, req.page) {
        return *r;
    }
    let p = panel.update(|p| {
        p.current = req.page;
        p.started.insert(req.page);
    });
    crate::labsetup::start_background(panel.clone(), st.0.ssh.clone(), req.page);
    Json(panel.state(p)).into_response()
}

async fn check(
    _: Allowed,
    State(st): State<AppState>,
    Extension(panel): Extension<Arc<LabPanel>>,
    Json(req): Json<PageRequest>,
) -> Response {
    let view = match open_page(&panel, req.page) {
        Ok(view) => view,
        Err(r) => return *r,
    };
    let Some(page) = panel.lab.page(view.id) else {
        return error(StatusCode::NOT_FOUND, format!("no page {}", req.page));
    };
    if page.verify.is_none() {
        return error(StatusCode::BAD_REQUEST, format!("{} has no check", view.id));
    }
    let vm = match dozlab_lab::remote::Vm::connect(&st.0.ssh).await {
        Ok(vm) => vm,
        Err(e) => {
            panel.count(req.page, "error");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot reach the VM: {}", crate::error_chain(&e)),
            );
        }
    };
    let result = match runner::check(&vm, &panel.lab, page).await {
        Ok(Some(r)) => r,
        Ok(None) => return error(StatusCode::BAD_REQUEST, "this page has no check"),
        Err(e) => {
            panel.count(req.page, "error");
            return error(
                StatusCode::BAD_GATEWAY,
                format!("the check could not run: {}", crate::error_chain(&e)),
            );
        }
    };
    let label = if result.passed {
        "passed"
    } else if result.timed_out {
        "timed_out"
    } else {
        "failed"
    };
    panel.count(req.page, label);
    tracing::info!(page = %view.id, result = label, seconds = result.seconds, "lab check");
    let p = if result.passed {
        panel.update(|p| {
            p.passed.insert(req.page);
        })
    } else {
        panel.progress()
    };
    Json(CheckResponse {
        page: req.page,
        result,
        progress: panel.state(p),
    })
    .into_response()
}

async fn metrics(_: Allowed, Extension(panel): Extension<Arc<LabPanel>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        panel.metrics(),
    )
        .into_response()
}

/// Images are shown inline; anything else the pages link is a download, and
/// `nosniff` (set for every response) keeps it from running as a script.
fn content_type(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        _ => return None,
    })
}

async fn file(
    _: Allowed,
    Extension(panel): Extension<Arc<LabPanel>>,
    UrlPath(path): UrlPath<String>,
) -> Response {
    if !panel.view.files.contains(&path) {
        return error(StatusCode::NOT_FOUND, "no such lab file");
    }
    let bytes = match tokio::fs::read(panel.lab.path(&path)).await {
        Ok(b) => b,
        Err(_) => return error(StatusCode::NOT_FOUND, "no such lab file"),
    };
    match content_type(&path) {
        Some(mime) => ([(header::CONTENT_TYPE, mime)], bytes).into_response(),
        None => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CONTENT_DISPOSITION, "attachment"),
            ],
            bytes,
        )
            .into_response(),
    }
}

/// Flags of the lab panel (part of `dozlab terminal`'s).
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// Serve this lab (a Killercoda-format directory with index.json) in a panel beside the terminal.
    #[arg(long, env = "LAB_DIR")]
    pub lab_dir: Option<PathBuf>,
    /// Directory holding the learner's lab progress (lab-progress-SESSION.json).
    #[arg(long, env = "LAB_STATE_DIR", default_value = "/shared/lab-state")]
    pub lab_state: PathBuf,
    /// Set the lab up in the VM once it answers SSH: copy the assets in and run the intro's background (once per progress file; `dozlab up --lab` does this itself).
    #[arg(long, env = "LAB_PREPARE", requires = "lab_dir")]
    pub lab_prepare: bool,
}

impl LabArgs {
    /// The panel, when `--lab-dir` is given.
    pub fn open(&self, session: &str) -> Result<Option<Arc<LabPanel>>, LabError> {
        self.lab_dir
            .as_deref()
            .map(|dir| LabPanel::open(dir, &self.lab_state, session).map(Arc::new))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_cannot_leave_the_state_directory() {
        assert_eq!(file_safe("../../etc/passwd"), "______etc_passwd");
        assert_eq!(file_safe("class-1_a"), "class-1_a");
    }

    #[test]
    fn unreadable_progress_starts_over_and_stale_pages_are_dropped() {
        let lab = tempfile::tempdir().unwrap();
        std::fs::write(
            lab.path().join("index.json"),
            r#"{ "title": "t", "details": { "steps": [
                { "text": "a.md", "verify": "v.sh" }, { "text": "a.md" } ] } }"#,
        )
        .unwrap();
        std::fs::write(lab.path().join("a.md"), "hi\n").unwrap();
        std::fs::write(lab.path().join("v.sh"), "#!/bin/bash\ntrue\n").unwrap();
        let state = tempfile::tempdir().unwrap();
        let file = state.path().join("lab-progress-s.json");
        std::fs::write(&file, r#"{"current": 9, "passed": [0, 7]}"#).unwrap();
        let panel = LabPanel::open(lab.path(), state.path(), "s").unwrap();
        let p = panel.progress();
        assert_eq!((p.current, p.passed), (1, BTreeSet::from([0])));
        assert_eq!(panel.unlocked(&panel.progress()), 2);
        std::fs::write(&file, "not json").unwrap();
        let panel = LabPanel::open(lab.path(), state.path(), "s").unwrap();
        assert_eq!(panel.progress(), Progress::default());
        assert_eq!(panel.unlocked(&panel.progress()), 1, "step 2 locked");
    }
}
