//! Compressed images, manifests, local sources, the cache and ext4 handling,
//! against a real HTTP server on 127.0.0.1 and real e2fsprogs.

mod common;

use common::*;
use dozlab_core::manifest::{Artifact, KernelInfo, Manifest};
use dozlab_fetch::testing::{Fault, FaultServer, compress, make_ext4, sha256_hex};
use dozlab_fetch::{CacheUse, Compression, ErrorKind, Grow, fetch};
use std::time::Duration;

const IMG: usize = 3 << 20;

#[tokio::test]
async fn compressed_images_are_detected_by_magic_and_decoded_on_the_fly() {
    let server = FaultServer::start().unwrap();
    let img = sparse_image(IMG);
    for c in [Compression::Zstd, Compression::Gzip, Compression::Xz] {
        let packed = compress(&img, c);
        // No suffix in the name: only the magic bytes tell.
        let path = format!("/image-{c}");
        server.add(&path, packed.clone());
        server.fail_next(&path, [Fault::TruncateAfter(packed.len() as u64 / 2)]);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("rootfs.ext4");
        let mut o = opts(&server.url(&path), &out);
        o.sha256 = Some(sha256_hex(&img));
        let r = fetch(&o).await.unwrap();
        assert_image(&out, &img);
        assert_eq!(r.compression, Some(c));
        assert_eq!(r.downloaded, packed.len() as u64);
        assert_eq!(r.resumes, 1, "{c}: resumed inside the compressed stream");
        assert_eq!(r.stored_sha256, Some(sha256_hex(&packed)));
        assert_eq!(files_in(dir.path()), ["rootfs.ext4"]);
    }
}

