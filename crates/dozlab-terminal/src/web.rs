//! The HTTP side: router, pages, login, probes and the `/ws` upgrade.
//!
//! `GET /` shows the terminal page to a logged-in browser and the login page
//! to anyone else. `POST /login` checks the session password (rate-limited
//! per client) and sets an HttpOnly, SameSite=Strict cookie. `GET /ws`
//! checks the Origin (403) and the cookie (401) before upgrading. Every
//! response forbids framing; HSTS is added only when the page was served over
//! TLS (a trusted proxy says so, or `--secure-cookie always`).

use crate::auth::{self, Auth, Login};
use crate::bridge::{self, Frame, Opener, ReadError, Request};
use crate::protocol::State as LinkState;
use crate::proxy::TrustedProxies;
use crate::record::{Header, Recorder};
use crate::shell::{Registry, Shell, Slot};
use crate::ssh::SshTarget;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// When the session cookie gets the `Secure` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecureCookie {
    /// When the request came over TLS (`X-Forwarded-Proto: https`).
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Server settings (from the command line).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Extra origins allowed to open `/ws`.
    pub allowed_origins: Vec<String>,
    /// Cookie `Secure` policy.
    pub secure_cookie: SecureCookie,
    /// Proxies whose `X-Forwarded-For`/`-Proto` are believed.
    pub trusted_proxies: TrustedProxies,
    /// Largest WebSocket frame accepted from a client.
    pub max_frame: usize,
    /// Largest upload.
    pub max_upload: usize,
    /// Pause between attempts to reach the VM.
    pub retry: Duration,
    /// Where recordings go (None = no recording).
    pub record_dir: Option<PathBuf>,
    /// The lab session id (recording names, logs).
    pub session_id: String,
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct Inner {
    /// Settings.
    pub settings: Settings,
    /// Login and sessions.
    pub auth: Auth,
    /// Live shells.
    pub shells: Arc<Registry>,
    /// The VM.
    pub ssh: SshTarget,
    ready: crate::ready::Readiness,
}

/// Shared state of the router.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<Inner>);

impl AppState {
    /// State from its parts.
    pub fn new(settings: Settings, auth: Auth, shells: Registry, ssh: SshTarget) -> Self {
        Self(Arc::new(Inner {
            settings,
            auth,
            shells: Arc::new(shells),
            ssh,
            ready: Default::default(),
        }))
    }

    fn logged_in(&self, headers: &HeaderMap) -> Option<String> {
        let cookie = headers.get(header::COOKIE)?.to_str().ok()?;
        let token = auth::token_from_cookie_header(cookie)?;
        self.0.auth.valid(token).then(|| token.to_string())
    }

    fn origin_ok(&self, headers: &HeaderMap) -> bool {
        let get = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
        auth::origin_allowed(
            get(header::ORIGIN),
            get(header::HOST),
            &self.0.settings.allowed_origins,
        )
    }

    /// Refuses (403, then 401) unless the request may use the terminal.
    pub fn guard(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if !self.origin_ok(headers) {
            return Err(Refusal::Origin);
        }
        if self.logged_in(headers).is_none() {
            return Err(Refusal::NotLoggedIn);
        }
        Ok(())
    }

    fn recorder(&self, id: &str, cols: u16, rows: u16) -> Option<Recorder> {
        let dir = self.0.settings.record_dir.as_ref()?;
        let now = time::OffsetDateTime::now_utc();
        let stamp = now
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default();
        let session = &self.0.settings.session_id;
        let header = Header {
            version: 2,
            width: cols,
            height: rows,
            timestamp: Some(now.unix_timestamp()),
            title: Some(format!("dozlab session {session} shell {id}")),
        };
        match Recorder::create(dir, &format!("{session}-{stamp}-{id}"), &header) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!("cannot record shell {id}: {e}");
                None
            }
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The Origin is neither the page's own nor allowed: 403.
    Origin,
    /// No valid session cookie: 401.
    NotLoggedIn,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Origin => (StatusCode::FORBIDDEN, "origin not allowed\n").into_response(),
            Refusal::NotLoggedIn => {
                (StatusCode::UNAUTHORIZED, "log in first (POST /login)\n").into_response()
            }
        }
    }
}

impl Opener for AppState {
    async fn open(
        &self,
        slot: Slot,
        cols: u16,
        rows: u16,
    ) -> Result<Arc<Shell>, (LinkState, String)> {
        let session = self.0.ssh.connect().await.map_err(|e| {
            let state = if e.is_starting() {
                LinkState::VmStarting
            } else {
                LinkState::Error
            };
            tracing::debug!("VM not reachable: {e:#}");
            (state, crate::error_chain(&e))
        })?;
        self.0
            .shells
            .open(slot, session, cols, rows, |id| {
                self.recorder(id, cols, rows)
            })
            .await
            .map_err(|e| (LinkState::Error, crate::error_chain(&e)))
    }
}

/// The router; tests drive it directly.
pub fn app(state: AppState) -> Router {
    app_with_lab(state, None)
}

/// The router with the lab panel's routes when a lab is served.
pub fn app_with_lab(state: AppState, lab: Option<Arc<crate::lab::LabPanel>>) -> Router {
    let router = match lab {
        Some(lab) => Router::new().merge(crate::lab::routes(lab)),
        None => Router::new(),
    };
    router
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/ws", get(ws))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/assets/{name}", get(asset))
        .merge(crate::files::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .with_state(state)
}

