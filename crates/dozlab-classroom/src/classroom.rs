//! `dozlab classroom render`: one FluxCD HelmRelease per student, a Secret per
//! student holding a generated password, and a private credentials file.
//!
//! The password is only ever in the Secret and the credentials file: the
//! HelmRelease points at the Secret with `codeServer.existingSecret`. Output is
//! built in a temporary directory beside `--out` and renamed into place, so a
//! failure leaves nothing behind.

use crate::lab::LabSource;
use crate::names::{self, NameError};
use crate::roster::{self, RosterError, Student};
use crate::{password, yaml};
use serde_json::{Value, json};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest session id in a classroom (the Helm release `lab-<id>` must fit 53 characters).
pub const MAX_CLASSROOM_SESSION_ID: usize = 49;
/// Key of the password inside each student's Secret (the chart's own key).
pub const SECRET_KEY: &str = "vscode-password";

/// What to render.
#[derive(Debug, Clone)]
pub struct Options {
    pub roster: PathBuf,
    pub image_url: String,
    pub out: PathBuf,
    pub course: Option<String>,
    pub cohort: Option<String>,
    /// Name of the Flux GitRepository holding the chart.
    pub chart_source: String,
    /// Namespace of that GitRepository.
    pub chart_source_namespace: String,
    /// Chart path inside the source.
    pub chart: String,
    /// Namespace of the HelmReleases, Secrets and session pods.
    pub namespace: String,
    /// Also write `seal-secrets.sh` (kubeseal) for Secrets kept in Git as SealedSecrets.
    pub sealed: bool,
    /// The lab every session shows beside its terminal (the chart's `lab`).
    pub lab: Option<LabSource>,
}

/// One student's session as rendered.
#[derive(Debug, Clone)]
pub struct Session {
    pub student: Student,
    pub session_id: String,
    /// HelmRelease (and pod) name: `lab-session-<session id>`.
    pub name: String,
    pub secret_name: String,
    pub password: String,
}

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum ClassroomError {
    #[error(transparent)]
    Roster(#[from] RosterError),
    #[error("--{flag}")]
    Flag {
        flag: &'static str,
        #[source]
        source: NameError,
    },
    #[error("--image-url {0:?} is not an http://, https:// or file:// URL")]
    ImageUrl(String),
    #[error(
        "--out {0} exists and is not empty; choose a new directory (rendering again would replace the students' passwords)"
    )]
    OutNotEmpty(PathBuf),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ClassroomError {
    /// True when the user must change the command or the roster (exit code 2).
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            Self::Write { .. } | Self::Roster(RosterError::Read { .. })
        )
    }
}

/// What was written.
#[derive(Debug)]
pub struct Summary {
    pub sessions: Vec<Session>,
    pub out: PathBuf,
}

/// Validates the flags and roster, then writes everything under `opts.out`.
pub fn render(opts: &Options) -> Result<Summary, ClassroomError> {
    check_url(&opts.image_url)?;
    let prefix = course_prefix(opts)?;
    if let Some(c) = &opts.cohort {
        names::check_label_value("cohort", c).map_err(|source| ClassroomError::Flag {
            flag: "cohort",
            source,
        })?;
    }
    names::check_session_id("namespace", &opts.namespace, 63).map_err(|source| {
        ClassroomError::Flag {
            flag: "namespace",
            source,
        }
    })?;
    let max_id = MAX_CLASSROOM_SESSION_ID - prefix.as_ref().map_or(0, |p| p.len() + 1);
    let students = roster::read(&opts.roster, max_id)?;
    let sessions = plan(students, prefix.as_deref());
    check_out(&opts.out)?;
    write_all(opts, &sessions)?;
    Ok(Summary {
        sessions,
        out: opts.out.clone(),
    })
}

pub(crate) fn check_url(url: &str) -> Result<(), ClassroomError> {
    let ok = ["http://", "https://", "file://"]
        .iter()
        .any(|s| url.len() > s.len() && url.starts_with(s));
    if ok {
        Ok(())
    } else {
        Err(ClassroomError::ImageUrl(url.into()))
    }
}

