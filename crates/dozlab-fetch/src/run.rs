//! [`fetch`]: plan, download (or take from the cache), verify, check and grow,
//! then rename into place. Dropping the future cancels and cleans up.

use crate::download::{Ctx, Got, dir_of, download};
use crate::error::FetchError;
use crate::ext::{self, Grow};
use crate::http::{self, HttpOptions};
use crate::options::{CacheUse, FetchOptions, FetchReport, Phases};
use crate::plan::{self, Expect, Plan};
use crate::retry::RetryPolicy;
use crate::source::Source;
use crate::temp::{self, TempFile};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Fetches an image as `opts` says; see the crate docs.
pub async fn fetch(opts: &FetchOptions) -> Result<FetchReport, FetchError> {
    let start = Instant::now();
    let ctx = prepare(opts).await?;
    let tmp = temp_beside(&opts.out)?;
    let got = match (&opts.cache, ctx.plan.cache_key().map(str::to_string)) {
        (Some(dir), Some(key)) => crate::cached::via_cache(&ctx, dir, &key, &tmp).await?,
        (cache, _) => {
            if cache.is_some() {
                tracing::warn!(
                    "not using --cache: no sha256 to key it by (give --sha256 or --manifest)"
                );
            }
            let d = download(&ctx, &tmp, dir_of(&opts.out), ctx.grow.bytes()).await?;
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
        prepare_fs(tmp.path(), ctx.grow, &mut phases).await?
    } else {
        (None, false)
    };
    let (image_size, allocated) = persist(tmp, &opts.out)?;
    phases.total = start.elapsed();
    Ok(FetchReport {
        out: opts.out.clone(),
        source: ctx.plan.source.to_string(),
        compression: got.compression,
        downloaded: got.downloaded,
        image_size,
        allocated,
        stored_sha256: got.stored_sha256,
        image_sha256: got.image_sha256,
        cache: got.cache,
        resumes: got.resumes,
        restarts: got.restarts,
        fsck,
        grown,
        manifest: ctx.plan.manifest,
        phases,
    })
}

/// A fresh temporary file beside `out` (its directory created, stale
/// temporary files of earlier runs removed).
pub(crate) fn temp_beside(out: &Path) -> Result<TempFile, FetchError> {
    let out_dir = dir_of(out);
    std::fs::create_dir_all(out_dir).map_err(FetchError::io(format!(
        "cannot create {}",
        out_dir.display()
    )))?;
    temp::remove_stale(out);
    TempFile::beside(out).map_err(FetchError::io(format!(
        "cannot create a temporary file beside {}",
        out.display()
    )))
}

/// Renames the finished image into place; its apparent and allocated sizes.
pub(crate) fn persist(tmp: TempFile, out: &Path) -> Result<(u64, u64), FetchError> {
    let file = tmp.persist(out).map_err(FetchError::io(format!(
        "cannot rename the image to {}",
        out.display()
    )))?;
    let meta = file
        .metadata()
        .map_err(FetchError::io(format!("cannot stat {}", out.display())))?;
    Ok((meta.len(), meta.blocks() * 512))
}

/// `e2fsck`, then growth as `grow` says, timed into `phases`.
pub(crate) async fn prepare_fs(
    image: &Path,
    grow: Grow,
    phases: &mut Phases,
) -> Result<(Option<ext::Checked>, bool), FetchError> {
    let start = Instant::now();
    let target = grow.target(ext::fs_size(image)?)?;
    let checked = ext::check(image).await?;
    if let ext::Checked::Repaired(out) = &checked {
        tracing::warn!("e2fsck repaired the image:\n{out}");
    }
    phases.fsck = start.elapsed();
    let start = Instant::now();
    let grown = match target {
        Some(size) => ext::grow(image, size).await?,
        None => false,
    };
    phases.resize = start.elapsed();
    Ok((Some(checked), grown))
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
    let roots = match &opts.ca_cert {
        Some(p) => extra_roots(p)?,
        None => Vec::new(),
    };
    let client = http::client(opts.timeout, roots)?;
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
            manifest: None,
        },
        (None, None) => {
            return Err(usage(
                "no image given: pass --url (or IMAGE_DOWNLOAD_URL) or --manifest (or IMAGE_MANIFEST_URL)",
            ));
        }
    };
    let grow = if opts.prepare_fs {
        opts.grow
    } else {
        Grow::Keep
    };
    if let Some(img) = plan.expect.image_size {
        grow.target(img)?;
    }
    Ok(Ctx {
        opts,
        client,
        http,
        plan,
        grow,
    })
}

/// The PEM certificates of `--ca-cert`.
fn extra_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, FetchError> {
    let bad = |why: String| {
        FetchError::Usage(format!(
            "--ca-cert {}: {why}; give a PEM file of CA certificates",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(http::chain(&e)))?;
    if certs.is_empty() {
        return Err(bad("no certificate found".into()));
    }
    Ok(certs)
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
