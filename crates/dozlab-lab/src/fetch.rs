//! `dozlab lab fetch`: a lab from a URL, an archive or a directory, checked
//! and validated, into its destination directory, whole or not at all.
//!
//! The source is an `http(s)://` URL or a local path of a lab archive
//! (`.tar.gz`, also `.tar`, `.tar.zst`, `.tar.xz`: downloaded and
//! decompressed by `dozlab_fetch`, with its retries, its sha256 check and
//! its cache), or a directory: a lab directory (a checkout, a ConfigMap
//! mount) or one holding a single archive (a ConfigMap with one
//! `lab.tar.gz` key). Everything is staged in a hidden directory beside
//! the destination (inside it when it already exists, e.g. a mounted
//! volume, so the final moves never cross filesystems), unpacked safely
//! ([`crate::unpack`]), validated, and only then moved into place.

use crate::unpack::{self, Limits, UnpackError};
use crate::validate::{Report, render_text, validate};
use std::path::{Path, PathBuf};

/// File left in a fetched lab: where it came from. A destination holding
/// it may be fetched into again (an init step that runs twice).
pub const MARKER: &str = ".dozlab-fetch.json";

/// Archive names a directory source may hold instead of a lab.
const ARCHIVE_SUFFIXES: &[&str] = &[".tar.gz", ".tgz", ".tar", ".tar.zst", ".tar.xz"];

/// Where a lab comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabSource {
    /// An `http(s)://` URL of an archive.
    Url(String),
    /// A local archive.
    Archive(PathBuf),
    /// A local lab directory.
    Dir(PathBuf),
}

impl LabSource {
    /// Reads `SOURCE`: a URL, or a path that must exist (`file://` allowed).
    pub fn parse(s: &str) -> Result<LabSource, FetchLabError> {
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(LabSource::Url(s.to_string()));
        }
        let path = s.strip_prefix("file://").unwrap_or(s);
        if path.contains("://") {
            return Err(FetchLabError::Usage(format!(
                "unsupported lab source {s:?}: give an http(s) URL, a .tar.gz or a directory"
            )));
        }
        if path.is_empty() {
            return Err(FetchLabError::Usage(
                "no lab source given: give an http(s) URL, a .tar.gz or a directory".into(),
            ));
        }
        let p = PathBuf::from(path);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => {
                Ok(single_archive(&p)?.map_or(LabSource::Dir(p), LabSource::Archive))
            }
            Ok(_) => Ok(LabSource::Archive(p)),
            Err(_) => Err(FetchLabError::Usage(format!(
                "lab source {path} not found: give an http(s) URL, a .tar.gz or a directory holding index.json"
            ))),
        }
    }

    /// True for a URL.
    pub fn is_url(&self) -> bool {
        matches!(self, LabSource::Url(_))
    }
}

impl std::fmt::Display for LabSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabSource::Url(u) => f.write_str(u),
            LabSource::Archive(p) | LabSource::Dir(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The archive a directory holds in place of a lab: no `index.json` and
/// exactly one (visible) file, named like an archive.
fn single_archive(dir: &Path) -> Result<Option<PathBuf>, FetchLabError> {
    if dir.join(crate::index::INDEX).exists() {
        return Ok(None);
    }
    let names: Vec<_> = std::fs::read_dir(dir)
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .map_err(|e| FetchLabError::Usage(format!("cannot read {}: {e}", dir.display())))?
        .into_iter()
        .map(|e| e.file_name())
        .filter(|n| !unpack::is_hidden_mount_entry(n))
        .collect();
    let [only] = names.as_slice() else {
        return Ok(None);
    };
    let name = only.to_string_lossy();
    let path = dir.join(only);
    Ok((ARCHIVE_SUFFIXES.iter().any(|s| name.ends_with(s)) && path.is_file()).then_some(path))
}

/// What to fetch, where to, and how.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// The source.
    pub source: LabSource,
    /// The lab directory to create (or fill, when it is empty).
    pub dest: PathBuf,
    /// Expected sha256 of the archive (as stored, or decompressed).
    pub sha256: Option<String>,
    /// Download cache (used when `sha256` keys it).
    pub cache: Option<PathBuf>,
    /// Size limits.
    pub limits: Limits,
}

