//! `dozlab snapshot ls|rm|prune`: the operator's view of the node-local
//! snapshot cache (see [`crate::snapcache`]).

use crate::snapcache::{Cache, DOZLAB_VERSION, unix_now};
use anyhow::Context as _;
use dozlab_core::failure::{CmdResult, Failure};
use std::path::PathBuf;
use std::process::ExitCode;

/// `dozlab snapshot`: list, remove and prune saved VM snapshots.
#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    /// The snapshot cache [default: $SNAPSHOT_CACHE, else $DOZLAB_CACHE/snapshots, else ~/.cache/dozlab/snapshots].
    #[arg(long, global = true)]
    pub cache: Option<PathBuf>,
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

/// The `snapshot` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// List the snapshots: key, image, shape, size on disk, age, problems.
    Ls {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove snapshots by key (a unique prefix is enough).
    Rm {
        /// Keys or key prefixes.
        #[arg(required_unless_present = "all")]
        keys: Vec<String>,
        /// Remove every snapshot.
        #[arg(long, conflicts_with = "keys")]
        all: bool,
    },
    /// Remove what can never be restored (interrupted writes, damaged
    /// entries, other Dozlab versions) and, with --older-than, old entries.
    Prune {
        /// Also remove snapshots older than this many days.
        #[arg(long)]
        older_than_days: Option<u64>,
    },
}

/// The default cache directory.
pub fn default_cache() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = env("SNAPSHOT_CACHE") {
        return d.into();
    }
    if let Some(d) = env("DOZLAB_CACHE") {
        return PathBuf::from(d).join("snapshots");
    }
    let home = env("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".cache/dozlab/snapshots")
}

/// Entry point of `dozlab snapshot`.
pub fn run(args: SnapshotArgs) -> CmdResult {
    let dir = args.cache.unwrap_or_else(default_cache);
    if dir.exists() && !dir.is_dir() {
        return Err(Failure::usage(anyhow::anyhow!(
            "--cache {} is not a directory",
            dir.display()
        )));
    }
    let cache = Cache::new(&dir);
    match args.command {
        SnapshotCommand::Ls { json } => ls(&cache, json),
        SnapshotCommand::Rm { keys, all } => rm(&cache, &keys, all),
        SnapshotCommand::Prune { older_than_days } => {
            let removed = cache
                .prune(older_than_days.map(|d| d * 86_400), unix_now())
                .context("cannot prune the snapshot cache")?;
            for r in &removed {
                println!("removed {r}");
            }
            println!("{} removed", removed.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn ls(cache: &Cache, json: bool) -> CmdResult {
    let list = cache.list().context("cannot list the snapshot cache")?;
    if !json {
        println!(
            "{:<32}  {:<12}  {:>4} {:>6}  {:<7} {:<3}  {:>9}  {:>8}  STATUS",
            "KEY", "IMAGE", "CPUS", "MEM", "MACHINE", "ACC", "ON DISK", "AGE"
        );
    }
    let now = unix_now();
    for l in list {
        if json {
            let v = serde_json::json!({
                "key": l.key,
                "allocated": l.allocated,
                "problem": l.problem,
                "meta": l.meta,
            });
            println!("{v}");
            continue;
        }
        let (image, cpus, mem, machine, accel, age) = match &l.meta {
            Some(m) => (
                m.inputs.image_sha256.get(..12).unwrap_or("").to_string(),
                m.inputs.cpus.to_string(),
                format!("{}M", m.inputs.memory_mib),
                m.inputs.machine.clone(),
                m.inputs.accel.clone(),
                age(now.saturating_sub(m.created)),
            ),
            None => Default::default(),
        };
        println!(
            "{:<32}  {:<12}  {:>4} {:>6}  {:<7} {:<3}  {:>8}M  {:>8}  {}",
            l.key,
            image,
            cpus,
            mem,
            machine,
            accel,
            l.allocated >> 20,
            age,
            l.problem.as_deref().unwrap_or("ok")
        );
    }
    if !json {
        eprintln!("(cache {}, Dozlab {DOZLAB_VERSION})", cache.dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn rm(cache: &Cache, keys: &[String], all: bool) -> CmdResult {
    let keys: Vec<String> =
        if all {
            cache.list()?.into_iter().map(|l| l.key).collect()
        } else {
            let mut out = Vec::new();
            for k in keys {
                out.push(cache.resolve(k).map_err(|e| {
                    Failure::usage(anyhow::anyhow!("{e}; see `dozlab snapshot ls`"))
                })?);
            }
            out
        };
    for k in &keys {
        cache
            .remove(k)
            .with_context(|| format!("cannot remove snapshot {k}"))?;
        println!("removed {k}");
    }
    Ok(ExitCode::SUCCESS)
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
