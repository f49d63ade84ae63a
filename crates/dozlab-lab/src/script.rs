//! Lab scripts (`background`, `foreground`, `verify`, solutions): how one
//! runs in the VM, and the local checks `lab validate` makes (a shebang, or
//! valid `bash` syntax; no CRLF line ends).

use crate::problem::Problem;
use std::path::Path;
use std::process::Command;

/// The interpreter line of a script, if it has one.
pub fn shebang(text: &str) -> Option<&str> {
    text.strip_prefix("#!")
        .map(|r| r.lines().next().unwrap_or("").trim())
}

/// True when the script runs under bash: no shebang, or one naming bash or sh.
pub fn runs_under_bash(text: &str) -> bool {
    match shebang(text) {
        None => true,
        Some(line) => {
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or("");
            let prog = if first.ends_with("/env") {
                words.find(|w| !w.starts_with('-')).unwrap_or("")
            } else {
                first
            };
            matches!(prog.rsplit('/').next(), Some("bash" | "sh"))
        }
    }
}

/// The shell command that runs `text` in the VM under `timeout` seconds:
/// the script is written to a private temporary file from stdin, made
/// executable and run (with `bash` when it has no shebang); the whole
/// process group is killed when the time is up (`timeout -k`), and the
/// file is removed. Exit 124 means it timed out.
pub fn remote_command(text: &str, timeout_secs: u64) -> String {
    let run = if shebang(text).is_some() {
        "\"$f\""
    } else {
        "bash \"$f\""
    };
    format!(
        "f=$(mktemp /tmp/dozlab-lab.XXXXXX) && cat > \"$f\" && chmod 700 \"$f\" && \
         {{ cd ~ 2>/dev/null; timeout -k 2 {timeout_secs} {run} </dev/null; rc=$?; rm -f \"$f\"; exit $rc; }}"
    )
}

/// Local checks of one script: problems name `rel` and the line.
pub fn check(lab_dir: &Path, rel: &str, text: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    if text.contains("\r\n") {
        let line = text[..text.find("\r\n").unwrap_or(0)].matches('\n').count() + 1;
        out.push(
            Problem::error(rel, "has Windows line ends (CRLF): bash reads `\\r` as part of each command; convert it to LF")
                .at(Some(line)),
        );
    }
    if text.trim().is_empty() {
        out.push(Problem::warning(rel, "is empty"));
        return out;
    }
    if shebang(text).is_some_and(|s| s.is_empty()) {
        out.push(
            Problem::error(
                rel,
                "has an empty shebang line `#!`: name the interpreter (`#!/bin/bash`)",
            )
            .at(Some(1)),
        );
    }
    if runs_under_bash(text) {
        out.extend(bash_syntax(lab_dir, rel));
    }
    out
}

/// `bash -n`: syntax errors with their lines.
fn bash_syntax(lab_dir: &Path, rel: &str) -> Vec<Problem> {
    let out = match Command::new("bash")
        .arg("-n")
        .arg(rel)
        .current_dir(lab_dir)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            return vec![Problem::warning(
                rel,
                format!("cannot check the syntax (bash: {e})"),
            )];
        }
    };
    if out.status.success() {
        return Vec::new();
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    for l in stderr.lines() {
        // "FILE: line N: message"
        let rest = l.strip_prefix(rel).and_then(|r| r.strip_prefix(": line "));
        let (line, msg) = match rest.and_then(|r| r.split_once(": ")) {
            Some((n, m)) => (n.parse().ok(), m.to_string()),
            None => (None, l.to_string()),
        };
        problems.push(Problem::error(rel, format!("bash syntax: {msg}")).at(line));
    }
    if problems.is_empty() {
        problems.push(Problem::error(rel, "bash -n rejects it"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebangs() {
        assert!(runs_under_bash("echo hi\n"));
        assert!(runs_under_bash("#!/bin/bash\necho\n"));
        assert!(runs_under_bash("#!/usr/bin/env bash\n"));
        assert!(runs_under_bash("#!/bin/sh -e\n"));
        assert!(!runs_under_bash("#!/usr/bin/env python3\n"));
        assert_eq!(
            shebang("#!/usr/bin/python3 -u\nx"),
            Some("/usr/bin/python3 -u")
        );
    }

    #[test]
    fn bash_syntax_errors_name_the_line() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("v.sh"),
            "#!/bin/bash\necho ok\nif true; then\n  echo\n",
        )
        .unwrap();
        let text = std::fs::read_to_string(d.path().join("v.sh")).unwrap();
        let p = check(d.path(), "v.sh", &text);
        assert!(!p.is_empty() && p.iter().all(Problem::is_error), "{p:?}");
        assert_eq!(p[0].file, "v.sh");
        assert!(p[0].line.is_some(), "{p:?}");
        std::fs::write(d.path().join("ok.sh"), "test -f /etc/hostname\n").unwrap();
        assert!(check(d.path(), "ok.sh", "test -f /etc/hostname\n").is_empty());
        let p = check(d.path(), "ok.sh", "echo a\r\necho b\r\n");
        assert!(p.iter().any(|p| p.message.contains("CRLF")), "{p:?}");
    }
}
