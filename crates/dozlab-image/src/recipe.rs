//! Recipes: the declarative TOML files a guest image is built from.
//!
//! The built-in profiles (`minimal`, `vm`, `k8s`) are embedded in the binary;
//! `--profile FILE.toml` loads a user's file. A recipe may `extends` a
//! built-in profile: packages, units, files and commands are appended to the
//! parent's, scalar fields override it. [`Recipe::content_sha256`] hashes the
//! resolved recipe, so a change anywhere in the chain changes the cache key.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The built-in profiles: (name, TOML text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("minimal", include_str!("../profiles/minimal.toml")),
    ("vm", include_str!("../profiles/vm.toml")),
    ("k8s", include_str!("../profiles/k8s.toml")),
];

/// Default Debian suite when neither the recipe nor `--suite` names one.
pub const DEFAULT_SUITE: &str = "bookworm";

/// Why a recipe could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error(
        "unknown profile `{0}`: use one of minimal, vm, k8s or the path of a recipe file ending in .toml"
    )]
    UnknownProfile(String),
    #[error("cannot read recipe file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("recipe {origin} is not valid")]
    Parse {
        origin: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("recipe {origin}: {problem}")]
    Invalid { origin: String, problem: String },
    #[error("recipe {0} extends itself through its parents")]
    Cycle(String),
}

/// A file the recipe adds to the tree, fetched from a URL and pinned by sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteFile {
    /// Where to download it from (http or https).
    pub url: String,
    /// Expected lower-case hex sha256 of the downloaded bytes.
    pub sha256: String,
    /// Absolute destination path inside the image.
    pub dest: String,
    /// Octal permission bits, e.g. "0755" (default "0644").
    #[serde(default = "default_mode")]
    pub mode: String,
}

fn default_mode() -> String {
    "0644".into()
}

/// Capabilities the recipe promises (copied into the manifest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeFeatures {
    /// Docker daemon enabled and listening on tcp 2375 and its unix socket.
    pub docker: Option<bool>,
}

/// Which kernel an image boots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelChoice {
    /// Debian's `linux-image-cloud-amd64` with its initramfs (virtio drivers
    /// are modules loaded from the initramfs).
    #[default]
    Debian,
    /// The Dozlab microVM kernel built from `linux-source-6.1` (see
    /// [`crate::kernel`]): everything built in, no modules, no initramfs.
    Dozlab,
}

impl KernelChoice {
    /// `debian` or `dozlab`.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelChoice::Debian => "debian",
            KernelChoice::Dozlab => "dozlab",
        }
    }

    fn is_debian(&self) -> bool {
        *self == KernelChoice::Debian
    }
}

/// Packages only the Debian kernel needs; a `kernel = "dozlab"` recipe drops them.
pub const DEBIAN_KERNEL_PACKAGES: &[&str] = &["linux-image-cloud-amd64", "initramfs-tools"];

/// One recipe file as written (before `extends` is resolved).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeFile {
    /// Built-in profile this recipe builds on.
    pub extends: Option<String>,
    /// Image name, e.g. `dozlab-vm`.
    pub name: Option<String>,
    /// One line saying what the image is for.
    pub description: Option<String>,
    /// Debian suite, e.g. `bookworm`.
    pub suite: Option<String>,
    /// mmdebstrap variant (`minbase`, `apt`, ...).
    pub variant: Option<String>,
    /// The kernel: `debian` (default) or `dozlab`.
    pub kernel: Option<KernelChoice>,
    /// Debian packages to install.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Extra systemd units to enable.
    #[serde(default)]
    pub enable: Vec<String>,
    /// Files fetched from URLs, pinned by sha256.
    #[serde(default)]
    pub files: Vec<RemoteFile>,
    /// Shell commands run inside the tree (chroot) after the base configuration.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Capabilities.
    #[serde(default)]
    pub features: RecipeFeatures,
}

/// A fully resolved recipe, ready to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipe {
    /// Profile name (`minimal`, `vm`, `k8s`, or the file stem of a user recipe).
    pub profile: String,
    /// Image name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Debian suite.
    pub suite: String,
    /// mmdebstrap variant.
    pub variant: String,
    /// The kernel (left out of the hashed form when `debian`, so recipes
    /// written before the choice existed keep their cache key).
    #[serde(skip_serializing_if = "KernelChoice::is_debian")]
    pub kernel: KernelChoice,
    /// Debian packages, parents first, without duplicates.
    pub packages: Vec<String>,
    /// Extra units to enable.
    pub enable: Vec<String>,
    /// Pinned remote files.
    pub files: Vec<RemoteFile>,
    /// Customisation commands.
    pub commands: Vec<String>,
    /// Docker daemon promised.
    pub docker: bool,
}

