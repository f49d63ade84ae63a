//! A session's own copy of an image already on this machine: a sparse copy
//! beside the target, `e2fsck -f -p`, grown as asked, renamed into place.
//!
//! The file-path sibling of [`crate::fetch`] for images that need no
//! download and no digest (a build's output, a file the user named), as
//! `dozlab up` boots them: holes stay holes and nothing is hashed, so a
//! mostly-empty multi-GiB image is copied in about the time its data takes.

use crate::copy::copy_sparse;
use crate::download::{check_space, dir_of};
use crate::error::FetchError;
use crate::ext::{self, Grow};
use crate::options::{CacheUse, FetchReport, Phases};
use crate::run::{persist, prepare_fs, temp_beside};
use std::fs::File;
use std::path::Path;
use std::time::Instant;

/// Copies the ext4 image `src` to `out`, checks it and grows it as `grow`
/// says. The image is refused before anything is written when it is not
/// ext2/3/4 or `grow` would shrink it; a failure leaves nothing at `out`.
pub async fn copy_local(src: &Path, out: &Path, grow: Grow) -> Result<FetchReport, FetchError> {
    let start = Instant::now();
    let open_err = |source| FetchError::Open {
        path: src.display().to_string(),
        source,
    };
    let input = File::open(src).map_err(open_err)?;
    let len = input.metadata().map_err(open_err)?.len();
    grow.target(ext::fs_size(src)?)?;
    let tmp = temp_beside(out)?;
    check_space(dir_of(out), Some(len), grow.bytes())?;
    let dst = tmp
        .file()
        .try_clone()
        .map_err(FetchError::io("cannot reopen the temporary file"))?;
    tokio::task::spawn_blocking(move || copy_sparse(&input, len, dst, false))
        .await
        .map_err(|e| FetchError::io("the copy crashed")(std::io::Error::other(e.to_string())))?
        .map_err(FetchError::io(format!("cannot copy {}", src.display())))?;
    let mut phases = Phases {
        copy: start.elapsed(),
        ..Phases::default()
    };
    let (fsck, grown) = prepare_fs(tmp.path(), grow, &mut phases).await?;
    let (image_size, allocated) = persist(tmp, out)?;
    phases.total = start.elapsed();
    Ok(FetchReport {
        out: out.to_path_buf(),
        source: src.display().to_string(),
        compression: None,
        downloaded: 0,
        image_size,
        allocated,
        stored_sha256: None,
        image_sha256: None,
        cache: CacheUse::Off,
        resumes: 0,
        restarts: 0,
        fsck,
        grown,
        manifest: None,
        phases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::make_ext4;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn copies_sparsely_checks_and_grows_to_at_least_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.ext4");
        make_ext4(&src, 16 << 20, &[("etc/hostname", b"lab\n".as_slice())]).unwrap();
        let out = dir.path().join("session/rootfs.ext4");
        let r = copy_local(&src, &out, Grow::AtLeast(32 << 20))
            .await
            .unwrap();
        assert_eq!(r.image_size, 32 << 20);
        assert!(r.grown);
        assert_eq!(ext::fs_size(&out).unwrap(), 32 << 20);
        assert!(std::fs::metadata(&out).unwrap().blocks() * 512 < 8 << 20);
        assert_eq!(
            ext::fs_size(&src).unwrap(),
            16 << 20,
            "the source is untouched"
        );
        // A larger image keeps its size with AtLeast, and is refused with To.
        let kept = copy_local(&src, &out, Grow::AtLeast(8 << 20))
            .await
            .unwrap();
        assert_eq!((kept.image_size, kept.grown), (16 << 20, false));
        let e = copy_local(&src, &out, Grow::To(8 << 20)).await.unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Usage, "{e}");
        assert_eq!(ext::fs_size(&out).unwrap(), 16 << 20, "left as it was");
        let names: Vec<_> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["rootfs.ext4"], "no temporary file is left");
    }

    #[tokio::test]
    async fn a_file_that_is_not_ext4_is_refused_before_copying() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("junk");
        let mut f = File::create(&src).unwrap();
        f.write_all(b"not a filesystem").unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(b"x").unwrap();
        let out = dir.path().join("out/rootfs.ext4");
        let e = copy_local(&src, &out, Grow::Keep).await.unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Filesystem, "{e}");
        assert!(!out.exists());
    }
}
