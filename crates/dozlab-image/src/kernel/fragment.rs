//! Kernel config fragments: parsing the `CONFIG_X=value` / `# CONFIG_X is not
//! set` lines, and checking that a finished `.config` kept every option the
//! fragment sets.
//!
//! `make olddefconfig` silently drops an option whose dependencies are not
//! met (or that does not exist in the sources). A fragment is therefore also
//! a list of requirements: every `CONFIG_X=value` line must appear unchanged
//! in the final `.config`, or the kernel build stops with the list of what
//! was lost.

use std::collections::BTreeMap;

/// A line of a fragment that is neither an option, a `not set` line, a
/// comment nor blank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "kernel config fragment line {line}: {text:?} is not `CONFIG_NAME=value` or `# CONFIG_NAME is not set`"
)]
pub struct FragmentError {
    /// 1-based line number.
    pub line: usize,
    /// The offending line.
    pub text: String,
}

/// A parsed fragment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Options set to a value (`y`, a number or a quoted string), in order.
    pub set: Vec<(String, String)>,
    /// Options explicitly turned off.
    pub unset: Vec<String>,
}

/// One required option `.config` did not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// `CONFIG_NAME`.
    pub name: String,
    /// The value the fragment asked for.
    pub wanted: String,
    /// What `.config` has instead (`None`: not set).
    pub got: Option<String>,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.got {
            Some(v) => write!(f, "{}={} (became {v})", self.name, self.wanted),
            None => write!(f, "{}={} (became not set)", self.name, self.wanted),
        }
    }
}

fn is_name(s: &str) -> bool {
    s.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// Parses `CONFIG_X=v` or `# CONFIG_X is not set`; `None` for anything else.
fn parse_line(line: &str) -> Option<(String, Option<String>)> {
    let line = line.trim();
    if let Some(name) = line
        .strip_prefix("# ")
        .and_then(|l| l.strip_suffix(" is not set"))
    {
        return is_name(name).then(|| (name.to_string(), None));
    }
    let (name, value) = line.split_once('=')?;
    (is_name(name) && !value.is_empty()).then(|| (name.to_string(), Some(value.to_string())))
}

impl Fragment {
    /// Parses a fragment; comments (`#` not followed by an option) and blank lines are skipped.
    pub fn parse(text: &str) -> Result<Self, FragmentError> {
        let mut f = Fragment::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            match parse_line(line) {
                Some((name, Some(value))) => f.set.push((name, value)),
                Some((name, None)) => f.unset.push(name),
                None if line.starts_with('#') => {}
                None => {
                    return Err(FragmentError {
                        line: i + 1,
                        text: raw.to_string(),
                    });
                }
            }
        }
        Ok(f)
    }

    /// The options `config` (a `.config` file's text) does not have with the
    /// fragment's value.
    pub fn dropped_in(&self, config: &str) -> Vec<Dropped> {
        let have: BTreeMap<String, Option<String>> =
            config.lines().filter_map(parse_line).collect();
        self.set
            .iter()
            .filter_map(|(name, wanted)| {
                let got = have.get(name).cloned().flatten();
                (got.as_deref() != Some(wanted.as_str())).then(|| Dropped {
                    name: name.clone(),
                    wanted: wanted.clone(),
                    got,
                })
            })
            .collect()
    }

    /// `config` without the lines of the options the fragment sets or unsets
    /// (so that appending the fragment does not make Kconfig warn about overrides).
    pub fn without_own_options(&self, config: &str) -> String {
        let own: std::collections::BTreeSet<&str> = self
            .set
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(self.unset.iter().map(String::as_str))
            .collect();
        let mut out = String::new();
        for line in config.lines() {
            let mine = parse_line(line).is_some_and(|(name, _)| own.contains(name.as_str()));
            if !mine {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The fragment as `.config` lines, to append to a base config.
    pub fn to_config_lines(&self) -> String {
        let mut out = String::from("\n# --- Dozlab fragment\n");
        for (name, value) in &self.set {
            out.push_str(&format!("{name}={value}\n"));
        }
        for name in &self.unset {
            out.push_str(&format!("# {name} is not set\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options_unset_lines_and_comments() {
        let f = Fragment::parse(
            "# a comment\n\nCONFIG_A=y\nCONFIG_NR=64\nCONFIG_S=\"-x\"\n# CONFIG_M is not set\n",
        )
        .unwrap();
        assert_eq!(
            f.set,
            [
                ("CONFIG_A".to_string(), "y".to_string()),
                ("CONFIG_NR".into(), "64".into()),
                ("CONFIG_S".into(), "\"-x\"".into())
            ]
        );
        assert_eq!(f.unset, ["CONFIG_M"]);
        let e = Fragment::parse("CONFIG_A=y\nVIRTIO=y\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(Fragment::parse("CONFIG_lower=y").is_err());
        assert!(Fragment::parse("CONFIG_A=").is_err());
    }

    #[test]
    fn finds_what_olddefconfig_dropped() {
        let f = Fragment::parse("CONFIG_A=y\nCONFIG_B=y\nCONFIG_N=64\nCONFIG_C=y\n").unwrap();
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_N=8\n";
        let d = f.dropped_in(config);
        let text: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "CONFIG_B=y (became not set)",
                "CONFIG_N=64 (became 8)",
                "CONFIG_C=y (became not set)"
            ]
        );
        assert!(
            f.dropped_in("CONFIG_A=y\nCONFIG_B=y\nCONFIG_N=64\nCONFIG_C=y\n")
                .is_empty()
        );
    }

    #[test]
    fn the_shipped_fragment_parses_without_duplicates() {
        let f = Fragment::parse(super::super::FRAGMENT).unwrap();
        let mut names: Vec<&String> = f.set.iter().map(|(n, _)| n).chain(&f.unset).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "an option appears twice");
        for must in [
            "CONFIG_VIRTIO_MMIO",
            "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
            "CONFIG_ACPI",
            "CONFIG_VIRTIO_BLK",
            "CONFIG_VIRTIO_NET",
            "CONFIG_VIRTIO_VSOCKETS",
            "CONFIG_HW_RANDOM_VIRTIO",
            "CONFIG_EXT4_FS",
            "CONFIG_IP_PNP",
            "CONFIG_SERIAL_8250_CONSOLE",
            "CONFIG_OVERLAY_FS",
            "CONFIG_BRIDGE_NETFILTER",
            "CONFIG_VETH",
        ] {
            assert!(
                f.set.iter().any(|(n, v)| n == must && v == "y"),
                "{must}=y missing"
            );
        }
        assert!(f.unset.iter().any(|n| n == "CONFIG_MODULES"));
        assert!(f.unset.iter().any(|n| n == "CONFIG_BLK_DEV_INITRD"));
    }
}
