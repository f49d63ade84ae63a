//! Safe copies of untrusted lab sources into a fresh directory: a tar
//! archive (already decompressed) or a directory tree (a checkout, or a
//! Kubernetes ConfigMap mount whose files are symlinks into its hidden
//! `..data` directory).
//!
//! Only regular files and directories come through. An archive entry with
//! an absolute path, a `..` component, a symlink, a hard link or a device
//! is refused (a lab needs none, and each could write or read outside the
//! destination); a symlink in a source directory is followed only when it
//! resolves inside that directory. Files keep their permission bits (no
//! set-id bits) and are made readable by all, directories are 0755 (the
//! terminal that serves the lab may run as another user than the fetch,
//! and under any umask); owners are not kept. The total size and the number of
//! entries are limited, and a name given twice is an error.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Default limit on a lab's unpacked size.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// Limit on the number of files and directories in a lab.
pub const MAX_ENTRIES: usize = 10_000;

/// How much a lab may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of file contents, in total.
    pub max_bytes: u64,
    /// Files and directories.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: MAX_ENTRIES,
        }
    }
}

/// Why a source was refused or could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry would land outside the destination.
    #[error("{entry:?}: {why}; a lab archive holds relative paths inside the lab only")]
    UnsafePath {
        /// The entry's name as written.
        entry: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An entry that is not a regular file or a directory.
    #[error(
        "{entry:?} is a {kind}: a lab may hold only regular files and directories (replace it by the file it stands for)"
    )]
    NotAFile {
        /// The entry's name.
        entry: String,
        /// What it is.
        kind: String,
    },
    /// A symlink in a source directory that leads outside it.
    #[error("{entry:?} is a symlink leading outside {root}: copy the file into the lab instead")]
    EscapingLink {
        /// The entry.
        entry: String,
        /// The source directory.
        root: String,
    },
    /// The same name twice.
    #[error("{0:?} appears twice in the archive")]
    Duplicate(String),
    /// Over [`Limits::max_bytes`].
    #[error(
        "the lab is larger than {} (at {entry:?}): labs are small; raise --max-size if this one really is not",
        dozlab_core::size::human(*.limit)
    )]
    TooLarge {
        /// The limit.
        limit: u64,
        /// The entry that crossed it.
        entry: String,
    },
    /// Over [`Limits::max_entries`].
    #[error("the lab has more than {0} files and directories")]
    TooMany(usize),
    /// The archive is not a tar archive or is truncated.
    #[error("not a readable tar archive")]
    Corrupt(#[source] std::io::Error),
    /// Reading or writing failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> UnpackError {
    move |source| UnpackError::Io { what, source }
}

/// Counts what was written against the [`Limits`].
struct Budget {
    limits: Limits,
    bytes: u64,
    entries: usize,
}

impl Budget {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            bytes: 0,
            entries: 0,
        }
    }

    fn take(&mut self, entry: &str, bytes: u64) -> Result<(), UnpackError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(UnpackError::TooMany(self.limits.max_entries));
        }
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.limits.max_bytes {
            return Err(UnpackError::TooLarge {
                limit: self.limits.max_bytes,
                entry: entry.to_string(),
            });
        }
        Ok(())
    }
}

/// The relative path an archive entry names, checked: no root, no `..`.
/// None for the archive's top itself (`./`).
pub fn safe_relative(name: &str) -> Result<Option<PathBuf>, UnpackError> {
    let bad = |why| UnpackError::UnsafePath {
        entry: name.to_string(),
        why,
    };
    let mut out = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("it has a `..` component")),
            Component::RootDir | Component::Prefix(_) => return Err(bad("it is absolute")),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Unpacks the tar archive `archive` into the existing, empty directory
/// `dest`. Returns the number of files written.
pub fn unpack_tar(archive: impl Read, dest: &Path, limits: Limits) -> Result<usize, UnpackError> {
    use tar::EntryType;
    let mut budget = Budget::new(limits);
    let mut ar = tar::Archive::new(archive);
    let mut files = 0;
    for entry in ar.entries().map_err(UnpackError::Corrupt)? {
        let mut entry = entry.map_err(UnpackError::Corrupt)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let rel = safe_relative(&name)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match kind {
            EntryType::Directory => {
                let Some(rel) = rel else { continue };
                budget.take(&name, 0)?;
                make_dir(dest, &rel)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let Some(rel) = rel else {
                    return Err(UnpackError::UnsafePath {
                        entry: name,
                        why: "a file cannot be the archive's top directory",
                    });
                };
                budget.take(&name, entry.size())?;
                if let Some(parent) = rel.parent() {
                    make_dir(dest, parent)?;
                }
                write_file(&mut entry, &dest.join(&rel), &name, mode)?;
                files += 1;
            }
            other => {
                return Err(UnpackError::NotAFile {
                    entry: name,
                    kind: kind_name(other),
                });
            }
        }
    }
    Ok(files)
}