/// HSTS for a year, once the page is known to be served over TLS.
const HSTS: &str = "max-age=31536000";

async fn security_headers(
    State(st): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>();
    let tls = match st.0.settings.secure_cookie {
        SecureCookie::Always => true,
        _ => peer.is_some_and(|ConnectInfo(p)| {
            st.0.settings
                .trusted_proxies
                .forwarded_https(p.ip(), req.headers())
        }),
    };
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if tls {
        h.insert("strict-transport-security", HeaderValue::from_static(HSTS));
    }
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    res
}

async fn index(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if st.logged_in(&headers).is_some() {
        html(crate::assets::INDEX_HTML.to_string())
    } else {
        html(crate::assets::login_page(None))
    }
}

fn html(body: String) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::response::Html(body),
    )
        .into_response()
}

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match crate::assets::get(&name) {
        Some((mime, bytes)) => (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    password: String,
}

fn client_ip(st: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    st.0.settings.trusted_proxies.client_ip(peer.ip(), headers)
}

fn secure(st: &AppState, headers: &HeaderMap) -> bool {
    match st.0.settings.secure_cookie {
        SecureCookie::Always => true,
        SecureCookie::Never => false,
        SecureCookie::Auto => headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https")),
    }
}

async fn login(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !st.origin_ok(&headers) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let ip = client_ip(&st, peer, &headers);
    match st.0.auth.login(ip, &form.password) {
        Login::Ok(token) => {
            tracing::info!(client = %ip, "login");
            let cookie = auth::set_cookie(&token, secure(&st, &headers));
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Login::Wrong => {
            tracing::warn!(client = %ip, "wrong password");
            let page = crate::assets::login_page(Some("Wrong password."));
            (StatusCode::UNAUTHORIZED, axum::response::Html(page)).into_response()
        }
        Login::Limited(wait) => {
            tracing::warn!(client = %ip, "login limited: client must wait");
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let msg = format!("Too many wrong passwords. Try again in {secs} s.");
            let page = crate::assets::login_page(Some(&msg));
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                axum::response::Html(page),
            )
                .into_response()
        }
    }
}

async fn logout(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !st.origin_ok(&headers) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    if let Some(token) = st.logged_in(&headers) {
        st.0.auth.logout(&token);
    }
    (
        [(header::SET_COOKIE, auth::clear_cookie())],
        Redirect::to("/"),
    )
        .into_response()
}

async fn ready(State(st): State<AppState>) -> Response {
    match st.0.ready.check(&st.0.ssh).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// Query string of `/ws`.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// Re-attach to this shell.
    pub shell: Option<String>,
    /// Bytes of its output already received.
    pub offset: Option<u64>,
    /// Columns of a new shell.
    pub cols: Option<u16>,
    /// Rows of a new shell.
    pub rows: Option<u16>,
}

impl WsQuery {
    fn request(self) -> Request {
        match self.shell {
            Some(shell) => Request::Attach {
                shell,
                offset: self.offset.unwrap_or(0),
            },
            None => Request::New {
                cols: self.cols.filter(|c| *c > 0).unwrap_or(80),
                rows: self.rows.filter(|r| *r > 0).unwrap_or(24),
            },
        }
    }
}

async fn ws(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(refusal) = st.guard(&headers) {
        return refusal.into_response();
    }
    let Some(logout) = st
        .logged_in(&headers)
        .and_then(|token| st.0.auth.ended_signal(&token))
    else {
        return Refusal::NotLoggedIn.into_response();
    };
    let max = st.0.settings.max_frame;
    let lib_limit = max.saturating_mul(4).max(64 * 1024);
    upgrade
        .max_message_size(lib_limit)
        .max_frame_size(lib_limit)
        .on_upgrade(move |socket| serve_socket(st, socket, q.request(), logout))
}

async fn serve_socket(
    st: AppState,
    socket: WebSocket,
    req: Request,
    logout: tokio_util::sync::CancellationToken,
) {
    let (sink, stream) = socket.split();
    let sink = sink.with(|f: Frame| futures::future::ready(Ok::<_, axum::Error>(to_message(f))));
    let stream = stream.map(|m| m.map(from_message).map_err(read_error));
    let cfg = bridge::Settings {
        max_frame: st.0.settings.max_frame,
        retry: st.0.settings.retry,
    };
    let registry = st.0.shells.clone();
    let (sink, stream) = (Box::pin(sink), Box::pin(stream));
    bridge::run(sink, stream, registry, &st, req, cfg, logout).await;
}

fn to_message(f: Frame) -> Message {
    match f {
        Frame::Binary(b) => Message::Binary(b),
        Frame::Text(t) => Message::Text(t.into()),
        Frame::Close(code, reason) => Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })),
        Frame::Other => Message::Ping(Default::default()),
    }
}

fn from_message(m: Message) -> Frame {
    match m {
        Message::Binary(b) => Frame::Binary(b),
        Message::Text(t) => Frame::Text(t.to_string()),
        Message::Close(c) => c.map_or(Frame::Close(1005, String::new()), |c| {
            Frame::Close(c.code, c.reason.to_string())
        }),
        Message::Ping(_) | Message::Pong(_) => Frame::Other,
    }
}

fn read_error(e: axum::Error) -> ReadError {
    let text = format!("{e:#}");
    ReadError {
        too_big: text.contains("too long") || text.contains("Space limit"),
    }
}