#[tokio::test]
async fn corrupt_compressed_data_is_an_integrity_error() {
    let server = FaultServer::start().unwrap();
    let mut packed = compress(&sparse_image(IMG), Compression::Gzip);
    let n = packed.len();
    packed.truncate(n - 100);
    server.add("/x.gz", packed);
    let dir = tempfile::tempdir().unwrap();
    let e = fetch(&opts(&server.url("/x.gz"), &dir.path().join("o")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(
        e.to_string()
            .contains("gzip stream is corrupt or truncated"),
        "{e}"
    );
    assert!(files_in(dir.path()).is_empty());
}

fn manifest_for(img: &[u8], packed: &[u8]) -> Manifest {
    Manifest {
        name: "dozlab-vm".into(),
        profile: "vm".into(),
        created: "2026-01-01T00:00:00Z".into(),
        kernel: KernelInfo {
            version: "6.1".into(),
            path: None,
            initrd: None,
        },
        packages: vec![],
        artifacts: vec![
            Artifact {
                path: "rootfs.ext4".into(),
                size: img.len() as u64,
                sha256: sha256_hex(img),
                uncompressed_size: None,
                uncompressed_sha256: None,
            },
            Artifact {
                path: "rootfs.ext4.zst".into(),
                size: packed.len() as u64,
                sha256: sha256_hex(packed),
                uncompressed_size: Some(img.len() as u64),
                uncompressed_sha256: Some(sha256_hex(img)),
            },
        ],
        features: Default::default(),
        recipe_sha256: None,
    }
}

#[tokio::test]
async fn a_manifest_selects_the_zst_artifact_and_verifies_both_digests() {
    let server = FaultServer::start().unwrap();
    let img = sparse_image(IMG);
    let packed = compress(&img, Compression::Zstd);
    server.add("/v1/rootfs.ext4", img.clone());
    server.add("/v1/rootfs.ext4.zst", packed.clone());
    server.add("/v1/manifest.json", manifest_for(&img, &packed).to_json());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rootfs.ext4");
    let mut o = opts("", &out);
    o.url = None;
    o.manifest = Some(server.url("/v1/manifest.json"));
    let r = fetch(&o).await.unwrap();
    assert_image(&out, &img);
    assert_eq!(r.compression, Some(Compression::Zstd));
    assert_eq!(server.requests("/v1/rootfs.ext4.zst").len(), 1);
    assert!(server.requests("/v1/rootfs.ext4").is_empty());

    // --url with --manifest picks the artifact of that name.
    let out2 = dir.path().join("raw.ext4");
    let mut o2 = o.clone();
    o2.out = out2.clone();
    o2.url = Some(server.url("/v1/rootfs.ext4"));
    assert_eq!(
        fetch(&o2).await.unwrap().compression,
        Some(Compression::None)
    );
    assert_image(&out2, &img);
}

#[tokio::test]
async fn a_manifest_that_disagrees_with_the_bytes_fails_on_integrity() {
    let server = FaultServer::start().unwrap();
    let img = sparse_image(IMG);
    let packed = compress(&img, Compression::Zstd);
    let mut m = manifest_for(&img, &packed);
    m.artifacts[1].uncompressed_sha256 = Some(sha256_hex(b"other"));
    server.add("/rootfs.ext4.zst", packed.clone());
    server.add("/manifest.json", m.to_json());
    let mut m2 = manifest_for(&img, &packed);
    m2.artifacts[1].size += 1;
    server.add("/m2/manifest.json", m2.to_json());
    server.add("/m2/rootfs.ext4.zst", packed);
    server.add("/bad/manifest.json", "{not json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rootfs.ext4");
    for (manifest, needle) in [
        ("/manifest.json", "decompressed"),
        ("/m2/manifest.json", "bytes were expected"),
        ("/bad/manifest.json", "invalid"),
    ] {
        let mut o = opts("", &out);
        o.url = None;
        o.manifest = Some(server.url(manifest));
        let e = fetch(&o).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        assert!(e.to_string().contains(needle), "{manifest}: {e}");
        assert!(files_in(dir.path()).is_empty());
    }
}

#[tokio::test]
async fn local_files_by_path_and_file_url() {
    let src_dir = tempfile::tempdir().unwrap();
    let img = sparse_image(IMG);
    let raw = src_dir.path().join("rootfs.ext4");
    std::fs::write(&raw, &img).unwrap();
    let xz = src_dir.path().join("rootfs.ext4.xz");
    std::fs::write(&xz, compress(&img, Compression::Xz)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (i, url) in [
        raw.display().to_string(),
        format!("file://{}", xz.display()),
    ]
    .iter()
    .enumerate()
    {
        let out = dir.path().join(format!("out{i}"));
        let mut o = opts(url, &out);
        o.sha256 = Some(sha256_hex(&img));
        fetch(&o).await.unwrap();
        assert_image(&out, &img);
    }
    let e = fetch(&opts("/nonexistent/img", &dir.path().join("z")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network);
    assert!(e.to_string().contains("/nonexistent/img"), "{e}");
    let e = fetch(&opts("ftp://x/y", &dir.path().join("z")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Usage);
}

#[tokio::test]
async fn the_cache_serves_hits_and_replaces_corrupt_entries() {
    let server = FaultServer::start().unwrap();
    let img = sparse_image(IMG);
    let packed = compress(&img, Compression::Zstd);
    server.add("/rootfs.ext4.zst", packed.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let run = |name: &str| {
        let mut o = opts(&server.url("/rootfs.ext4.zst"), &dir.path().join(name));
        o.sha256 = Some(sha256_hex(&packed));
        o.cache = Some(cache.clone());
        o
    };
    let r = fetch(&run("a")).await.unwrap();
    assert_eq!(r.cache, CacheUse::Miss);
    assert_image(&dir.path().join("a"), &img);
    let r = fetch(&run("b")).await.unwrap();
    assert_eq!(r.cache, CacheUse::Hit);
    assert_image(&dir.path().join("b"), &img);
    assert_eq!(
        server.requests("/rootfs.ext4.zst").len(),
        1,
        "the hit downloaded nothing"
    );
    let entry = cache.join(format!("{}.img", sha256_hex(&packed)));
    assert_image(&entry, &img);

    // Corrupt the entry in place: detected, evicted, fetched again.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"rot", 100).unwrap();
    let r = fetch(&run("c")).await.unwrap();
    assert_eq!(r.cache, CacheUse::Refetched);
    assert_image(&dir.path().join("c"), &img);
    assert_image(&entry, &img);
    assert_eq!(server.requests("/rootfs.ext4.zst").len(), 2);
    let names = files_in(&cache);
    assert!(names.iter().all(|n| !n.contains(".part-")), "{names:?}");
}

#[tokio::test]
async fn concurrent_fetches_into_one_cache_download_once() {
    let server = FaultServer::start().unwrap();
    let img = sparse_image(IMG);
    server.add("/rootfs.ext4", img.clone());
    server.fail_always("/rootfs.ext4", Fault::Throttle(Duration::from_millis(2)));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mk = |name: &str| {
        let mut o = opts(&server.url("/rootfs.ext4"), &dir.path().join(name));
        o.sha256 = Some(sha256_hex(&img));
        o.cache = Some(cache.clone());
        o
    };
    let (oa, ob) = (mk("a"), mk("b"));
    let (a, b) = tokio::join!(fetch(&oa), fetch(&ob));
    let mut uses = [a.unwrap().cache, b.unwrap().cache];
    uses.sort_by_key(|u| *u == CacheUse::Hit);
    assert_eq!(uses, [CacheUse::Miss, CacheUse::Hit]);
    assert_eq!(server.requests("/rootfs.ext4").len(), 1);
    assert_image(&dir.path().join("a"), &img);
    assert_image(&dir.path().join("b"), &img);
}

#[tokio::test]
async fn ext4_images_are_checked_and_grown_never_shrunk() {
    let src = tempfile::tempdir().unwrap();
    let image = src.path().join("rootfs.ext4");
    make_ext4(&image, 24 << 20, &[("etc/hostname", b"lab\n".as_slice())]).unwrap();
    let bytes = std::fs::read(&image).unwrap();
    let server = FaultServer::start().unwrap();
    server.add("/rootfs.ext4", bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rootfs.ext4");
    let mut o = opts(&server.url("/rootfs.ext4"), &out);
    o.prepare_fs = true;
    o.grow = Grow::To(64 << 20);
    let r = fetch(&o).await.unwrap();
    assert!(r.grown && r.fsck.is_some(), "{r}");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 64 << 20);
    assert_eq!(dozlab_fetch::ext::fs_size(&out).unwrap(), 64 << 20);
    assert!(allocated(&out) < 16 << 20, "the grown image stays sparse");
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fn"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );

    let small = dir.path().join("small.ext4");
    let mut o = opts(&server.url("/rootfs.ext4"), &small);
    o.prepare_fs = true;
    o.grow = Grow::To(8 << 20);
    let e = fetch(&o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Usage);
    assert!(e.to_string().contains("refusing to shrink"), "{e}");
    assert!(!small.exists());

    // Not ext4 at all: a filesystem error, and nothing left behind.
    server.add("/random", sparse_image(IMG));
    let o = {
        let mut o = opts(&server.url("/random"), &dir.path().join("r"));
        o.prepare_fs = true;
        o
    };
    let e = fetch(&o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Filesystem);
    assert_eq!(files_in(dir.path()), ["rootfs.ext4"]);
}

#[tokio::test]
async fn a_shrink_or_a_non_ext4_image_is_refused_as_soon_as_its_head_arrives() {
    let src = tempfile::tempdir().unwrap();
    let image = src.path().join("rootfs.ext4");
    make_ext4(&image, 32 << 20, &[("big", &sparse_image(4 << 20)[..])]).unwrap();
    let packed = compress(&std::fs::read(&image).unwrap(), Compression::Zstd);
    let server = FaultServer::start().unwrap();
    // Both streams stall after their first half: only an early check can end
    // the fetch before the (long) timeout, with a usage or filesystem error
    // instead of a network one.
    server.add("/rootfs.ext4.zst", packed.clone());
    server.fail_always(
        "/rootfs.ext4.zst",
        Fault::StallAfter(packed.len() as u64 / 2),
    );
    server.add("/random", sparse_image(IMG));
    server.fail_always("/random", Fault::StallAfter(IMG as u64 / 2));
    let dir = tempfile::tempdir().unwrap();
    for (path, kind, needle) in [
        ("/rootfs.ext4.zst", ErrorKind::Usage, "refusing to shrink"),
        ("/random", ErrorKind::Filesystem, "not an ext2/3/4"),
    ] {
        let mut o = opts(&server.url(path), &dir.path().join("out"));
        o.prepare_fs = true;
        o.grow = Grow::To(16 << 20);
        o.timeout = Duration::from_secs(120);
        o.retries = 0;
        let e = fetch(&o).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{path}: {e}");
        assert!(e.to_string().contains(needle), "{path}: {e}");
        assert!(files_in(dir.path()).is_empty());
    }
}
