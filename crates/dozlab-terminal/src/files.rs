//! File transfer to and from the VM over SFTP.
//!
//! `POST /upload?name=FILE` streams the request body into `FILE` in the login
//! user's home directory; `GET /download?path=PATH` streams a file back
//! (relative paths are relative to that home). Each transfer opens its own
//! SSH connection with the same key and host-key check as the shells, and an
//! `sftp` subsystem channel on it.

use crate::ssh::{Session, SshError};
use crate::web::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use russh_sftp::client::SftpSession;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// Errors of a transfer.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file name is not a plain name.
    #[error("bad file name {0:?}: give a plain name without '/' (it goes to the home directory)")]
    BadName(String),
    /// The VM is not reachable.
    #[error("the VM is not reachable")]
    Ssh(#[from] SshError),
    /// The SFTP subsystem failed.
    #[error("SFTP failed")]
    Sftp(#[from] russh_sftp::client::error::Error),
    /// Opening the subsystem channel failed.
    #[error("cannot open the SFTP channel")]
    Channel(#[from] russh::Error),
    /// Reading the upload or writing the file failed.
    #[error("transfer interrupted")]
    Io(#[from] std::io::Error),
}

impl IntoResponse for FileError {
    fn into_response(self) -> Response {
        let status = match &self {
            FileError::BadName(_) => StatusCode::BAD_REQUEST,
            FileError::Ssh(_) => StatusCode::SERVICE_UNAVAILABLE,
            FileError::Sftp(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_GATEWAY,
        };
        (status, format!("{}\n", crate::error_chain(&self))).into_response()
    }
}

/// The transfer routes, with the upload size limit.
pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/upload", post(upload))
        .route("/download", get(download))
        .layer(DefaultBodyLimit::max(state.0.settings.max_upload))
}

async fn sftp(state: &AppState) -> Result<(Session, SftpSession), FileError> {
    let session = state.0.ssh.connect().await?;
    let channel = session.channel_open_session().await?;
    channel.request_subsystem(true, "sftp").await?;
    let sftp = SftpSession::new(channel.into_stream()).await?;
    Ok((session, sftp))
}

/// Query of `/upload`.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    /// File name in the home directory.
    pub name: String,
}

fn check_name(name: &str) -> Result<(), FileError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\0'])
        || name.len() > 255;
    if bad {
        Err(FileError::BadName(name.to_string()))
    } else {
        Ok(())
    }
}

async fn upload(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Response {
    if let Err(refusal) = st.guard(&headers) {
        return refusal.into_response();
    }
    match do_upload(&st, &q.name, body).await {
        Ok(n) => {
            tracing::info!(name = %q.name, bytes = n, "uploaded");
            axum::Json(serde_json::json!({ "name": q.name, "bytes": n })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn do_upload(st: &AppState, name: &str, body: Body) -> Result<u64, FileError> {
    check_name(name)?;
    let (_session, sftp) = sftp(st).await?;
    let mut file = sftp.create(name).await?;
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
        file.write_all(&chunk).await?;
        n += chunk.len() as u64;
    }
    file.shutdown().await?;
    Ok(n)
}

/// Query of `/download`.
#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    /// File path (relative to the home directory, or absolute).
    pub path: String,
}

async fn download(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DownloadQuery>,
) -> Response {
    if let Err(refusal) = st.guard(&headers) {
        return refusal.into_response();
    }
    match do_download(&st, &q.path).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn do_download(st: &AppState, path: &str) -> Result<Response, FileError> {
    let (session, sftp) = sftp(st).await?;
    let file = sftp.open(path).await?;
    let len = file.metadata().await.ok().and_then(|m| m.size);
    let base: String = path
        .rsplit('/')
        .next()
        .unwrap_or("download")
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    // Keep the SSH connection and SFTP session alive while the body streams.
    let keep = (session, sftp);
    let stream = tokio_util::io::ReaderStream::new(file).map(move |chunk| {
        let _ = &keep;
        chunk
    });
    let mut res = Body::from_stream(stream).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().expect("static"),
    );
    if let Ok(v) = format!("attachment; filename=\"{base}\"").parse() {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, len.into());
    }
    Ok(res)
}
