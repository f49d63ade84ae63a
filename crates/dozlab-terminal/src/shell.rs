//! Shells in the VM that outlive WebSocket connections.
//!
//! Each shell has its own SSH connection (so a slow browser tab never stalls
//! another tab) and three tasks: the reader appends the channel's output to
//! the shell's [`OutputBuffer`]; the writer forwards keyboard input and
//! resizes; the supervisor closes the shell when it was idle or detached for
//! too long. At most one socket is attached at a time; it pulls output by
//! offset, so a re-attach replays exactly what was missed. While a socket is
//! attached the reader waits for it when it is a whole buffer behind, so an
//! attached client never loses output.
//!
//! A shell's place under `--max-shells` is a [`Slot`], reserved atomically
//! before its SSH connection is opened and given back only when the shell has
//! left the registry; the supervisor never waits on the channel while the
//! shell has ended, so an ended shell always leaves and frees its slot.

use crate::buffer::OutputBuffer;
use crate::record::Recorder;
use crate::ssh::Session;
use bytes::Bytes;
use rand::RngCore as _;
use russh::ChannelMsg;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Errors of the shell registry.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// `--max-shells` reached.
    #[error("too many shells open (limit {0}); close a tab or try again later")]
    TooMany(usize),
    /// Opening the channel, PTY or shell failed.
    #[error("cannot start a shell in the VM")]
    Open(#[source] russh::Error),
}

/// Lifetime limits of shells.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Output bytes kept per shell for re-attach.
    pub scrollback: usize,
    /// How long a detached shell waits for its client to come back.
    pub grace: Duration,
    /// Close a shell without input for this long (None = never).
    pub idle: Option<Duration>,
    /// Maximum live shells.
    pub max_shells: usize,
}

/// Something the writer task sends to the channel.
#[derive(Debug)]
pub enum Input {
    /// Keyboard bytes.
    Data(Bytes),
    /// New terminal size.
    Resize(u16, u16),
    /// End the shell.
    Close,
}

/// How a shell ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Exit status, if the shell reported one.
    pub code: Option<u32>,
    /// Why it ended.
    pub reason: String,
}

/// Progress visible to attached sockets: output end offset and exit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Offset one past the newest output byte.
    pub end: u64,
    /// Set once the shell has ended.
    pub ended: Option<Ended>,
}

/// Who is attached: a generation number and the offset it has consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consumer {
    /// Bumped on every attach; a socket whose generation is stale must leave.
    pub generation: u64,
    /// Offset consumed by the attached socket; None when detached.
    pub offset: Option<u64>,
}

/// One live shell.
#[derive(Debug)]
pub struct Shell {
    /// Random id used in `/ws?shell=ID`.
    pub id: String,
    buffer: Mutex<OutputBuffer>,
    progress: watch::Sender<Progress>,
    consumer: watch::Sender<Consumer>,
    input: mpsc::Sender<Input>,
    recorder: Option<Mutex<Recorder>>,
}

impl Shell {
    /// Subscribes to output progress.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Subscribes to attach changes.
    pub fn consumer(&self) -> watch::Receiver<Consumer> {
        self.consumer.subscribe()
    }

    /// Up to `max` output bytes from `offset`, and the clamped offset they start at.
    pub fn read(&self, offset: u64, max: usize) -> (u64, Vec<u8>) {
        let b = self.buffer.lock().expect("lock");
        let from = b.clamp(offset);
        (from, b.read_from(from, max))
    }

    /// Attaches a socket that has seen output up to `offset`: returns its
    /// generation and the offset it will actually get output from.
    pub fn attach(&self, offset: u64) -> (u64, u64) {
        let from = self.buffer.lock().expect("lock").clamp(offset);
        let mut generation = 0;
        self.consumer.send_modify(|c| {
            c.generation += 1;
            c.offset = Some(from);
            generation = c.generation;
        });
        (generation, from)
    }

    /// Records that the socket of `generation` consumed output up to `offset`.
    pub fn consumed(&self, generation: u64, offset: u64) {
        self.consumer.send_if_modified(|c| {
            let mine = c.generation == generation;
            if mine {
                c.offset = Some(offset);
            }
            mine
        });
    }

    /// Detaches the socket of `generation` (no-op if another one took over).
    pub fn detach(&self, generation: u64) {
        self.consumer.send_if_modified(|c| {
            let mine = c.generation == generation && c.offset.is_some();
            if mine {
                c.offset = None;
            }
            mine
        });
    }

