//! `cargo run -p dozlab-image --example build_dir -- PROFILE OUT`: an uncached
//! build into OUT, compiling only this crate (for benchmarks and debugging).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [profile, out] = args.as_slice() else {
        eprintln!("usage: build_dir PROFILE OUT");
        return ExitCode::from(2);
    };
    let result = dozlab_image::recipe::Recipe::load(profile)
        .map_err(anyhow::Error::from)
        .and_then(|r| {
            let opts = dozlab_image::build::BuildOptions::default();
            dozlab_image::build::build_to_dir(&r, &opts, std::path::Path::new(out))
                .map_err(anyhow::Error::from)
        });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
