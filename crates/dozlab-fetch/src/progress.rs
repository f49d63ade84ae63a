//! Download progress: a bar on a terminal, a log line every few seconds
//! otherwise (Kubernetes logs), nothing when asked.

use dozlab_core::size::human;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    /// Always a bar (on stderr).
    Bar,
    /// Log lines every `interval`.
    Log(Duration),
    /// Nothing.
    Off,
}

/// Interval of log lines in `Auto` mode.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Progress of one transfer.
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: AtomicU64,
    done: AtomicU64,
    start: Instant,
    view: View,
}

#[derive(Debug)]
enum View {
    Bar(ProgressBar),
    Log {
        interval: Duration,
        last: Mutex<Instant>,
    },
    Off,
}

impl Progress {
    /// Starts showing progress of `label` (total bytes unknown as yet: 0).
    pub fn new(mode: ProgressMode, label: &str, total: Option<u64>) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Log(LOG_INTERVAL),
            m => m,
        };
        let view = match mode {
            ProgressMode::Bar => View::Bar(bar(label, total)),
            ProgressMode::Log(interval) => View::Log {
                interval,
                last: Mutex::new(Instant::now()),
            },
            _ => View::Off,
        };
        Self {
            label: label.to_string(),
            total: AtomicU64::new(total.unwrap_or(0)),
            done: AtomicU64::new(0),
            start: Instant::now(),
            view,
        }
    }

    /// Sets the total once it is known.
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        if let View::Bar(b) = &self.view {
            b.set_length(total);
        }
    }

    /// Sets the position (e.g. 0 after a restart, the offset after a resume).
    pub fn set_position(&self, pos: u64) {
        self.done.store(pos, Ordering::Relaxed);
        if let View::Bar(b) = &self.view {
            b.set_position(pos);
        }
    }

    /// Counts `n` more bytes.
    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        match &self.view {
            View::Bar(b) => b.inc(n),
            View::Log { interval, last } => {
                let now = Instant::now();
                let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                if now.duration_since(*last) >= *interval {
                    *last = now;
                    drop(last);
                    tracing::info!("{}", self.line(done));
                }
            }
            View::Off => {}
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let View::Bar(b) = &self.view {
            b.finish_and_clear();
        }
    }

    fn line(&self, done: u64) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            return format!(
                "{}: {} at {}/s",
                self.label,
                human(done),
                human(rate as u64)
            );
        }
        let pct = done as f64 * 100.0 / total as f64;
        let eta = if rate > 0.0 {
            format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
        } else {
            "?".into()
        };
        format!(
            "{}: {} of {} ({pct:.0}%), {}/s, ETA {eta}",
            self.label,
            human(done),
            human(total),
            human(rate as u64)
        )
    }
}

fn bar(label: &str, total: Option<u64>) -> ProgressBar {
    let b = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    b.set_style(style);
    b.set_message(label.to_string());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_line_has_bytes_percentage_rate_and_eta() {
        let p = Progress::new(ProgressMode::Off, "rootfs.ext4", Some(4 << 20));
        let line = p.line(1 << 20);
        assert!(
            line.starts_with("rootfs.ext4: 1.0 MiB of 4.0 MiB (25%), "),
            "{line}"
        );
        assert!(line.contains("/s, ETA "), "{line}");
        let p = Progress::new(ProgressMode::Off, "x", None);
        assert!(p.line(2048).starts_with("x: 2.0 KiB at "));
    }
}
