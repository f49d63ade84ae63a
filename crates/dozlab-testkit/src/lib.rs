//! The one way a Dozlab test skips: a missing requirement (root, a tool, a
//! file) is printed as a visible `SKIPPED <test>: <reason> [needs <what>]`
//! line, appended to the log named by `DOZLAB_SKIP_LOG`, and, in strict mode
//! (`DOZLAB_STRICT_SKIPS=1`, set by `scripts/test` as root), turned into a
//! test failure unless the requirement is on [`ALLOWED`] (things that cannot
//! exist on the project's machines). See docs/testing.md.
//!
//! ```
//! fn root_makes_a_namespace() {
//!     dozlab_testkit::require_root!();
//!     dozlab_testkit::require_tool!("ip", "nft");
//!     // ... the test proper
//! }
//! ```
//!
//! The `require_*` macros and [`skip_if!`] return `Default::default()` from
//! the enclosing function when the requirement is missing, so they work in
//! tests (`()`) and in helpers returning `Option<T>` (`None`). The `have_*`
//! macros and [`have!`] are the same checks as a `bool`, for helpers such as
//! `fn can_run() -> bool` whose caller returns.

mod host;
mod skip;

pub use host::{WorldCopy, is_root, which, world_executable_copy};
pub use skip::{ALLOWED, LOG_ENV, Policy, STRICT_ENV, Skip, current_test, skip_now};

/// `true` when `present` holds; otherwise records a skip of the running test
/// for the missing requirement `need` and is `false` (the caller must then
/// return). `need` names it: `"root"`, `"tool:ip"`, `"firecracker"`, ...;
/// only those on [`ALLOWED`] may skip in strict mode.
#[macro_export]
macro_rules! have {
    ($present:expr, $need:expr, $($reason:tt)+) => {
        $present || {
            $crate::skip_now(
                ::core::env!("CARGO_PKG_NAME"),
                $need,
                &::std::format!($($reason)+),
            );
            false
        }
    };
}

/// `true` when running as root (effective uid 0); otherwise records a skip.
#[macro_export]
macro_rules! have_root {
    () => {
        $crate::have_root!("needs root (CI runs the tests as root)")
    };
    ($($reason:tt)+) => {
        $crate::have!($crate::is_root(), "root", $($reason)+)
    };
}

/// `true` when every named executable is on PATH; otherwise records a skip
/// for the first one missing.
#[macro_export]
macro_rules! have_tool {
    ($($tool:expr),+ $(,)?) => {
        true $(
            && $crate::have!(
                $crate::which($tool).is_some(),
                &::std::format!("tool:{}", $tool),
                "`{}` is not on PATH (scripts/setup installs it)",
                $tool
            )
        )+
    };
}

/// `true` when `path` exists; otherwise records a skip saying `fix`.
#[macro_export]
macro_rules! have_path {
    ($path:expr, $fix:expr) => {{
        let path = &$path; // a temporary here lives to the end of the block
        let path: &::std::path::Path = ::core::convert::AsRef::as_ref(path);
        $crate::have!(
            path.exists(),
            &::std::format!("path:{}", path.display()),
            "{} is missing: {}",
            path.display(),
            $fix
        )
    }};
}

/// Skips the enclosing test (returns `Default::default()`) when `cond`
/// holds, recording why; see [`have!`].
#[macro_export]
macro_rules! skip_if {
    ($cond:expr, $need:expr, $($reason:tt)+) => {
        if !$crate::have!(!$cond, $need, $($reason)+) {
            return ::core::default::Default::default();
        }
    };
}

/// Skips the enclosing test unless it runs as root.
#[macro_export]
macro_rules! require_root {
    ($($reason:tt)*) => {
        if !$crate::have_root!($($reason)*) {
            return ::core::default::Default::default();
        }
    };
}

/// Skips the enclosing test unless every named executable is on PATH.
#[macro_export]
macro_rules! require_tool {
    ($($tool:expr),+ $(,)?) => {
        if !$crate::have_tool!($($tool),+) {
            return ::core::default::Default::default();
        }
    };
}

/// Skips the enclosing test unless `path` exists; `fix` says how to get it.
#[macro_export]
macro_rules! require_path {
    ($path:expr, $fix:expr) => {
        if !$crate::have_path!($path, $fix) {
            return ::core::default::Default::default();
        }
    };
}
