//! Kubernetes naming rules the chart depends on: session ids become parts of
//! DNS-1123 object names (`lab-session-<id>`, `lab-service-<id>`), user ids
//! and course/cohort become label values.

/// Longest session id the chart accepts (`lab-service-<id>` must fit 63 characters).
pub const MAX_SESSION_ID: usize = 51;
/// Longest label value Kubernetes accepts.
pub const MAX_LABEL_VALUE: usize = 63;

/// Why a name cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} {value:?} has no letter or digit to make a Kubernetes name from")]
    NoUsableCharacters { what: &'static str, value: String },
    #[error("{what} {value:?} is {len} characters long; at most {max} are allowed")]
    TooLong {
        what: &'static str,
        value: String,
        len: usize,
        max: usize,
    },
    #[error(
        "{what} {value:?} is not a valid Kubernetes name (lowercase letters, digits and '-', starting and ending with a letter or digit); use {suggestion:?}"
    )]
    NotDns {
        what: &'static str,
        value: String,
        suggestion: String,
    },
    #[error(
        "{what} {value:?} is not a valid Kubernetes label value (letters, digits, '-', '_' and '.', starting and ending with a letter or digit); use {suggestion:?}"
    )]
    NotLabel {
        what: &'static str,
        value: String,
        suggestion: String,
    },
}

/// True when `s` is a DNS-1123 label (without the length limit).
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// True when `s` is a valid, non-empty label value (without the length limit).
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && edge(b[0])
        && edge(b[b.len() - 1])
}

/// Turns free text into a DNS-1123 label: lowercase ASCII letters and digits
/// kept, every other run of characters becomes one '-', no '-' at the ends.
/// Returns an empty string when nothing usable is left.
pub fn to_dns_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Turns free text into a label value: letters, digits, '-', '_' and '.' kept,
/// anything else becomes '-', trimmed to start and end with a letter or digit.
pub fn to_label_value(s: &str) -> String {
    let mapped: String = s
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Checks a session id exactly as the chart's schema does.
pub fn check_session_id(what: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    if !is_dns_label(value) {
        let suggestion = to_dns_label(value);
        if suggestion.is_empty() {
            return Err(NameError::NoUsableCharacters {
                what,
                value: value.into(),
            });
        }
        return Err(NameError::NotDns {
            what,
            value: value.into(),
            suggestion,
        });
    }
    check_len(what, value, max)
}

/// Checks a label value (user id, course, cohort).
pub fn check_label_value(what: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    if !is_label_value(value) {
        let suggestion = to_label_value(value);
        if suggestion.is_empty() {
            return Err(NameError::NoUsableCharacters {
                what,
                value: value.into(),
            });
        }
        return Err(NameError::NotLabel {
            what,
            value: value.into(),
            suggestion,
        });
    }
    check_len(what, value, MAX_LABEL_VALUE)
}

fn check_len(what: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    let len = value.len();
    if len > max {
        return Err(NameError::TooLong {
            what,
            value: value.into(),
            len,
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_are_normalised() {
        assert_eq!(to_dns_label("Alice"), "alice");
        assert_eq!(to_dns_label("  Bob_Smith.2 "), "bob-smith-2");
        assert_eq!(to_dns_label("__x__"), "x");
        assert_eq!(to_dns_label("a@@b"), "a-b");
        assert_eq!(to_dns_label("élodie"), "lodie");
        assert_eq!(to_dns_label("!!!"), "");
        assert!(is_dns_label("alice-001"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label("A"));
    }

    #[test]
    fn label_values_are_normalised() {
        assert_eq!(to_label_value("alice@example.com"), "alice-example.com");
        assert_eq!(to_label_value("_x_"), "x");
        assert!(is_label_value("Alice_1.b"));
        assert!(!is_label_value("a b"));
    }

    #[test]
    fn checks_name_the_problem() {
        let e = check_session_id("session id", "Alice", 51).unwrap_err();
        assert!(e.to_string().contains("use \"alice\""), "{e}");
        let long = "a".repeat(52);
        assert!(matches!(
            check_session_id("session id", &long, 51),
            Err(NameError::TooLong { len: 52, .. })
        ));
        assert!(check_label_value("course", "kubernetes-101").is_ok());
        assert!(check_label_value("course", "k 101").is_err());
        assert!(matches!(
            check_label_value("user", "+++"),
            Err(NameError::NoUsableCharacters { .. })
        ));
    }
}
