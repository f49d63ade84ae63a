//! `image serve`: built images over HTTP (with `Range`, via tower-http's
//! `ServeDir`) and an `index.json` catalog of the manifests found in the
//! served directory (the directory itself and up to two levels below it).
//!
//! Hidden paths (any component starting with `.`, e.g. a build's staging
//! directory) are never served.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use dozlab_core::manifest::{MANIFEST_FILE, Manifest};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "{0} is not a directory: pass the directory that holds the builds (e.g. the --out of image build)"
    )]
    NotADirectory(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// One catalog entry: a manifest and where it lives.
#[derive(Debug, Clone, Serialize)]
pub struct IndexEntry {
    /// Directory of the build relative to the served root ("" for the root itself).
    pub dir: String,
    /// URL path of the manifest, relative to the server root.
    pub manifest_path: String,
    /// The manifest, artifact paths rewritten relative to the server root.
    pub manifest: Manifest,
}

/// The `index.json` body.
#[derive(Debug, Clone, Serialize)]
pub struct Index {
    /// Every build found, sorted by directory.
    pub images: Vec<IndexEntry>,
}

#[derive(Debug)]
struct AppState {
    root: PathBuf,
}

/// The router: `/index.json`, `/healthz`, and every file under `root`.
pub fn app(root: PathBuf) -> Router {
    let state = Arc::new(AppState { root: root.clone() });
    Router::new()
        .route("/index.json", get(index))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
        .fallback_service(ServeDir::new(root).append_index_html_on_directories(false))
        .layer(middleware::from_fn(refuse_hidden))
        .layer(TraceLayer::new_for_http())
}

async fn refuse_hidden(req: Request, next: Next) -> Response {
    if req
        .uri()
        .path()
        .split('/')
        .any(|c| c.starts_with('.') || c.starts_with("%2e") || c.starts_with("%2E"))
    {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    next.run(req).await
}

async fn index(State(state): State<Arc<AppState>>) -> Response {
    let root = state.root.clone();
    match tokio::task::spawn_blocking(move || build_index(&root)).await {
        Ok(index) => Json(index).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "index failed\n").into_response(),
    }
}

/// Scans `root` (depth ≤ 2, hidden directories skipped) for manifests.
pub fn build_index(root: &Path) -> Index {
    let mut images = Vec::new();
    collect(root, "", 0, &mut images);
    images.sort_by(|a, b| a.dir.cmp(&b.dir));
    Index { images }
}

fn collect(dir: &Path, rel: &str, depth: u8, out: &mut Vec<IndexEntry>) {
    if let Ok(mut manifest) = Manifest::load(&dir.join(MANIFEST_FILE)) {
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        for a in &mut manifest.artifacts {
            a.path = format!("{prefix}{}", a.path);
        }
        out.push(IndexEntry {
            dir: rel.to_string(),
            manifest_path: format!("{prefix}{MANIFEST_FILE}"),
            manifest,
        });
    }
    if depth >= 2 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.path().is_dir() {
            continue;
        }
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        collect(&e.path(), &child, depth + 1, out);
    }
}

/// Serves `root` on `listen` until Ctrl-C or SIGTERM; `on_bound` gets the real address.
pub async fn serve(
    root: &Path,
    listen: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    if !root.is_dir() {
        return Err(ServeError::NotADirectory(root.display().to_string()));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(ServeError::Serve)?;
    on_bound(bound);
    axum::serve(listener, app(root.to_path_buf()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(ServeError::Serve)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::header;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let vm = d.path().join("vm");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::write(vm.join("rootfs.ext4"), b"0123456789abcdef").unwrap();
        let manifest = r#"{"name":"dozlab-vm","profile":"vm","created":"2026-01-01T00:00:00Z",
            "kernel":{"version":"6.1"},"artifacts":[{"path":"rootfs.ext4","size":16,"sha256":"ab"}]}"#;
        std::fs::write(vm.join(MANIFEST_FILE), manifest).unwrap();
        std::fs::create_dir_all(d.path().join(".dozlab-build-1")).unwrap();
        std::fs::write(d.path().join(".dozlab-build-1/rootfs.ext4"), b"partial").unwrap();
        d
    }

    async fn get(app: Router, uri: &str, range: Option<&str>) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder().uri(uri);
        if let Some(r) = range {
            req = req.header(header::RANGE, r);
        }
        let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        (
            status,
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
    }

    #[tokio::test]
    async fn index_lists_manifests_with_rooted_paths() {
        let d = fixture();
        let (status, body) = get(app(d.path().into()), "/index.json", None).await;
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["images"][0]["dir"], "vm");
        assert_eq!(
            v["images"][0]["manifest"]["artifacts"][0]["path"],
            "vm/rootfs.ext4"
        );
        assert_eq!(v["images"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn serves_ranges_and_hides_staging() {
        let d = fixture();
        let (status, body) = get(app(d.path().into()), "/vm/rootfs.ext4", Some("bytes=4-7")).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(body, b"4567");
        let (status, _) = get(app(d.path().into()), "/.dozlab-build-1/rootfs.ext4", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = get(app(d.path().into()), "/vm/../vm/rootfs.ext4", None).await;
        assert_ne!(status, StatusCode::OK);
    }
}