fn kind_name(t: tar::EntryType) -> String {
    use tar::EntryType;
    match t {
        EntryType::Symlink => "symlink".into(),
        EntryType::Link => "hard link".into(),
        EntryType::Char => "character device".into(),
        EntryType::Block => "block device".into(),
        EntryType::Fifo => "named pipe".into(),
        other => format!("tar entry of type {:?}", other.as_byte() as char),
    }
}

/// Mode of every directory of a fetched lab.
pub const DIR_MODE: u32 = 0o755;

/// The mode a lab file gets: its permission bits, readable by all.
pub fn file_mode(mode: u32) -> u32 {
    (mode & 0o777) | 0o444
}

/// Creates `dest/rel` and its missing parents, each [`DIR_MODE`] whatever
/// the umask (an existing file on the way is an error from the OS).
fn make_dir(dest: &Path, rel: &Path) -> Result<(), UnpackError> {
    use std::os::unix::fs::PermissionsExt;
    let mut path = dest.to_path_buf();
    for part in rel.components() {
        path.push(part);
        if path.is_dir() {
            continue;
        }
        std::fs::create_dir(&path)
            .and_then(|()| {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(DIR_MODE))
            })
            .map_err(io(format!("cannot create {}", path.display())))?;
    }
    Ok(())
}

/// Writes `from` into the new file `path` (never over an existing one).
fn write_file(from: &mut impl Read, path: &Path, name: &str, mode: u32) -> Result<(), UnpackError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(UnpackError::Duplicate(name.to_string()));
        }
        Err(e) => return Err(io(format!("cannot create {}", path.display()))(e)),
    };
    std::io::copy(from, &mut f).map_err(UnpackError::Corrupt)?;
    f.set_permissions(std::fs::Permissions::from_mode(file_mode(mode)))
        .map_err(io(format!("cannot set the mode of {}", path.display())))
}

/// Names a directory source skips: a ConfigMap mount's own `..data` and
/// `..<timestamp>` entries (its files are symlinks into them).
pub fn is_hidden_mount_entry(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b"..")
}

/// Copies the directory `src` into the existing, empty directory `dest`,
/// following symlinks that stay inside `src`. Returns the number of files.
pub fn copy_dir(src: &Path, dest: &Path, limits: Limits) -> Result<usize, UnpackError> {
    let root = src
        .canonicalize()
        .map_err(io(format!("cannot read {}", src.display())))?;
    let mut budget = Budget::new(limits);
    let mut files = 0;
    copy_tree(&root, src, Path::new(""), dest, &mut budget, &mut files)?;
    Ok(files)
}

