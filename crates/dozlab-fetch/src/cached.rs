//! The `--cache` path of a fetch: copy out a verified entry, or fill the
//! entry under its lock (download, verify, publish) and copy it out.

use crate::cache::{Cache, Entry};
use crate::copy::copy_sparse;
use crate::download::{Ctx, Got, check_space, dir_of, download};
use crate::error::FetchError;
use crate::options::CacheUse;
use crate::temp::TempFile;
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

/// The cache path: a verified hit is copied; otherwise, under the lock, the
/// image is downloaded into the cache, verified, published and copied.
pub(crate) async fn via_cache(
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
    check_space(
        out_dir,
        ctx.plan.image_size_estimate(None),
        ctx.grow.bytes(),
    )?;
    let ctmp = cache.temp(key)?;
    let d = download(ctx, &ctmp, cache.dir(), None).await?;
    ctx.plan.verify(&d.w)?;
    let image_sha256 = d.w.image_sha256.clone().unwrap_or_default();
    cache.commit(key, ctmp, &image_sha256, d.w.image_len)?;
    let start = Instant::now();
    check_space(out_dir, Some(d.w.image_len), ctx.grow.bytes())?;
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
    check_space(dir_of(&ctx.opts.out), Some(e.len), ctx.grow.bytes())?;
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
