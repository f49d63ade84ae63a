//! The known_hosts format as Dozlab writes and reads it: one
//! `name key-type base64` line per key, where `name` is `ip`, or `[ip]:port`
//! when sshd is not on port 22 (plain names and comma lists; no hashed
//! names, no `@` markers).

use crate::error::SshError;
use russh::keys::PublicKey;
use std::path::Path;

/// A known_hosts line that is not `name key-type base64-key`.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

/// The name a host has in known_hosts: `host`, or `[host]:port` when port != 22.
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The known_hosts line for `key` at `host:port`: `name key-type base64\n`,
/// without the key's comment.
pub fn line(host: &str, port: u16, key: &PublicKey) -> Result<String, russh::keys::ssh_key::Error> {
    let mut key = key.clone();
    key.set_comment("");
    Ok(format!(
        "{} {}\n",
        host_name(host, port),
        key.to_openssh()?.trim_end()
    ))
}

/// The entries of known_hosts text: comments, blank lines and marker lines skipped.
fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#') && !l.starts_with('@'))
        .map(|(n, l)| (n + 1, l))
}

/// The keys known_hosts text lists for `name` (`ip` or `[ip]:port`).
pub fn parse(text: &str, name: &str) -> Result<Vec<PublicKey>, ParseError> {
    let mut keys = Vec::new();
    for (line, entry) in entries(text) {
        let mut fields = entry.split_whitespace();
        let (Some(hosts), Some(_kind), Some(b64)) = (fields.next(), fields.next(), fields.next())
        else {
            let why = "expected `host key-type base64-key`".into();
            return Err(ParseError { line, why });
        };
        if hosts.split(',').any(|h| h == name) {
            let key = russh::keys::parse_public_key_base64(b64).map_err(|e| ParseError {
                line,
                why: format!("bad key: {e}"),
            })?;
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The keys the known_hosts file at `path` lists for `name`; a missing file
/// is [`SshError::KnownHostsMissing`] (the VM is starting), no key for
/// `name` is [`SshError::NoHostKey`].
pub fn load(path: &Path, name: &str) -> Result<Vec<PublicKey>, SshError> {
    let bad = |source: Box<dyn std::error::Error + Send + Sync>| SshError::BadFile {
        path: path.to_path_buf(),
        source,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SshError::KnownHostsMissing(path.to_path_buf()));
        }
        Err(e) => return Err(bad(e.into())),
    };
    let keys = parse(&text, name).map_err(|e| bad(e.into()))?;
    if keys.is_empty() {
        return Err(SshError::NoHostKey {
            path: path.to_path_buf(),
            host: name.to_string(),
        });
    }
    Ok(keys)
}

/// The same keys under another name: every entry of `text` rewritten for
/// `host:port` (e.g. the VM's `172.16.0.2` line for `[127.0.0.1]:2222`, the
/// address ssh uses through a proxy). Entries without a key are dropped.
pub fn readdress(text: &str, host: &str, port: u16) -> String {
    let name = host_name(host, port);
    entries(text)
        .filter_map(|(_, entry)| {
            let (_, key) = entry.split_once(char::is_whitespace)?;
            let key = key.trim();
            (key.split_whitespace().count() >= 2).then(|| format!("{name} {key}\n"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn names_use_brackets_off_port_22() {
        assert_eq!(host_name("172.16.0.2", 22), "172.16.0.2");
        assert_eq!(host_name("172.16.0.2", 2222), "[172.16.0.2]:2222");
    }

    #[test]
    fn a_line_has_name_type_and_key_without_comment() {
        let key = crate::keys::ed25519("root@dozlab-s");
        let l = line("172.16.0.2", 22, key.public_key()).unwrap();
        assert!(l.starts_with("172.16.0.2 ssh-ed25519 AAAA"), "{l}");
        assert!(l.ends_with('\n') && !l.contains("dozlab-s"), "{l}");
        assert_eq!(l.split_whitespace().count(), 3);
        let back = parse(&l, "172.16.0.2").unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].key_data(), key.public_key().key_data());
        let off = line("172.16.0.2", 2222, key.public_key()).unwrap();
        assert!(off.starts_with("[172.16.0.2]:2222 ssh-ed25519 "), "{off}");
        assert_eq!(parse(&off, "[172.16.0.2]:2222").unwrap().len(), 1);
        assert!(parse(&off, "172.16.0.2").unwrap().is_empty());
    }

    #[test]
    fn parse_matches_plain_and_bracketed_names() {
        let text = format!(
            "# c\n172.16.0.2 ssh-ed25519 {KEY}\n[127.0.0.1]:2222,other ssh-ed25519 {KEY} x\n"
        );
        assert_eq!(parse(&text, "172.16.0.2").unwrap().len(), 1);
        assert_eq!(parse(&text, "[127.0.0.1]:2222").unwrap().len(), 1);
        assert_eq!(parse(&text, "other").unwrap().len(), 1);
        assert!(parse(&text, "127.0.0.1").unwrap().is_empty());
        let e = parse("# ok\ngarbage\n", "x").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse("h ssh-ed25519 notbase64!\n", "h").unwrap_err();
        assert!(e.to_string().contains("bad key"), "{e}");
    }

    #[test]
    fn missing_and_empty_files_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kh");
        let e = load(&path, "h").unwrap_err();
        assert!(
            matches!(e, SshError::KnownHostsMissing(_)) && e.is_starting(),
            "{e}"
        );
        std::fs::write(&path, format!("other ssh-ed25519 {KEY}\n")).unwrap();
        let e = load(&path, "h").unwrap_err();
        assert!(
            matches!(e, SshError::NoHostKey { .. }) && !e.is_starting(),
            "{e}"
        );
        std::fs::write(&path, "broken\n").unwrap();
        assert!(matches!(load(&path, "h"), Err(SshError::BadFile { .. })));
    }

    #[test]
    fn readdress_rewrites_every_entry_for_the_new_name() {
        let text = format!("172.16.3.2 ssh-ed25519 {KEY}\n\n# c\nshort\n");
        assert_eq!(
            readdress(&text, "127.0.0.1", 2223),
            format!("[127.0.0.1]:2223 ssh-ed25519 {KEY}\n")
        );
        assert_eq!(
            readdress(&text, "10.0.0.1", 22),
            format!("10.0.0.1 ssh-ed25519 {KEY}\n")
        );
    }
}
