//! Problems found in a lab: the file they are in, the line (and column) when
//! there is one, a message, and whether they stop the lab (errors) or are
//! only reported (warnings).

use serde::Serialize;
use std::fmt;

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The lab cannot run as written.
    Error,
    /// Kept and ignored, or guessed: the lab runs, but the author should look.
    Warning,
}

/// One finding, printed as `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The file, relative to the lab directory (`index.json`, `step1.md`).
    pub file: String,
    /// 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

impl Problem {
    /// An error in `file`.
    pub fn error(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// A warning in `file`.
    pub fn warning(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(file, message)
        }
    }

    /// The same problem at `line` (1-based).
    pub fn at(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    /// The same problem at `line:column` (1-based).
    pub fn at_column(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {kind}: {}", self.message)
    }
}

/// The 1-based line of the first occurrence of `"value"` (a JSON string
/// literal) in `text`, so a problem with a value of `index.json` can name
/// the line it is written on.
pub fn line_of_string(text: &str, value: &str) -> Option<usize> {
    let needle = serde_json::to_string(value).ok()?;
    line_of(text, &needle)
}

/// The 1-based line of the first occurrence of `needle` in `text`.
pub fn line_of(text: &str, needle: &str) -> Option<usize> {
    let at = text.find(needle)?;
    Some(text[..at].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_file_line_column() {
        let p = Problem::error("index.json", "bad").at_column(3, 7);
        assert_eq!(p.to_string(), "index.json:3:7: error: bad");
        let w = Problem::warning("a.md", "odd").at(Some(2));
        assert_eq!(w.to_string(), "a.md:2: warning: odd");
        assert_eq!(Problem::error("x", "y").to_string(), "x: error: y");
    }

    #[test]
    fn finds_the_line_of_a_value() {
        let text = "{\n  \"a\": \"one\",\n  \"b\": \"two\"\n}";
        assert_eq!(line_of_string(text, "two"), Some(3));
        assert_eq!(line_of_string(text, "three"), None);
    }
}
