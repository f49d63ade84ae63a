//! HTTP(S) downloads that survive a bad network: resume with `Range` after a
//! dropped connection, retry transient failures with backoff, give up at once
//! on a 4xx, restart cleanly when the server ignores `Range`.
//!
//! "Transient" means: connection refused or reset, no data for `timeout`,
//! a truncated body, HTTP 408, 429 or 5xx.

use crate::pipeline::Msg;
use crate::progress::Progress;
use crate::retry::{Retrier, RetryPolicy};
use reqwest::header::{CONTENT_RANGE, ETAG, HeaderValue, IF_RANGE, LAST_MODIFIED, RANGE};
use reqwest::{Client, Response, Url};
use std::time::Duration;
use tokio::sync::mpsc::Sender;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url} answered HTTP {status}{}", status_hint(*.status))]
    Status { url: Url, status: u16 },
    #[error("no data from the server for {0:?}; --timeout sets this limit")]
    Stalled(Duration),
    #[error("request failed")]
    Request(#[source] reqwest::Error),
    #[error("connection dropped after {received} of {total} bytes")]
    Truncated { received: u64, total: u64 },
    #[error("the server's size of {url} changed or its ranges do not fit: {detail}")]
    BadRange { url: Url, detail: String },
    #[error("{url} is {server} bytes but {expected} bytes were expected (manifest)")]
    SizeMismatch {
        url: Url,
        server: u64,
        expected: u64,
    },
    #[error("giving up on {url} after {attempts} attempts")]
    GaveUp {
        url: Url,
        attempts: u32,
        #[source]
        last: Box<HttpError>,
    },
    #[error("the image writer stopped")]
    SinkClosed,
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => " (access denied: check the URL's credentials or the bucket's permissions)",
        404 | 410 => " (not found: check the image URL)",
        _ => "",
    }
}

impl HttpError {
    /// Whether trying again may help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            // A certificate the client does not trust will not become trusted
            // by retrying (reqwest reports it only as a connect error).
            Self::Request(e) => {
                !e.is_builder() && !e.is_redirect() && !chain(e).contains("certificate")
            }
            Self::Stalled(_) | Self::Truncated { .. } | Self::BadRange { .. } => true,
            Self::SizeMismatch { .. } | Self::GaveUp { .. } | Self::SinkClosed => false,
        }
    }
}

/// Knobs of a download.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// Retries and their backoff.
    pub retry: RetryPolicy,
    /// Longest wait for a connection, headers or the next body bytes.
    pub timeout: Duration,
}

/// An HTTP client for image downloads (rustls, no transparent decompression).
/// `extra_roots` are trusted in addition to the system's roots.
pub fn client(
    timeout: Duration,
    extra_roots: Vec<reqwest::Certificate>,
) -> Result<Client, HttpError> {
    install_tls_provider();
    Client::builder()
        .connect_timeout(timeout)
        .user_agent(concat!("dozlab/", env!("CARGO_PKG_VERSION")))
        .tls_certs_merge(extra_roots)
        .build()
        .map_err(HttpError::Request)
}

/// Makes rustls use the pure-Rust `ring` provider (reqwest is built with
/// `rustls-no-provider`, to keep the C-compiled aws-lc out of the build).
/// Idempotent: a provider already installed by someone else stays.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

enum Reply {
    Body(Response),
    Complete,
}

/// One download, possibly over several connections.
#[derive(Debug)]
pub struct Transfer {
    client: Client,
    url: Url,
    opts: HttpOptions,
    expected_len: Option<u64>,
    total: Option<u64>,
    received: u64,
    /// Furthest byte ever received: only going past it counts as progress.
    high_water: u64,
    validator: Option<HeaderValue>,
    must_reset: bool,
    retrier: Retrier,
    attempts: u32,
    /// Connections that continued where a dropped one stopped.
    pub resumes: u32,
    /// Times the download started over from byte 0.
    pub restarts: u32,
}

impl Transfer {
    /// A transfer of `url`; `expected_len` (from a manifest) is enforced.
    pub fn new(client: Client, url: Url, opts: HttpOptions, expected_len: Option<u64>) -> Self {
        Self {
            client,
            url,
            opts,
            expected_len,
            total: expected_len,
            received: 0,
            high_water: 0,
            validator: None,
            must_reset: false,
            retrier: Retrier::new(opts.retry),
            attempts: 0,
            resumes: 0,
            restarts: 0,
        }
    }

    /// The length of the download, once known.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Sends the first request, retrying transient failures, and returns the
    /// response (its headers tell the length before any byte is kept).
    pub async fn open(&mut self) -> Result<Response, HttpError> {
        loop {
            match self.request().await {
                Ok(Reply::Body(r)) => return Ok(r),
                Ok(Reply::Complete) => unreachable!("nothing received yet"),
                Err(e) => self.failed(e).await?,
            }
        }
    }

