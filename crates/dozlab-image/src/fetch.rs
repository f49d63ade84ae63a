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
        // reqwest is built without a default TLS provider: use ring (pure Rust).
        let _ = rustls::crypto::ring::default_provider().install_default();
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
    let staged = dozlab_core::atomic::Staged::new(&target).map_err(io_err(&target))?;
    let actual = download(client, &f.url, staged.path()).await?;
    if actual != expected {
        return Err(FetchError::Mismatch {
            url: f.url.clone(),
            expected,
            actual,
        });
    }
    staged.commit().map_err(io_err(&target))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// A one-file HTTP server on loopback: `/tool` answers `body`, anything else 404.
    fn serve(body: &'static [u8], requests: usize) -> (String, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let mut stream = stream.unwrap();
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                let (status, payload): (&str, &[u8]) = if line.starts_with("GET /tool ") {
                    ("200 OK", body)
                } else {
                    ("404 Not Found", b"no")
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    payload.len()
                );
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(payload).unwrap();
            }
        });
        (base, handle)
    }

    fn pinned(url: String, body: &[u8]) -> RemoteFile {
        RemoteFile {
            url,
            sha256: hex::encode(Sha256::digest(body)),
            dest: "/usr/local/bin/tool".into(),
            mode: "0755".into(),
        }
    }

    #[test]
    fn pinned_file_is_downloaded_checked_cached_and_placed() {
        let (base, server) = serve(b"#!/bin/sh\necho tool\n", 1);
        let dir = tempfile::tempdir().unwrap();
        let (overlay, cache) = (dir.path().join("overlay"), dir.path().join("cache"));
        let file = pinned(format!("{base}/tool"), b"#!/bin/sh\necho tool\n");
        fetch_files(std::slice::from_ref(&file), &overlay, Some(&cache)).unwrap();
        server.join().unwrap();
        let placed = overlay.join("usr/local/bin/tool");
        assert_eq!(fs::read(&placed).unwrap(), b"#!/bin/sh\necho tool\n");
        assert_eq!(
            fs::metadata(&placed).unwrap().permissions().mode() & 0o777,
            0o755
        );
        // The server is gone: a second build takes the file from the cache.
        let overlay2 = dir.path().join("overlay2");
        fetch_files(&[file], &overlay2, Some(&cache)).unwrap();
        assert!(overlay2.join("usr/local/bin/tool").is_file());
    }

    #[test]
    fn wrong_pin_and_missing_file_fail_and_keep_nothing() {
        let (base, server) = serve(b"tampered", 2);
        let dir = tempfile::tempdir().unwrap();
        let (overlay, cache) = (dir.path().join("overlay"), dir.path().join("cache"));
        let file = pinned(format!("{base}/tool"), b"the real thing");
        let err = fetch_files(&[file], &overlay, Some(&cache)).unwrap_err();
        assert!(matches!(err, FetchError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("does not match its pin"));
        let missing = pinned(format!("{base}/other"), b"x");
        let err = fetch_files(&[missing], &overlay, Some(&cache)).unwrap_err();
        assert!(
            matches!(err, FetchError::Status { status: 404, .. }),
            "{err}"
        );
        server.join().unwrap();
        assert_eq!(
            fs::read_dir(&cache).unwrap().count(),
            0,
            "no partial download kept"
        );
        assert!(!overlay.join("usr/local/bin/tool").exists());
    }
}
