//! A store in an OCI registry, one JAR artifact per version (see [`crate::oci`]).

use std::sync::Arc;

use futures::TryStreamExt as _;
use tokio::io::AsyncRead;
use tracing::{debug, instrument};

use super::{
    ArtifactStore, OpenedArtifact, StoreError, StoredArtifact,
    immutable::{check_expected, hash_reader, reuse_existing},
    locks::VersionLocks,
};
use crate::oci::{
    ApplicationRef, ArtifactCoordinates, BlobPush, ContentSummary, Digest, JarArtifact,
    JarMetadata, OciError, RegistryClient, coordinates::version_from_tag,
};

/// Stores JARs in an OCI registry under `{tenantId}/{appId}:v{version}`.
///
/// Putting a version checks for its tag, uploads the blob, checks the tag again and then pushes
/// the manifest. Content that is rejected (a conflict or a digest mismatch) may leave an
/// untagged blob, which the registry's garbage collection removes, but never a tag.
///
/// Puts and deletes of one version through the same store (or its clones) run one after the
/// other, so of several concurrent puts with different content exactly one is tagged and the
/// others conflict.
///
/// NOTE: OCI registries have no conditional manifest `PUT`, so two *processes* that put
/// different content for the same new version at the same moment can both pass the second
/// check, and the later manifest wins. Run one writer per registry to avoid this.
#[derive(Debug, Clone)]
pub struct OciArtifactStore {
    client: RegistryClient,
    locks: Arc<VersionLocks>,
}

impl OciArtifactStore {
    pub fn new(client: RegistryClient) -> Self {
        Self::with_locks(client, Arc::default())
    }

    /// Creates a store that shares its version locks with other stores, so that puts of one
    /// version through short-lived stores (one per reconcile) still run one after the other.
    pub fn with_locks(client: RegistryClient, locks: Arc<VersionLocks>) -> Self {
        Self { client, locks }
    }

    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// Uploads the content as a blob and returns its digest and size, verifying `expected`.
    async fn upload<R>(
        &self,
        coordinates: &ArtifactCoordinates,
        mut reader: R,
        expected: Option<&Digest>,
    ) -> Result<ContentSummary, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let repository = coordinates.reference().repository;
        let Some(expected) = expected else {
            return Ok(self.client.push_blob(&repository, reader).await?);
        };
        match self
            .client
            .push_blob_with_digest(&repository, &mut reader, expected)
            .await
        {
            Ok(BlobPush::Uploaded(content)) => Ok(content),
            Ok(BlobPush::AlreadyPresent(_)) => {
                // The registry has a blob with the expected digest. The caller's bytes are still
                // hashed, because a put must reject content that differs from its expectation.
                let content = hash_reader(coordinates, reader).await?;
                check_expected(coordinates, Some(expected), content)?;
                Ok(content)
            }
            Err(OciError::UploadDigestMismatch { actual, .. }) => Err(StoreError::DigestMismatch {
                coordinates: Box::new(coordinates.clone()),
                expected: *expected,
                actual,
            }),
            Err(error) => Err(error.into()),
        }
    }
}

fn stored(coordinates: &ArtifactCoordinates, artifact: &JarArtifact) -> StoredArtifact {
    StoredArtifact {
        coordinates: coordinates.clone(),
        digest: artifact.layer.digest,
        size: artifact.layer.size,
    }
}

impl ArtifactStore for OciArtifactStore {
    #[instrument(skip(self, reader, metadata), fields(registry = %self.client.registry(), %coordinates))]
    async fn put<R>(
        &self,
        coordinates: &ArtifactCoordinates,
        reader: R,
        expected_sha256: Option<&Digest>,
        metadata: &JarMetadata,
    ) -> Result<StoredArtifact, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let _version_lock = self.locks.lock(coordinates).await;
        if let Some(existing) = self.stat(coordinates).await? {
            // No upload: hashing locally is enough to decide between reuse and conflict.
            let content = hash_reader(coordinates, reader).await?;
            check_expected(coordinates, expected_sha256, content)?;
            return reuse_existing(existing, content);
        }

        let content = self.upload(coordinates, reader, expected_sha256).await?;
        if let Some(existing) = self.stat(coordinates).await? {
            debug!(%coordinates, "the version was tagged during the upload");
            return reuse_existing(existing, content);
        }
        let artifact = self.client.tag_jar(coordinates, content, metadata).await?;
        Ok(stored(coordinates, &artifact))
    }

    #[instrument(skip(self), fields(registry = %self.client.registry(), %coordinates))]
    async fn open(&self, coordinates: &ArtifactCoordinates) -> Result<OpenedArtifact, StoreError> {
        let (artifact, stream) = match self.client.pull_jar(coordinates).await {
            Ok(pulled) => pulled,
            Err(error) if error.is_not_found() => {
                return Err(StoreError::NotFound {
                    coordinates: Box::new(coordinates.clone()),
                });
            }
            Err(error) => return Err(error.into()),
        };
        Ok(OpenedArtifact {
            artifact: stored(coordinates, &artifact),
            stream: Box::pin(stream.map_err(StoreError::from)),
        })
    }

    #[instrument(skip(self), fields(registry = %self.client.registry(), %coordinates))]
    async fn stat(
        &self,
        coordinates: &ArtifactCoordinates,
    ) -> Result<Option<StoredArtifact>, StoreError> {
        match self.client.fetch_jar(coordinates).await {
            Ok(artifact) => Ok(Some(stored(coordinates, &artifact))),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    #[instrument(skip(self), fields(registry = %self.client.registry(), %coordinates))]
    async fn delete(&self, coordinates: &ArtifactCoordinates) -> Result<bool, StoreError> {
        let _version_lock = self.locks.lock(coordinates).await;
        Ok(self.client.delete_jar(coordinates).await?)
    }

    #[instrument(skip(self), fields(registry = %self.client.registry(), %application))]
    async fn list_versions(&self, application: &ApplicationRef) -> Result<Vec<String>, StoreError> {
        let tags = match self.client.list_tags(&application.repository()).await {
            Ok(tags) => tags,
            Err(error) if error.is_not_found() => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let mut versions: Vec<String> = tags
            .iter()
            .filter_map(|tag| version_from_tag(tag))
            .map(str::to_owned)
            .collect();
        versions.sort();
        versions.dedup();
        Ok(versions)
    }
}
