//! The guest's serial console: copied raw to `--console-log`, printed line by
//! line with a `[vm] ` prefix to stdout, and the last lines kept for error
//! messages when the VM dies.
//!
//! The pump also notices the kernel's first words (`Linux version`), which
//! the KVM probe uses to tell a working boot from a guest that resets early.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

/// How many lines the tail keeps.
pub const TAIL_LINES: usize = 40;

/// The last lines of the console (shared between pump and supervisor).
#[derive(Debug, Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    /// Adds a line, dropping the oldest beyond [`TAIL_LINES`].
    pub fn push(&self, line: String) {
        let mut q = self.0.lock().expect("tail lock");
        if q.len() == TAIL_LINES {
            q.pop_front();
        }
        q.push_back(line);
    }

    /// The last `n` lines, oldest first, joined with newlines.
    pub fn last(&self, n: usize) -> String {
        let q = self.0.lock().expect("tail lock");
        let skip = q.len().saturating_sub(n);
        q.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
    }

    /// Whether any kept line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.0
            .lock()
            .expect("tail lock")
            .iter()
            .any(|l| l.contains(needle))
    }
}

/// Where pumped lines go.
#[derive(Debug)]
pub struct Sink {
    /// Printed before each stdout line, e.g. `[vm] `.
    pub prefix: String,
    /// Raw copy of everything (the console log), if any.
    pub log: Option<std::fs::File>,
    /// Kept lines.
    pub tail: Tail,
    /// Set to true once the kernel has printed its banner.
    pub kernel_started: Option<watch::Sender<bool>>,
}

/// Copies `reader` to the sink until EOF.
pub async fn pump(reader: impl AsyncRead + Unpin, mut sink: Sink) {
    let mut r = BufReader::new(reader);
    let mut buf = Vec::with_capacity(512);
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => sink.line(&buf),
        }
    }
}

impl Sink {
    fn line(&mut self, raw: &[u8]) {
        if let Some(log) = &mut self.log {
            let _ = log.write_all(raw);
        }
        let text = String::from_utf8_lossy(raw);
        let text = strip_controls(text.trim_end_matches(['\n', '\r']));
        if let Some(tx) = &self.kernel_started
            && text.contains("Linux version")
        {
            let _ = tx.send(true);
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}{}", self.prefix, text);
        self.tail.push(text);
    }
}

/// Drops terminal escape sequences and control characters (the guest's
/// getty and systemd colour their output).
fn strip_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_tail_logs_raw_and_spots_the_kernel() {
        let t = tempfile::tempdir().unwrap();
        let log_path = t.path().join("console.log");
        let (tx, rx) = watch::channel(false);
        let tail = Tail::default();
        let mut input = String::from("\u{1b}[0;32m  OK  \u{1b}[0m] Started\r\n");
        input.push_str("[    0.000000] Linux version 6.1.0\n");
        for i in 0..50 {
            input.push_str(&format!("line {i}\n"));
        }
        input.push_str("no newline at the end");
        let sink = Sink {
            prefix: "[vm] ".into(),
            log: Some(std::fs::File::create(&log_path).unwrap()),
            tail: tail.clone(),
            kernel_started: Some(tx),
        };
        pump(input.as_bytes(), sink).await;
        assert!(*rx.borrow());
        assert_eq!(std::fs::read_to_string(&log_path).unwrap(), input);
        assert_eq!(tail.last(2), "line 49\nno newline at the end");
        assert!(!tail.contains("line 5\n") && !tail.contains("Linux version"));
        assert_eq!(
            strip_controls("\u{1b}[0;32m  OK  \u{1b}[0m] x"),
            "  OK  ] x"
        );
    }
}
