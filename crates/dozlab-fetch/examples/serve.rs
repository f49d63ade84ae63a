//! Serves the files of a directory on 127.0.0.1 with `Range` support, for
//! `bench/init-rootfs`: `serve DIR [PORT]`. Prints the base URL, then serves
//! until its standard input closes.

use dozlab_fetch::testing::FaultServer;
use std::io::Read;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: serve DIR [PORT]"));
    let port = args
        .next()
        .map_or(0, |p| p.parse().expect("PORT is a number"));
    let server = FaultServer::start_on(port)?;
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            server.add_file(&format!("/{name}"), &entry.path());
        }
    }
    println!("{}", server.url(""));
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    Ok(())
}
