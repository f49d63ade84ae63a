//! What to download and what it must hash to: from `--url`/`--sha256`, or
//! from a manifest (`--manifest`), whose `.zst` artifact is preferred.

use crate::http::{HttpError, HttpOptions, Transfer};
use crate::pipeline::Written;
use crate::source::{Source, SourceError};
use dozlab_core::manifest::{Artifact, Manifest, ManifestError};
use reqwest::Client;

/// Largest manifest accepted.
const MANIFEST_MAX: u64 = 4 << 20;

/// Why the manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read the manifest {0}")]
    Read(String, #[source] std::io::Error),
    #[error("cannot download the manifest")]
    Http(#[from] HttpError),
    #[error("the manifest {0} is larger than 4 MiB; is it really a manifest.json?")]
    TooLarge(String),
    #[error("the manifest {0} is invalid")]
    Invalid(String, #[source] ManifestError),
    #[error("the manifest {manifest} lists no artifact named {wanted:?} (it has: {have})")]
    NoArtifact {
        manifest: String,
        wanted: String,
        have: String,
    },
    #[error("the manifest {0} lists no artifacts")]
    Empty(String),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// A digest or size that did not match.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error("sha256 mismatch for {what}: expected {expected}, got {actual}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    Size {
        what: String,
        expected: u64,
        actual: u64,
    },
}

/// What the download must be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// sha256 of the bytes as stored (manifest `sha256`).
    pub stored_sha256: Option<String>,
    /// Size as stored (manifest `size`).
    pub stored_size: Option<u64>,
    /// sha256 of the decompressed image (manifest `uncompressed_sha256`).
    pub image_sha256: Option<String>,
    /// Size of the decompressed image (manifest `uncompressed_size`).
    pub image_size: Option<u64>,
    /// `--sha256`: the stored or the decompressed digest, either matches.
    pub any_sha256: Option<String>,
}

/// A resolved fetch.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where the bytes come from.
    pub source: Source,
    /// Expectations.
    pub expect: Expect,
    /// The manifest the plan was made from, if any.
    pub manifest: Option<Manifest>,
}

impl Plan {
    /// The cache key: the digest the download is known by, if any.
    pub fn cache_key(&self) -> Option<&str> {
        self.expect
            .stored_sha256
            .as_deref()
            .or(self.expect.any_sha256.as_deref())
    }

    /// Whether the decompressed image must be hashed as well.
    pub fn hash_image(&self) -> bool {
        self.expect.image_sha256.is_some() || self.expect.any_sha256.is_some()
    }

    /// Best guess of the image's size before downloading (`fallback`: the
    /// server's length), a lower bound for compressed images of unknown size.
    pub fn image_size_estimate(&self, fallback: Option<u64>) -> Option<u64> {
        self.expect
            .image_size
            .or(self.expect.stored_size)
            .or(fallback)
    }

    /// Checks what was written against the expectations.
    pub fn verify(&self, w: &Written) -> Result<(), IntegrityError> {
        let name = self.source.file_name();
        let e = &self.expect;
        check_size(&name, e.stored_size, w.stored_len)?;
        check_digest(&name, e.stored_sha256.as_deref(), &w.stored_sha256)?;
        let image = format!("{name} (decompressed)");
        check_size(&image, e.image_size, w.image_len)?;
        if let (Some(want), Some(got)) = (&e.image_sha256, &w.image_sha256) {
            check_digest(&image, Some(want), got)?;
        }
        if let Some(want) = &e.any_sha256
            && *want != w.stored_sha256
            && w.image_sha256.as_ref() != Some(want)
        {
            let actual = match &w.image_sha256 {
                Some(img) if *img != w.stored_sha256 => {
                    format!("{} (decompressed: {img})", w.stored_sha256)
                }
                _ => w.stored_sha256.clone(),
            };
            return Err(IntegrityError::Digest {
                what: name,
                expected: want.clone(),
                actual,
            });
        }
        Ok(())
    }
}

fn check_size(what: &str, want: Option<u64>, got: u64) -> Result<(), IntegrityError> {
    match want {
        Some(w) if w != got => Err(IntegrityError::Size {
            what: what.to_string(),
            expected: w,
            actual: got,
        }),
        _ => Ok(()),
    }
}