fn copy_tree(
    root: &Path,
    dir: &Path,
    rel: &Path,
    dest: &Path,
    budget: &mut Budget,
    files: &mut usize,
) -> Result<(), UnpackError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .map_err(io(format!("cannot read {}", dir.display())))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if is_hidden_mount_entry(&e.file_name()) {
            continue;
        }
        let path = e.path();
        let rel = rel.join(e.file_name());
        let shown = rel.display().to_string();
        let real = path
            .canonicalize()
            .map_err(io(format!("cannot read {}", path.display())))?;
        if !real.starts_with(root) {
            return Err(UnpackError::EscapingLink {
                entry: shown,
                root: root.display().to_string(),
            });
        }
        let meta =
            std::fs::metadata(&real).map_err(io(format!("cannot read {}", path.display())))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            budget.take(&shown, 0)?;
            make_dir(dest, &rel)?;
            copy_tree(root, &path, &rel, dest, budget, files)?;
        } else if ft.is_file() {
            budget.take(&shown, meta.len())?;
            let mut from = std::fs::File::open(&real)
                .map_err(io(format!("cannot read {}", path.display())))?;
            let mode = meta.permissions().mode() & 0o777;
            write_file(&mut from, &dest.join(&rel), &shown, mode)?;
            *files += 1;
        } else {
            let kind = if ft.is_fifo() {
                "named pipe"
            } else if ft.is_socket() {
                "socket"
            } else {
                "device"
            };
            return Err(UnpackError::NotAFile {
                entry: shown,
                kind: kind.into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A tar archive of raw entries: (name, type, body, mode).
    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, body, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(body.len() as u64);
            h.set_mode(*mode);
            // Written raw so hostile names (absolute, `..`) get in as they are.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").unwrap();
            }
            h.set_cksum();
            b.append(&h, *body).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn files_and_directories_come_through_with_their_modes() {
        use tar::EntryType::{Directory, Regular};
        let t = tar_of(&[
            ("./", Directory, b"", 0o755),
            ("lab/", Directory, b"", 0o700),
            ("lab/index.json", Regular, b"{}", 0o600),
            ("lab/assets/bin/run.sh", Regular, b"echo", 0o4755),
            ("lab/bin/tool", Regular, b"x", 0o700),
        ]);
        let d = tempfile::tempdir().unwrap();
        assert_eq!(unpack_tar(&t[..], d.path(), Limits::default()).unwrap(), 3);
        assert_eq!(
            std::fs::read(d.path().join("lab/index.json")).unwrap(),
            b"{}"
        );
        assert_eq!(mode_of(&d.path().join("lab/assets/bin/run.sh")), 0o755);
        // Readable by all (the terminal may be another user), set-id dropped.
        assert_eq!(mode_of(&d.path().join("lab/index.json")), 0o644);
        assert_eq!(mode_of(&d.path().join("lab/bin/tool")), 0o744);
        for dir in ["lab", "lab/assets", "lab/assets/bin", "lab/bin"] {
            assert_eq!(mode_of(&d.path().join(dir)), 0o755, "{dir}");
        }
    }

    #[test]
    fn hostile_entries_are_refused() {
        use tar::EntryType::{Block, Char, Fifo, Link, Regular, Symlink};
        let cases: &[(&str, tar::EntryType, &str)] = &[
            ("/etc/evil", Regular, "absolute"),
            ("../evil", Regular, "`..`"),
            ("lab/../../evil", Regular, "`..`"),
            ("lab/link", Symlink, "symlink"),
            ("lab/hard", Link, "hard link"),
            ("lab/tty", Char, "character device"),
            ("lab/sda", Block, "block device"),
            ("lab/pipe", Fifo, "named pipe"),
        ];
        for (name, kind, why) in cases {
            let d = tempfile::tempdir().unwrap();
            let inner = d.path().join("in");
            std::fs::create_dir(&inner).unwrap();
            let e = unpack_tar(
                &tar_of(&[(name, *kind, b"x", 0o644)])[..],
                &inner,
                Limits::default(),
            )
            .unwrap_err();
            assert!(e.to_string().contains(why), "{name}: {e}");
            assert!(!d.path().join("evil").exists() && !Path::new("/etc/evil").exists());
        }
    }

    #[test]
    fn size_count_and_duplicates_are_limited() {
        use tar::EntryType::Regular;
        let big = vec![b'a'; 2000];
        let t = tar_of(&[("a", Regular, &big, 0o644)]);
        let d = tempfile::tempdir().unwrap();
        let small = Limits {
            max_bytes: 1000,
            max_entries: 10,
        };
        let e = unpack_tar(&t[..], d.path(), small).unwrap_err();
        assert!(matches!(e, UnpackError::TooLarge { .. }), "{e}");
        let t = tar_of(&[("a", Regular, b"1", 0o644), ("b", Regular, b"2", 0o644)]);
        let d = tempfile::tempdir().unwrap();
        let one = Limits {
            max_bytes: 1000,
            max_entries: 1,
        };
        assert!(matches!(
            unpack_tar(&t[..], d.path(), one),
            Err(UnpackError::TooMany(1))
        ));
        let t = tar_of(&[("a", Regular, b"1", 0o644), ("./a", Regular, b"2", 0o644)]);
        let d = tempfile::tempdir().unwrap();
        let e = unpack_tar(&t[..], d.path(), Limits::default()).unwrap_err();
        assert!(matches!(e, UnpackError::Duplicate(_)), "{e}");
        assert_eq!(std::fs::read(d.path().join("a")).unwrap(), b"1");
        let e = unpack_tar(
            &b"not a tar archive at all"[..],
            d.path(),
            Limits::default(),
        );
        assert!(e.is_err());
    }

    #[test]
    fn a_configmap_like_directory_is_copied_through_its_links() {
        let src = tempfile::tempdir().unwrap();
        let data = src.path().join("..2026_12_02_08_00_00.123");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("index.json"), "{}").unwrap();
        std::os::unix::fs::symlink("..2026_12_02_08_00_00.123", src.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/index.json", src.path().join("index.json")).unwrap();
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            copy_dir(src.path(), d.path(), Limits::default()).unwrap(),
            1
        );
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("index.json")]);
        // A link out of the source directory is refused.
        std::os::unix::fs::symlink("/etc/hostname", src.path().join("host")).unwrap();
        let d = tempfile::tempdir().unwrap();
        let e = copy_dir(src.path(), d.path(), Limits::default()).unwrap_err();
        assert!(matches!(e, UnpackError::EscapingLink { .. }), "{e}");
    }
}
