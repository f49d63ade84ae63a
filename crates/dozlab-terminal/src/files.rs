//! File transfer to and from the VM over SFTP.
//!
//! `POST /upload?name=FILE` streams the request body into a hidden temporary
//! file in the login user's home directory and renames it to `FILE` once the
//! body is complete. Bytes are counted: a body over `--max-upload-bytes` (or a
//! `Content-Length` announcing one) gets 413 and the temporary file is
//! removed, as it is when the client goes away mid-upload, so no partial
//! file is ever left in the VM. `GET /download?path=PATH` streams a file back
//! (relative paths are relative to that home). Each transfer opens its own
//! SSH connection with the same key and host-key check as the shells, and an
//! `sftp` subsystem channel on it.

use crate::logsafe::Clean;
use crate::ssh::{Session, SshError};
use crate::web::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
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
    /// The upload is larger than `--max-upload-bytes`.
    #[error("the upload is larger than the limit of {0} bytes (--max-upload-bytes)")]
    TooLarge(u64),
}

impl IntoResponse for FileError {
    fn into_response(self) -> Response {
        let status = match &self {
            FileError::BadName(_) => StatusCode::BAD_REQUEST,
            FileError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            FileError::Ssh(_) => StatusCode::SERVICE_UNAVAILABLE,
            FileError::Sftp(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_GATEWAY,
        };
        (status, format!("{}\n", crate::error_chain(&self))).into_response()
    }
}

/// The transfer routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/upload", post(upload))
        .route("/download", get(download))
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
    let max = st.0.settings.max_upload as u64;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let checked = check_name(&q.name).and_then(|()| match declared {
        Some(n) if n > max => Err(FileError::TooLarge(max)),
        _ => Ok(()),
    });
    // Its own task: the temporary file is removed even if the client leaves
    // (then this handler is dropped, but the body ends with an error).
    let job = checked.map(|()| {
        let (st, name) = (st.clone(), q.name.clone());
        tokio::spawn(async move { do_upload(&st, &name, body, max).await })
    });
    let result = match job {
        Ok(job) => job
            .await
            .unwrap_or_else(|e| Err(FileError::Io(std::io::Error::other(e)))),
        Err(e) => Err(e),
    };
    match result {
        Ok(n) => {
            tracing::info!(name = %Clean(&q.name), bytes = n, "uploaded");
            axum::Json(serde_json::json!({ "name": q.name, "bytes": n })).into_response()
        }
        Err(e) => {
            tracing::warn!(name = %Clean(&q.name), "upload failed: {}", crate::error_chain(&e));
            e.into_response()
        }
    }
}

/// Writes the body to a temporary file, then renames it to `name`; removes
/// the temporary file on any failure.
async fn do_upload(st: &AppState, name: &str, body: Body, max: u64) -> Result<u64, FileError> {
    let (_session, sftp) = sftp(st).await?;
    let temp = format!(".dozlab-upload-{}", hex::encode(rand::random::<[u8; 8]>()));
    let written = write_body(&sftp, &temp, body, max).await;
    let done = match written {
        Ok(n) => replace(&sftp, &temp, name).await.map(|()| n),
        Err(e) => Err(e),
    };
    if done.is_err() {
        let _ = sftp.remove_file(temp.as_str()).await;
    }
    done
}

async fn write_body(
    sftp: &SftpSession,
    path: &str,
    body: Body,
    max: u64,
) -> Result<u64, FileError> {
    let mut file = sftp.create(path).await?;
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
        n += chunk.len() as u64;
        if n > max {
            return Err(FileError::TooLarge(max));
        }
        file.write_all(&chunk).await?;
    }
    file.shutdown().await?;
    Ok(n)
}

/// Renames `from` to `to`, replacing an existing `to` (SFTP's rename refuses to).
async fn replace(sftp: &SftpSession, from: &str, to: &str) -> Result<(), FileError> {
    if sftp.rename(from, to).await.is_ok() {
        return Ok(());
    }
    let _ = sftp.remove_file(to).await;
    sftp.rename(from, to).await?;
    Ok(())
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
        Ok(res) => {
            tracing::info!(path = %Clean(&q.path), "download started");
            res
        }
        Err(e) => {
            let why = crate::error_chain(&e);
            tracing::warn!(path = %Clean(&q.path), "download failed: {why}");
            e.into_response()
        }
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