    /// Streams the body of `first`, then of as many resumed requests as
    /// needed, into `tx`.
    pub async fn run(
        &mut self,
        first: Response,
        tx: &Sender<Msg>,
        progress: &Progress,
    ) -> Result<(), HttpError> {
        let mut next = Some(first);
        loop {
            let reply = match next.take() {
                Some(r) => Ok(Reply::Body(r)),
                None => self.request().await,
            };
            let result = match reply {
                Ok(Reply::Complete) => return Ok(()),
                Ok(Reply::Body(r)) => self.stream(r, tx, progress).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) => self.failed(e).await?,
            }
        }
    }

    async fn failed(&mut self, e: HttpError) -> Result<(), HttpError> {
        self.attempts += 1;
        if !e.is_transient() {
            return Err(e);
        }
        let url = &self.url;
        let max = self.opts.retry.retries;
        let waited = self
            .retrier
            .backoff(|d, n| {
                tracing::warn!("{url}: {}; retry {n} of {max} in {d:.1?}", chain(&e));
            })
            .await;
        match waited {
            Some(_) => Ok(()),
            None => Err(HttpError::GaveUp {
                url: self.url.clone(),
                attempts: self.attempts,
                last: Box::new(e),
            }),
        }
    }

    async fn request(&mut self) -> Result<Reply, HttpError> {
        let mut req = self.client.get(self.url.clone());
        let resuming = self.received > 0 && !self.must_reset;
        if resuming {
            req = req.header(RANGE, format!("bytes={}-", self.received));
            if let Some(v) = &self.validator {
                req = req.header(IF_RANGE, v.clone());
            }
        }
        let resp = tokio::time::timeout(self.opts.timeout, req.send())
            .await
            .map_err(|_| HttpError::Stalled(self.opts.timeout))?
            .map_err(HttpError::Request)?;
        match resp.status().as_u16() {
            200 => {
                self.check_len(resp.content_length())?;
                if self.received > 0 || self.must_reset {
                    self.must_reset = true;
                }
                self.total = resp.content_length().or(self.expected_len);
                self.validator = validator(&resp);
                Ok(Reply::Body(resp))
            }
            206 if resuming => {
                self.check_range(&resp)?;
                self.resumes += 1;
                tracing::info!("{}: resuming at byte {}", self.url, self.received);
                Ok(Reply::Body(resp))
            }
            416 if resuming && self.total == Some(self.received) => Ok(Reply::Complete),
            206 | 416 => Err(self.start_over("unexpected partial answer")),
            status => Err(HttpError::Status {
                url: self.url.clone(),
                status,
            }),
        }
    }

    fn check_len(&self, len: Option<u64>) -> Result<(), HttpError> {
        match (len, self.expected_len) {
            (Some(server), Some(expected)) if server != expected => Err(HttpError::SizeMismatch {
                url: self.url.clone(),
                server,
                expected,
            }),
            _ => Ok(()),
        }
    }

    fn check_range(&mut self, resp: &Response) -> Result<(), HttpError> {
        let header = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let (start, total) = parse_content_range(header).unwrap_or((u64::MAX, None));
        let total_ok = match (total, self.total) {
            (Some(t), Some(known)) => t == known,
            _ => true,
        };
        if start != self.received || !total_ok {
            return Err(self.start_over(&format!(
                "asked from byte {}, got {header:?}",
                self.received
            )));
        }
        Ok(())
    }

    fn start_over(&mut self, detail: &str) -> HttpError {
        self.must_reset = true;
        self.validator = None;
        HttpError::BadRange {
            url: self.url.clone(),
            detail: detail.to_string(),
        }
    }

    async fn stream(
        &mut self,
        mut resp: Response,
        tx: &Sender<Msg>,
        progress: &Progress,
    ) -> Result<(), HttpError> {
        if self.must_reset {
            if self.received > 0 {
                tracing::warn!(
                    "{}: the server sent the whole file again; starting over",
                    self.url
                );
                self.restarts += 1;
            }
            tx.send(Msg::Reset)
                .await
                .map_err(|_| HttpError::SinkClosed)?;
            self.received = 0;
            self.must_reset = false;
            progress.set_position(0);
        }
        if let Some(t) = self.total {
            progress.set_total(t);
        }
        loop {
            let next = tokio::select! {
                r = tokio::time::timeout(self.opts.timeout, resp.chunk()) => r,
                // The writer stopped (e.g. the early image check refused it).
                () = tx.closed() => return Err(HttpError::SinkClosed),
            };
            let chunk = match next {
                Err(_) => return Err(HttpError::Stalled(self.opts.timeout)),
                Ok(Err(e)) => return Err(HttpError::Request(e)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            if chunk.is_empty() {
                continue;
            }
            self.received += chunk.len() as u64;
            progress.inc(chunk.len() as u64);
            if self.received > self.high_water {
                self.high_water = self.received;
                self.retrier.progressed();
            }
            tx.send(Msg::Data(chunk))
                .await
                .map_err(|_| HttpError::SinkClosed)?;
        }
        match self.total {
            Some(total) if self.received < total => Err(HttpError::Truncated {
                received: self.received,
                total,
            }),
            Some(total) if self.received > total => {
                Err(self.start_over("more bytes than announced"))
            }
            _ => Ok(()),
        }
    }
}

fn validator(resp: &Response) -> Option<HeaderValue> {
    let h = resp.headers();
    h.get(ETAG)
        .filter(|v| !v.as_bytes().starts_with(b"W/"))
        .or_else(|| h.get(LAST_MODIFIED))
        .cloned()
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

pub(crate) use dozlab_core::error_chain as chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range(""), None);
    }

    #[test]
    fn which_errors_are_transient() {
        let url: Url = "http://127.0.0.1/x".parse().unwrap();
        let st = |status| HttpError::Status {
            url: url.clone(),
            status,
        };
        assert!(st(500).is_transient());
        assert!(st(503).is_transient());
        assert!(st(429).is_transient());
        assert!(!st(404).is_transient());
        assert!(!st(403).is_transient());
        assert!(st(403).to_string().contains("access denied"));
        assert!(
            HttpError::Truncated {
                received: 1,
                total: 2
            }
            .is_transient()
        );
        assert!(!HttpError::SinkClosed.is_transient());
    }
}
