//! `cargo run -p dozlab-image --example ensure_cached -- PROFILE`: prints the
//! directory of a cached build (what `scripts/test-image` runs). It needs only
//! this crate to compile, so test scripts work while other crates are mid-change.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(profile) = std::env::args().nth(1) else {
        eprintln!("usage: ensure_cached PROFILE   (minimal, vm, k8s or FILE.toml)");
        return ExitCode::from(2);
    };
    let cache_dir = dozlab_image::cache::default_cache_dir();
    match dozlab_image::ensure_cached(&profile, &cache_dir) {
        Ok(dir) => {
            println!("{}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut msg = format!("error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
