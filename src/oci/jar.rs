//! Application JARs as OCI artifacts: one `application/java-archive` layer under the tag that
//! [`ArtifactCoordinates::reference`] names.

use bytes::Bytes;
use tokio::io::AsyncRead;
use tracing::instrument;

use super::{
    ArtifactCoordinates, OciError, RegistryClient,
    blobs::BlobStream,
    digest::{ContentSummary, Digest},
    manifest::{
        self, Descriptor, EMPTY_CONFIG_CONTENT, InvalidFileName, InvalidSourceUrl,
        JarManifestInput, build_jar_manifest,
    },
};

/// How often [`RegistryClient::tag_jar`] pushes a manifest the registry rejects for a blob it
/// had confirmed.
const MANIFEST_BLOB_RACE_ATTEMPTS: u32 = 4;

/// File name and origin of a JAR, recorded as annotations of its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JarMetadata {
    file_name: String,
    source_url: Option<String>,
}

impl JarMetadata {
    /// Validates the file name, which clients such as `oras pull` use as the output path.
    ///
    /// # Errors
    ///
    /// [`InvalidFileName`] for an empty name, `.`, `..`, or a name with a path separator or a
    /// control character.
    pub fn new(file_name: impl Into<String>) -> Result<Self, InvalidFileName> {
        let file_name = file_name.into();
        manifest::validate_file_name(&file_name)?;
        Ok(Self {
            file_name,
            source_url: None,
        })
    }

    /// Records where the JAR came from, after removing credentials, query and fragment.
    ///
    /// # Errors
    ///
    /// [`InvalidSourceUrl`] when `url` is not an absolute URL.
    pub fn with_source_url(mut self, url: &str) -> Result<Self, InvalidSourceUrl> {
        self.source_url = Some(manifest::sanitize_source_url(url)?);
        Ok(self)
    }

    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// Returns the sanitized source URL.
    pub fn source_url(&self) -> Option<&str> {
        self.source_url.as_deref()
    }
}

/// A JAR stored in a registry: the manifest that tags it and its layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JarArtifact {
    pub manifest_digest: Digest,
    pub layer: Descriptor,
}

impl JarArtifact {
    /// Digest and size of the JAR itself.
    pub fn content(&self) -> ContentSummary {
        ContentSummary {
            digest: self.layer.digest,
            size: self.layer.size,
        }
    }

    /// Returns the file name from the layer's title annotation.
    pub fn file_name(&self) -> Option<&str> {
        self.layer.title()
    }
}

impl RegistryClient {
    /// Fetches the manifest of a version and returns it with its JAR layer.
    ///
    /// # Errors
    ///
    /// [`OciError::NotFound`] when the version's tag does not exist, and
    /// [`OciError::NotAJarArtifact`] when the tag points to something other than one JAR.
    #[instrument(skip(self), fields(registry = %self.registry(), %coordinates))]
    pub async fn fetch_jar(
        &self,
        coordinates: &ArtifactCoordinates,
    ) -> Result<JarArtifact, OciError> {
        let reference = coordinates.reference();
        let fetched = self
            .fetch_manifest(&reference.repository, &reference.tag)
            .await?;
        let layer = fetched
            .manifest
            .jar_layer()
            .map_err(|source| OciError::NotAJarArtifact {
                object: Box::new(self.object(&reference.repository, &reference.tag)),
                source,
            })?;
        Ok(JarArtifact {
            manifest_digest: fetched.digest,
            layer: layer.clone(),
        })
    }

    /// Starts streaming a version's JAR, verified against the digest in its manifest.
    pub async fn pull_jar(
        &self,
        coordinates: &ArtifactCoordinates,
    ) -> Result<(JarArtifact, BlobStream), OciError> {
        let artifact = self.fetch_jar(coordinates).await?;
        let stream = self
            .pull_blob(&coordinates.reference().repository, artifact.content())
            .await?;
        Ok((artifact, stream))
    }