    /// Sends keyboard input (and records it).
    pub async fn send(&self, input: Input) {
        if let (Some(rec), Input::Data(d)) = (&self.recorder, &input) {
            let _ = rec.lock().expect("lock").input(d);
        }
        if let (Some(rec), Input::Resize(c, r)) = (&self.recorder, &input) {
            let _ = rec.lock().expect("lock").resize(*c, *r);
        }
        let _ = self.input.send(input).await;
    }

    fn push(&self, data: &[u8]) {
        if let Some(rec) = &self.recorder
            && let Err(e) = rec.lock().expect("lock").output(data)
        {
            tracing::warn!(shell = %self.id, "recording failed: {e}");
        }
        let end = {
            let mut b = self.buffer.lock().expect("lock");
            b.push(data);
            b.end()
        };
        self.progress.send_modify(|p| p.end = end);
    }

    fn end(&self, ended: Ended) {
        self.progress.send_modify(|p| {
            if p.ended.is_none() {
                p.ended = Some(ended);
            }
        });
    }
}

/// All live shells, by id.
#[derive(Debug)]
pub struct Registry {
    shells: Mutex<HashMap<String, Arc<Shell>>>,
    slots: AtomicUsize,
    limits: Limits,
}

/// One of the `--max-shells` places, held from before a shell's SSH
/// connection is opened until the shell has left the registry.
#[derive(Debug)]
pub struct Slot(Arc<Registry>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long closing a channel or a connection may take before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Registry {
    /// An empty registry.
    pub fn new(limits: Limits) -> Self {
        Self {
            shells: Mutex::default(),
            slots: AtomicUsize::new(0),
            limits,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The shell with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Shell>> {
        self.shells.lock().expect("lock").get(id).cloned()
    }

    /// Number of live shells.
    pub fn len(&self) -> usize {
        self.shells.lock().expect("lock").len()
    }

    /// True when no shell is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots taken: live shells and shells being opened.
    pub fn slots_taken(&self) -> usize {
        self.slots.load(Ordering::SeqCst)
    }

    /// Reserves a slot for a new shell, or fails when all are taken.
    pub fn reserve(self: &Arc<Self>) -> Result<Slot, ShellError> {
        let max = self.limits.max_shells;
        self.slots
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| ShellError::TooMany(max))?;
        Ok(Slot(self.clone()))
    }

    /// Opens a shell in `slot` on `session` with a PTY of `cols`x`rows` and registers it.
    pub async fn open(
        self: &Arc<Self>,
        slot: Slot,
        session: Session,
        cols: u16,
        rows: u16,
        recorder: impl FnOnce(&str) -> Option<Recorder>,
    ) -> Result<Arc<Shell>, ShellError> {
        let channel = session
            .channel_open_session()
            .await
            .map_err(ShellError::Open)?;
        channel
            .request_pty(false, "xterm-256color", cols.into(), rows.into(), 0, 0, &[])
            .await
            .map_err(ShellError::Open)?;
        channel
            .request_shell(false)
            .await
            .map_err(ShellError::Open)?;
        let (input_tx, input_rx) = mpsc::channel(64);
        let id = new_id();
        let recorder = recorder(&id);
        let shell = Arc::new(Shell {
            id,
            buffer: Mutex::new(OutputBuffer::new(self.limits.scrollback)),
            progress: watch::Sender::new(Progress::default()),
            consumer: watch::Sender::new(Consumer::default()),
            input: input_tx,
            recorder: recorder.map(Mutex::new),
        });
        self.shells
            .lock()
            .expect("lock")
            .insert(shell.id.clone(), shell.clone());
        let (read_half, write_half) = channel.split();
        tokio::spawn(read_loop(shell.clone(), read_half));
        tokio::spawn(write_loop(
            slot,
            shell.clone(),
            write_half,
            input_rx,
            session,
        ));
        tracing::info!(shell = %shell.id, cols, rows, "shell opened");
        Ok(shell)
    }

    fn remove(&self, id: &str) {
        self.shells.lock().expect("lock").remove(id);
    }

    /// Ends every shell (at shutdown).
    pub fn close_all(&self) {
        let shells: Vec<_> = self
            .shells
            .lock()
            .expect("lock")
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in shells {
            s.end(Ended {
                code: None,
                reason: "server shutting down".into(),
            });
        }
    }
}

fn new_id() -> String {
    let mut raw = [0u8; 8];
    rand::rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

/// Channel output → buffer. Before a chunk would push bytes an attached
/// socket has not read out of the buffer, waits for that socket.
/// Stops once the shell has ended (closed by the supervisor).
async fn read_loop(shell: Arc<Shell>, mut read: russh::ChannelReadHalf) {
    let cap = shell.buffer.lock().expect("lock").cap() as u64;
    let mut consumer = shell.consumer();
    let mut progress = shell.progress();
    let mut code = None;
    loop {
        let msg = tokio::select! {
            m = read.wait() => m,
            _ = ended(&mut progress) => return,
        };
        match msg {
            Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                let end_after = shell.progress.borrow().end + data.len() as u64;
                tokio::select! {
                    _ = wait_for_consumer(&mut consumer, end_after, cap) => shell.push(&data),
                    _ = ended(&mut progress) => return,
                }
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => code = Some(exit_status),
            Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    shell.end(Ended {
        code,
        reason: "exited".into(),
    });
}

/// Completes once the shell has ended.
async fn ended(progress: &mut watch::Receiver<Progress>) {
    loop {
        if progress.borrow_and_update().ended.is_some() || progress.changed().await.is_err() {
            return;
        }
    }
}

async fn wait_for_consumer(consumer: &mut watch::Receiver<Consumer>, end: u64, cap: u64) {
    loop {
        let c = *consumer.borrow_and_update();
        match c.offset {
            Some(o) if end.saturating_sub(o) > cap => {
                if consumer.changed().await.is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

type Write<'a> = Pin<Box<dyn Future<Output = Result<(), russh::Error>> + Send + 'a>>;

/// Input → channel; closes the shell on idle/grace timeouts or when it ended.
/// A write waiting for the channel's window is one branch among the others,
/// so the end of the shell or a timeout is never stuck behind it.
async fn write_loop(
    slot: Slot,
    shell: Arc<Shell>,
    write: russh::ChannelWriteHalf<russh::client::Msg>,
    mut input: mpsc::Receiver<Input>,
    session: Session,
) {
    let registry = slot.0.clone();
    let limits = registry.limits();
    let mut progress = shell.progress();
    let mut consumer = shell.consumer();
    let mut last_input = Instant::now();
    let mut detached_at = Some(Instant::now());
    let far = Duration::from_secs(86400 * 365);
    let mut writing: Option<Write<'_>> = None;
    let reason = loop {
        let idle_at = last_input + limits.idle.unwrap_or(far);
        let grace_at = detached_at.map_or(Instant::now() + far, |t| t + limits.grace);
        tokio::select! {
            r = async { writing.as_mut().expect("guarded").await }, if writing.is_some() => {
                writing = None;
                if r.is_err() { break None; }
            }
            msg = input.recv(), if writing.is_none() => match msg {
                Some(Input::Data(d)) => {
                    last_input = Instant::now();
                    writing = Some(Box::pin(write.data_bytes(d)));
                }
                Some(Input::Resize(c, r)) => {
                    writing = Some(Box::pin(write.window_change(c.into(), r.into(), 0, 0)));
                }
                Some(Input::Close) => break Some("closed by the user"),
                None => break None,
            },
            r = consumer.changed() => {
                if r.is_err() { break None; }
                let attached = consumer.borrow_and_update().offset.is_some();
                detached_at = match (attached, detached_at) {
                    (true, _) => None,
                    (false, Some(t)) => Some(t),
                    (false, None) => Some(Instant::now()),
                };
            }
            r = progress.changed() => {
                if r.is_err() || progress.borrow_and_update().ended.is_some() { break None; }
            }
            _ = tokio::time::sleep_until(idle_at) => break Some("idle timeout"),
            _ = tokio::time::sleep_until(grace_at) => break Some("grace period over"),
        }
    };
    if let Some(reason) = reason {
        tracing::info!(shell = %shell.id, reason, "closing shell");
        shell.end(Ended {
            code: None,
            reason: reason.into(),
        });
    }
    if reason.is_none() {
        // The channel failed or ended: let the reader report how, briefly.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ended(&mut progress)).await;
    }
    // Ended for the readers too (a no-op when it already was).
    shell.end(Ended {
        code: None,
        reason: "connection to the VM lost".into(),
    });
    drop(writing);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, write.close()).await;
    let bye = session.disconnect(russh::Disconnect::ByApplication, "shell closed", "en");
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, bye).await;
    drop(session);
    linger_until_delivered(&shell, limits.grace).await;
    registry.remove(&shell.id);
    drop(slot);
    tracing::info!(shell = %shell.id, "shell closed");
}

/// After the end, keeps the shell re-attachable until its socket has read
/// everything, or for the grace period when no socket is attached.
async fn linger_until_delivered(shell: &Shell, grace: Duration) {
    let mut consumer = shell.consumer();
    let deadline = Instant::now() + grace;
    loop {
        let c = *consumer.borrow_and_update();
        let end = shell.progress.borrow().end;
        if c.offset == Some(end) {
            return;
        }
        tokio::select! {
            r = consumer.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}
