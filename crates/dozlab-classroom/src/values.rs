//! `dozlab session values`: a values file for one `helm install` of the
//! `dozlab-session` chart, with a generated password (the guide's migration
//! from the original manifest).

use crate::classroom::{ClassroomError, check_url};
use crate::lab::LabSource;
use crate::names::{self, NameError};
use crate::{password, yaml};
use serde_json::{Value, json};
use std::path::Path;

/// What goes into the values file.
#[derive(Debug, Clone)]
pub struct SessionValues {
    pub id: String,
    pub user: String,
    pub image_url: String,
    pub sha256: Option<String>,
    pub ttl: Option<String>,
    /// The lab shown beside the terminal (the chart's `lab`).
    pub lab: Option<LabSource>,
}

/// Why no values file was written.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    #[error("--{flag}")]
    Flag {
        flag: &'static str,
        #[source]
        source: NameError,
    },
    #[error(transparent)]
    Url(ClassroomError),
    #[error("--sha256 {0:?} is not 64 hexadecimal digits")]
    Sha256(String),
    #[error("--ttl {0:?} is not a duration; write seconds (7200) or d/h/m/s parts (2h, 1h30m)")]
    Ttl(String),
    #[error("{0} already exists; pass --force to replace it")]
    Exists(String),
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ValuesError {
    /// True when the user must change the command (exit code 2).
    pub fn is_usage(&self) -> bool {
        !matches!(self, Self::Write { .. })
    }
}

impl SessionValues {
    /// Checks every field as the chart's schema would.
    pub fn validate(&self) -> Result<(), ValuesError> {
        names::check_session_id("session id", &self.id, names::MAX_SESSION_ID)
            .map_err(|source| ValuesError::Flag { flag: "id", source })?;
        names::check_label_value("user", &self.user).map_err(|source| ValuesError::Flag {
            flag: "user",
            source,
        })?;
        check_url(&self.image_url).map_err(ValuesError::Url)?;
        if let Some(s) = &self.sha256
            && !(s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(ValuesError::Sha256(s.clone()));
        }
        if let Some(t) = &self.ttl
            && !is_duration(t)
        {
            return Err(ValuesError::Ttl(t.clone()));
        }
        Ok(())
    }

    /// The values document with `password`.
    pub fn to_value(&self, password: &str) -> Value {
        let mut v = json!({
            "session": {"id": self.id, "userId": self.user},
            "rootfs": {"imageUrl": self.image_url},
            "codeServer": {"password": password},
        });
        if let Some(s) = &self.sha256 {
            v["rootfs"]["sha256"] = json!(s.to_ascii_lowercase());
        }
        if let Some(t) = &self.ttl {
            v["session"]["ttl"] = json!(t);
        }
        if let Some(lab) = &self.lab {
            v["lab"] = lab.to_value();
        }
        v
    }
}

/// The chart's accepted `session.ttl` forms: seconds, or d/h/m/s parts.
pub fn is_duration(s: &str) -> bool {
    if s.is_empty() || s.chars().all(|c| c.is_ascii_digit()) {
        return true;
    }
    let mut rest = s.to_ascii_lowercase();
    for unit in ['d', 'h', 'm', 's'] {
        if let Some(i) = rest.find(unit) {
            let (num, tail) = rest.split_at(i);
            if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit()) {
                return false;
            }
            rest = tail[1..].to_string();
        }
    }
    rest.is_empty()
}

/// Validates, generates the password and writes the file (mode 0600) or stdout.
pub fn write(v: &SessionValues, out: Option<&Path>, force: bool) -> Result<String, ValuesError> {
    v.validate()?;
    let text = format!(
        "# Values for: helm install lab-{id} charts/dozlab-session -f <this file>\n# Contains the session's password: keep it private.\n{}",
        yaml::to_yaml(&v.to_value(&password::generate())),
        id = v.id
    );
    if let Some(path) = out {
        if path.exists() && !force {
            return Err(ValuesError::Exists(path.display().to_string()));
        }
        dozlab_core::atomic::write_atomic(path, text.as_bytes(), 0o600).map_err(|source| {
            ValuesError::Write {
                path: path.display().to_string(),
                source,
            }
        })?;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv() -> SessionValues {
        SessionValues {
            id: "my-session".into(),
            user: "my-user".into(),
            image_url: "https://example.com/rootfs.ext4".into(),
            sha256: None,
            ttl: None,
            lab: None,
        }
    }

    #[test]
    fn durations() {
        for ok in ["", "7200", "2h", "1h30m", "1d", "90m", "45s", "1d2h3m4s"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["h", "2x", "1m2h", "2 h", "-1", "1.5h"] {
            assert!(!is_duration(bad), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_flag() {
        let mut v = sv();
        v.id = "My_Session".into();
        let e = dozlab_core::error_chain(&v.validate().unwrap_err());
        assert!(
            e.starts_with("--id: ") && e.contains("\"my-session\""),
            "{e}"
        );
        assert_eq!(
            e.matches("\"my-session\"").count(),
            1,
            "the cause once: {e}"
        );
        let mut v = sv();
        v.image_url = "example.com/x".into();
        assert!(
            v.validate()
                .unwrap_err()
                .to_string()
                .contains("--image-url")
        );
        let mut v = sv();
        v.sha256 = Some("abc".into());
        assert!(matches!(v.validate(), Err(ValuesError::Sha256(_))));
    }

    #[test]
    fn a_lab_becomes_the_lab_block() {
        let mut v = sv();
        assert!(v.to_value("pw").get("lab").is_none());
        v.lab = crate::lab::LabSource::from_flags(Some("https://e/lab.tar.gz"), None).unwrap();
        assert_eq!(
            v.to_value("pw")["lab"],
            json!({"url": "https://e/lab.tar.gz"})
        );
    }

    #[test]
    fn writes_private_file_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.yaml");
        let text = write(&sv(), Some(&p), false).unwrap();
        assert!(text.contains("password: \""));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            write(&sv(), Some(&p), false),
            Err(ValuesError::Exists(_))
        ));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        assert_ne!(write(&sv(), Some(&p), true).unwrap(), text);
    }
}
