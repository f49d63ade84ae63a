//! For tests of this and other crates: a real OpenSSH sshd
//! (`/usr/sbin/sshd`) on 127.0.0.1 with a given host key and authorized
//! client key, standing in for the VM's. Killed by pid when dropped.

use russh::keys::ssh_key::LineEnding;
use russh::keys::{PrivateKey, PublicKey};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's OpenSSH server (package `openssh-server`, installed by `scripts/setup`).
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd on a free loopback port.
#[derive(Debug)]
pub struct Sshd {
    /// Its directory: config, keys, log, and `home/` (the SFTP start directory).
    pub dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl Sshd {
    /// Starts sshd with `host` as its only host key, accepting `client` for
    /// any user it can log in (root included). Panics when it cannot.
    pub fn start(host: &PrivateKey, client: &PublicKey) -> Sshd {
        Sshd::start_with(host, client, "")
    }

    /// [`Sshd::start`] with `extra` lines appended to its `sshd_config`
    /// (e.g. a `ForceCommand` that makes the login shell start slowly).
    pub fn start_with(host: &PrivateKey, client: &PublicKey, extra: &str) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (scripts/setup)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let host_pem = host.to_openssh(LineEnding::LF).expect("host key encodes");
        write_mode(&d.join("host_key"), host_pem.as_bytes(), 0o600);
        let authorized = client.to_openssh().expect("client key encodes") + "\n";
        write_mode(&d.join("authorized_keys"), authorized.as_bytes(), 0o644);
        std::fs::create_dir_all(d.join("home")).expect("home");
        std::fs::create_dir_all("/run/sshd").ok();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile none\n\
             AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nSubsystem sftp internal-sftp -d {d}/home\nLogLevel ERROR\n\
             MaxSessions 50\nMaxStartups 50\n{extra}\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).expect("sshd_config");
        let log = std::fs::File::create(d.join("sshd.log")).expect("sshd.log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        let sshd = Sshd { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    /// A file in its directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The user this process runs as, whom sshd lets in with the client key.
    pub fn user() -> String {
        let out = Command::new("id").arg("-un").output().expect("id runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_mode(path: &Path, data: &[u8], mode: u32) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .expect("create key file");
    f.write_all(data).expect("write key file");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