impl Recipe {
    /// Loads a built-in profile by name or a user's recipe file (a path ending in `.toml`).
    pub fn load(profile: &str) -> Result<Self, RecipeError> {
        if let Some(text) = builtin_text(profile) {
            return resolve(profile, profile, text, 0);
        }
        if profile.ends_with(".toml") || profile.contains('/') {
            let path = Path::new(profile);
            let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Read {
                path: profile.to_string(),
                source,
            })?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "custom".into());
            return resolve(&stem, profile, &text, 0);
        }
        Err(RecipeError::UnknownProfile(profile.to_string()))
    }

    /// Parses recipe text (used by tests and by [`Recipe::load`]).
    pub fn parse(profile: &str, text: &str) -> Result<Self, RecipeError> {
        resolve(profile, profile, text, 0)
    }

    /// sha256 of the resolved recipe's canonical JSON form.
    pub fn content_sha256(&self) -> String {
        let json = serde_json::to_vec(self).expect("recipe serialises");
        hex::encode(Sha256::digest(json))
    }
}

fn builtin_text(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

fn parse_file(origin: &str, text: &str) -> Result<RecipeFile, RecipeError> {
    toml::from_str(text).map_err(|source| RecipeError::Parse {
        origin: origin.to_string(),
        source,
    })
}

fn resolve(profile: &str, origin: &str, text: &str, depth: u8) -> Result<Recipe, RecipeError> {
    if depth > 8 {
        return Err(RecipeError::Cycle(origin.to_string()));
    }
    let file = parse_file(origin, text)?;
    let mut recipe = match &file.extends {
        Some(parent) => {
            let parent_text = builtin_text(parent).ok_or_else(|| RecipeError::Invalid {
                origin: origin.to_string(),
                problem: format!(
                    "extends `{parent}`, which is not a built-in profile (minimal, vm, k8s)"
                ),
            })?;
            resolve(profile, parent, parent_text, depth + 1)?
        }
        None => Recipe {
            profile: profile.to_string(),
            name: format!("dozlab-{profile}"),
            description: String::new(),
            suite: DEFAULT_SUITE.into(),
            variant: "minbase".into(),
            kernel: KernelChoice::Debian,
            packages: vec![],
            enable: vec![],
            files: vec![],
            commands: vec![],
            docker: false,
        },
    };
    merge(&mut recipe, file);
    recipe.profile = profile.to_string();
    if recipe.kernel == KernelChoice::Dozlab {
        recipe
            .packages
            .retain(|p| !DEBIAN_KERNEL_PACKAGES.contains(&p.as_str()));
    }
    validate(origin, &recipe)?;
    Ok(recipe)
}

fn merge(recipe: &mut Recipe, file: RecipeFile) {
    if let Some(v) = file.name {
        recipe.name = v;
    }
    if let Some(v) = file.description {
        recipe.description = v;
    }
    if let Some(v) = file.suite {
        recipe.suite = v;
    }
    if let Some(v) = file.variant {
        recipe.variant = v;
    }
    if let Some(k) = file.kernel {
        recipe.kernel = k;
    }
    for p in file.packages {
        if !recipe.packages.contains(&p) {
            recipe.packages.push(p);
        }
    }
    for u in file.enable {
        if !recipe.enable.contains(&u) {
            recipe.enable.push(u);
        }
    }
    recipe.files.extend(file.files);
    recipe.commands.extend(file.commands);
    if let Some(d) = file.features.docker {
        recipe.docker = d;
    }
}

fn validate(origin: &str, r: &Recipe) -> Result<(), RecipeError> {
    let bad = |problem: String| RecipeError::Invalid {
        origin: origin.to_string(),
        problem,
    };
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.:_@=".contains(c))
    };
    if !word(&r.name) {
        return Err(bad(format!("name `{}` must be a plain word", r.name)));
    }
    if !word(&r.suite) || !word(&r.variant) {
        return Err(bad("suite and variant must be plain words".into()));
    }
    if let Some(p) = r.packages.iter().find(|p| !word(p)) {
        return Err(bad(format!("package `{p}` is not a Debian package name")));
    }
    if let Some(u) = r.enable.iter().find(|u| !word(u)) {
        return Err(bad(format!("unit `{u}` is not a systemd unit name")));
    }
    for f in &r.files {
        validate_file(f).map_err(bad)?;
    }
    let kernel_packages = match r.kernel {
        KernelChoice::Debian => DEBIAN_KERNEL_PACKAGES,
        KernelChoice::Dozlab => &[],
    };
    for needed in ["openssh-server", "systemd"].iter().chain(kernel_packages) {
        if !r.packages.iter().any(|p| p == needed) {
            return Err(bad(format!(
                "package `{needed}` is required in every image; add it to packages or extend `minimal`"
            )));
        }
    }
    if r.docker && !r.packages.iter().any(|p| p == "docker.io") {
        return Err(bad(
            "features.docker = true needs the `docker.io` package".into()
        ));
    }
    Ok(())
}

