//! [`fetch`]: plan, download (or take from the cache), verify, check and grow,
//! then rename into place. Dropping the future cancels and cleans up.

use crate::cache::{Cache, Entry};
use crate::copy::copy_sparse;
use crate::error::FetchError;
use crate::ext;
use crate::http::{self, HttpError, HttpOptions, Transfer};
use crate::options::{CacheUse, FetchOptions, FetchReport, Phases};
use crate::pipeline::{Msg, Pipeline, PipelineError, Written, run_channel};
use crate::plan::{self, Expect, Plan};
use crate::progress::Progress;
use crate::retry::RetryPolicy;
use crate::source::Source;
use crate::space;
use crate::temp::{self, TempFile};
use dozlab_core::size::human;
use reqwest::Client;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Ctx<'a> {
    opts: &'a FetchOptions,
    client: Client,
    http: HttpOptions,
    plan: Plan,
    grow_to: Option<u64>,
}

/// A download's result and statistics.
struct Downloaded {
    w: Written,
    resumes: u32,
    restarts: u32,
    elapsed: Duration,
}

/// What the download or cache phase produced in the temporary file.
struct Got {
    compression: Option<crate::decode::Compression>,
    downloaded: u64,
    stored_sha256: Option<String>,
    image_sha256: Option<String>,
    cache: CacheUse,
    resumes: u32,
    restarts: u32,
    download: Duration,
    copy: Duration,
}

impl Got {
    fn from_download(d: &Downloaded, cache: CacheUse) -> Self {
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

/// Fetches an image as `opts` says; see the crate docs.
pub async fn fetch(opts: &FetchOptions) -> Result<FetchReport, FetchError> {
    let start = Instant::now();
    let ctx = prepare(opts).await?;
    let out_dir = dir_of(&opts.out);
    std::fs::create_dir_all(out_dir).map_err(FetchError::io(format!(
        "cannot create {}",
        out_dir.display()
    )))?;
    temp::remove_stale(&opts.out);
    let tmp = TempFile::beside(&opts.out).map_err(FetchError::io(format!(
        "cannot create a temporary file beside {}",
        opts.out.display()
    )))?;
    let got = match (&opts.cache, ctx.plan.cache_key().map(str::to_string)) {
        (Some(dir), Some(key)) => via_cache(&ctx, dir, &key, &tmp).await?,
        (cache, _) => {
            if cache.is_some() {
                tracing::warn!(
                    "not using --cache: no sha256 to key it by (give --sha256 or --manifest)"
                );
            }
            let d = download(&ctx, &tmp, out_dir, ctx.grow_to).await?;
            ctx.plan.verify(&d.w)?;
            Got::from_download(&d, CacheUse::Off)
        }
    };
    let mut phases = Phases {
        download: got.download,
        copy: got.copy,
        ..Phases::default()
    };
    let (fsck, grown) = if opts.prepare_fs {
        prepare_fs(tmp.path(), ctx.grow_to, &mut phases).await?
    } else {
        (None, false)
    };
    let file = tmp.persist(&opts.out).map_err(FetchError::io(format!(
        "cannot rename the image to {}",
        opts.out.display()
    )))?;
    let meta = file.metadata().map_err(FetchError::io(format!(
        "cannot stat {}",
        opts.out.display()
    )))?;
    phases.total = start.elapsed();
    Ok(FetchReport {
        out: opts.out.clone(),
        source: ctx.plan.source.to_string(),
        compression: got.compression,
        downloaded: got.downloaded,
        image_size: meta.len(),
        allocated: meta.blocks() * 512,
        stored_sha256: got.stored_sha256,
        image_sha256: got.image_sha256,
        cache: got.cache,
        resumes: got.resumes,
        restarts: got.restarts,
        fsck,
        grown,
        phases,
    })
}

async fn prepare(opts: &FetchOptions) -> Result<Ctx<'_>, FetchError> {
    let usage = |m: &str| FetchError::Usage(m.to_string());
    if opts.out.as_os_str().is_empty() || opts.out.is_dir() {
        return Err(usage(
            "--out must name a file (e.g. /srv/vm/kernels/rootfs.ext4), not a directory",
        ));
    }
    let sha256 = opts.sha256.as_deref().map(normalize_sha256).transpose()?;
    if sha256.is_some() && opts.manifest.is_some() {
        return Err(usage(
            "give either --sha256 or --manifest (the manifest carries the digests)",
        ));
    }
    if opts.timeout.is_zero() {
        return Err(usage("--timeout must be at least 1 second"));
    }
    let http = HttpOptions {
        retry: RetryPolicy {
            retries: opts.retries,
            base: opts.retry_delay,
            max: Duration::from_secs(30).max(opts.retry_delay),
        },
        timeout: opts.timeout,
    };
    let client = http::client(opts.timeout)?;
    let url = opts.url.as_deref().map(Source::parse).transpose()?;
    let plan = match (&opts.manifest, url) {
        (Some(m), url) => {
            plan::from_manifest(&Source::parse(m)?, url.as_ref(), &client, http).await?
        }
        (None, Some(source)) => Plan {
            source,
            expect: Expect {
                any_sha256: sha256,
                ..Expect::default()
            },
        },
        (None, None) => {
            return Err(usage(
                "no image given: pass --url (or IMAGE_DOWNLOAD_URL) or --manifest (or IMAGE_MANIFEST_URL)",
            ));
        }
    };
    let grow_to = opts.size.filter(|_| opts.prepare_fs).map(|s| s.0);
    if let (Some(g), Some(img)) = (grow_to, plan.expect.image_size) {
        ext::refuse_shrink(img, g)?;
    }
    Ok(Ctx {
        opts,
        client,
        http,
        plan,
        grow_to,
    })
}

fn normalize_sha256(s: &str) -> Result<String, FetchError> {
    let t = s.trim().to_ascii_lowercase();
    if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(t)
    } else {
        Err(FetchError::Usage(format!(
            "--sha256 {s:?} is not a sha256 digest (64 hex digits, as printed by sha256sum)"
        )))
    }
}

