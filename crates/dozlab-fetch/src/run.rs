//! [`fetch`]: plan, download (or take from the cache), verify, check and grow,
//! then rename into place. Dropping the future cancels and cleans up.

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

pub(crate) struct Ctx<'a> {
    pub(crate) opts: &'a FetchOptions,
    pub(crate) client: Client,
    pub(crate) http: HttpOptions,
    pub(crate) plan: Plan,
    pub(crate) grow_to: Option<u64>,
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
        (Some(dir), Some(key)) => crate::cached::via_cache(&ctx, dir, &key, &tmp).await?,
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