fn check_digest(what: &str, want: Option<&str>, got: &str) -> Result<(), IntegrityError> {
    match want {
        Some(w) if w != got => Err(IntegrityError::Digest {
            what: what.to_string(),
            expected: w.to_string(),
            actual: got.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A plan from a manifest; with `url`, the artifact of that file name.
pub async fn from_manifest(
    manifest: &Source,
    url: Option<&Source>,
    client: &Client,
    http: HttpOptions,
) -> Result<Plan, PlanError> {
    let text = load(manifest, client, http).await?;
    let m = Manifest::from_json(&text).map_err(|e| PlanError::Invalid(manifest.to_string(), e))?;
    let artifact =
        choose(&m, url.map(Source::file_name).as_deref()).map_err(|wanted| match wanted {
            None => PlanError::Empty(manifest.to_string()),
            Some(wanted) => PlanError::NoArtifact {
                manifest: manifest.to_string(),
                wanted,
                have: m
                    .artifacts
                    .iter()
                    .map(|a| a.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        })?;
    let source = match url {
        Some(u) => u.clone(),
        None => manifest.join(&artifact.path)?,
    };
    let expect = Expect {
        stored_sha256: Some(artifact.sha256.to_ascii_lowercase()),
        stored_size: Some(artifact.size),
        image_sha256: artifact
            .uncompressed_sha256
            .as_ref()
            .map(|s| s.to_ascii_lowercase()),
        image_size: artifact
            .uncompressed_size
            .or_else(|| (!is_compressed_name(&artifact.path)).then_some(artifact.size)),
        any_sha256: None,
    };
    Ok(Plan {
        source,
        expect,
        manifest: Some(m),
    })
}

fn is_compressed_name(path: &str) -> bool {
    [".zst", ".gz", ".xz"].iter().any(|s| path.ends_with(s))
}

/// The artifact to fetch: the one named `wanted`, else the `.zst`, else any
/// compressed one, else the raw `.ext4`, else the first. `Err(wanted)` when none.
pub fn choose<'m>(m: &'m Manifest, wanted: Option<&str>) -> Result<&'m Artifact, Option<String>> {
    let name_of = |a: &Artifact| a.path.rsplit('/').next().unwrap_or("").to_string();
    if let Some(w) = wanted {
        return m
            .artifacts
            .iter()
            .find(|a| name_of(a) == w)
            .ok_or_else(|| Some(w.to_string()));
    }
    let a = &m.artifacts;
    a.iter()
        .find(|a| a.path.ends_with(".zst"))
        .or_else(|| a.iter().find(|a| a.uncompressed_size.is_some()))
        .or_else(|| a.iter().find(|a| a.path.ends_with(".ext4")))
        .or_else(|| a.first())
        .ok_or(None)
}

async fn load(src: &Source, client: &Client, http: HttpOptions) -> Result<String, PlanError> {
    match src {
        Source::File(p) => {
            let len = std::fs::metadata(p)
                .map_err(|e| PlanError::Read(src.to_string(), e))?
                .len();
            if len > MANIFEST_MAX {
                return Err(PlanError::TooLarge(src.to_string()));
            }
            std::fs::read_to_string(p).map_err(|e| PlanError::Read(src.to_string(), e))
        }
        Source::Http(url) => {
            let mut t = Transfer::new(client.clone(), url.clone(), http, None);
            let resp = t.open().await?;
            if t.total().is_some_and(|n| n > MANIFEST_MAX) {
                return Err(PlanError::TooLarge(src.to_string()));
            }
            let body = tokio::time::timeout(http.timeout, resp.bytes())
                .await
                .map_err(|_| HttpError::Stalled(http.timeout))?
                .map_err(HttpError::Request)?;
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Compression;

    fn manifest(artifacts: &str) -> Manifest {
        Manifest::from_json(&format!(
            r#"{{"name":"n","profile":"vm","created":"t","kernel":{{"version":"6"}},"artifacts":[{artifacts}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn prefers_the_zst_artifact() {
        let m = manifest(
            r#"{"path":"rootfs.ext4","size":10,"sha256":"a"},
               {"path":"rootfs.ext4.zst","size":3,"sha256":"b","uncompressed_size":10}"#,
        );
        assert_eq!(choose(&m, None).unwrap().path, "rootfs.ext4.zst");
        assert_eq!(choose(&m, Some("rootfs.ext4")).unwrap().sha256, "a");
        assert_eq!(choose(&m, Some("x")).unwrap_err(), Some("x".into()));
        assert_eq!(choose(&manifest(""), None).unwrap_err(), None);
    }

    fn written(stored: &str, image: Option<&str>) -> Written {
        Written {
            file: tempfile::tempfile().unwrap(),
            compression: Compression::Zstd,
            stored_len: 3,
            stored_sha256: stored.into(),
            image_len: 10,
            image_sha256: image.map(Into::into),
            data_bytes: 10,
        }
    }

    #[test]
    fn verification_names_both_digests() {
        let plan = Plan {
            source: Source::parse("http://h/rootfs.ext4.zst").unwrap(),
            expect: Expect {
                stored_sha256: Some("aa".into()),
                image_sha256: Some("bb".into()),
                stored_size: Some(3),
                image_size: Some(10),
                any_sha256: None,
            },
            manifest: None,
        };
        plan.verify(&written("aa", Some("bb"))).unwrap();
        let e = plan
            .verify(&written("ab", Some("bb")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected aa, got ab") && e.contains("rootfs.ext4.zst"),
            "{e}"
        );
        let e = plan
            .verify(&written("aa", Some("bc")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("decompressed") && e.contains("expected bb, got bc"),
            "{e}"
        );
    }

    #[test]
    fn a_given_sha256_may_be_either_digest() {
        let mut plan = Plan {
            source: Source::parse("/x.gz").unwrap(),
            expect: Expect::default(),
            manifest: None,
        };
        plan.expect.any_sha256 = Some("bb".into());
        plan.verify(&written("aa", Some("bb"))).unwrap();
        plan.expect.any_sha256 = Some("aa".into());
        plan.verify(&written("aa", Some("bb"))).unwrap();
        plan.expect.any_sha256 = Some("cc".into());
        let e = plan
            .verify(&written("aa", Some("bb")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected cc, got aa (decompressed: bb)"), "{e}");
    }
}
