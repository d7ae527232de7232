//! The status of an AppArtifact: condition reasons, the classification of failures into
//! transient and permanent ones, and the builder that turns one reconcile's observation into
//! the status. Everything here is pure.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::Resource;

use super::error::{ContentError, SourceError};
use crate::{
    conditions::{self, Desired, Outcome},
    crd::{AppArtifact, AppArtifactStatus, StoredArtifact},
    oci::OciError,
    registry::access::AccessError,
    store::StoreError,
};

/// Condition type that reports whether the registry stores the artifact.
pub const ARTIFACT_IN_STORAGE: &str = "ArtifactInStorage";

/// Reasons of the `Ready`, `ArtifactInStorage` and `FetchFailed` conditions.
pub mod reason {
    pub const PUSHED: &str = "ArtifactPushed";
    pub const UPLOADED: &str = "ArtifactUploaded";
    pub const ADOPTED: &str = "ArtifactAdopted";
    pub const VERIFIED: &str = "ArtifactVerified";
    pub const PRESENT: &str = "ArtifactPresent";
    pub const MISSING: &str = "ArtifactMissing";
    pub const NOT_FOUND: &str = "ArtifactNotFound";
    pub const REPLACED: &str = "ArtifactReplaced";
    pub const TENANT_MISMATCH: &str = "TenantMismatch";
    pub const NAMESPACE_NOT_ADMITTED: &str = "NamespaceNotAdmitted";
    pub const INVALID_COORDINATES: &str = "InvalidCoordinates";
    pub const REGISTRY_NOT_FOUND: &str = "RegistryNotFound";
    pub const REGISTRY_NOT_READY: &str = "RegistryNotReady";
    pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";
    pub const REGISTRY_UNAUTHORIZED: &str = "RegistryUnauthorized";
    pub const REGISTRY_ERROR: &str = "RegistryError";
    pub const VERSION_CONFLICT: &str = "VersionConflict";
    pub const DIGEST_MISMATCH: &str = "DigestMismatch";
    pub const NOT_A_JAR: &str = "NotAJar";
    pub const TOO_LARGE: &str = "TooLarge";
    pub const SOURCE_NOT_FOUND: &str = "SourceNotFound";
    pub const SOURCE_REJECTED: &str = "SourceRejected";
    pub const SOURCE_DENIED: &str = "SourceDenied";
    pub const SOURCE_UNAVAILABLE: &str = "SourceUnavailable";
    pub const INVALID_SOURCE: &str = "InvalidSource";
    pub const AWAITING_UPLOAD: &str = "AwaitingUpload";
    pub const REUPLOAD_REQUIRED: &str = "ReuploadRequired";
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
}

/// A failed step, classified for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
    /// Whether a retry may succeed without a change of the spec or of the objects it names.
    pub transient: bool,
    /// Whether the failure happened while reading the source, which sets `FetchFailed`.
    pub fetch: bool,
    /// `ArtifactInStorage` as the failure left it, or `None` when the registry was not asked.
    pub in_storage: Option<Desired>,
}

impl Failure {
    pub fn permanent(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            transient: false,
            fetch: false,
            in_storage: None,
        }
    }

    pub fn transient(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            transient: true,
            ..Self::permanent(reason, message)
        }
    }

    pub(crate) fn of_fetch(mut self) -> Self {
        self.fetch = true;
        self
    }

    /// Records what the registry held when the failure happened.
    pub fn with_storage(mut self, in_storage: Desired) -> Self {
        self.in_storage = Some(in_storage);
        self
    }

    /// Records the storage state unless the failure already has one.
    pub fn or_storage(mut self, in_storage: Desired) -> Self {
        self.in_storage.get_or_insert(in_storage);
        self
    }

    /// Returns the outcome: transient failures keep the object progressing, the others stall
    /// it.
    pub fn outcome(&self) -> Outcome {
        let (reason, message) = (self.reason.to_owned(), self.message.clone());
        if self.transient {
            Outcome::Progressing { reason, message }
        } else {
            Outcome::Stalled { reason, message }
        }
    }
}

