//! Puts the session's SSH identity into the ext4 image OFFLINE, before boot:
//! `/root/.ssh/authorized_keys` (dir 0700, file 0600) and
//! `/etc/ssh/ssh_host_ed25519_key` (0600) + `.pub` (0644), all owned by root.
//!
//! No Rust crate writes ext4 (`ext4-view` is read-only), so the writes go
//! through `debugfs -w` from e2fsprogs, which edits the image file directly:
//! no mount, no loop device. `debugfs` reports per-command errors only as
//! text, so afterwards every file is read back with `ext4-view` and checked
//! (content, mode, owner).

use crate::identity::Identity;
use ext4_view::Ext4;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why the identity could not be put into the image.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("cannot run {tool} (install e2fsprogs)")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed on {image}: {stderr}")]
    Tool {
        tool: &'static str,
        image: PathBuf,
        stderr: String,
    },
    #[error("the image has no /etc/ssh: openssh-server is not installed in {0}")]
    NoSshd(PathBuf),
    #[error("after writing, {path} in the image is wrong: {why}")]
    Verify { path: String, why: String },
    #[error("cannot prepare the key files")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("cannot read the image back")]
    Ext4(#[from] ext4_view::Ext4Error),
}

/// One file to place in the image.
struct Placement {
    inner: &'static str,
    data: Vec<u8>,
    mode: u16,
}

/// Writes the identity into `image`, using `scratch` for short-lived files.
pub fn inject(image: &Path, id: &Identity, scratch: &Path) -> Result<(), InjectError> {
    replay_journal_if_needed(image)?;
    let fs4 = Ext4::load_from_path(image)?;
    if !fs4.exists("/etc/ssh")? {
        return Err(InjectError::NoSshd(image.to_path_buf()));
    }
    let files = placements(id)?;
    let mut present = Vec::new();
    for p in ["/root", "/root/.ssh"]
        .into_iter()
        .chain(files.iter().map(|f| f.inner))
    {
        if fs4.exists(p)? {
            present.push(p);
        }
    }
    drop(fs4);
    fs::create_dir_all(scratch)?;
    let dir = tempdir_in(scratch)?;
    let script = debugfs_script(&files, &dir, &present)?;
    let result = run_debugfs(image, &script);
    let _ = fs::remove_dir_all(&dir);
    result?;
    verify(image, &files)
}

fn placements(id: &Identity) -> Result<Vec<Placement>, InjectError> {
    let authorized = Identity::public_openssh(id.client.public_key())? + "\n";
    let host_pub = Identity::public_openssh(id.host.public_key())? + "\n";
    Ok(vec![
        Placement {
            inner: "/root/.ssh/authorized_keys",
            data: authorized.into_bytes(),
            mode: 0o600,
        },
        Placement {
            inner: "/etc/ssh/ssh_host_ed25519_key",
            data: Identity::private_openssh(&id.host)?.into_bytes(),
            mode: 0o600,
        },
        Placement {
            inner: "/etc/ssh/ssh_host_ed25519_key.pub",
            data: host_pub.into_bytes(),
            mode: 0o644,
        },
    ])
}

