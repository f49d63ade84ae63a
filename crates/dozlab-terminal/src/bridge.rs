//! The WebSocket ↔ shell bridge, generic over any `Sink`/`Stream` of frames.
//!
//! The bridge speaks the wire protocol of [`crate::protocol`]: it opens a new
//! shell (retrying while the VM is starting, reporting progress as status
//! messages) or re-attaches to an existing one, then pumps output from the
//! shell's buffer by offset and input from the socket into the shell.
//!
//! The socket is closed with 4000 when another socket attaches to its shell
//! and with 4001 when its login session ends (logout).

use crate::protocol::{ClientMsg, ServerMsg, State, close};
use crate::shell::{Input, Registry, Shell, Slot};
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A WebSocket frame, independent of the WebSocket library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Raw terminal bytes.
    Binary(Bytes),
    /// One JSON control message.
    Text(String),
    /// Close with code and reason.
    Close(u16, String),
    /// Ping/pong and anything else the bridge ignores.
    Other,
}

/// A read error from the socket; `too_big` when the library's size limit hit.
#[derive(Debug)]
pub struct ReadError {
    /// The frame exceeded the library's own limit.
    pub too_big: bool,
}

/// What the socket asked for (from the `/ws` query string).
#[derive(Debug, Clone)]
pub enum Request {
    /// A new shell of this size.
    New {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// Re-attach to a shell, having seen its output up to `offset`.
    Attach {
        /// Shell id.
        shell: String,
        /// Bytes already received.
        offset: u64,
    },
}

/// Opens the SSH connection and shell for a new tab.
pub trait Opener: Send + Sync {
    /// Tries once to open a shell in `slot`; Err carries (state, message) for
    /// the status line (the slot is given back).
    fn open(
        &self,
        slot: Slot,
        cols: u16,
        rows: u16,
    ) -> impl Future<Output = Result<Arc<Shell>, (State, String)>> + Send;
}

/// Settings of one bridge.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Largest frame accepted from the client.
    pub max_frame: usize,
    /// Pause between attempts to reach the VM.
    pub retry: Duration,
}

const CHUNK: usize = 64 * 1024;

/// Runs one socket until it closes, its shell ends or `logout` is cancelled.
pub async fn run<Si, St, O>(
    mut sink: Si,
    mut stream: St,
    registry: Arc<Registry>,
    opener: &O,
    req: Request,
    cfg: Settings,
    logout: CancellationToken,
) where
    Si: Sink<Frame> + Unpin,
    St: Stream<Item = Result<Frame, ReadError>> + Unpin,
    O: Opener,
{
    let shell_and_offset = match req {
        Request::New { cols, rows } => {
            let opening = open_new(&mut sink, &mut stream, &registry, opener, cols, rows, cfg);
            tokio::select! {
                r = opening => r,
                _ = logout.cancelled() => None,
            }
        }
        Request::Attach { shell, offset } => match registry.get(&shell) {
            Some(s) => Some((s, offset)),
            None => {
                let id = crate::logsafe::Clean(&shell);
                tracing::info!(shell = %id, "re-attach refused: no such shell");
                refuse(
                    &mut sink,
                    close::NO_SUCH_SHELL,
                    "no such shell (it ended or the grace period is over)",
                )
                .await;
                None
            }
        },
    };
    if let Some((shell, offset)) = shell_and_offset {
        pump(&mut sink, &mut stream, &shell, offset, cfg, &logout).await;
    }
    if logout.is_cancelled() {
        let _ = sink
            .send(Frame::Close(close::LOGGED_OUT, "logged out".into()))
            .await;
    }
    let _ = sink.close().await;
}

async fn send_msg<Si: Sink<Frame> + Unpin>(sink: &mut Si, msg: &ServerMsg) -> bool {
    sink.send(Frame::Text(msg.to_json())).await.is_ok()
}

async fn refuse<Si: Sink<Frame> + Unpin>(sink: &mut Si, code: u16, message: &str) {
    let _ = send_msg(
        sink,
        &ServerMsg::Error {
            message: message.into(),
        },
    )
    .await;
    let _ = sink
        .send(Frame::Close(code, message.chars().take(100).collect()))
        .await;
}

