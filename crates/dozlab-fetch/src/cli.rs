//! `dozlab init-rootfs`: flags (with the original env vars as fallbacks),
//! signal handling and exit codes, over [`crate::fetch`].

use crate::ext::Grow;
use crate::options::{DEFAULT_OUT, DEFAULT_SIZE, FetchOptions};
use crate::progress::ProgressMode;
use anyhow::anyhow;
use dozlab_core::ByteSize;
use dozlab_core::failure::{CmdResult, Failure};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Download, verify, decompress and sparsely write the session's rootfs
/// image, then check it with e2fsck and grow it with resize2fs.
///
/// Exit codes: 0 ready, 1 other error, 2 usage (bad flag, refused shrink),
/// 3 network/HTTP, 4 integrity (digest, size, corrupt data), 5 not enough
/// space, 6 filesystem (e2fsck/resize2fs), 130/143 interrupted.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 ready; 1 other error; 2 usage (bad flag or value, refused shrink); \
3 network/HTTP; 4 integrity (digest, size, corrupt data); 5 not enough space; \
6 filesystem (not ext4, e2fsck, resize2fs); 130/143 interrupted by SIGINT/SIGTERM.\n\
See docs/init-rootfs.md."
)]
pub struct Args {
    /// Image to fetch: http://, https://, file:// or a plain path;
    /// .zst/.gz/.xz are recognised by their magic bytes and decompressed.
    #[arg(long, env = "IMAGE_DOWNLOAD_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Where the ready image goes (written beside it first, renamed at the end).
    #[arg(long, env = "IMAGE_PATH", value_name = "PATH", default_value = DEFAULT_OUT)]
    pub out: String,
    /// Grow the filesystem to this size (4G, 512M, 10Gi, bytes); never shrinks.
    #[arg(long, env = "IMAGE_SIZE", value_name = "SIZE", default_value = DEFAULT_SIZE)]
    pub size: String,
    /// Expected sha256 of the file at --url (or of the decompressed image).
    #[arg(long, env = "IMAGE_SHA256", value_name = "HEX")]
    pub sha256: Option<String>,
    /// manifest.json of `dozlab image build`: gives the artifact (the .zst is
    /// preferred), its size and digests. With --url, picks the artifact of that name.
    #[arg(long, env = "IMAGE_MANIFEST_URL", value_name = "URL")]
    pub manifest: Option<String>,
    /// Node-level cache directory, shared by sessions (keyed by sha256).
    #[arg(long, env = "IMAGE_CACHE_DIR", value_name = "DIR")]
    pub cache: Option<String>,
    /// Extra CA certificates (PEM file) to trust for https://, besides the system's.
    #[arg(long, env = "IMAGE_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<String>,
    /// Retries after consecutive transient failures (reset, timeout, 5xx).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// Seconds without progress (connect, headers or data) before retrying.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Seconds before the first retry; doubles each time, up to 30, with jitter.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub retry_delay: f64,
    /// Only download, verify and write: no e2fsck, no resize2fs (--size is ignored).
    #[arg(long)]
    pub no_resize: bool,
    /// Progress display: auto (a bar on a terminal, log lines otherwise), bar, log, none.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "bar", "log", "none"])]
    pub progress: String,
    /// Seconds between progress log lines (when not showing a bar).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub progress_interval: f64,
}

impl Args {
    /// The library options these flags mean.
    pub fn options(&self) -> Result<FetchOptions, Failure> {
        if !(self.retry_delay.is_finite() && self.retry_delay >= 0.0) {
            return Err(Failure::usage(anyhow!(
                "--retry-delay must be a number of seconds >= 0"
            )));
        }
        if !(self.progress_interval.is_finite() && self.progress_interval > 0.0) {
            return Err(Failure::usage(anyhow!(
                "--progress-interval must be a number of seconds > 0"
            )));
        }
        let interval = Duration::from_secs_f64(self.progress_interval);
        let size: ByteSize = or_default(&self.size, DEFAULT_SIZE)
            .parse()
            .map_err(|e| Failure::usage(anyhow!("--size (IMAGE_SIZE): {e}")))?;
        Ok(FetchOptions {
            url: non_empty(&self.url),
            manifest: non_empty(&self.manifest),
            out: PathBuf::from(or_default(&self.out, DEFAULT_OUT)),
            grow: Grow::To(size.0),
            sha256: non_empty(&self.sha256),
            cache: non_empty(&self.cache).map(PathBuf::from),
            ca_cert: non_empty(&self.ca_cert).map(PathBuf::from),
            retries: self.retries,
            retry_delay: Duration::from_secs_f64(self.retry_delay),
            timeout: Duration::from_secs(self.timeout),
            prepare_fs: !self.no_resize,
            progress: match self.progress.as_str() {
                "bar" => ProgressMode::Bar,
                "log" => ProgressMode::Log(interval),
                "none" => ProgressMode::Off,
                _ if std::io::stderr().is_terminal() => ProgressMode::Bar,
                _ => ProgressMode::Log(interval),
            },
        })
    }
}

/// An empty value (e.g. `IMAGE_SHA256: ""` in a pod spec) counts as unset.
fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn or_default<'a>(v: &'a str, default: &'a str) -> &'a str {
    match v.trim() {
        "" => default,
        t => t,
    }
}

/// Runs `dozlab init-rootfs`.
pub fn run(args: Args) -> CmdResult {
    let opts = args.options()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(1, anyhow!(e).context("cannot start the async runtime")))?;
    let result = rt.block_on(fetch_or_signal(&opts));
    rt.shutdown_timeout(Duration::from_secs(2));
    let report = result?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

async fn fetch_or_signal(opts: &FetchOptions) -> Result<crate::FetchReport, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Failure::new(1, anyhow!(e).context("cannot handle SIGTERM")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Failure::new(1, anyhow!(e).context("cannot handle SIGINT")))?;
    let interrupted = |name: &str, code: u8| {
        Failure::new(
            code,
            anyhow!(
                "interrupted by {name}; the partial image was removed, nothing is at {}",
                opts.out.display()
            ),
        )
    };
    tokio::select! {
        r = crate::fetch(opts) => r.map_err(|e| Failure::new(e.kind().exit_code(), e)),
        _ = term.recv() => Err(interrupted("SIGTERM", 143)),
        _ = int.recv() => Err(interrupted("SIGINT", 130)),
    }
}