    /// Uploads a JAR's content as a blob without tagging it, and returns its digest and size.
    ///
    /// With `expected`, a blob the registry already has is not uploaded again and the reader is
    /// left unread (see [`Self::push_blob_with_digest`]). Without it, the digest is computed
    /// while streaming (see [`Self::push_blob`]).
    pub async fn push_jar_content<R>(
        &self,
        coordinates: &ArtifactCoordinates,
        reader: R,
        expected: Option<&Digest>,
    ) -> Result<ContentSummary, OciError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let repository = coordinates.reference().repository;
        match expected {
            Some(expected) => Ok(self
                .push_blob_with_digest(&repository, reader, expected)
                .await?
                .content()),
            None => self.push_blob(&repository, reader).await,
        }
    }

    /// Tags a JAR whose content is already in the repository: uploads the empty config if
    /// missing and pushes the manifest under the version's tag, replacing any previous one.
    #[instrument(skip(self, metadata), fields(registry = %self.registry(), %coordinates, digest = %content.digest))]
    pub async fn tag_jar(
        &self,
        coordinates: &ArtifactCoordinates,
        content: ContentSummary,
        metadata: &JarMetadata,
    ) -> Result<JarArtifact, OciError> {
        let reference = coordinates.reference();
        // Registries such as Zot check that the config blob exists.
        self.push_blob_bytes(
            &reference.repository,
            Bytes::from_static(EMPTY_CONFIG_CONTENT),
        )
        .await?;
        let input = JarManifestInput {
            file_name: metadata.file_name.clone(),
            version: coordinates.version().to_owned(),
            source_url: metadata.source_url.clone(),
            created: jiff::Timestamp::now(),
        };
        let manifest = build_jar_manifest(content, &input);
        let manifest_digest = self
            .push_manifest_after_blobs(&reference.repository, &reference.tag, &manifest)
            .await?;
        let [layer] = <[Descriptor; 1]>::try_from(manifest.layers)
            .expect("a JAR manifest has exactly one layer");
        Ok(JarArtifact {
            manifest_digest,
            layer,
        })
    }

    /// Pushes a manifest whose blobs were confirmed a moment ago.
    ///
    /// A registry may still return `MANIFEST_BLOB_UNKNOWN` when another client commits the same
    /// blob to the repository at that instant: the CNCF distribution registry rewrites the
    /// repository's link file in place, and a manifest check that reads it half-written fails.
    /// Such an error contradicts what the registry just reported, so the push is repeated a few
    /// times with the client's backoff before the error is returned.
    async fn push_manifest_after_blobs(
        &self,
        repository: &str,
        tag: &str,
        manifest: &manifest::ImageManifest,
    ) -> Result<Digest, OciError> {
        let mut attempt = 1;
        loop {
            match self.push_manifest(repository, tag, manifest).await {
                Err(error)
                    if error.is_manifest_blob_unknown()
                        && attempt < MANIFEST_BLOB_RACE_ATTEMPTS =>
                {
                    let delay = self.retry_policy().backoff(attempt);
                    tracing::debug!(%error, attempt, ?delay, "registry lost a confirmed blob, pushing the manifest again");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Uploads and tags a JAR, replacing any previous manifest of the version. The
    /// [`crate::store::OciArtifactStore`] adds the immutability of versions on top.
    pub async fn push_jar<R>(
        &self,
        coordinates: &ArtifactCoordinates,
        reader: R,
        expected: Option<&Digest>,
        metadata: &JarMetadata,
    ) -> Result<JarArtifact, OciError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let content = self.push_jar_content(coordinates, reader, expected).await?;
        self.tag_jar(coordinates, content, metadata).await
    }

    /// Deletes a version's manifest, and returns whether it existed.
    pub async fn delete_jar(&self, coordinates: &ArtifactCoordinates) -> Result<bool, OciError> {
        let reference = coordinates.reference();
        match self.delete_tag(&reference.repository, &reference.tag).await {
            Ok(_) => Ok(true),
            Err(error) if error.is_not_found() => Ok(false),
            Err(error) => Err(error),
        }
    }
}
