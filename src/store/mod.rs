//! Storage of application JARs behind one interface, with immutable versions.
//!
//! Two backends implement [`ArtifactStore`]: [`FilesystemArtifactStore`] for a directory and
//! [`OciArtifactStore`] for an OCI registry. Both follow the same rules, which the conformance
//! suite in `tests/conformance.rs` checks against each of them:
//!
//! - A version is written once. Putting the same bytes again returns the stored artifact, and
//!   putting different bytes fails with [`StoreError::Conflict`] and changes nothing.
//! - When the caller gives an expected SHA-256, content with another digest fails with
//!   [`StoreError::DigestMismatch`] and the version does not appear.
//! - Content is streamed and hashed in one pass in both directions, and a read stream ends with
//!   an error instead of ending normally when the stored bytes no longer match their digest.
//!
//! The trait uses `impl Future + Send` return types rather than `async-trait`, so callers use a
//! backend as a generic parameter (`S: ArtifactStore`), not as `dyn ArtifactStore`.

mod error;
mod filesystem;
mod immutable;
pub mod locks;
mod oci;

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncRead;

pub use self::{error::StoreError, filesystem::FilesystemArtifactStore, oci::OciArtifactStore};
use crate::oci::{ApplicationRef, ArtifactCoordinates, Digest, JarMetadata};

/// A stored version of an application JAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    pub coordinates: ArtifactCoordinates,
    /// SHA-256 of the JAR.
    pub digest: Digest,
    /// Size of the JAR in bytes.
    pub size: u64,
}

/// The bytes of a stored JAR as they are read.
pub type ArtifactStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// A stored JAR opened for reading.
pub struct OpenedArtifact {
    pub artifact: StoredArtifact,
    /// The content, verified against [`StoredArtifact::digest`] while it is read. It yields
    /// [`StoreError::Corrupted`] (or a registry error) as its last item when the bytes differ, so
    /// the content is valid only once the stream has ended without an error.
    pub stream: ArtifactStream,
}

impl std::fmt::Debug for OpenedArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedArtifact")
            .field("artifact", &self.artifact)
            .finish_non_exhaustive()
    }
}

/// A place where application JARs are stored, one immutable file per version.
pub trait ArtifactStore: Send + Sync {
    /// Stores the content of `reader` as the given version, reading it once.
    ///
    /// Returns the stored artifact. When the version already exists with the same digest, the
    /// existing artifact is returned and nothing is written.
    ///
    /// # Errors
    ///
    /// - [`StoreError::Conflict`] when the version exists with another digest. Nothing changes.
    /// - [`StoreError::DigestMismatch`] when `expected_sha256` is given and the content has
    ///   another digest. The version does not appear.
    /// - [`StoreError::ReadInput`] when the reader fails, and backend errors.
    fn put<R>(
        &self,
        coordinates: &ArtifactCoordinates,
        reader: R,
        expected_sha256: Option<&Digest>,
        metadata: &JarMetadata,
    ) -> impl Future<Output = Result<StoredArtifact, StoreError>> + Send
    where
        R: AsyncRead + Unpin + Send;

    /// Opens a version for streaming.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when the version does not exist.
    fn open(
        &self,
        coordinates: &ArtifactCoordinates,
    ) -> impl Future<Output = Result<OpenedArtifact, StoreError>> + Send;

    /// Returns the digest and size of a version, or `None` when it does not exist.
    fn stat(
        &self,
        coordinates: &ArtifactCoordinates,
    ) -> impl Future<Output = Result<Option<StoredArtifact>, StoreError>> + Send;

    /// Deletes a version and returns whether it existed.
    fn delete(
        &self,
        coordinates: &ArtifactCoordinates,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Lists the stored versions of an application, sorted as strings (so `1.10` comes before
    /// `1.9`). An application without versions has an empty list.
    fn list_versions(
        &self,
        application: &ApplicationRef,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}
