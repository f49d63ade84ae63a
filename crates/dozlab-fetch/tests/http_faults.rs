//! Downloads from a real HTTP server on 127.0.0.1 with injected faults.

mod common;

use common::*;
use dozlab_fetch::testing::{Fault, FaultServer, sha256_hex};
use dozlab_fetch::{ErrorKind, fetch};
use std::time::Duration;

const IMG: usize = 3 << 20;

fn setup() -> (FaultServer, Vec<u8>, tempfile::TempDir) {
    let server = FaultServer::start().unwrap();
    let img = sparse_image(IMG);
    server.add("/rootfs.ext4", img.clone());
    (server, img, tempfile::tempdir().unwrap())
}

#[tokio::test]
async fn plain_download_is_byte_exact_sparse_and_verified() {
    let (server, img, dir) = setup();
    let out = dir.path().join("rootfs.ext4");
    let mut o = opts(&server.url("/rootfs.ext4"), &out);
    o.sha256 = Some(sha256_hex(&img).to_uppercase());
    let r = fetch(&o).await.unwrap();
    assert_image(&out, &img);
    assert_eq!(r.downloaded, IMG as u64);
    assert_eq!(r.image_sha256, Some(sha256_hex(&img)));
    assert_eq!((r.resumes, r.restarts), (0, 0));
    assert_eq!(files_in(dir.path()), ["rootfs.ext4"]);
    assert!(r.to_string().contains("allocated"), "{r}");
}

#[tokio::test]
async fn truncation_mid_stream_resumes_with_range() {
    let (server, img, dir) = setup();
    server.fail_next("/rootfs.ext4", [Fault::TruncateAfter(1 << 20)]);
    let out = dir.path().join("rootfs.ext4");
    let r = fetch(&opts(&server.url("/rootfs.ext4"), &out))
        .await
        .unwrap();
    assert_image(&out, &img);
    assert_eq!(r.resumes, 1);
    let reqs = server.requests("/rootfs.ext4");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=1048576-"));
    assert_eq!(reqs[1].status, 206);
}

#[tokio::test]
async fn connection_reset_resumes() {
    let (server, img, dir) = setup();
    server.fail_next(
        "/rootfs.ext4",
        [Fault::ResetAfter(700_000), Fault::ResetAfter(900_000)],
    );
    let out = dir.path().join("rootfs.ext4");
    let mut o = opts(&server.url("/rootfs.ext4"), &out);
    o.sha256 = Some(sha256_hex(&img));
    let r = fetch(&o).await.unwrap();
    assert_image(&out, &img);
    assert_eq!(r.resumes, 2);
    assert_eq!(server.requests("/rootfs.ext4").len(), 3);
}

#[tokio::test]
async fn one_500_then_success() {
    let (server, img, dir) = setup();
    server.fail_next("/rootfs.ext4", [Fault::Status(500)]);
    let out = dir.path().join("rootfs.ext4");
    fetch(&opts(&server.url("/rootfs.ext4"), &out))
        .await
        .unwrap();
    assert_image(&out, &img);
    let st: Vec<u16> = server
        .requests("/rootfs.ext4")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(st, [500, 200]);
}

#[tokio::test]
async fn persistent_503_gives_up_after_the_retries() {
    let (server, _img, dir) = setup();
    server.fail_always("/rootfs.ext4", Fault::Status(503));
    let out = dir.path().join("rootfs.ext4");
    let mut o = opts(&server.url("/rootfs.ext4"), &out);
    o.retries = 2;
    let e = fetch(&o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network);
    let msg = format!("{:#}", anyhow::Error::from(e));
    assert!(
        msg.contains("after 3 attempts") && msg.contains("503"),
        "{msg}"
    );
    assert_eq!(server.requests("/rootfs.ext4").len(), 3);
    assert!(files_in(dir.path()).is_empty());
}

#[tokio::test]
async fn client_errors_fail_at_once_and_leave_nothing() {
    for (code, hint) in [(404, "not found"), (403, "access denied")] {
        let (server, _img, dir) = setup();
        server.fail_always("/rootfs.ext4", Fault::Status(code));
        let out = dir.path().join("rootfs.ext4");
        let e = fetch(&opts(&server.url("/rootfs.ext4"), &out))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Network);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("HTTP {code}")) && msg.contains(hint),
            "{msg}"
        );
        assert_eq!(
            server.requests("/rootfs.ext4").len(),
            1,
            "no retry on {code}"
        );
        assert!(
            files_in(dir.path()).is_empty(),
            "{:?}",
            files_in(dir.path())
        );
    }
    let (server, _img, dir) = setup();
    let e = fetch(&opts(&server.url("/missing"), &dir.path().join("x")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("HTTP 404"), "{e}");
}

