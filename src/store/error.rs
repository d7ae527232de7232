//! Errors of the artifact stores.

use std::{io, path::PathBuf};

use crate::oci::{ArtifactCoordinates, Digest, InvalidCoordinates, OciError};

/// A failed store operation, naming the artifact and, for the filesystem, the path.
///
/// The coordinates are boxed so the error stays small in `Result`s.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    InvalidCoordinates(#[from] InvalidCoordinates),

    #[error("artifact {coordinates} not found")]
    NotFound {
        coordinates: Box<ArtifactCoordinates>,
    },

    #[error(
        "artifact {coordinates} already exists with digest {existing}, and versions are \
         immutable: the new content with digest {attempted} was not stored; publish it as a new \
         version"
    )]
    Conflict {
        coordinates: Box<ArtifactCoordinates>,
        existing: Digest,
        attempted: Digest,
    },

    #[error(
        "content for {coordinates} has digest {actual}, expected {expected}; nothing was stored"
    )]
    DigestMismatch {
        coordinates: Box<ArtifactCoordinates>,
        expected: Digest,
        actual: Digest,
    },

    #[error(
        "stored content of {coordinates} has digest {actual} and size {actual_size}, but digest \
         {expected} and size {expected_size} were recorded; the stored file is corrupted"
    )]
    Corrupted {
        coordinates: Box<ArtifactCoordinates>,
        expected: Digest,
        expected_size: u64,
        actual: Digest,
        actual_size: u64,
    },

    #[error("failed to read the content for {coordinates}: {source}")]
    ReadInput {
        coordinates: Box<ArtifactCoordinates>,
        #[source]
        source: io::Error,
    },

    #[error("failed to {operation} {}: {source}", path.display())]
    Filesystem {
        /// Operation that failed, as a verb phrase: "create directory", "write", "rename to".
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(transparent)]
    Registry(#[from] OciError),
}

impl StoreError {
    /// Short, stable label for the kind of failure, used as a metric label value.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::InvalidCoordinates(_) => "invalid_coordinates",
            StoreError::NotFound { .. } => "not_found",
            StoreError::Conflict { .. } => "conflict",
            StoreError::DigestMismatch { .. } => "digest_mismatch",
            StoreError::Corrupted { .. } => "corrupted",
            StoreError::ReadInput { .. } => "read_input",
            StoreError::Filesystem { .. } => "filesystem",
            StoreError::Registry(error) => error.metric_label(),
        }
    }

    /// Returns whether the same operation may succeed later without a change of input or
    /// configuration.
    /// Registry errors follow [`OciError::is_transient`]. File system errors count as transient
    /// only for interruptions and timeouts, because a full disk or a permission problem needs an
    /// operator.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Registry(error) => error.is_transient(),
            StoreError::Filesystem { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    pub(super) fn filesystem(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Filesystem {
            operation,
            path,
            source,
        }
    }
}