fn course_prefix(opts: &Options) -> Result<Option<String>, ClassroomError> {
    let Some(course) = &opts.course else {
        return Ok(None);
    };
    let flag = |source| ClassroomError::Flag {
        flag: "course",
        source,
    };
    names::check_label_value("course", course).map_err(flag)?;
    let prefix = names::to_dns_label(course);
    if prefix.is_empty() || prefix.len() > MAX_CLASSROOM_SESSION_ID / 2 {
        return Err(flag(NameError::TooLong {
            what: "course (as a name prefix)",
            value: course.clone(),
            len: prefix.len(),
            max: MAX_CLASSROOM_SESSION_ID / 2,
        }));
    }
    Ok(Some(prefix))
}

/// Session ids, names and fresh passwords for validated students.
pub fn plan(students: Vec<Student>, prefix: Option<&str>) -> Vec<Session> {
    students
        .into_iter()
        .map(|student| {
            let session_id = match prefix {
                Some(p) => format!("{p}-{}", student.id),
                None => student.id.clone(),
            };
            Session {
                name: format!("lab-session-{session_id}"),
                secret_name: format!("lab-session-{session_id}-secrets"),
                password: password::generate(),
                session_id,
                student,
            }
        })
        .collect()
}

fn labels(opts: &Options, s: Option<&Session>) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    if let Some(c) = &opts.course {
        m.insert("course".into(), json!(c));
    }
    if let Some(c) = &opts.cohort {
        m.insert("cohort".into(), json!(c));
    }
    if let Some(s) = s {
        m.insert("session-id".into(), json!(s.session_id));
        m.insert("user-id".into(), json!(s.student.user));
        m.insert("app.kubernetes.io/part-of".into(), json!("dozlab"));
    }
    m
}

/// The HelmRelease of one session: no password, only the Secret's name.
pub fn helm_release(opts: &Options, s: &Session) -> Value {
    let mut values = json!({
        "session": {"id": s.session_id, "userId": s.student.user},
        "rootfs": {"imageUrl": opts.image_url},
        "codeServer": {"existingSecret": s.secret_name, "existingSecretKey": SECRET_KEY},
    });
    if let Some(lab) = &opts.lab {
        values["lab"] = lab.to_value();
    }
    let pod_labels = labels(opts, None);
    if !pod_labels.is_empty() {
        values["labels"] = Value::Object(pod_labels);
    }
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": s.name, "namespace": opts.namespace, "labels": labels(opts, Some(s))},
        "spec": {
            "interval": "5m",
            "releaseName": format!("lab-{}", s.session_id),
            "chart": {"spec": {
                "chart": opts.chart,
                "reconcileStrategy": "Revision",
                "sourceRef": {"kind": "GitRepository", "name": opts.chart_source, "namespace": opts.chart_source_namespace},
            }},
            "install": {"remediation": {"retries": 3}},
            "upgrade": {"remediation": {"retries": 3}},
            "values": values,
        },
    })
}

/// The Secret of one session (keep out of Git, or seal it).
pub fn secret(opts: &Options, s: &Session) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": s.secret_name, "namespace": opts.namespace, "labels": labels(opts, Some(s))},
        "type": "Opaque",
        "stringData": {SECRET_KEY: s.password},
    })
}

