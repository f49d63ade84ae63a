//! The exit-code convention of the `dozlab` binary.
//!
//! Each component's `run` returns `Result<ExitCode, Failure>`. A `Failure`
//! carries the error chain (printed once by `main`) and the code to exit with,
//! so components can document distinct codes (usage, network, integrity, ...).

use std::process::ExitCode;

/// Well-known exit codes shared by all subcommands.
pub mod exit {
    /// Generic failure.
    pub const FAILURE: u8 = 1;
    /// Bad flags, bad values, bad input files: the user must change the command.
    pub const USAGE: u8 = 2;
}

/// A failed command: the error to print and the process exit code.
#[derive(Debug)]
pub struct Failure {
    /// Process exit code (non-zero).
    pub code: u8,
    /// The error chain, printed by `main` with `{:#}`.
    pub error: anyhow::Error,
}

impl Failure {
    /// A failure with an explicit exit code.
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        let code = if code == 0 { exit::FAILURE } else { code };
        Self {
            code,
            error: error.into(),
        }
    }

    /// A usage error (exit code 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self::new(exit::USAGE, error)
    }

    /// A usage error (exit 2) when `usage` is true, else a generic failure
    /// (exit 1): for library errors that know which of the two they are.
    pub fn usage_if(usage: bool, error: impl Into<anyhow::Error>) -> Self {
        let code = if usage { exit::USAGE } else { exit::FAILURE };
        Self::new(code, error)
    }

    /// The code as a process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

/// Any error is a generic failure (exit 1), so `?` works on every error
/// type in a function returning [`CmdResult`] or `Result<_, Failure>`.
impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Self::new(exit::FAILURE, error)
    }
}

/// An error and its sources on one line (`a: b: c`), for logs and messages
/// built outside `main` (which prints chains with `{:#}`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What every component's entry point returns.
pub type CmdResult = Result<ExitCode, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_sources_on_one_line() {
        let inner = std::io::Error::other("disk full");
        let outer = anyhow::Error::new(inner).context("writing image");
        let e: &dyn std::error::Error = outer.as_ref();
        assert_eq!(error_chain(e), "writing image: disk full");
    }

    #[test]
    fn zero_code_is_never_a_failure() {
        let f = Failure::new(0, anyhow::anyhow!("boom"));
        assert_eq!(f.code, exit::FAILURE);
        assert_eq!(Failure::usage(anyhow::anyhow!("x")).code, exit::USAGE);
        assert_eq!(
            Failure::usage_if(true, anyhow::anyhow!("x")).code,
            exit::USAGE
        );
        assert_eq!(
            Failure::usage_if(false, anyhow::anyhow!("x")).code,
            exit::FAILURE
        );
    }
}
