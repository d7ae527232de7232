//! Copies one version into the registry and reads it back.
//!
//! The steps are idempotent, so a run killed at any point and started again finishes the job:
//!
//! 1. Hash the source file.
//! 2. Read the version's manifest from the registry and decide ([`super::plan::decide`]).
//! 3. For a copy, upload the blob with its digest, which the registry checks before it stores
//!    the blob, and then push the manifest. A blob that an interrupted run already uploaded is
//!    found by its digest and not uploaded again.
//! 4. Read the blob back and compare its digest and size with the source's.
//!
//! The manifest push in step 3 is the only write that makes a version visible, and registries
//! store a manifest whole or not at all. An interrupted run therefore leaves at most an untagged
//! blob or an unfinished upload, which the next run reuses or replaces and the registry's
//! garbage collection removes.

use std::{path::Path, sync::Arc};

use tracing::{Instrument as _, debug, error, info, info_span, warn};

use super::{
    ArtifactError,
    content::{hash_source, open_source, read_back},
    plan::{Decision, decide},
    progress::Progress,
    report::{ArtifactResult, CopyOutcome, failure_fields},
    scan::SourceArtifact,
    streak::FailureStreak,
};
use crate::{
    oci::{ArtifactCoordinates, ContentSummary, JarMetadata},
    store::{ArtifactStore as _, OciArtifactStore, StoreError},
};

/// Settings and shared state of the copies of one run.
pub struct CopyJob {
    pub store: OciArtifactStore,
    pub dry_run: bool,
    pub streak: FailureStreak,
    pub progress: Arc<Progress>,
}

/// Copies one version, logs the outcome and counts it on the progress display.
pub async fn copy_artifact(
    job: Arc<CopyJob>,
    artifact: SourceArtifact,
) -> ArtifactResult<CopyOutcome> {
    let span = info_span!("artifact", reference = %artifact.coordinates);
    async move {
        let result = match job.streak.check() {
            Ok(()) => copy(&job, &artifact).await,
            Err(error) => Err(error),
        };
        job.streak.record(&result);
        let (outcome, content) = match result {
            Ok((outcome, content)) => (outcome, Some(content)),
            Err(error) => {
                let (kind, message) = failure_fields(&error);
                (
                    CopyOutcome::Failed {
                        kind,
                        error: message,
                    },
                    None,
                )
            }
        };
        log_outcome(&job.progress, &artifact.path, &outcome, content);
        let problem = matches!(
            outcome,
            CopyOutcome::Conflict { .. } | CopyOutcome::Failed { .. }
        );
        job.progress.finish_artifact(artifact.size, problem);
        ArtifactResult::new(&artifact.coordinates, Some(artifact.path), content, outcome)
    }
    .instrument(span)
    .await
}

async fn copy(
    job: &CopyJob,
    artifact: &SourceArtifact,
) -> Result<(CopyOutcome, ContentSummary), ArtifactError> {
    let coordinates = &artifact.coordinates;
    let source = hash_source(&artifact.read_path).await?;
    let registry = job.store.stat(coordinates).await?;

    match decide(source, registry.map(|stored| content_of(&stored))) {
        Decision::Conflict { registry } => Ok((conflict(registry), source)),
        Decision::AlreadyPresent => {
            check_blob(&job.store, coordinates, source).await?;
            Ok((CopyOutcome::Skipped, source))
        }
        Decision::Copy if job.dry_run => Ok((CopyOutcome::WouldCopy, source)),
        Decision::Copy => upload(job, artifact, source).await,
    }
}

