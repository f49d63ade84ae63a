//! `backend.imageid` → a Dozlab image profile. Killercoda names its
//! environments (`ubuntu`, `kubernetes-kubeadm-1node`, ...); Dozlab has
//! profiles (`vm`, `k8s`, `minimal`). Unknown ids fall back to the default
//! profile, and the loader warns.

/// The profile used when a lab names no image or an unknown one.
pub const DEFAULT_PROFILE: &str = "vm";

/// The profile for `imageid`, and whether the id was known (a lab without
/// `backend.imageid` counts as known: it gets the default silently).
pub fn profile_for(imageid: Option<&str>) -> (&'static str, bool) {
    let Some(id) = imageid.map(str::trim) else {
        return (DEFAULT_PROFILE, true);
    };
    let id = id.to_ascii_lowercase();
    let family = |prefix: &str| {
        id == prefix
            || id.starts_with(&format!("{prefix}-"))
            || id.starts_with(&format!("{prefix}:"))
    };
    if family("ubuntu") || family("debian") || id == "vm" {
        (DEFAULT_PROFILE, true)
    } else if family("kubernetes") || family("k8s") || family("k3s") {
        ("k8s", true)
    } else if id == "minimal" {
        ("minimal", true)
    } else {
        (DEFAULT_PROFILE, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_known_families_and_falls_back() {
        assert_eq!(profile_for(None), ("vm", true));
        assert_eq!(profile_for(Some("ubuntu")), ("vm", true));
        assert_eq!(profile_for(Some("Ubuntu-4GB")), ("vm", true));
        assert_eq!(profile_for(Some("kubernetes-kubeadm-1node")), ("k8s", true));
        assert_eq!(profile_for(Some("minimal")), ("minimal", true));
        assert_eq!(profile_for(Some("windows-2019")), ("vm", false));
        assert_eq!(profile_for(Some("ubuntuish")), ("vm", false));
    }
}
