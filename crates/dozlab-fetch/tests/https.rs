//! `https://` through rustls against a real TLS server on 127.0.0.1
//! (`openssl s_server -WWW`) with a certificate from a test CA.

mod common;

use common::*;
use dozlab_fetch::{ErrorKind, fetch};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes `ca.pem` and a server certificate for 127.0.0.1 signed by it.
fn make_certs(dir: &Path) -> bool {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ca = [
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=dozlab-test-ca",
        ],
    ]
    .concat();
    let csr = [
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat();
    openssl(dir, &ca)
        && openssl(dir, &csr)
        && openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "srv.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        )
}

/// `openssl s_server -WWW` serving `www`; killed on drop.
struct TlsServer(Child);

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(dir: &Path) -> (TlsServer, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-WWW",
            "-cert",
            "../srv.pem",
            "-key",
            "../srv.key",
            "-accept",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(dir.join("www"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = TlsServer(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "s_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

#[tokio::test]
async fn https_with_a_trusted_ca_works_and_an_unknown_issuer_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // The openssl command makes the test CA and runs the TLS server.
    dozlab_testkit::require_tool!("openssl");
    assert!(make_certs(dir.path()), "openssl could not make the test CA");
    std::fs::create_dir(dir.path().join("www")).unwrap();
    let img = sparse_image(2 << 20);
    std::fs::write(dir.path().join("www/rootfs.ext4"), &img).unwrap();
    let (_server, port) = start_server(dir.path());
    let url = format!("https://127.0.0.1:{port}/rootfs.ext4");
    let out = dir.path().join("out/rootfs.ext4");

    let mut o = opts(&url, &out);
    o.ca_cert = Some(dir.path().join("ca.pem"));
    o.sha256 = Some(dozlab_fetch::testing::sha256_hex(&img));
    fetch(&o).await.unwrap();
    assert_image(&out, &img);

    let other = dir.path().join("out/other.ext4");
    let mut o = opts(&url, &other);
    o.retries = 5;
    o.retry_delay = Duration::from_secs(30);
    let e = fetch(&o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network);
    let msg = format!("{:#}", anyhow::Error::from(e));
    assert!(msg.contains("certificate"), "{msg}");
    assert!(!other.exists());

    let mut o = opts(&url, &other);
    o.ca_cert = Some(dir.path().join("www/rootfs.ext4"));
    let e = fetch(&o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Usage, "{e}");
}
