//! Errors of the migration: those that stop a run before it starts, and those of one artifact,
//! which are reported and never stop the others.

use std::{io, path::PathBuf};

use crate::{
    oci::{ArtifactCoordinates, ContentSummary, Digest, OciError},
    store::StoreError,
};

/// A failure that stops the command: the source, the registry or the cluster cannot be used.
///
/// Client errors are boxed so the error stays small in `Result`s.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "failed to read the source store {}: {source}; pass the directory that contains one \
         directory per tenant",
        path.display()
    )]
    SourceRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to read the credentials file {}: {source}", path.display())]
    Credentials {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "invalid credentials file {}: {reason}; write one line USERNAME:PASSWORD",
        path.display()
    )]
    InvalidCredentials { path: PathBuf, reason: &'static str },

    #[error("{0}; check --registry and --ca")]
    RegistrySetup(#[source] Box<OciError>),

    #[error(
        "registry {registry} is not usable: {source}; check --registry, --credentials-file and \
         --ca"
    )]
    RegistryCheck {
        registry: String,
        #[source]
        source: Box<OciError>,
    },

    #[error("failed to connect to the Kubernetes API server for --create-resources: {0}")]
    Cluster(#[from] crate::Error),

    #[error(
        "the AppArtifact resource is not installed in the cluster ({source}); install the CRDs \
         with `artifact-operator crds | kubectl apply --server-side -f -`"
    )]
    CrdMissing {
        #[source]
        source: Box<kube::Error>,
    },

    #[error(
        "ArtifactRegistry {namespace}/{name} given by --registry-ref not found; create it first \
         or correct the option"
    )]
    RegistryRefNotFound { namespace: String, name: String },

    #[error("failed to read ArtifactRegistry {namespace}/{name}: {source}")]
    RegistryRefLookup {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("failed to write the report {}: {source}", path.display())]
    WriteReport {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl MigrateError {
    /// Short, stable label for the kind of failure, used as a metric label value.
    pub fn metric_label(&self) -> &'static str {
        match self {
            MigrateError::SourceRoot { .. } => "source_root",
            MigrateError::Credentials { .. } => "credentials",
            MigrateError::InvalidCredentials { .. } => "invalid_credentials",
            MigrateError::RegistrySetup(_) => "registry_setup",
            MigrateError::RegistryCheck { .. } => "registry_check",
            MigrateError::Cluster(_) => "cluster",
            MigrateError::CrdMissing { .. } => "crd_missing",
            MigrateError::RegistryRefNotFound { .. } => "registry_ref_not_found",
            MigrateError::RegistryRefLookup { .. } => "registry_ref_lookup",
            MigrateError::WriteReport { .. } => "write_report",
        }
    }
}

/// A failure of one artifact. The run goes on with the others and exits non-zero at the end.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("failed to read {}: {source}", path.display())]
    ReadSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(
        "{coordinates} is tagged with digest {digest}, but the registry has no blob of {size} \
         bytes for it; the registry lost data, so restore it or delete the tag and migrate again"
    )]
    BlobMissing {
        coordinates: Box<ArtifactCoordinates>,
        digest: Digest,
        size: u64,
    },

    #[error(
        "{} changed while it was copied: it had digest {scanned} when hashed and {uploaded} \
         when uploaded; nothing was tagged, so run the migration again once the file is stable",
        path.display()
    )]
    SourceChanged {
        path: PathBuf,
        scanned: Digest,
        uploaded: Digest,
    },

    #[error(
        "reading {coordinates} back from the registry returned digest {} and size {}, expected \
         {} and size {}; check the registry's storage",
        actual.digest, actual.size, expected.digest, expected.size
    )]
    ReadBackMismatch {
        coordinates: Box<ArtifactCoordinates>,
        expected: ContentSummary,
        actual: ContentSummary,
    },

    #[error(
        "not attempted because {failures} artifacts in a row failed with registry errors; fix \
         the registry and run the command again"
    )]
    NotAttempted { failures: u32 },
}

impl ArtifactError {
    /// Returns whether the failure may go away without a change to the source, such as a
    /// registry that is unreachable or returns 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            ArtifactError::Store(error) => error.is_transient(),
            ArtifactError::NotAttempted { .. } => true,
            _ => false,
        }
    }

    /// Short, stable label for the kind of failure, used in reports.
    pub fn label(&self) -> &'static str {
        match self {
            ArtifactError::ReadSource { .. } => "read_source",
            ArtifactError::Store(error) => error.metric_label(),
            ArtifactError::BlobMissing { .. } => "blob_missing",
            ArtifactError::SourceChanged { .. } => "source_changed",
            ArtifactError::ReadBackMismatch { .. } => "read_back_mismatch",
            ArtifactError::NotAttempted { .. } => "not_attempted",
        }
    }
}

impl From<OciError> for ArtifactError {
    fn from(error: OciError) -> Self {
        ArtifactError::Store(StoreError::Registry(error))
    }
}