/// Retries opening a shell until it works or the socket goes away.
async fn open_new<Si, St, O>(
    sink: &mut Si,
    stream: &mut St,
    registry: &Arc<Registry>,
    opener: &O,
    mut cols: u16,
    mut rows: u16,
    cfg: Settings,
) -> Option<(Arc<Shell>, u64)>
where
    Si: Sink<Frame> + Unpin,
    St: Stream<Item = Result<Frame, ReadError>> + Unpin,
    O: Opener,
{
    loop {
        let slot = match registry.reserve() {
            Ok(slot) => slot,
            Err(e) => {
                refuse(sink, close::TRY_AGAIN_LATER, &e.to_string()).await;
                return None;
            }
        };
        let status = ServerMsg::Status {
            state: State::Connecting,
            message: "connecting to the VM".into(),
        };
        if !send_msg(sink, &status).await {
            return None;
        }
        let (state, message) = match opener.open(slot, cols, rows).await {
            Ok(shell) => return Some((shell, 0)),
            Err(e) => e,
        };
        if !send_msg(sink, &ServerMsg::Status { state, message }).await {
            return None;
        }
        // Wait before retrying, but keep reading: the client may resize or leave.
        let wait = tokio::time::sleep(cfg.retry);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                frame = stream.next() => match frame {
                    Some(Ok(Frame::Text(t))) => {
                        if let Ok(ClientMsg::Resize { cols: c, rows: r }) = serde_json::from_str(&t) {
                            (cols, rows) = (c, r);
                        }
                    }
                    Some(Ok(Frame::Close(..))) | Some(Err(_)) | None => return None,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
}

/// Attached: shell output → socket, socket input → shell.
async fn pump<Si, St>(
    sink: &mut Si,
    stream: &mut St,
    shell: &Shell,
    offset: u64,
    cfg: Settings,
    logout: &CancellationToken,
) where
    Si: Sink<Frame> + Unpin,
    St: Stream<Item = Result<Frame, ReadError>> + Unpin,
{
    let mut progress = shell.progress();
    let mut consumer = shell.consumer();
    let (generation, mut offset_now) = shell.attach(offset);
    let attached = ServerMsg::Attached {
        shell: shell.id.clone(),
        offset: offset_now,
        skipped: offset_now.saturating_sub(offset),
    };
    let connected = ServerMsg::Status {
        state: State::Connected,
        message: "connected".into(),
    };
    if send_msg(sink, &attached).await && send_msg(sink, &connected).await {
        loop {
            // Input first, so Ctrl-C gets through even while output streams.
            let step = tokio::select! {
                biased;
                frame = stream.next() => on_frame(sink, shell, frame, cfg).await,
                _ = logout.cancelled() => Step::Leave,
                r = consumer.changed() => match taken_over(r.is_ok(), &consumer, generation) {
                    Step::Leave if r.is_ok() => {
                        let reason = "taken over in another tab".into();
                        let _ = sink.send(Frame::Close(close::TAKEN_OVER, reason)).await;
                        Step::Leave
                    }
                    step => step,
                },
                out = next_output(shell, &mut progress, offset_now) => match out {
                    Output::Data(chunk) => {
                        offset_now += chunk.len() as u64;
                        if sink.send(Frame::Binary(chunk.into())).await.is_err() {
                            Step::Leave
                        } else {
                            shell.consumed(generation, offset_now);
                            Step::Go
                        }
                    }
                    Output::Ended(exit) => {
                        let _ = send_msg(sink, &exit).await;
                        let _ = sink.send(Frame::Close(close::NORMAL, "shell ended".into())).await;
                        Step::Leave
                    }
                },
            };
            if let Step::Leave = step {
                break;
            }
        }
    }
    shell.detach(generation);
}

enum Output {
    Data(Vec<u8>),
    Ended(ServerMsg),
}

/// Waits for output after `offset`, or for the end once everything was sent.
/// Cancel-safe: nothing is consumed until the caller advances its offset.
async fn next_output(
    shell: &Shell,
    progress: &mut tokio::sync::watch::Receiver<crate::shell::Progress>,
    offset: u64,
) -> Output {
    loop {
        let ended = progress.borrow_and_update().ended.clone();
        let (from, chunk) = shell.read(offset, CHUNK);
        debug_assert_eq!(from, offset);
        if !chunk.is_empty() {
            return Output::Data(chunk);
        }
        if let Some(e) = ended {
            return Output::Ended(ServerMsg::Exit {
                code: e.code,
                reason: e.reason,
            });
        }
        if progress.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

enum Step {
    Go,
    Leave,
}

fn taken_over(
    ok: bool,
    consumer: &tokio::sync::watch::Receiver<crate::shell::Consumer>,
    generation: u64,
) -> Step {
    if ok && consumer.borrow().generation == generation {
        Step::Go
    } else {
        Step::Leave
    }
}

/// Handles one frame from the client.
async fn on_frame<Si: Sink<Frame> + Unpin>(
    sink: &mut Si,
    shell: &Shell,
    frame: Option<Result<Frame, ReadError>>,
    cfg: Settings,
) -> Step {
    match frame {
        Some(Ok(Frame::Binary(b))) if b.len() > cfg.max_frame => too_big(sink).await,
        Some(Ok(Frame::Text(t))) if t.len() > cfg.max_frame => too_big(sink).await,
        Some(Ok(Frame::Binary(b))) => {
            shell.send(Input::Data(b)).await;
            Step::Go
        }
        Some(Ok(Frame::Text(t))) => match serde_json::from_str::<ClientMsg>(&t) {
            Ok(ClientMsg::Resize { cols, rows }) if cols > 0 && rows > 0 => {
                shell.send(Input::Resize(cols, rows)).await;
                Step::Go
            }
            Ok(ClientMsg::Close) => {
                shell.send(Input::Close).await;
                Step::Go
            }
            Ok(ClientMsg::Ping) => {
                let _ = send_msg(sink, &ServerMsg::Pong).await;
                Step::Go
            }
            Ok(ClientMsg::Resize { .. }) | Err(_) => {
                refuse(sink, close::POLICY, "malformed control message").await;
                Step::Leave
            }
        },
        Some(Ok(Frame::Other)) => Step::Go,
        Some(Err(ReadError { too_big: true })) => too_big(sink).await,
        Some(Ok(Frame::Close(..))) | Some(Err(_)) | None => Step::Leave,
    }
}

async fn too_big<Si: Sink<Frame> + Unpin>(sink: &mut Si) -> Step {
    let _ = sink
        .send(Frame::Close(close::TOO_BIG, "frame too large".into()))
        .await;
    Step::Leave
}
