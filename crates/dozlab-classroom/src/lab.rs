//! The chart's `lab` values from `--lab URL [--lab-sha256 HEX]`, checked as
//! the chart's schema checks them (an http(s) URL of a lab `.tar.gz`, 64 hex
//! digits).

use serde_json::{Value, json};

/// A lab every session shows beside its terminal (`lab.url`, `lab.sha256`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSource {
    pub url: String,
    /// Lowercase hex, when given.
    pub sha256: Option<String>,
}

/// Why the lab flags were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabError {
    #[error(
        "--lab {0:?} is not an http:// or https:// URL; give the URL of the lab as a .tar.gz (the chart's lab.url; the session's lab-fetch container downloads it)"
    )]
    Url(String),
    #[error("--lab-sha256 {0:?} is not 64 hexadecimal digits")]
    Sha256(String),
    #[error(
        "--lab-sha256 needs --lab: it is the SHA-256 of the lab's .tar.gz; add --lab URL or drop --lab-sha256"
    )]
    Sha256WithoutLab,
}

impl LabSource {
    /// The lab from the flags: `None` without `--lab`; an error for a URL the
    /// chart would refuse, a bad digest, or a digest without a URL.
    pub fn from_flags(url: Option<&str>, sha256: Option<&str>) -> Result<Option<Self>, LabError> {
        let Some(url) = url else {
            return match sha256 {
                Some(_) => Err(LabError::Sha256WithoutLab),
                None => Ok(None),
            };
        };
        if !is_http_url(url) {
            return Err(LabError::Url(url.into()));
        }
        let sha256 = match sha256 {
            Some(s) if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) => {
                Some(s.to_ascii_lowercase())
            }
            Some(s) => return Err(LabError::Sha256(s.into())),
            None => None,
        };
        Ok(Some(Self {
            url: url.into(),
            sha256,
        }))
    }

    /// The chart's `lab` block: `{url}` or `{url, sha256}`.
    pub fn to_value(&self) -> Value {
        let mut v = json!({"url": self.url});
        if let Some(s) = &self.sha256 {
            v["sha256"] = json!(s);
        }
        v
    }
}

/// The chart's `lab.url` pattern: `http(s)://`, a host, no whitespace.
fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return false;
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    host_end > 0 && !url.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789ABCDEFabcdef0123456789abcdef0123456789abcdef0123456789";

    #[test]
    fn no_flags_no_lab() {
        assert_eq!(LabSource::from_flags(None, None), Ok(None));
    }

    #[test]
    fn url_and_digest_become_the_chart_block() {
        let lab = LabSource::from_flags(Some("https://labs.example.com/a.tar.gz"), Some(SHA))
            .unwrap()
            .unwrap();
        assert_eq!(
            lab.to_value(),
            json!({"url": "https://labs.example.com/a.tar.gz", "sha256": SHA.to_ascii_lowercase()})
        );
        let lab = LabSource::from_flags(Some("http://10.0.0.5:8000/a.tar.gz"), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            lab.to_value(),
            json!({"url": "http://10.0.0.5:8000/a.tar.gz"})
        );
    }

    #[test]
    fn what_the_chart_refuses_is_refused_here() {
        for bad in [
            "file:///srv/a.tar.gz",
            "ftp://e/a.tar.gz",
            "labs.example.com/a.tar.gz",
            "https://",
            "https:///a.tar.gz",
            "https://e/a b.tar.gz",
            "",
        ] {
            assert_eq!(
                LabSource::from_flags(Some(bad), None),
                Err(LabError::Url(bad.into())),
                "{bad}"
            );
        }
        for bad in ["abc", &"g".repeat(64), &format!("{SHA}0")] {
            assert_eq!(
                LabSource::from_flags(Some("https://e/a.tar.gz"), Some(bad)),
                Err(LabError::Sha256(bad.to_string()))
            );
        }
        assert_eq!(
            LabSource::from_flags(None, Some(SHA)),
            Err(LabError::Sha256WithoutLab)
        );
    }

    #[test]
    fn messages_name_the_flag_and_the_fix() {
        let e = LabSource::from_flags(Some("file:///x"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--lab \"file:///x\"") && e.contains(".tar.gz"),
            "{e}"
        );
        let e = LabSource::from_flags(None, Some(SHA))
            .unwrap_err()
            .to_string();
        assert!(e.contains("add --lab URL"), "{e}");
    }
}
