//! Recipe files fetched from URLs and pinned by sha256.
//!
//! Each file is downloaded (or taken from the download cache, keyed by its
//! sha256), checked against its pin, and placed into the overlay at its
//! destination with its mode. A mismatch fails the build and keeps nothing.

use crate::recipe::{RemoteFile, parse_mode};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a pinned file could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot download {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot download {url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error(
        "{url} does not match its pin: expected sha256 {expected}, got {actual}; \
         fix the recipe's sha256 (or url) after checking the upstream checksum"
    )]
    Mismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("cannot store {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Places every file into `overlay`, downloading what the cache lacks.
pub fn fetch_files(
    files: &[RemoteFile],
    overlay: &Path,
    cache: Option<&Path>,
) -> Result<(), FetchError> {
    if files.is_empty() {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err(overlay))?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        for f in files {
            let src = obtain(&client, f, overlay, cache).await?;
            install(&src, f, overlay)?;
        }
        Ok(())
    })
}

/// The path of a verified copy of `f` (in the cache, or a temp file in the overlay's parent).
async fn obtain(
    client: &reqwest::Client,
    f: &RemoteFile,
    overlay: &Path,
    cache: Option<&Path>,
) -> Result<PathBuf, FetchError> {
    let expected = f.sha256.to_ascii_lowercase();
    let dir = match cache {
        Some(c) => c.to_path_buf(),
        None => overlay.parent().unwrap_or(overlay).join("downloads"),
    };
    let target = dir.join(&expected);
    if target.is_file() {
        return Ok(target);
    }
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let tmp = dir.join(format!(".{expected}.part-{}", std::process::id()));
    let result = download(client, &f.url, &tmp).await;
    let actual = match result {
        Ok(sum) => sum,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if actual != expected {
        let _ = fs::remove_file(&tmp);
        return Err(FetchError::Mismatch {
            url: f.url.clone(),
            expected,
            actual,
        });
    }
    fs::rename(&tmp, &target).map_err(io_err(&target))?;
    Ok(target)
}

async fn download(client: &reqwest::Client, url: &str, to: &Path) -> Result<String, FetchError> {
    let http = |source| FetchError::Http {
        url: url.to_string(),
        source,
    };
    let resp = client.get(url).send().await.map_err(http)?;
    if !resp.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: resp.status().as_u16(),
        });
    }
    let mut file = fs::File::create(to).map_err(io_err(to))?;
    let mut hasher = Sha256::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(http)?;
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io_err(to))?;
    }
    file.sync_all().map_err(io_err(to))?;
    Ok(hex::encode(hasher.finalize()))
}

fn install(src: &Path, f: &RemoteFile, overlay: &Path) -> Result<(), FetchError> {
    let dest = overlay.join(f.dest.trim_start_matches('/'));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    fs::copy(src, &dest).map_err(io_err(&dest))?;
    let mode = parse_mode(&f.mode).unwrap_or(0o644);
    fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).map_err(io_err(&dest))
}
