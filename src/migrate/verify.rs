//! Compares a filesystem store with the registry: every version of the store, read back in
//! full, and the registry's other versions of the store's applications.
//!
//! Versions of applications that the store does not have at all are not listed, because the
//! distribution API offers no portable way to list repositories (`/v2/_catalog` is optional).

use std::{collections::BTreeMap, collections::BTreeSet, sync::Arc};

use futures::{StreamExt as _, stream};
use serde::Serialize;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use super::{
    ArtifactError,
    content::{hash_source, read_back},
    plan::{Decision, decide, versions_only_in_registry},
    progress::Progress,
    report::{ArtifactResult, VerifyOutcome, failure_fields},
    scan::SourceArtifact,
    streak::FailureStreak,
};
use crate::{
    oci::{ApplicationRef, ArtifactCoordinates, ContentSummary},
    store::{ArtifactStore as _, OciArtifactStore},
};

/// Settings and shared state of the comparisons of one run.
pub struct VerifyJob {
    pub store: OciArtifactStore,
    pub streak: FailureStreak,
    pub progress: Arc<Progress>,
}

/// A repository whose tags could not be listed, so its registry-only versions are unknown.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryFailure {
    pub repository: String,
    pub kind: &'static str,
    pub error: String,
}

/// Compares one version, logs the outcome and counts it on the progress display.
pub async fn verify_artifact(
    job: Arc<VerifyJob>,
    artifact: SourceArtifact,
) -> ArtifactResult<VerifyOutcome> {
    let span = info_span!("artifact", reference = %artifact.coordinates);
    async move {
        let result = match job.streak.check() {
            Ok(()) => compare(&job.store, &artifact).await,
            Err(error) => Err(error),
        };
        job.streak.record(&result);
        let (outcome, content) = match result {
            Ok((outcome, content)) => (outcome, Some(content)),
            Err(error) => {
                let (kind, message) = failure_fields(&error);
                (
                    VerifyOutcome::Failed {
                        kind,
                        error: message,
                    },
                    None,
                )
            }
        };
        log_outcome(&job.progress, &artifact, &outcome);
        let problem = !matches!(outcome, VerifyOutcome::Identical);
        job.progress.finish_artifact(artifact.size, problem);
        ArtifactResult::new(&artifact.coordinates, Some(artifact.path), content, outcome)
    }
    .instrument(span)
    .await
}

async fn compare(
    store: &OciArtifactStore,
    artifact: &SourceArtifact,
) -> Result<(VerifyOutcome, ContentSummary), ArtifactError> {
    let source = hash_source(&artifact.read_path).await?;
    let registry = store.stat(&artifact.coordinates).await?;
    let registry = registry.map(|stored| ContentSummary {
        digest: stored.digest,
        size: stored.size,
    });

    let outcome = match decide(source, registry) {
        Decision::Copy => VerifyOutcome::Missing,
        Decision::Conflict { registry } => VerifyOutcome::Different {
            registry_digest: registry.digest,
            registry_size: registry.size,
        },
        Decision::AlreadyPresent => {
            read_back(store, &artifact.coordinates, source).await?;
            VerifyOutcome::Identical
        }
    };
    Ok((outcome, source))
}

/// Lists the versions that the registry has for the store's applications and the store does
/// not, `concurrency` repositories at a time.
pub async fn find_registry_only_versions(
    store: &OciArtifactStore,
    artifacts: &[SourceArtifact],
    concurrency: usize,
) -> (Vec<ArtifactResult<VerifyOutcome>>, Vec<RepositoryFailure>) {
    let mut store_versions: BTreeMap<&ApplicationRef, BTreeSet<&str>> = BTreeMap::new();
    for artifact in artifacts {
        let coordinates = &artifact.coordinates;
        store_versions
            .entry(coordinates.application())
            .or_default()
            .insert(coordinates.version());
    }

    let listings: Vec<_> = stream::iter(store_versions)
        .map(|(application, versions)| async move {
            let listed = store.list_versions(application).await;
            (application, versions, listed)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;

    let mut only_in_registry = Vec::new();
    let mut failures = Vec::new();
    for (application, versions, listed) in listings {
        match listed {
            Ok(registry_versions) => {
                for version in versions_only_in_registry(&versions, &registry_versions) {
                    let coordinates =
                        ArtifactCoordinates::for_application(application.clone(), version)
                            .expect("versions from tags are validated by version_from_tag");
                    info!(reference = %coordinates, "Only in registry");
                    only_in_registry.push(ArtifactResult::new(
                        &coordinates,
                        None,
                        None,
                        VerifyOutcome::OnlyInRegistry,
                    ));
                }
            }
            Err(store_error) => {
                let error = ArtifactError::from(store_error);
                error!(repository = %application, %error, "Failed to list the registry's versions");
                let (kind, message) = failure_fields(&error);
                failures.push(RepositoryFailure {
                    repository: application.repository(),
                    kind,
                    error: message,
                });
            }
        }
    }
    (only_in_registry, failures)
}

/// Logs one line per artifact. Matches go to debug level while a progress bar counts them.
fn log_outcome(progress: &Progress, artifact: &SourceArtifact, outcome: &VerifyOutcome) {
    let path = artifact.path.display();
    match outcome {
        VerifyOutcome::Identical if progress.shows_bar() => debug!(%path, "Identical"),
        VerifyOutcome::Identical => info!(%path, "Identical"),
        VerifyOutcome::Missing => warn!(%path, "Missing in the registry"),
        VerifyOutcome::Different {
            registry_digest, ..
        } => warn!(%path, %registry_digest, "Different content in the registry"),
        VerifyOutcome::OnlyInRegistry => warn!(%path, "Only in the registry"),
        VerifyOutcome::Failed { kind, error } => error!(%path, kind, error, "Failed"),
    }
}