/// The credentials to hand out, as CSV.
pub fn credentials_csv(opts: &Options, sessions: &[Session]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = [
        "line",
        "id",
        "user",
        "name",
        "email",
        "session_id",
        "namespace",
        "pod",
        "password",
    ];
    let _ = w.write_record(header);
    for s in sessions {
        let line = s.student.line.to_string();
        let row = [
            line.as_str(),
            &s.student.raw_id,
            &s.student.user,
            &s.student.name,
            &s.student.email,
            &s.session_id,
            &opts.namespace,
            &s.name,
            &s.password,
        ];
        let _ = w.write_record(row);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

fn check_out(out: &Path) -> Result<(), ClassroomError> {
    match fs::read_dir(out) {
        Ok(entries) => {
            let mut entries = entries;
            if entries.next().is_some() {
                Err(ClassroomError::OutNotEmpty(out.to_path_buf()))
            } else {
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) if out.exists() => Err(ClassroomError::OutNotEmpty(out.to_path_buf())),
        Err(source) => Err(ClassroomError::Write {
            path: out.to_path_buf(),
            source,
        }),
    }
}

fn write_all(opts: &Options, sessions: &[Session]) -> Result<(), ClassroomError> {
    let out = &opts.out;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ClassroomError::Write { path, source }
    };
    fs::create_dir_all(&parent).map_err(io(&parent))?;
    let staged = dozlab_core::atomic::Staged::new(out).map_err(io(out))?;
    fill(opts, sessions, staged.path())?;
    sync(staged.path())?;
    if out.exists() {
        fs::remove_dir(out).map_err(io(out))?;
    }
    staged.commit().map_err(io(out))
}

fn fill(opts: &Options, sessions: &[Session], dir: &Path) -> Result<(), ClassroomError> {
    let releases = dir.join("helmreleases");
    let secrets = dir.join("secrets");
    mkdir(dir, 0o755)?;
    mkdir(&releases, 0o755)?;
    mkdir(&secrets, 0o700)?;
    put(
        &dir.join(".gitignore"),
        "/secrets/\n/credentials.csv\n",
        0o644,
    )?;
    put(
        &secrets.join(".gitignore"),
        "# Plain-text passwords: never commit.\n*\n",
        0o644,
    )?;
    for s in sessions {
        let hr = yaml::to_yaml_stream(&[helm_release(opts, s)]);
        put(&releases.join(format!("{}.yaml", s.name)), &hr, 0o644)?;
        let sec = yaml::to_yaml_stream(&[secret(opts, s)]);
        put(
            &secrets.join(format!("{}.yaml", s.secret_name)),
            &sec,
            0o600,
        )?;
    }
    put(
        &dir.join("credentials.csv"),
        &credentials_csv(opts, sessions),
        0o600,
    )?;
    if opts.sealed {
        put(&dir.join("seal-secrets.sh"), &seal_script(sessions), 0o755)?;
    }
    Ok(())
}

/// A script that turns each Secret into a SealedSecret next to its HelmRelease.
fn seal_script(sessions: &[Session]) -> String {
    let mut s = String::from(
        "#!/bin/sh\n# Seals each student's Secret with kubeseal (needs access to the cluster's\n# sealed-secrets controller). Commit helmreleases/*.sealedsecret.yaml, never secrets/.\nset -eu\ncd \"$(dirname \"$0\")\"\n",
    );
    for x in sessions {
        s.push_str(&format!(
            "kubeseal -o yaml < secrets/{0}.yaml > helmreleases/{0}.sealedsecret.yaml\n",
            x.secret_name
        ));
    }
    s.push_str("echo \"sealed: helmreleases/*.sealedsecret.yaml\"\n");
    s
}

fn mkdir(path: &Path, mode: u32) -> Result<(), ClassroomError> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|source| ClassroomError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes a new file with `mode` (no fsync per file: [`sync`] flushes the
/// whole tree once before it is renamed into place).
fn put(path: &Path, data: &str, mode: u32) -> Result<(), ClassroomError> {
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        f.write_all(data.as_bytes())?;
        // The umask may have narrowed `mode`; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
    };
    write().map_err(|source| ClassroomError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// One `syncfs` for everything written under `dir` (one fsync per file costs
/// a journal commit each: seconds for a class of hundreds).
fn sync(dir: &Path) -> Result<(), ClassroomError> {
    let err = |source| ClassroomError::Write {
        path: dir.to_path_buf(),
        source,
    };
    let d = fs::File::open(dir).map_err(err)?;
    nix::unistd::syncfs(&d).map_err(|e| err(std::io::Error::from(e)))
}

#[cfg(test)]
mod tests;
