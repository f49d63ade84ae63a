//! Asciicast v2 recording of a shell, and its replay.
//!
//! A recording is one JSON header line followed by one JSON array per event:
//! `[seconds, "o", text]` for output, `[seconds, "i", text]` for input and
//! `[seconds, "r", "COLSxROWS"]` for resizes. Byte streams are cut into events
//! at arbitrary places, so an incomplete UTF-8 sequence at the end of a chunk
//! is held back until the next chunk completes it.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors of recording and replay.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// File system failure.
    #[error("cannot write recording {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file that is not asciicast v2.
    #[error("{path}:{line}: not an asciicast v2 file: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The header line of an asciicast v2 file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// Always 2.
    pub version: u32,
    /// Terminal columns at the start.
    pub width: u16,
    /// Terminal rows at the start.
    pub height: u16,
    /// Unix time of the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// A title (session and shell id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Splits a byte stream into valid UTF-8 strings, holding back a partial tail.
#[derive(Debug, Default)]
struct Utf8Stream {
    tail: Vec<u8>,
}

impl Utf8Stream {
    fn feed(&mut self, bytes: &[u8]) -> String {
        self.tail.extend_from_slice(bytes);
        let keep = incomplete_tail_len(&self.tail);
        let rest = self.tail.split_off(self.tail.len() - keep);
        let text = String::from_utf8_lossy(&self.tail).into_owned();
        self.tail = rest;
        text
    }
}

/// Length of an incomplete (but so far valid) UTF-8 sequence at the end.
fn incomplete_tail_len(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let byte = b[b.len() - back];
        if byte & 0xC0 != 0x80 {
            let need = match byte {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if need > back { back } else { 0 };
        }
    }
    0
}

/// Writes one shell's recording.
#[derive(Debug)]
pub struct Recorder {
    file: File,
    path: PathBuf,
    start: Instant,
    out: Utf8Stream,
    inp: Utf8Stream,
}

impl Recorder {
    /// Creates `dir/NAME.cast` and writes the header.
    pub fn create(dir: &Path, name: &str, header: &Header) -> Result<Self, RecordError> {
        let path = dir.join(format!("{name}.cast"));
        let io = |source| RecordError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        let line = serde_json::to_string(header).expect("header serializes");
        writeln!(file, "{line}").map_err(io)?;
        Ok(Self {
            file,
            path,
            start: Instant::now(),
            out: Utf8Stream::default(),
            inp: Utf8Stream::default(),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records shell output.
    pub fn output(&mut self, bytes: &[u8]) -> Result<(), RecordError> {
        let text = self.out.feed(bytes);
        self.event("o", &text)
    }

    /// Records keyboard input.
    pub fn input(&mut self, bytes: &[u8]) -> Result<(), RecordError> {
        let text = self.inp.feed(bytes);
        self.event("i", &text)
    }

    /// Records a resize.
    pub fn resize(&mut self, cols: u16, rows: u16) -> Result<(), RecordError> {
        self.event("r", &format!("{cols}x{rows}"))
    }

    fn event(&mut self, kind: &str, text: &str) -> Result<(), RecordError> {
        if text.is_empty() {
            return Ok(());
        }
        let t = self.start.elapsed().as_secs_f64();
        let line = serde_json::to_string(&(t, kind, text)).expect("event serializes");
        writeln!(self.file, "{line}").map_err(|source| RecordError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the start.
    pub time: f64,
    /// "o", "i", "r" or "m".
    pub kind: String,
    /// The data.
    pub data: String,
}

/// Reads and validates a whole asciicast v2 file.
pub fn read_cast(path: &Path) -> Result<(Header, Vec<Event>), RecordError> {
    let invalid = |line: usize, reason: String| RecordError::Invalid {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let file = File::open(path).map_err(|source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut lines = BufReader::new(file).lines();
    let first = lines
        .next()
        .ok_or_else(|| invalid(1, "empty file".into()))?
        .map_err(|e| invalid(1, e.to_string()))?;
    let header: Header =
        serde_json::from_str(&first).map_err(|e| invalid(1, format!("bad header: {e}")))?;
    if header.version != 2 {
        return Err(invalid(
            1,
            format!("version {} (only 2 is supported)", header.version),
        ));
    }
    let mut events = Vec::new();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let line = line.map_err(|e| invalid(n, e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let (time, kind, data): (f64, String, String) =
            serde_json::from_str(&line).map_err(|e| invalid(n, format!("bad event: {e}")))?;
        events.push(Event { time, kind, data });
    }
    Ok((header, events))
}

/// How to pace a replay.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Playback speed factor (2.0 = twice as fast); 0 = no waiting at all.
    pub speed: f64,
    /// Longest pause between two events, in seconds.
    pub idle_limit: f64,
}

/// Writes the output events of a recording to `out`, paced like the original.
pub fn replay(events: &[Event], pace: Pace, out: &mut impl Write) -> std::io::Result<()> {
    let mut last = 0.0;
    for e in events.iter().filter(|e| e.kind == "o") {
        if pace.speed > 0.0 {
            let gap = ((e.time - last).max(0.0)).min(pace.idle_limit) / pace.speed;
            std::thread::sleep(Duration::from_secs_f64(gap));
        }
        last = e.time;
        out.write_all(e.data.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_utf8_is_held_back_until_complete() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes();
        assert_eq!(s.feed(&[b'a', euro[0]]), "a");
        assert_eq!(s.feed(&euro[1..2]), "");
        assert_eq!(s.feed(&euro[2..]), "€");
        assert_eq!(s.feed(&[0xFF, b'b']), "\u{FFFD}b");
    }

    #[test]
    fn recording_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let header = Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp: Some(0),
            title: None,
        };
        let mut r = Recorder::create(dir.path(), "t", &header).unwrap();
        r.input(b"ls\r").unwrap();
        r.output("h\u{e9}".as_bytes()).unwrap();
        r.resize(100, 30).unwrap();
        let (h, events) = read_cast(r.path()).unwrap();
        assert_eq!((h.width, h.height), (80, 24));
        let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["i", "o", "r"]);
        let mut out = Vec::new();
        replay(
            &events,
            Pace {
                speed: 0.0,
                idle_limit: 1.0,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(out, "h\u{e9}".as_bytes());
        assert!(
            Recorder::create(dir.path(), "t", &header).is_err(),
            "never overwrites"
        );
    }
}