fn dir_of(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Fails before the first byte unless `dir` can hold the image (and its growth).
fn check_space(dir: &Path, image: Option<u64>, grow_to: Option<u64>) -> Result<(), FetchError> {
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
async fn download(
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
        pipeline = pipeline.with_head_check(Box::new(ext::early_check(ctx.grow_to)));
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

/// The cache path: a verified hit is copied; otherwise, under the lock, the
/// image is downloaded into the cache, verified, published and copied.
async fn via_cache(
    ctx: &Ctx<'_>,
    dir: &Path,
    key: &str,
    tmp: &TempFile,
) -> Result<Got, FetchError> {
    let cache = Cache::open(dir)?;
    let mut bad = None;
    if let Some(e) = cache.lookup(key) {
        if let Some(got) = copy_hit(ctx, &e, tmp).await? {
            return Ok(got);
        }
        bad = Some(e.ino);
    }
    let _lock = cache.lock(key).await?;
    if let Some(e) = cache.lookup(key) {
        if Some(e.ino) != bad
            && let Some(got) = copy_hit(ctx, &e, tmp).await?
        {
            return Ok(got);
        }
        cache.evict(key, e.ino);
        bad = Some(e.ino);
    }
    let out_dir = dir_of(&ctx.opts.out);
    check_space(out_dir, ctx.plan.image_size_estimate(None), ctx.grow_to)?;
    let ctmp = cache.temp(key)?;
    let d = download(ctx, &ctmp, cache.dir(), None).await?;
    ctx.plan.verify(&d.w)?;
    let image_sha256 = d.w.image_sha256.clone().unwrap_or_default();
    cache.commit(key, ctmp, &image_sha256, d.w.image_len)?;
    let start = Instant::now();
    check_space(out_dir, Some(d.w.image_len), ctx.grow_to)?;
    let src =
        d.w.file
            .try_clone()
            .map_err(FetchError::io("cannot reopen the cache entry"))?;
    copy_into(src, d.w.image_len, tmp, false).await?;
    let mut got = Got::from_download(
        &d,
        if bad.is_some() {
            CacheUse::Refetched
        } else {
            CacheUse::Miss
        },
    );
    got.copy = start.elapsed();
    Ok(got)
}

/// Copies a cache entry into `tmp`, verifying it; `None` when it is corrupt.
async fn copy_hit(ctx: &Ctx<'_>, e: &Entry, tmp: &TempFile) -> Result<Option<Got>, FetchError> {
    let start = Instant::now();
    check_space(dir_of(&ctx.opts.out), Some(e.len), ctx.grow_to)?;
    let Ok(src) = File::open(&e.path) else {
        return Ok(None);
    };
    let digest = copy_into(src, e.len, tmp, true).await?;
    let expected_image = ctx.plan.expect.image_sha256.as_deref();
    if digest.as_deref() != Some(e.image_sha256.as_str())
        || expected_image.is_some_and(|x| x != e.image_sha256)
    {
        tracing::warn!(
            "cache entry {} is corrupt (sha256 {}, recorded {}); fetching it again",
            e.path.display(),
            digest.unwrap_or_default(),
            e.image_sha256
        );
        return Ok(None);
    }
    tracing::info!("using cache entry {}", e.path.display());
    Ok(Some(Got {
        compression: None,
        downloaded: 0,
        stored_sha256: ctx.plan.cache_key().map(str::to_string),
        image_sha256: Some(e.image_sha256.clone()),
        cache: CacheUse::Hit,
        resumes: 0,
        restarts: 0,
        download: Duration::ZERO,
        copy: start.elapsed(),
    }))
}

async fn copy_into(
    src: File,
    len: u64,
    tmp: &TempFile,
    hash: bool,
) -> Result<Option<String>, FetchError> {
    let dst = tmp
        .file()
        .try_clone()
        .map_err(FetchError::io("cannot reopen the temporary file"))?;
    dst.set_len(0)
        .map_err(FetchError::io("cannot truncate the temporary file"))?;
    let copied = tokio::task::spawn_blocking(move || copy_sparse(&src, len, dst, hash))
        .await
        .map_err(|e| FetchError::io("the copy crashed")(std::io::Error::other(e.to_string())))?
        .map_err(FetchError::io("cannot copy the image out of the cache"))?;
    Ok(copied.sha256)
}

async fn prepare_fs(
    image: &Path,
    grow_to: Option<u64>,
    phases: &mut Phases,
) -> Result<(Option<ext::Checked>, bool), FetchError> {
    let start = Instant::now();
    let current = ext::fs_size(image)?;
    if let Some(g) = grow_to {
        ext::refuse_shrink(current, g)?;
    }
    let checked = ext::check(image).await?;
    if let ext::Checked::Repaired(out) = &checked {
        tracing::warn!("e2fsck repaired the image:\n{out}");
    }
    phases.fsck = start.elapsed();
    let start = Instant::now();
    let grown = match grow_to {
        Some(g) => ext::grow(image, g).await?,
        None => false,
    };
    phases.resize = start.elapsed();
    Ok((Some(checked), grown))
}
