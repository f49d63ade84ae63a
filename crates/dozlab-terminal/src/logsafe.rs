//! Escaping of user-supplied text before it reaches a log line.
//!
//! Anything a client chose (an upload's file name, a download path, a shell
//! id from the query string) is logged through [`Clean`], which writes control
//! characters, backslashes and the Unicode line and direction controls as
//! escapes (`\n`, `\u{1b}`, `\\`), so a value can never start a forged log
//! line or rewrite the operator's terminal.

use std::fmt;

/// A user-supplied string, displayed with control characters escaped.
#[derive(Debug, Clone, Copy)]
pub struct Clean<'a>(pub &'a str);

fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if needs_escape(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let forged = "a.txt\n2026-01-01T00:00:00Z  INFO login client=6.6.6.6\x1b[2J\\ é\u{202e}";
        let shown = Clean(forged).to_string();
        assert!(!shown.chars().any(needs_escape_raw), "{shown}");
        assert_eq!(
            shown,
            "a.txt\\n2026-01-01T00:00:00Z  INFO login client=6.6.6.6\\u{1b}[2J\\\\ é\\u{202e}"
        );
        assert_eq!(Clean("plain name.tar.gz").to_string(), "plain name.tar.gz");
    }

    fn needs_escape_raw(c: char) -> bool {
        c.is_control() || c == '\u{202e}'
    }
}