#[tokio::test]
async fn a_server_ignoring_range_is_restarted_cleanly() {
    let (server, img, dir) = setup();
    server.fail_next("/rootfs.ext4", [Fault::TruncateAfter(1 << 20)]);
    server.fail_always("/rootfs.ext4", Fault::IgnoreRange);
    let out = dir.path().join("rootfs.ext4");
    let mut o = opts(&server.url("/rootfs.ext4"), &out);
    o.sha256 = Some(sha256_hex(&img));
    let r = fetch(&o).await.unwrap();
    assert_image(&out, &img);
    assert_eq!((r.resumes, r.restarts), (0, 1));
    assert_eq!(
        r.downloaded, IMG as u64,
        "the digest covers only the restarted stream"
    );
    let reqs = server.requests("/rootfs.ext4");
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=1048576-"));
    assert_eq!(reqs[1].status, 200);
}

#[tokio::test]
async fn a_stall_times_out_and_resumes() {
    let (server, img, dir) = setup();
    server.fail_next("/rootfs.ext4", [Fault::StallAfter(500_000)]);
    let out = dir.path().join("rootfs.ext4");
    let mut o = opts(&server.url("/rootfs.ext4"), &out);
    o.timeout = Duration::from_secs(1);
    let r = fetch(&o).await.unwrap();
    assert_image(&out, &img);
    assert_eq!(r.resumes, 1);
}

#[tokio::test]
async fn a_server_that_never_sends_gives_up_with_a_timeout() {
    let (server, _img, dir) = setup();
    server.fail_always("/rootfs.ext4", Fault::StallAfter(0));
    let out = dir.path().join("rootfs.ext4");
    let mut o = opts(&server.url("/rootfs.ext4"), &out);
    o.timeout = Duration::from_secs(1);
    o.retries = 1;
    let e = fetch(&o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network);
    let msg = format!("{:#}", anyhow::Error::from(e));
    assert!(
        msg.contains("no data from the server") && msg.contains("--timeout"),
        "{msg}"
    );
    assert!(files_in(dir.path()).is_empty());
}

#[tokio::test]
async fn a_too_large_content_length_never_passes_for_complete() {
    let (server, _img, dir) = setup();
    server.fail_always("/rootfs.ext4", Fault::ContentLength(IMG as u64 + 4096));
    let out = dir.path().join("rootfs.ext4");
    let e = fetch(&opts(&server.url("/rootfs.ext4"), &out))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    assert!(files_in(dir.path()).is_empty());
}

#[tokio::test]
async fn a_too_small_content_length_is_caught_by_the_digest() {
    let (server, img, dir) = setup();
    server.fail_always("/rootfs.ext4", Fault::ContentLength(IMG as u64 - 4096));
    let out = dir.path().join("rootfs.ext4");
    let mut o = opts(&server.url("/rootfs.ext4"), &out);
    o.sha256 = Some(sha256_hex(&img));
    let e = fetch(&o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    let msg = e.to_string();
    assert!(
        msg.contains(&sha256_hex(&img)) && msg.contains(&sha256_hex(&img[..IMG - 4096])),
        "{msg}"
    );
    assert!(files_in(dir.path()).is_empty());
}

#[tokio::test]
async fn a_wrong_digest_names_both_and_leaves_nothing() {
    let (server, img, dir) = setup();
    let out = dir.path().join("rootfs.ext4");
    let mut o = opts(&server.url("/rootfs.ext4"), &out);
    let wrong = sha256_hex(b"something else");
    o.sha256 = Some(wrong.clone());
    let e = fetch(&o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    let msg = e.to_string();
    assert!(
        msg.contains(&wrong) && msg.contains(&sha256_hex(&img)),
        "{msg}"
    );
    assert!(files_in(dir.path()).is_empty());
}

#[tokio::test]
async fn dropping_the_future_mid_download_removes_the_temporary_file() {
    let (server, _img, dir) = setup();
    server.fail_always("/rootfs.ext4", Fault::Throttle(Duration::from_millis(50)));
    let out = dir.path().join("rootfs.ext4");
    let o = opts(&server.url("/rootfs.ext4"), &out);
    let r = tokio::time::timeout(Duration::from_millis(400), fetch(&o)).await;
    assert!(r.is_err(), "the throttled download cannot finish in time");
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[tokio::test]
async fn a_compressed_download_that_dies_midway_is_a_network_error_not_corruption() {
    let server = FaultServer::start().unwrap();
    let packed = dozlab_fetch::testing::compress(&sparse_image(IMG), dozlab_fetch::Compression::Xz);
    server.add("/rootfs.ext4.xz", packed.clone());
    server.fail_always(
        "/rootfs.ext4.xz",
        Fault::TruncateAfter(packed.len() as u64 / 2),
    );
    server.fail_always("/rootfs.ext4.xz", Fault::IgnoreRange);
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&server.url("/rootfs.ext4.xz"), &dir.path().join("out"));
    o.retries = 1;
    let e = fetch(&o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    assert!(files_in(dir.path()).is_empty());
}
