//! The download step of a fetch: the planned source (HTTP or a file) streams
//! through the pipeline into an empty temporary file, after a free-space
//! check; and what the download or cache step hands back to [`crate::fetch`].

use crate::error::FetchError;
use crate::ext::{self, Grow};
use crate::http::{HttpError, HttpOptions, Transfer};
use crate::options::{CacheUse, FetchOptions};
use crate::pipeline::{Msg, Pipeline, PipelineError, Written, run_channel};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::source::Source;
use crate::space;
use crate::temp::TempFile;
use dozlab_core::size::human;
use reqwest::Client;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct Ctx<'a> {
    pub(crate) opts: &'a FetchOptions,
    pub(crate) client: Client,
    pub(crate) http: HttpOptions,
    pub(crate) plan: Plan,
    /// How far to grow the filesystem (`Keep` without `prepare_fs`).
    pub(crate) grow: Grow,
}

/// A download's result and statistics.
pub(crate) struct Downloaded {
    pub(crate) w: Written,
    pub(crate) resumes: u32,
    pub(crate) restarts: u32,
    pub(crate) elapsed: Duration,
}

/// What the download or cache phase produced in the temporary file.
pub(crate) struct Got {
    pub(crate) compression: Option<crate::decode::Compression>,
    pub(crate) downloaded: u64,
    pub(crate) stored_sha256: Option<String>,
    pub(crate) image_sha256: Option<String>,
    pub(crate) cache: CacheUse,
    pub(crate) resumes: u32,
    pub(crate) restarts: u32,
    pub(crate) download: Duration,
    pub(crate) copy: Duration,
}

impl Got {
    pub(crate) fn from_download(d: &Downloaded, cache: CacheUse) -> Self {
        Self {
            compression: Some(d.w.compression),
            downloaded: d.w.stored_len,
            stored_sha256: Some(d.w.stored_sha256.clone()),
            image_sha256: d.w.image_sha256.clone(),
            cache,
            resumes: d.resumes,
            restarts: d.restarts,
            download: d.elapsed,
            copy: Duration::ZERO,
        }
    }
}

pub(crate) fn dir_of(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Fails before the first byte unless `dir` can hold the image (and its growth).
pub(crate) fn check_space(
    dir: &Path,
    image: Option<u64>,
    grow_to: Option<u64>,
) -> Result<(), FetchError> {
    let what = match (image, grow_to) {
        (None, None) => return Ok(()),
        (Some(i), Some(g)) if g > i => format!("the image grown to {}", human(g)),
        (None, Some(g)) => format!("the image grown to {}", human(g)),
        (Some(i), _) => format!("the image ({})", human(i)),
    };
    let needed = image.unwrap_or(0).max(grow_to.unwrap_or(0));
    space::ensure(dir, needed, &what)?;
    Ok(())
}

/// Downloads into `tmp` (empty) with the space check against `space_dir`.
pub(crate) async fn download(
    ctx: &Ctx<'_>,
    tmp: &TempFile,
    space_dir: &Path,
    grow_to: Option<u64>,
) -> Result<Downloaded, FetchError> {
    let start = Instant::now();
    let file = tmp
        .file()
        .try_clone()
        .map_err(FetchError::io("cannot reopen the temporary file"))?;
    let hash_image = ctx.plan.hash_image() || ctx.opts.cache.is_some();
    let mut pipeline = Pipeline::new(file, hash_image);
    if ctx.opts.prepare_fs {
        pipeline = pipeline.with_head_check(Box::new(ext::early_check(ctx.grow)));
    }
    let label = ctx.plan.source.file_name();
    let (w, resumes, restarts) = match &ctx.plan.source {
        Source::Http(url) => {
            let mut t = Transfer::new(
                ctx.client.clone(),
                url.clone(),
                ctx.http,
                ctx.plan.expect.stored_size,
            );
            let first = t.open().await?;
            check_space(space_dir, ctx.plan.image_size_estimate(t.total()), grow_to)?;
            let progress = Progress::new(ctx.opts.progress, &label, t.total());
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let worker = tokio::task::spawn_blocking(move || run_channel(pipeline, rx));
            let mut res = t.run(first, &tx, &progress).await;
            if res.is_ok() && tx.send(Msg::End).await.is_err() {
                res = Err(HttpError::SinkClosed);
            }
            drop(tx);
            progress.finish();
            let written = worker.await.map_err(|e| FetchError::Io {
                what: "the image writer crashed".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
            match (res, written) {
                (Err(e), Err(PipelineError::Aborted)) => return Err(e.into()),
                // The writer's failure is the cause of whatever the network side saw.
                (Err(_), Err(e)) => return Err(e.into()),
                (Err(e), Ok(_)) => return Err(e.into()),
                (Ok(()), w) => (w?, t.resumes, t.restarts),
            }
        }
        Source::File(path) => {
            let src = File::open(path).map_err(|source| FetchError::Open {
                path: path.display().to_string(),
                source,
            })?;
            let len = src.metadata().map(|m| m.len()).ok();
            check_space(space_dir, ctx.plan.image_size_estimate(len), grow_to)?;
            let progress = Progress::new(ctx.opts.progress, &label, len);
            let w = read_file(src, pipeline, path.display().to_string(), progress).await?;
            (w, 0, 0)
        }
    };
    Ok(Downloaded {
        w,
        resumes,
        restarts,
        elapsed: start.elapsed(),
    })
}

/// Sets its flag when dropped (the future was cancelled or finished).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn read_file(
    mut src: File,
    mut p: Pipeline,
    name: String,
    progress: Progress,
) -> Result<Written, FetchError> {
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let flag = cancel.0.clone();
    let job = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if flag.load(Ordering::Relaxed) {
                return Err(FetchError::Usage("cancelled".into()));
            }
            let n = src.read(&mut buf).map_err(|source| FetchError::Open {
                path: name.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            p.feed(&buf[..n])?;
            progress.inc(n as u64);
        }
        progress.finish();
        Ok(p.finish()?)
    });
    let r = job.await.map_err(|e| FetchError::Io {
        what: "the image writer crashed".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    drop(cancel);
    r
}