/// Classifies a failure to read the source.
pub fn source_failure(error: &SourceError) -> Failure {
    let message = error.to_string();
    let failure = match error {
        SourceError::Content { source, .. } => match source {
            ContentError::NotZip { .. } => Failure::permanent(reason::NOT_A_JAR, message),
            ContentError::TooLarge { .. } | ContentError::DeclaredTooLarge { .. } => {
                Failure::permanent(reason::TOO_LARGE, message)
            }
            ContentError::DigestMismatch { .. } => {
                Failure::permanent(reason::DIGEST_MISMATCH, message)
            }
        },
        SourceError::DeniedAddress { .. } => Failure::permanent(reason::SOURCE_DENIED, message),
        SourceError::Status { status, .. }
            if *status == reqwest::StatusCode::NOT_FOUND
                || *status == reqwest::StatusCode::GONE =>
        {
            Failure::permanent(reason::SOURCE_NOT_FOUND, message)
        }
        error if error.is_transient() => Failure::transient(reason::SOURCE_UNAVAILABLE, message),
        SourceError::Status { .. } => Failure::permanent(reason::SOURCE_REJECTED, message),
        _ => Failure::permanent(reason::INVALID_SOURCE, message),
    };
    failure.of_fetch()
}

/// Classifies a failed put. A source failure that surfaced while the registry read the content
/// is classified as a source failure.
pub fn store_failure(error: &StoreError) -> Failure {
    if let Some(source) = embedded_source_error(error) {
        return source_failure(source);
    }
    let message = error.to_string();
    match error {
        StoreError::Conflict { .. } => Failure::permanent(reason::VERSION_CONFLICT, message),
        StoreError::DigestMismatch { .. } => Failure::permanent(reason::DIGEST_MISMATCH, message),
        StoreError::InvalidCoordinates(_) => {
            Failure::permanent(reason::INVALID_COORDINATES, message)
        }
        StoreError::Registry(error) => registry_failure(error),
        StoreError::ReadInput { .. } => {
            Failure::transient(reason::SOURCE_UNAVAILABLE, message).of_fetch()
        }
        _ => Failure::permanent(reason::REGISTRY_ERROR, message),
    }
}

/// Classifies a failed registry request.
pub fn registry_failure(error: &OciError) -> Failure {
    let message = error.to_string();
    match error {
        OciError::Unauthorized { .. } => Failure::permanent(reason::REGISTRY_UNAUTHORIZED, message),
        OciError::NotAJarArtifact { .. } => Failure::permanent(reason::VERSION_CONFLICT, message),
        error if error.is_transient() => Failure::transient(reason::REGISTRY_UNAVAILABLE, message),
        _ => Failure::permanent(reason::REGISTRY_ERROR, message),
    }
}

/// Classifies a failure to build the registry client.
pub fn access_failure(error: &AccessError) -> Failure {
    let message = error.to_string();
    match error {
        AccessError::Kube { .. } => Failure::transient(reason::REGISTRY_NOT_READY, message),
        AccessError::Credentials { .. } => Failure::transient(reason::REGISTRY_NOT_READY, message),
        AccessError::Config { .. } => Failure::permanent(reason::REGISTRY_ERROR, message),
    }
}

/// Finds a [`SourceError`] in the chain of `error`. Content streams reach the registry client
/// as readers, so their errors arrive wrapped in [`std::io::Error`].
fn embedded_source_error(error: &StoreError) -> Option<&SourceError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(source) = error.downcast_ref::<SourceError>() {
            return Some(source);
        }
        // `io::Error::source` skips the wrapped error itself, so unwrap it explicitly.
        current = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => error.source(),
        };
    }
    None
}

/// Result of one reconcile, before it becomes the status.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub outcome: Outcome,
    /// `ArtifactInStorage`, or `None` when the registry could not be asked.
    pub in_storage: Option<Desired>,
    /// The source failure that sets `FetchFailed`, if any.
    pub fetch_failure: Option<Failure>,
    /// The artifact to report in `status.artifact`.
    pub artifact: Option<StoredArtifact>,
}