/// Uploads and tags the version, then reads it back.
async fn upload(
    job: &CopyJob,
    artifact: &SourceArtifact,
    source: ContentSummary,
) -> Result<(CopyOutcome, ContentSummary), ArtifactError> {
    let coordinates = &artifact.coordinates;
    let file = open_source(&artifact.read_path).await?;
    let metadata = jar_metadata(coordinates, &artifact.path);

    match job
        .store
        .put(coordinates, file, Some(&source.digest), &metadata)
        .await
    {
        Ok(_) => {}
        // Another writer tagged the version between the check and the push.
        Err(StoreError::Conflict { existing, .. }) => {
            let registry = job
                .store
                .stat(coordinates)
                .await?
                .map_or(source, |stored| content_of(&stored));
            debug!(%existing, "the version was tagged with other content during the upload");
            return Ok((conflict(registry), source));
        }
        Err(StoreError::DigestMismatch { actual, .. }) => {
            return Err(ArtifactError::SourceChanged {
                path: artifact.path.clone(),
                scanned: source.digest,
                uploaded: actual,
            });
        }
        Err(error) => return Err(error.into()),
    }

    read_back(&job.store, coordinates, source).await?;
    Ok((CopyOutcome::Copied, source))
}

/// Checks that the blob of a version found in the registry is there with the expected size, so
/// a version whose earlier copy was cut short is never counted as migrated. A full read-back of
/// every version is `migrate verify`'s job.
async fn check_blob(
    store: &OciArtifactStore,
    coordinates: &ArtifactCoordinates,
    source: ContentSummary,
) -> Result<(), ArtifactError> {
    let repository = coordinates.reference().repository;
    let size = store
        .client()
        .blob_size(&repository, &source.digest)
        .await?;
    if size != Some(source.size) {
        return Err(ArtifactError::BlobMissing {
            coordinates: Box::new(coordinates.clone()),
            digest: source.digest,
            size: source.size,
        });
    }
    Ok(())
}

/// File name `{appId}-{version}.jar`, the default file name of an AppArtifact, and the source
/// file as a `file://` URL.
fn jar_metadata(coordinates: &ArtifactCoordinates, path: &Path) -> JarMetadata {
    let file_name = format!("{}-{}.jar", coordinates.app_id(), coordinates.version());
    let metadata =
        JarMetadata::new(file_name).expect("validated coordinates always make a valid file name");
    match url::Url::from_file_path(path) {
        Ok(url) => metadata
            .clone()
            .with_source_url(url.as_str())
            .unwrap_or(metadata),
        Err(()) => metadata,
    }
}

fn content_of(stored: &crate::store::StoredArtifact) -> ContentSummary {
    ContentSummary {
        digest: stored.digest,
        size: stored.size,
    }
}

fn conflict(registry: ContentSummary) -> CopyOutcome {
    CopyOutcome::Conflict {
        registry_digest: registry.digest,
        registry_size: registry.size,
    }
}

/// Logs one line per artifact. Successes go to debug level while a progress bar counts them.
fn log_outcome(
    progress: &Progress,
    path: &Path,
    outcome: &CopyOutcome,
    content: Option<ContentSummary>,
) {
    let path = path.display();
    let digest = content.map_or_else(String::new, |content| content.digest.to_string());
    let size = content.map_or(0, |content| content.size);
    let quiet = progress.shows_bar();
    match outcome {
        CopyOutcome::Copied if quiet => debug!(%path, %digest, size, "Copied"),
        CopyOutcome::Copied => info!(%path, %digest, size, "Copied"),
        CopyOutcome::Skipped if quiet => debug!(%path, %digest, "Skipped, already in the registry"),
        CopyOutcome::Skipped => info!(%path, %digest, "Skipped, already in the registry"),
        CopyOutcome::WouldCopy if quiet => debug!(%path, %digest, size, "Would copy"),
        CopyOutcome::WouldCopy => info!(%path, %digest, size, "Would copy"),
        CopyOutcome::Conflict {
            registry_digest, ..
        } => warn!(
            %path,
            %digest,
            %registry_digest,
            "Conflict: the registry has other content for this version; left unchanged",
        ),
        CopyOutcome::Failed { kind, error } => error!(%path, kind, error, "Failed"),
    }
}
