//! Asset rules (`details.assets.host01[]`): a file or glob under `assets/`
//! (`*` within one directory, `**` across directories), the directory in the
//! VM it goes to (`~` is the login user's home) and an optional `chmod`;
//! expanded into the list of files to copy with their modes.
//!
//! A matched file keeps its path relative to the glob's fixed prefix:
//! `scripts/**` puts `assets/scripts/a/b.sh` at `TARGET/a/b.sh`, a plain
//! `config/app.conf` goes to `TARGET/app.conf`.

use serde::Serialize;
use std::path::{Path, PathBuf};

/// The directory, inside a lab, assets are taken from.
pub const ASSETS_DIR: &str = "assets";

/// One `details.assets.host01[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssetRule {
    /// Path or glob relative to `assets/`.
    pub file: String,
    /// Directory in the VM (absolute, or `~`, `~/...`).
    pub target: String,
    /// Mode change applied to each copied file.
    pub chmod: Option<Chmod>,
    /// Line in `index.json`, for messages.
    #[serde(skip)]
    pub line: Option<usize>,
}

/// A file to copy into the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssetFile {
    /// The file on this machine.
    pub source: PathBuf,
    /// Where it goes in the VM: absolute, or relative to the login home.
    pub dest: String,
    /// Its mode there.
    pub mode: u32,
}