fn validate_file(f: &RemoteFile) -> Result<(), String> {
    if !(f.url.starts_with("http://") || f.url.starts_with("https://")) {
        return Err(format!(
            "file url `{}` must start with http:// or https://",
            f.url
        ));
    }
    if f.sha256.len() != 64 || !f.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("file {}: sha256 must be 64 hex digits", f.url));
    }
    if !f.dest.starts_with('/') || f.dest.split('/').any(|c| c == "..") || f.dest.ends_with('/') {
        return Err(format!(
            "file dest `{}` must be an absolute file path without `..`",
            f.dest
        ));
    }
    parse_mode(&f.mode).ok_or_else(|| format!("file mode `{}` must be octal like 0755", f.mode))?;
    Ok(())
}

/// Parses an octal mode like `0755`.
pub fn parse_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_resolve_with_inheritance() {
        let minimal = Recipe::load("minimal").unwrap();
        assert!(!minimal.docker);
        assert!(minimal.packages.contains(&"openssh-server".to_string()));
        let vm = Recipe::load("vm").unwrap();
        assert!(vm.docker);
        assert_eq!(vm.name, "dozlab-vm");
        assert_eq!(vm.packages[..minimal.packages.len()], minimal.packages[..]);
        assert!(vm.packages.contains(&"docker.io".to_string()));
        let k8s = Recipe::load("k8s").unwrap();
        assert!(k8s.docker && !k8s.files.is_empty());
        assert_ne!(vm.content_sha256(), minimal.content_sha256());
    }

    #[test]
    fn user_recipe_extends_and_hash_follows_content() {
        let a = Recipe::parse("mine", "extends = \"minimal\"\npackages = [\"htop\"]\n").unwrap();
        let b = Recipe::parse("mine", "extends = \"minimal\"\npackages = [\"git\"]\n").unwrap();
        assert_eq!(a.name, "dozlab-minimal");
        assert_eq!(a.packages.last().unwrap(), "htop");
        assert_ne!(a.content_sha256(), b.content_sha256());
        assert_eq!(
            a.content_sha256(),
            Recipe::parse("mine", "extends = \"minimal\"\npackages = [\"htop\"]\n")
                .unwrap()
                .content_sha256()
        );
    }

    #[test]
    fn kernel_choice_drops_the_debian_kernel_and_keeps_old_keys() {
        let vm = Recipe::load("vm").unwrap();
        assert_eq!(vm.kernel, KernelChoice::Debian);
        assert!(!serde_json::to_string(&vm).unwrap().contains("\"kernel\""));
        let d = Recipe::parse("mine", "extends = \"vm\"\nkernel = \"dozlab\"\n").unwrap();
        assert_eq!(d.kernel, KernelChoice::Dozlab);
        for p in DEBIAN_KERNEL_PACKAGES {
            assert!(!d.packages.iter().any(|x| x == p), "{p} kept");
        }
        assert!(d.packages.iter().any(|x| x == "docker.io"));
        assert_ne!(d.content_sha256(), vm.content_sha256());
        let e = Recipe::parse("mine", "extends = \"vm\"\nkernel = \"custom\"\n").unwrap_err();
        assert!(matches!(e, RecipeError::Parse { .. }), "{e}");
    }

    #[test]
    fn rejects_bad_recipes_with_a_reason() {
        let cases = [
            ("packages = [\"a b\"]", "not a Debian package"),
            ("extends = \"nope\"", "not a built-in"),
            ("extends = \"minimal\"\nunknown = 1", "not valid"),
            ("packages = [\"htop\"]", "required in every image"),
            (
                "extends = \"minimal\"\n[features]\ndocker = true",
                "docker.io",
            ),
            (
                "extends = \"minimal\"\n[[files]]\nurl = \"ftp://x\"\nsha256 = \"00\"\ndest = \"/x\"",
                "http",
            ),
            (
                "extends = \"minimal\"\n[[files]]\nurl = \"http://127.0.0.1/x\"\nsha256 = \"00\"\ndest = \"/x\"",
                "64 hex",
            ),
        ];
        for (text, want) in cases {
            let err = Recipe::parse("t", text).unwrap_err();
            let msg = format!("{err:#}");
            let full = format!(
                "{msg} {}",
                std::error::Error::source(&err)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            );
            assert!(full.contains(want), "{text:?}: {full}");
        }
        assert!(matches!(
            Recipe::load("bogus"),
            Err(RecipeError::UnknownProfile(_))
        ));
    }
}
