//! The error of a whole fetch and its class, which decides the exit code.

use crate::cache::CacheError;
use crate::ext::ExtError;
use crate::http::HttpError;
use crate::pipeline::PipelineError;
use crate::plan::{IntegrityError, PlanError};
use crate::source::SourceError;
use crate::space::SpaceError;
use std::io;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot read the image {path}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Space(#[from] SpaceError),
    #[error(transparent)]
    Ext(#[from] ExtError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// The class of a failure; each has its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad flags or values (exit 2).
    Usage,
    /// The image could not be obtained: HTTP error, network, missing source (exit 3).
    Network,
    /// The bytes are not what was expected: digest, size, corrupt data (exit 4).
    Integrity,
    /// Not enough disk space (exit 5).
    Space,
    /// The ext4 filesystem is damaged, or checking/growing it failed (exit 6).
    Filesystem,
    /// Anything else, e.g. a local I/O error (exit 1).
    Other,
}

impl ErrorKind {
    /// The process exit code of this class.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Other => 1,
            Self::Usage => 2,
            Self::Network => 3,
            Self::Integrity => 4,
            Self::Space => 5,
            Self::Filesystem => 6,
        }
    }
}

fn io_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ErrorKind::Space,
        _ => ErrorKind::Other,
    }
}

impl FetchError {
    /// The class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Usage(_) | Self::Source(_) => ErrorKind::Usage,
            Self::Open { .. } => ErrorKind::Network,
            Self::Plan(PlanError::Http(e)) | Self::Http(e) => http_kind(e),
            Self::Plan(PlanError::Read(..)) => ErrorKind::Network,
            Self::Plan(PlanError::Source(_)) => ErrorKind::Integrity,
            Self::Plan(_) | Self::Integrity(_) => ErrorKind::Integrity,
            Self::Pipeline(PipelineError::Corrupt(..)) => ErrorKind::Integrity,
            Self::Pipeline(PipelineError::Write(e)) => io_kind(e),
            Self::Pipeline(PipelineError::Aborted) => ErrorKind::Network,
            Self::Pipeline(PipelineError::Refused(e)) | Self::Ext(e) => ext_kind(e),
            Self::Space(_) => ErrorKind::Space,
            Self::Cache(CacheError::Store { source, .. }) => io_kind(source),
            Self::Cache(_) => ErrorKind::Other,
            Self::Io { source, .. } => io_kind(source),
        }
    }

    /// Whether the manifest could not be had (an HTTP 4xx answer, no such
    /// file) or does not list the image asked for: what a caller that only
    /// guessed where a manifest might be falls back from.
    pub fn manifest_unavailable(&self) -> bool {
        match self {
            Self::Plan(PlanError::NoArtifact { .. }) => true,
            Self::Plan(PlanError::Read(_, e)) => e.kind() == io::ErrorKind::NotFound,
            Self::Plan(PlanError::Http(HttpError::Status { status, .. })) => {
                (400..500).contains(status)
            }
            _ => false,
        }
    }

    /// The refused shrink behind this failure, if it is one: the image's
    /// size and the smaller size asked for.
    pub fn refused_shrink(&self) -> Option<(u64, u64)> {
        match self {
            Self::Ext(ExtError::Shrink { current, requested })
            | Self::Pipeline(PipelineError::Refused(ExtError::Shrink { current, requested })) => {
                Some((*current, *requested))
            }
            _ => None,
        }
    }

    /// Shorthand for a local I/O error with context.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

fn ext_kind(e: &ExtError) -> ErrorKind {
    match e {
        ExtError::Shrink { .. } => ErrorKind::Usage,
        _ => ErrorKind::Filesystem,
    }
}

fn http_kind(e: &HttpError) -> ErrorKind {
    match e {
        HttpError::SizeMismatch { .. } => ErrorKind::Integrity,
        HttpError::GaveUp { last, .. } => http_kind(last),
        _ => ErrorKind::Network,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_distinct_codes() {
        let codes: Vec<u8> = [
            ErrorKind::Other,
            ErrorKind::Usage,
            ErrorKind::Network,
            ErrorKind::Integrity,
            ErrorKind::Space,
            ErrorKind::Filesystem,
        ]
        .iter()
        .map(|k| k.exit_code())
        .collect();
        assert_eq!(codes, [1, 2, 3, 4, 5, 6]);
        let full = FetchError::Pipeline(PipelineError::Write(io::Error::from(
            io::ErrorKind::StorageFull,
        )));
        assert_eq!(full.kind(), ErrorKind::Space);
        let shrink = FetchError::Ext(ExtError::Shrink {
            current: 2,
            requested: 1,
        });
        assert_eq!(shrink.kind(), ErrorKind::Usage);
        assert_eq!(shrink.refused_shrink(), Some((2, 1)));
        assert_eq!(full.refused_shrink(), None);
    }
}
