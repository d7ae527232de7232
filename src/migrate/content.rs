//! Hashing a source JAR and reading a version back from the registry, both streamed.

use std::path::Path;

use futures::StreamExt as _;
use tokio::{fs::File, io::AsyncReadExt as _};

use super::ArtifactError;
use crate::{
    oci::{ArtifactCoordinates, ContentSummary, digest::ContentHasher, streaming::CHUNK_SIZE},
    store::{ArtifactStore as _, OciArtifactStore},
};

/// Opens a source file for reading. The migration never opens one for writing.
pub async fn open_source(path: &Path) -> Result<File, ArtifactError> {
    File::open(path)
        .await
        .map_err(|source| ArtifactError::ReadSource {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads a source file to its end and returns its digest and size.
pub async fn hash_source(path: &Path) -> Result<ContentSummary, ArtifactError> {
    let mut file = open_source(path).await?;
    let mut hasher = ContentHasher::new();
    let mut buffer = vec![0; CHUNK_SIZE];
    loop {
        let read = file
            .read(&mut buffer)
            .await
            .map_err(|source| ArtifactError::ReadSource {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..read]);
    }
}

/// Downloads a version's JAR from the registry and checks that it is `expected`.
///
/// The store already fails the stream when the bytes differ from the digest in the manifest.
/// Comparing with the source's digest as well catches a manifest that names other content.
pub async fn read_back(
    store: &OciArtifactStore,
    coordinates: &ArtifactCoordinates,
    expected: ContentSummary,
) -> Result<(), ArtifactError> {
    let mut opened = store.open(coordinates).await?;
    let mut hasher = ContentHasher::new();
    while let Some(chunk) = opened.stream.next().await {
        hasher.update(&chunk?);
    }
    let actual = hasher.finish();
    if actual != expected {
        return Err(ArtifactError::ReadBackMismatch {
            coordinates: Box::new(coordinates.clone()),
            expected,
            actual,
        });
    }
    Ok(())
}