/// Why a `chmod` or a glob is not usable.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// Not an octal mode nor a symbolic mode.
    #[error("chmod {0:?} is neither an octal mode (0755) nor a symbolic one (+x, u+rwx,go-w)")]
    BadChmod(String),
    /// The glob does not compile.
    #[error("bad glob {pattern:?}: {reason}")]
    BadGlob {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The glob matches no file under `assets/`.
    #[error("{0:?} matches no file under assets/")]
    NoMatch(String),
    /// Reading `assets/` failed.
    #[error("cannot read {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A mode change: an absolute octal mode or symbolic clauses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Chmod {
    text: String,
    op: ChmodOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ChmodOp {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    who: u32,
    op: char,
    perms: u32,
}

impl From<Chmod> for String {
    fn from(c: Chmod) -> String {
        c.text
    }
}

impl Chmod {
    /// Parses `0755`, `755`, `+x`, `u+rwx,go-w`, `a=r`.
    pub fn parse(s: &str) -> Result<Chmod, AssetError> {
        let bad = || AssetError::BadChmod(s.to_string());
        let t = s.trim();
        let op = if !t.is_empty() && t.chars().all(|c| c.is_digit(8)) {
            let mode = u32::from_str_radix(t, 8).map_err(|_| bad())?;
            if mode > 0o7777 {
                return Err(bad());
            }
            ChmodOp::Octal(mode)
        } else {
            ChmodOp::Symbolic(
                t.split(',')
                    .map(|c| clause(c).ok_or_else(bad))
                    .collect::<Result<_, _>>()?,
            )
        };
        Ok(Chmod {
            text: s.to_string(),
            op,
        })
    }

    /// The mode after applying this change to `mode` (umask 022 for
    /// clauses without a "who", like chmod(1)).
    pub fn apply(&self, mode: u32) -> u32 {
        match &self.op {
            ChmodOp::Octal(m) => *m,
            ChmodOp::Symbolic(clauses) => clauses.iter().fold(mode & 0o7777, |m, c| {
                let (who, perms) = if c.who == 0 {
                    (0o777, c.perms & !0o022)
                } else {
                    (c.who, c.perms & c.who)
                };
                match c.op {
                    '+' => m | perms,
                    '-' => m & !perms,
                    _ => (m & !who) | perms,
                }
            }),
        }
    }
}

fn clause(c: &str) -> Option<Clause> {
    let at = c.find(['+', '-', '='])?;
    let (who_s, rest) = c.split_at(at);
    let mut who = 0;
    for ch in who_s.chars() {
        who |= match ch {
            'u' => 0o700,
            'g' => 0o070,
            'o' => 0o007,
            'a' => 0o777,
            _ => return None,
        };
    }
    let op = rest.chars().next()?;
    let mut perms = 0;
    for ch in rest[1..].chars() {
        perms |= match ch {
            'r' => 0o444,
            'w' => 0o222,
            'x' => 0o111,
            _ => return None,
        };
    }
    Some(Clause { who, op, perms })
}

impl AssetRule {
    /// The files this rule copies, sorted by path.
    pub fn expand(&self, lab_dir: &Path) -> Result<Vec<AssetFile>, AssetError> {
        let root = lab_dir.join(ASSETS_DIR);
        let glob = globset::GlobBuilder::new(&self.file)
            .literal_separator(true)
            .build()
            .map_err(|e| AssetError::BadGlob {
                pattern: self.file.clone(),
                reason: e.kind().to_string(),
            })?
            .compile_matcher();
        let prefix = fixed_prefix(&self.file);
        let mut files = Vec::new();
        walk(&root, &root, &mut files)?;
        let mut out = Vec::new();
        for rel in files {
            if !glob.is_match(&rel) {
                continue;
            }
            let source = root.join(&rel);
            let meta = std::fs::metadata(&source).map_err(|e| AssetError::Io {
                path: source.clone(),
                source: e,
            })?;
            let local_mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
            let mode = self
                .chmod
                .as_ref()
                .map_or(local_mode, |c| c.apply(local_mode));
            let inside = rel_after_prefix(&rel, &prefix, &self.file);
            out.push(AssetFile {
                source,
                dest: join_target(&self.target, &inside),
                mode,
            });
        }
        if out.is_empty() {
            return Err(AssetError::NoMatch(self.file.clone()));
        }
        Ok(out)
    }
}

/// The directories of a pattern before its first wildcard component.
fn fixed_prefix(pattern: &str) -> String {
    let parts: Vec<&str> = pattern.split('/').collect();
    let fixed: Vec<&str> = parts
        .iter()
        .take(parts.len().saturating_sub(1))
        .take_while(|p| !p.contains(['*', '?', '[', '{']))
        .copied()
        .collect();
    fixed.join("/")
}

fn rel_after_prefix(rel: &str, prefix: &str, pattern: &str) -> String {
    if !pattern.contains(['*', '?', '[', '{']) {
        // A plain file goes into the target by its name.
        return rel.rsplit('/').next().unwrap_or(rel).to_string();
    }
    if prefix.is_empty() {
        rel.to_string()
    } else {
        rel.strip_prefix(prefix)
            .map(|r| r.trim_start_matches('/').to_string())
            .unwrap_or_else(|| rel.to_string())
    }
}

/// `target` + `/` + `inside`, with `~` made relative to the login home
/// (SFTP's start directory).
fn join_target(target: &str, inside: &str) -> String {
    let t = target.trim_end_matches('/');
    let base = match t {
        "~" => "",
        _ => t.strip_prefix("~/").unwrap_or(t),
    };
    if base.is_empty() {
        inside.to_string()
    } else if base == "/" || t.is_empty() {
        format!("/{inside}")
    } else {
        format!("{base}/{inside}")
    }
}

/// Every regular file under `dir`, as paths relative to `root` with `/`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), AssetError> {
    let io = |path: &Path, source| AssetError::Io {
        path: path.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == root => return Ok(()),
        Err(e) => return Err(io(dir, e)),
    };
    let mut entries: Vec<_> = entries.collect::<Result<_, _>>().map_err(|e| io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let ft = std::fs::metadata(&path).map_err(|err| io(&path, err))?;
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if ft.is_file() {
            let rel = path.strip_prefix(root).expect("under root");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rule(file: &str, target: &str, chmod: Option<&str>) -> AssetRule {
        AssetRule {
            file: file.into(),
            target: target.into(),
            chmod: chmod.map(|c| Chmod::parse(c).unwrap()),
            line: None,
        }
    }

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("assets");
        std::fs::create_dir_all(a.join("scripts/deep")).unwrap();
        for f in [
            "top.txt",
            "scripts/a.sh",
            "scripts/deep/b.sh",
            "scripts/readme.md",
        ] {
            std::fs::write(a.join(f), f).unwrap();
            std::fs::set_permissions(a.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        d
    }

    fn dests(files: &[AssetFile]) -> Vec<(String, u32)> {
        files.iter().map(|f| (f.dest.clone(), f.mode)).collect()
    }

    #[test]
    fn star_stays_in_one_directory_and_double_star_recurses() {
        let d = tree();
        let one = rule("scripts/*.sh", "/usr/local/bin", Some("+x"))
            .expand(d.path())
            .unwrap();
        assert_eq!(dests(&one), vec![("/usr/local/bin/a.sh".into(), 0o755)]);
        let all = rule("scripts/**/*.sh", "~/bin", Some("0700"))
            .expand(d.path())
            .unwrap();
        assert_eq!(
            dests(&all),
            vec![("bin/a.sh".into(), 0o700), ("bin/deep/b.sh".into(), 0o700)]
        );
        let root = rule("*", "~", None).expand(d.path()).unwrap();
        assert_eq!(dests(&root), vec![("top.txt".into(), 0o644)]);
        let plain = rule("scripts/deep/b.sh", "/opt/x/", None)
            .expand(d.path())
            .unwrap();
        assert_eq!(dests(&plain), vec![("/opt/x/b.sh".into(), 0o644)]);
    }

    #[test]
    fn a_glob_that_matches_nothing_is_an_error() {
        let d = tree();
        let e = rule("*.png", "/tmp", None).expand(d.path()).unwrap_err();
        assert!(matches!(e, AssetError::NoMatch(_)), "{e}");
        assert!(e.to_string().contains("matches no file"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            rule("*", "/tmp", None).expand(empty.path()),
            Err(AssetError::NoMatch(_))
        ));
    }

    #[test]
    fn chmod_octal_and_symbolic() {
        assert_eq!(Chmod::parse("755").unwrap().apply(0o600), 0o755);
        assert_eq!(Chmod::parse("+x").unwrap().apply(0o644), 0o755);
        assert_eq!(Chmod::parse("u+x").unwrap().apply(0o644), 0o744);
        assert_eq!(Chmod::parse("go-rwx").unwrap().apply(0o755), 0o700);
        assert_eq!(Chmod::parse("a=r,u+w").unwrap().apply(0o777), 0o644);
        for bad in ["", "+z", "99", "x+", "rwx", "07777777"] {
            assert!(Chmod::parse(bad).is_err(), "{bad:?}");
        }
    }
}