fn tempdir_in(scratch: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = scratch.join(format!(".inject-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// The debugfs commands. `present` lists the paths that already exist:
/// debugfs 1.47's `mkdir` of an existing directory leaves an orphan inode
/// behind, so only absent directories are made and only present files removed.
fn debugfs_script(files: &[Placement], dir: &Path, present: &[&str]) -> std::io::Result<String> {
    let mut s = String::new();
    for d in ["/root", "/root/.ssh"] {
        if !present.contains(&d) {
            s += &format!("mkdir {d}\n");
        }
        s += &owner_mode(d, 0o40700);
    }
    for (i, f) in files.iter().enumerate() {
        let host = dir.join(format!("f{i}"));
        let mut out = fs::File::create(&host)?;
        out.write_all(&f.data)?;
        if present.contains(&f.inner) {
            s += &format!("rm {}\n", f.inner);
        }
        s += &format!("write \"{}\" {}\n", host.display(), f.inner);
        s += &owner_mode(f.inner, 0o100000 | u32::from(f.mode));
    }
    Ok(s)
}

fn owner_mode(path: &str, mode: u32) -> String {
    format!(
        "set_inode_field {path} mode 0{mode:o}\nset_inode_field {path} uid 0\nset_inode_field {path} gid 0\n"
    )
}

fn run_debugfs(image: &Path, script: &str) -> Result<(), InjectError> {
    let mut child = Command::new("debugfs")
        .args(["-w", "-f", "-"])
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| InjectError::Spawn {
            tool: "debugfs",
            source,
        })?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(InjectError::Tool {
            tool: "debugfs",
            image: image.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The image's journal has unreplayed transactions (`needs_recovery`): an
/// offline write would be overwritten by the replay at boot, so replay first.
fn replay_journal_if_needed(image: &Path) -> Result<(), InjectError> {
    let f = fs::File::open(image)?;
    let mut incompat = [0u8; 4];
    f.read_exact_at(&mut incompat, 1024 + 0x60)?;
    if u32::from_le_bytes(incompat) & 0x4 == 0 {
        return Ok(());
    }
    tracing::warn!(
        "{} needs journal recovery; running e2fsck -p",
        image.display()
    );
    let out = Command::new("e2fsck")
        .arg("-p")
        .arg(image)
        .output()
        .map_err(|source| InjectError::Spawn {
            tool: "e2fsck",
            source,
        })?;
    // 0 = clean, 1 = errors corrected.
    match out.status.code() {
        Some(0 | 1) => Ok(()),
        _ => Err(InjectError::Tool {
            tool: "e2fsck",
            image: image.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        }),
    }
}

fn verify(image: &Path, files: &[Placement]) -> Result<(), InjectError> {
    let fs4 = Ext4::load_from_path(image)?;
    let bad = |path: &str, why: String| InjectError::Verify {
        path: path.to_string(),
        why,
    };
    let dir = fs4.metadata("/root/.ssh")?;
    if !dir.is_dir() || dir.mode() & 0o7777 != 0o700 || dir.uid() != 0 {
        return Err(bad("/root/.ssh", format!("mode {:o}", dir.mode())));
    }
    for f in files {
        let data = fs4.read(f.inner).map_err(|e| bad(f.inner, e.to_string()))?;
        if data != f.data {
            return Err(bad(f.inner, "content differs".into()));
        }
        let m = fs4.metadata(f.inner)?;
        if m.mode() & 0o7777 != f.mode || m.uid() != 0 || m.gid() != 0 {
            let why = format!("mode {:o} uid {} gid {}", m.mode(), m.uid(), m.gid());
            return Err(bad(f.inner, why));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootfiles::tests::mkfs;

    #[test]
    fn injects_keys_twice_and_leaves_a_clean_fs() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        fs::create_dir_all(tree.join("etc/ssh")).unwrap();
        fs::create_dir_all(tree.join("root")).unwrap();
        let img = t.path().join("rootfs.ext4");
        mkfs(&tree, &img);

        for _ in 0..2 {
            let id = Identity::generate("t");
            inject(&img, &id, &t.path().join("scratch")).unwrap();
            let fs4 = Ext4::load_from_path(&img).unwrap();
            let ak = fs4.read_to_string("/root/.ssh/authorized_keys").unwrap();
            assert_eq!(ak.lines().count(), 1, "replaced, not appended");
            assert!(ak.starts_with("ssh-ed25519 "));
            let hk = fs4.read_to_string("/etc/ssh/ssh_host_ed25519_key").unwrap();
            let back = russh::keys::PrivateKey::from_openssh(hk).unwrap();
            assert_eq!(back.public_key(), id.host.public_key());
        }
        let fsck = Command::new("e2fsck")
            .arg("-fn")
            .arg(&img)
            .output()
            .unwrap();
        assert!(fsck.status.success(), "{:?}", fsck);
        assert!(
            !t.path()
                .join("scratch")
                .join(format!(".inject-{}", std::process::id()))
                .exists()
        );
    }

    #[test]
    fn creates_root_home_and_refuses_images_without_sshd() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        fs::create_dir_all(tree.join("etc/ssh")).unwrap();
        let img = t.path().join("a.ext4");
        mkfs(&tree, &img);
        inject(&img, &Identity::generate("t"), t.path()).unwrap();
        let m = Ext4::load_from_path(&img)
            .unwrap()
            .metadata("/root")
            .unwrap();
        assert_eq!(m.mode() & 0o7777, 0o700);

        let bare = t.path().join("bare");
        fs::create_dir_all(&bare).unwrap();
        let img2 = t.path().join("b.ext4");
        mkfs(&bare, &img2);
        let e = inject(&img2, &Identity::generate("t"), t.path()).unwrap_err();
        assert!(matches!(e, InjectError::NoSshd(_)), "{e}");
    }
}
