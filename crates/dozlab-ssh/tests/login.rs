//! Logins against a real OpenSSH sshd on loopback: the host key is checked
//! against the expected key (in memory or from a known_hosts file), a
//! different key is refused, and so is a client key sshd does not know.

use dozlab_ssh::keys::ed25519;
use dozlab_ssh::testing::Sshd;
use dozlab_ssh::{Login, SshError, SshTarget, known_hosts};
use russh::keys::HashAlg;
use russh::keys::ssh_key::LineEnding;
use std::sync::Arc;
use std::time::Duration;

const HANG: Duration = Duration::from_secs(30);

struct Fixture {
    host: russh::keys::PrivateKey,
    client: russh::keys::PrivateKey,
    sshd: Sshd,
}

fn fixture() -> Option<Fixture> {
    dozlab_testkit::require_path!(
        dozlab_ssh::testing::SSHD,
        "install openssh-server (scripts/setup)"
    );
    let host = ed25519("host");
    let client = ed25519("client");
    let sshd = Sshd::start(&host, client.public_key());
    Some(Fixture { host, client, sshd })
}

impl Fixture {
    fn login(&self) -> Login {
        Login {
            host: "127.0.0.1".into(),
            port: self.sshd.port,
            user: Sshd::user(),
            key: Arc::new(self.client.clone()),
            host_keys: vec![self.host.public_key().clone()],
            timeout: HANG,
        }
    }
}

async fn run(session: &dozlab_ssh::Session, command: &str) -> Vec<u8> {
    let mut channel = session.channel_open_session().await.unwrap();
    channel.exec(true, command).await.unwrap();
    let mut out = Vec::new();
    while let Some(msg) = channel.wait().await {
        if let russh::ChannelMsg::Data { data } = msg {
            out.extend_from_slice(&data);
        }
    }
    out
}

#[tokio::test]
async fn the_expected_host_key_logs_in() {
    let Some(f) = fixture() else { return };
    let session = f.login().connect().await.unwrap();
    assert_eq!(run(&session, "echo hello").await, b"hello\n");
}

#[tokio::test]
async fn a_different_host_key_is_refused_with_its_fingerprint() {
    let Some(f) = fixture() else { return };
    let mut login = f.login();
    login.host_keys = vec![ed25519("other").public_key().clone()];
    let e = login.connect().await.err().expect("the login fails");
    let offered = f.host.public_key().fingerprint(HashAlg::Sha256).to_string();
    match &e {
        SshError::HostKeyMismatch { host, offered: o } => {
            assert_eq!(host, &format!("[127.0.0.1]:{}", f.sshd.port));
            assert_eq!(o, &offered);
        }
        other => panic!("expected a host key mismatch, got {other:?}"),
    }
    assert!(!e.is_starting(), "a mismatch is not 'still starting'");
}

#[tokio::test]
async fn an_unknown_client_key_is_rejected() {
    let Some(f) = fixture() else { return };
    let mut login = f.login();
    login.key = Arc::new(ed25519("stranger"));
    let e = login.connect().await.err().expect("the login fails");
    assert!(matches!(e, SshError::AuthRejected(_)), "{e:?}");
}

#[tokio::test]
async fn nothing_listening_means_starting() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let login = Login {
        host: "127.0.0.1".into(),
        port,
        user: "root".into(),
        key: Arc::new(ed25519("c")),
        host_keys: vec![],
        timeout: HANG,
    };
    let e = login.connect().await.err().expect("the login fails");
    assert!(
        matches!(e, SshError::Unreachable { .. }) && e.is_starting(),
        "{e:?}"
    );
}

#[tokio::test]
async fn files_written_as_vm_run_writes_them_log_in_and_a_stale_line_is_refused() {
    let Some(f) = fixture() else { return };
    let dir = tempfile::tempdir().unwrap();
    let target = SshTarget {
        host: "127.0.0.1".into(),
        port: f.sshd.port,
        user: Sshd::user(),
        key_path: dir.path().join("vm-ssh-key"),
        known_hosts_path: dir.path().join("known_hosts"),
        timeout: HANG,
    };
    let e = target.connect().await.err().expect("the login fails");
    assert!(matches!(e, SshError::KeyMissing(_)), "{e:?}");
    let pem = f.client.to_openssh(LineEnding::LF).unwrap();
    std::fs::write(&target.key_path, pem.as_bytes()).unwrap();
    let e = target.connect().await.err().expect("the login fails");
    assert!(matches!(e, SshError::KnownHostsMissing(_)), "{e:?}");

    let line = known_hosts::line("127.0.0.1", f.sshd.port, f.host.public_key()).unwrap();
    std::fs::write(&target.known_hosts_path, &line).unwrap();
    let session = target.connect().await.unwrap();
    assert_eq!(run(&session, "echo ok").await, b"ok\n");

    let stale = ed25519("previous VM");
    let line = known_hosts::line("127.0.0.1", f.sshd.port, stale.public_key()).unwrap();
    std::fs::write(&target.known_hosts_path, &line).unwrap();
    let e = target.connect().await.err().expect("the login fails");
    assert!(matches!(e, SshError::HostKeyMismatch { .. }), "{e:?}");

    let line = known_hosts::line("127.0.0.1", 22, f.host.public_key()).unwrap();
    std::fs::write(&target.known_hosts_path, &line).unwrap();
    let e = target.connect().await.err().expect("the login fails");
    assert!(
        matches!(e, SshError::NoHostKey { .. }),
        "port 22's line is not port N's: {e:?}"
    );
}