impl Observation {
    /// Creates the observation of an artifact that the registry stores.
    pub fn ready(reason: &str, message: String, reference: &str, artifact: StoredArtifact) -> Self {
        Self {
            outcome: Outcome::Ready {
                reason: reason.to_owned(),
                message,
            },
            in_storage: Some(present(reference)),
            fetch_failure: None,
            artifact: Some(artifact),
        }
    }

    /// Creates an observation of a failure that keeps the previously reported artifact.
    pub fn failed(failure: &Failure, previous: Option<StoredArtifact>) -> Self {
        Self {
            outcome: failure.outcome(),
            in_storage: failure.in_storage.clone(),
            fetch_failure: failure.fetch.then(|| failure.clone()),
            artifact: previous,
        }
    }
}

/// Returns the `ArtifactInStorage` condition for an artifact that the registry stores.
pub fn present(reference: &str) -> Desired {
    Desired::new(
        ARTIFACT_IN_STORAGE,
        true,
        reason::PRESENT,
        format!("the registry stores {reference}"),
    )
}

/// Returns the `ArtifactInStorage` condition for an artifact that the registry lacks.
pub fn absent(reason: &str, message: impl Into<String>) -> Desired {
    Desired::new(ARTIFACT_IN_STORAGE, false, reason, message)
}

/// Builds the status from an observation, keeping the transition times of unchanged conditions.
pub fn build_status(
    artifact: &AppArtifact,
    previous: &AppArtifactStatus,
    observation: &Observation,
    now: Timestamp,
) -> AppArtifactStatus {
    let generation = artifact.meta().generation;
    let mut extra: Vec<Desired> = observation.in_storage.iter().cloned().collect();
    extra.push(match &observation.fetch_failure {
        Some(failure) => Desired::new(
            conditions::FETCH_FAILED,
            true,
            failure.reason,
            failure.message.clone(),
        ),
        None => Desired::new(conditions::FETCH_FAILED, false, "", ""),
    });
    let desired = conditions::summarize(&observation.outcome, extra);
    AppArtifactStatus {
        observed_generation: generation,
        conditions: conditions::merge(&previous.conditions, &desired, generation, now),
        artifact: observation.artifact.clone(),
    }
}

/// Reports an artifact found as `previous` reported it. A `Ready` condition that is already
/// true keeps its reason and message, such as `ArtifactPushed`, and `lastUpdateTime` stays, so
/// that a check that finds nothing new writes no status.
pub fn verified(
    artifact: &AppArtifact,
    registry_host: &str,
    reference: &str,
    jar: &crate::oci::JarArtifact,
    previous: &StoredArtifact,
    now: Timestamp,
) -> Observation {
    let mut stored = stored_artifact(registry_host, reference, jar, now);
    stored.last_update_time = previous.last_update_time.clone();
    let conditions = artifact
        .status
        .as_ref()
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    let (reason, message) = match conditions::find(conditions, conditions::READY) {
        Some(ready) if ready.status == "True" => (ready.reason.clone(), ready.message.clone()),
        _ => (
            reason::VERIFIED.to_owned(),
            format!(
                "{reference} is in the registry with digest {}",
                jar.layer.digest
            ),
        ),
    };
    Observation::ready(&reason, message, reference, stored)
}

