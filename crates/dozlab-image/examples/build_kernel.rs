//! Builds (or finds) the cached Dozlab kernel and prints its directory, the
//! way `dozlab image kernel` does, compiling only this crate.

fn main() {
    let cache = dozlab_image::cache::default_cache_dir();
    let spec = dozlab_image::kernel::KernelSpec::from_env();
    match dozlab_image::kernel::ensure_built(&spec, &cache) {
        Ok(k) => println!("{}", k.dir.display()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