/// A lab in place.
#[derive(Debug)]
pub struct Fetched {
    /// The lab directory (the destination).
    pub dir: PathBuf,
    /// The lab's title.
    pub title: String,
    /// Its number of steps.
    pub steps: usize,
    /// Files in it.
    pub files: usize,
    /// The validation's warnings, as printable lines.
    pub warnings: Vec<String>,
    /// sha256 of the archive, when one was fetched.
    pub sha256: Option<String>,
}

/// Why a lab could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchLabError {
    /// Bad flags or source, a destination that cannot be used.
    #[error("{0}")]
    Usage(String),
    /// The download failed or its bytes are not the expected ones.
    #[error("cannot fetch the lab {source_name}")]
    Fetch {
        /// The source.
        source_name: String,
        /// The cause.
        #[source]
        source: Box<dozlab_fetch::FetchError>,
    },
    /// The archive or directory holds something a lab may not.
    #[error("the lab {source_name} was refused")]
    Unsafe {
        /// The source.
        source_name: String,
        /// The cause.
        #[source]
        source: UnpackError,
    },
    /// No `index.json` where a lab's is expected.
    #[error("{0}")]
    NoIndex(String),
    /// The lab does not validate; `report` is `lab validate`'s text.
    #[error("the lab {source_name} is not valid ({errors} error{s}):\n{report}", s = if *.errors == 1 { "" } else { "s" })]
    Invalid {
        /// The source.
        source_name: String,
        /// Number of errors.
        errors: usize,
        /// The problems, one per line.
        report: String,
    },
    /// Local I/O on the destination.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl FetchLabError {
    /// True when the lab or the request is at fault (a bad source, digest,
    /// archive or lab), false for a network or local failure.
    pub fn is_input(&self) -> bool {
        match self {
            Self::Usage(_) | Self::Unsafe { .. } | Self::NoIndex(_) | Self::Invalid { .. } => true,
            Self::Fetch { source, .. } => matches!(
                source.kind(),
                dozlab_fetch::ErrorKind::Usage | dozlab_fetch::ErrorKind::Integrity
            ),
            Self::Io { .. } => false,
        }
    }

    /// True for bad flags or a source/destination that cannot be used
    /// (exit 2 of `lab fetch`).
    pub fn is_usage(&self) -> bool {
        match self {
            Self::Usage(_) => true,
            Self::Fetch { source, .. } => source.kind() == dozlab_fetch::ErrorKind::Usage,
            _ => false,
        }
    }
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> FetchLabError {
    move |source| FetchLabError::Io { what, source }
}

/// Checks `--sha256`: 64 hex digits, lowercased.
pub fn parse_sha256(s: &str) -> Result<String, FetchLabError> {
    let t = s.trim().to_ascii_lowercase();
    if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(t)
    } else {
        Err(FetchLabError::Usage(format!(
            "sha256 {s:?} is not a sha256 digest (64 hex digits, as printed by sha256sum)"
        )))
    }
}

/// How the destination is filled.
#[derive(Debug)]
enum Dest {
    /// It does not exist: the staged lab is renamed to it.
    New,
    /// It is an empty directory (or one holding an earlier fetch): its old
    /// entries are replaced by the staged lab's.
    Fill,
}

/// Checks the destination and says how it will be filled.
fn check_dest(dest: &Path) -> Result<Dest, FetchLabError> {
    // Followed: a destination may be a symlink to the directory to fill.
    let meta = match std::fs::metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Dest::New),
        Err(e) => return Err(io_err(format!("cannot read {}", dest.display()))(e)),
        Ok(m) => m,
    };
    if !meta.is_dir() {
        return Err(FetchLabError::Usage(format!(
            "--dest {} exists and is not a directory: give a new or empty directory",
            dest.display()
        )));
    }
    let entries = old_entries(dest)?;
    if entries.is_empty() || dest.join(MARKER).is_file() {
        Ok(Dest::Fill)
    } else {
        Err(FetchLabError::Usage(format!(
            "--dest {} is not empty and holds no earlier `lab fetch` ({MARKER}): give a new or empty directory",
            dest.display()
        )))
    }
}

/// The entries of an existing destination that a fetch replaces (not
/// `lost+found` of a fresh filesystem, not a stage of ours).
fn old_entries(dest: &Path) -> Result<Vec<PathBuf>, FetchLabError> {
    Ok(std::fs::read_dir(dest)
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .map_err(io_err(format!("cannot read {}", dest.display())))?
        .into_iter()
        .filter(|e| {
            let n = e.file_name();
            n != "lost+found" && !n.to_string_lossy().starts_with(STAGE_PREFIX)
        })
        .map(|e| e.path())
        .collect())
}

