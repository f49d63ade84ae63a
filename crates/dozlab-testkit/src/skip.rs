//! Recording a skip: the `SKIPPED` line, the skip log, and strict mode.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;

/// Requirements that cannot exist on the project's machines, so a test may
/// skip for them even in strict mode: a Firecracker binary (in no registry
/// reachable here) and hardware KVM able to run a stock kernel (the hosts'
/// KVM is paravirtual; see /work/shared/notes/machines.md).
pub const ALLOWED: &[&str] = &["firecracker", "hardware-kvm"];

/// Names the file every skip is appended to (one line each).
pub const LOG_ENV: &str = "DOZLAB_SKIP_LOG";

/// `1` turns a skip whose requirement is not on [`ALLOWED`] into a failure.
pub const STRICT_ENV: &str = "DOZLAB_STRICT_SKIPS";

/// One skipped test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// `package::test` or `package/test-binary::test`.
    pub test: String,
    /// The missing requirement: `root`, `tool:NAME`, `path:PATH`, `firecracker`, ...
    pub need: String,
    /// Why, and what to do about it.
    pub reason: String,
}

impl Skip {
    /// Whether the requirement is one that cannot exist on these machines.
    pub fn allowed(&self) -> bool {
        ALLOWED.contains(&self.need.as_str())
    }
}

/// `SKIPPED <test>: <reason> [needs <need>]`, with `; allowed` inside the
/// brackets when the requirement is on [`ALLOWED`]. One line, no newline.
impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = self.reason.replace('\n', " ");
        write!(f, "SKIPPED {}: {reason} [needs {}", self.test, self.need)?;
        if self.allowed() {
            f.write_str("; allowed")?;
        }
        f.write_str("]")
    }
}

/// Where skips go and whether they fail.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Fail on a skip whose requirement is not on [`ALLOWED`].
    pub strict: bool,
    /// The skip log, appended to.
    pub log: Option<PathBuf>,
}

impl Policy {
    /// From `DOZLAB_STRICT_SKIPS` (`1` = strict) and `DOZLAB_SKIP_LOG`.
    pub fn from_env() -> Self {
        Self {
            strict: std::env::var(STRICT_ENV).is_ok_and(|v| v == "1"),
            log: std::env::var_os(LOG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }

    /// Writes `skip`'s line to `out`, appends it to the log, and returns
    /// the failure message when strict mode refuses it.
    pub fn record(&self, skip: &Skip, out: &mut dyn Write) -> Result<(), String> {
        let line = skip.to_string();
        let _ = out.write_all(format!("{line}\n").as_bytes());
        if let Some(log) = &self.log {
            append(log, &line)?;
        }
        if self.strict && !skip.allowed() {
            return Err(format!(
                "{line}\nstrict mode ({STRICT_ENV}=1) lets a test skip only for: {}; \
                 this requirement should be there (run scripts/setup as root)",
                ALLOWED.join(", ")
            ));
        }
        Ok(())
    }
}

/// Appends one line with a single write, so concurrent tests do not interleave.
fn append(log: &std::path::Path, line: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
        .map_err(|e| format!("cannot append to the skip log {}: {e}", log.display()))
}

/// The running test's name: libtest names each test's thread after it.
/// `pkg` is prefixed, and the test binary's name when it differs from the
/// package (integration tests): `dozlab-up::netns::tests::x`, `dozlab/vm::y`.
pub fn current_test(pkg: &str) -> String {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed thread>");
    match test_binary() {
        Some(bin) if bin != pkg.replace('-', "_") => format!("{pkg}/{bin}::{test}"),
        _ => format!("{pkg}::{test}"),
    }
}

/// The test binary's name without cargo's `-<hash>` suffix.
fn test_binary() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let stem = exe.file_stem()?.to_str()?;
    let name = match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => stem,
    };
    Some(name.to_string())
}

/// Records a skip of the running test under the environment's [`Policy`];
/// panics (fails the test) when strict mode refuses it. Used by the macros.
pub fn skip_now(pkg: &str, need: &str, reason: &str) {
    let skip = Skip {
        test: current_test(pkg),
        need: need.to_string(),
        reason: reason.to_string(),
    };
    // To the stream itself, not with eprintln!: libtest captures the print
    // macros of passing tests, and a skip must be seen.
    if let Err(msg) = Policy::from_env().record(&skip, &mut std::io::stderr().lock()) {
        panic!("{msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip(need: &str) -> Skip {
        Skip {
            test: "dozlab-x/it::a_test".into(),
            need: need.into(),
            reason: "two\nlines".into(),
        }
    }

    #[test]
    fn the_line_names_test_reason_and_requirement_and_whether_it_is_allowed() {
        assert_eq!(
            skip("root").to_string(),
            "SKIPPED dozlab-x/it::a_test: two lines [needs root]"
        );
        assert_eq!(
            skip("firecracker").to_string(),
            "SKIPPED dozlab-x/it::a_test: two lines [needs firecracker; allowed]"
        );
    }

    #[test]
    fn strict_refuses_only_what_is_not_allowed_and_logs_both() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips.log");
        let strict = Policy {
            strict: true,
            log: Some(log.clone()),
        };
        let mut out = Vec::new();
        let err = strict.record(&skip("tool:ip"), &mut out).unwrap_err();
        assert!(
            err.contains("[needs tool:ip]") && err.contains("firecracker"),
            "{err}"
        );
        strict.record(&skip("hardware-kvm"), &mut out).unwrap();
        Policy::default().record(&skip("root"), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 3);
        let lines = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            lines,
            "SKIPPED dozlab-x/it::a_test: two lines [needs tool:ip]\n\
             SKIPPED dozlab-x/it::a_test: two lines [needs hardware-kvm; allowed]\n"
        );
    }

    #[test]
    fn an_unwritable_log_is_an_error_naming_it() {
        let p = Policy {
            strict: false,
            log: Some("/nonexistent-dir/skips.log".into()),
        };
        let err = p.record(&skip("root"), &mut Vec::new()).unwrap_err();
        assert!(err.contains("/nonexistent-dir/skips.log"), "{err}");
    }

    #[test]
    fn the_current_test_is_named_after_the_thread() {
        assert_eq!(
            current_test("dozlab-testkit"),
            "dozlab-testkit::skip::tests::the_current_test_is_named_after_the_thread"
        );
    }
}