/// Returns `status.artifact` for a JAR that was just pushed or adopted.
pub fn stored_artifact(
    registry_host: &str,
    reference: &str,
    jar: &crate::oci::JarArtifact,
    now: Timestamp,
) -> StoredArtifact {
    StoredArtifact {
        oci_ref: format!("{registry_host}/{reference}"),
        digest: jar.layer.digest.to_string(),
        manifest_digest: jar.manifest_digest.to_string(),
        size: i64::try_from(jar.layer.size).unwrap_or(i64::MAX),
        media_type: jar.layer.media_type.clone(),
        last_update_time: Time(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{ArtifactCoordinates, Digest};

    fn coordinates() -> ArtifactCoordinates {
        ArtifactCoordinates::new("acme", "billing", "1.0").unwrap()
    }

    #[test]
    fn content_failures_stall_with_their_check() {
        let not_zip = SourceError::Content {
            origin: "http://127.0.0.1:9/app.jar".to_owned(),
            source: ContentError::NotZip {
                actual: b"<htm".to_vec(),
            },
        };
        let failure = source_failure(&not_zip);
        assert_eq!(failure.reason, reason::NOT_A_JAR);
        assert!(!failure.transient);
        assert!(failure.fetch);
        assert!(
            failure.message.contains("3c 68 74 6d"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn source_status_404_stalls_and_503_retries() {
        let status = |code| SourceError::Status {
            url: "http://127.0.0.1:9/app.jar".to_owned(),
            status: reqwest::StatusCode::from_u16(code).unwrap(),
        };
        assert_eq!(
            source_failure(&status(404)).reason,
            reason::SOURCE_NOT_FOUND
        );
        assert!(!source_failure(&status(404)).transient);
        assert_eq!(source_failure(&status(403)).reason, reason::SOURCE_REJECTED);
        let unavailable = source_failure(&status(503));
        assert_eq!(unavailable.reason, reason::SOURCE_UNAVAILABLE);
        assert!(unavailable.transient);
    }

    #[test]
    fn source_error_found_inside_store_error() {
        let mismatch = SourceError::Content {
            origin: "ConfigMap ns/jars".to_owned(),
            source: ContentError::DigestMismatch {
                expected: Digest::of(b"a"),
                actual: Digest::of(b"b"),
            },
        };
        let error = StoreError::ReadInput {
            coordinates: Box::new(coordinates()),
            source: std::io::Error::other(mismatch),
        };
        let failure = store_failure(&error);
        assert_eq!(failure.reason, reason::DIGEST_MISMATCH);
        assert!(failure.fetch);
    }

    #[test]
    fn conflict_stalls_without_fetch_failure() {
        let error = StoreError::Conflict {
            coordinates: Box::new(coordinates()),
            existing: Digest::of(b"a"),
            attempted: Digest::of(b"b"),
        };
        let failure = store_failure(&error);
        assert_eq!(failure.reason, reason::VERSION_CONFLICT);
        assert!(!failure.transient);
        assert!(!failure.fetch);
    }

    #[test]
    fn status_sets_and_clears_fetch_failed() {
        let artifact = AppArtifact::new(
            "billing",
            serde_json::from_value(serde_json::json!({
                "registryRef": {"name": "main"},
                "tenantId": "acme", "appId": "billing", "version": "1.0",
                "source": {"url": {"url": "http://127.0.0.1:9/app.jar"}}
            }))
            .unwrap(),
        );
        let now = Timestamp::UNIX_EPOCH;
        let failure = Failure::permanent(reason::SOURCE_NOT_FOUND, "GET returned 404").of_fetch();
        let failed = build_status(
            &artifact,
            &AppArtifactStatus::default(),
            &Observation::failed(&failure, None),
            now,
        );
        assert!(conditions::is_true(
            &failed.conditions,
            conditions::FETCH_FAILED
        ));
        assert!(conditions::is_true(&failed.conditions, conditions::STALLED));

        let ready = Observation {
            outcome: Outcome::Ready {
                reason: reason::PUSHED.to_owned(),
                message: "pushed".to_owned(),
            },
            in_storage: Some(present("acme/billing:v1.0")),
            fetch_failure: None,
            artifact: None,
        };
        let recovered = build_status(&artifact, &failed, &ready, now);
        assert!(conditions::find(&recovered.conditions, conditions::FETCH_FAILED).is_none());
        assert!(conditions::find(&recovered.conditions, conditions::STALLED).is_none());
        assert!(conditions::is_true(
            &recovered.conditions,
            ARTIFACT_IN_STORAGE
        ));
    }
}