const STAGE_PREFIX: &str = ".dozlab-fetch-";

/// Why [`fetch_lab_until_stopped`] could not run the fetch at all.
#[derive(Debug, thiserror::Error)]
pub enum StopWatchError {
    /// The runtime to run the fetch on did not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// SIGTERM could not be watched for.
    #[error("cannot watch for SIGTERM")]
    Signal(#[source] std::io::Error),
}

/// Runs [`fetch_lab`] to its end on a runtime of its own, or until a stop
/// (Ctrl-C, the kubelet's SIGTERM) comes: the stop drops the fetch, which
/// removes everything it staged, and gives `Ok(None)`.
pub fn fetch_lab_until_stopped(
    req: &FetchRequest,
) -> Result<Option<Result<Fetched, FetchLabError>>, StopWatchError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StopWatchError::Runtime)?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(StopWatchError::Signal)?;
        tokio::select! {
            r = fetch_lab(req) => Ok(Some(r)),
            _ = tokio::signal::ctrl_c() => Ok(None),
            _ = term.recv() => Ok(None),
        }
    })
}

/// Fetches, unpacks, validates and moves the lab into `req.dest`. On any
/// failure nothing new is left at the destination.
pub async fn fetch_lab(req: &FetchRequest) -> Result<Fetched, FetchLabError> {
    if req.sha256.is_some() && matches!(req.source, LabSource::Dir(_)) {
        return Err(FetchLabError::Usage(format!(
            "a sha256 applies to a lab archive, not to the directory {}",
            req.source
        )));
    }
    let sha256 = req.sha256.as_deref().map(parse_sha256).transpose()?;
    let how = check_dest(&req.dest)?;
    let (stage_in, prefix) = match how {
        Dest::Fill => (req.dest.clone(), STAGE_PREFIX.to_string()),
        Dest::New => {
            let parent = parent_of(&req.dest);
            std::fs::create_dir_all(&parent)
                .map_err(io_err(format!("cannot create {}", parent.display())))?;
            let base = req.dest.file_name().unwrap_or_default().to_string_lossy();
            (parent, format!(".{base}{STAGE_PREFIX}"))
        }
    };
    if let LabSource::Dir(src) = &req.source
        && let (Ok(src), Ok(inside)) = (src.canonicalize(), stage_in.canonicalize())
        && inside.starts_with(&src)
    {
        return Err(FetchLabError::Usage(format!(
            "--dest {} is inside the lab directory {}: give a destination outside it",
            req.dest.display(),
            src.display()
        )));
    }
    remove_stale_stages(&stage_in, &prefix);
    // Removed on drop: whatever fails (or a cancelled future) leaves nothing.
    let stage = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&stage_in)
        .map_err(io_err(format!(
            "cannot create a staging directory in {}",
            stage_in.display()
        )))?;
    let unpacked = stage.path().join("lab");
    std::fs::create_dir(&unpacked)
        .and_then(|()| set_mode(&unpacked, unpack::DIR_MODE))
        .map_err(io_err(format!("cannot create {}", unpacked.display())))?;
    let name = req.source.to_string();
    let unsafe_err = |source| FetchLabError::Unsafe {
        source_name: name.clone(),
        source,
    };
    let (files, digest) = match &req.source {
        LabSource::Dir(d) => (
            unpack::copy_dir(d, &unpacked, req.limits).map_err(unsafe_err)?,
            None,
        ),
        source => {
            let (archive, digest) = download(source, &name, stage.path(), sha256, req).await?;
            let f = std::fs::File::open(&archive)
                .map_err(io_err(format!("cannot read {}", archive.display())))?;
            let n = unpack::unpack_tar(std::io::BufReader::new(f), &unpacked, req.limits)
                .map_err(unsafe_err)?;
            let _ = std::fs::remove_file(&archive);
            (n, digest)
        }
    };
    let root = lab_root(&unpacked, &name)?;
    let report = validate(&root).map_err(|e| FetchLabError::Invalid {
        source_name: name.clone(),
        errors: 1,
        report: format!("{e}"),
    })?;
    let shown = Path::new(&name);
    if !report.passed() {
        return Err(FetchLabError::Invalid {
            source_name: name.clone(),
            errors: report.errors(),
            report: render_text(shown, &report),
        });
    }
    write_marker(&root, &name, digest.as_deref())?;
    let fetched = summary(&report, &req.dest, shown, files, digest);
    match how {
        Dest::New => std::fs::rename(&root, &req.dest).map_err(io_err(format!(
            "cannot move the lab to {}",
            req.dest.display()
        )))?,
        Dest::Fill => replace_contents(&root, &req.dest)?,
    }
    drop(stage);
    Ok(fetched)
}

/// Removes the stages of this destination that a killed run left.
fn remove_stale_stages(dir: &Path, prefix: &str) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(prefix) {
            tracing::info!(
                "removing {}, left by an interrupted fetch",
                e.path().display()
            );
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Downloads (or copies) the archive into the stage through `dozlab_fetch`.
async fn download(
    source: &LabSource,
    name: &str,
    stage: &Path,
    sha256: Option<String>,
    req: &FetchRequest,
) -> Result<(PathBuf, Option<String>), FetchLabError> {
    let url = match source {
        LabSource::Url(u) => u.clone(),
        LabSource::Archive(p) => p.display().to_string(),
        LabSource::Dir(_) => unreachable!("directories are copied"),
    };
    let out = stage.join("lab.tar");
    let mut o = dozlab_fetch::FetchOptions::new(url, &out);
    o.prepare_fs = false;
    o.progress = dozlab_fetch::ProgressMode::Off;
    o.cache = req.cache.clone().filter(|_| sha256.is_some());
    o.sha256 = sha256;
    let report = dozlab_fetch::fetch(&o)
        .await
        .map_err(|source| FetchLabError::Fetch {
            source_name: name.to_string(),
            source: Box::new(source),
        })?;
    Ok((out, report.stored_sha256))
}

/// The lab in the unpacked tree: its top, or its single top-level directory.
fn lab_root(unpacked: &Path, name: &str) -> Result<PathBuf, FetchLabError> {
    if unpacked.join(crate::index::INDEX).is_file() {
        return Ok(unpacked.to_path_buf());
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(unpacked)
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .map_err(io_err(format!("cannot read {}", unpacked.display())))?
        .into_iter()
        .map(|e| e.path())
        .collect();
    if let [only] = entries.as_slice()
        && only.join(crate::index::INDEX).is_file()
    {
        return Ok(only.clone());
    }
    let mut names: Vec<String> = entries
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names.truncate(8);
    Err(FetchLabError::NoIndex(format!(
        "{name} holds no index.json, neither at its top nor in a single top-level directory (it holds: {}): is it a lab?",
        if names.is_empty() {
            "nothing".to_string()
        } else {
            names.join(", ")
        }
    )))
}

fn write_marker(root: &Path, name: &str, sha256: Option<&str>) -> Result<(), FetchLabError> {
    let json = serde_json::json!({ "source": name, "sha256": sha256 });
    let path = root.join(MARKER);
    std::fs::write(&path, format!("{json:#}\n"))
        .and_then(|()| set_mode(&path, 0o644))
        .map_err(io_err(format!("cannot write {}", path.display())))
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn summary(
    report: &Report,
    dest: &Path,
    shown: &Path,
    files: usize,
    sha256: Option<String>,
) -> Fetched {
    let lab = report.lab.as_ref().expect("a valid report has its lab");
    Fetched {
        dir: dest.to_path_buf(),
        title: lab.title.clone(),
        steps: lab.steps.len(),
        files,
        warnings: report
            .problems
            .iter()
            .map(|p| format!("{}: {p}", shown.display()))
            .collect(),
        sha256,
    }
}

/// Replaces the entries of the existing `dest` by those of `root` (same
/// filesystem: `root` is staged inside `dest`).
fn replace_contents(root: &Path, dest: &Path) -> Result<(), FetchLabError> {
    for old in old_entries(dest)? {
        let r = if old.is_dir() && !old.is_symlink() {
            std::fs::remove_dir_all(&old)
        } else {
            std::fs::remove_file(&old)
        };
        r.map_err(io_err(format!("cannot remove {}", old.display())))?;
    }
    let entries = std::fs::read_dir(root)
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .map_err(io_err(format!("cannot read {}", root.display())))?;
    for e in entries {
        let to = dest.join(e.file_name());
        std::fs::rename(e.path(), &to)
            .map_err(io_err(format!("cannot move the lab's {}", to.display())))?;
    }
    Ok(())
}
