//! The rules every backend applies before it writes a version.

use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::{StoreError, StoredArtifact};
use crate::oci::{
    ArtifactCoordinates, ContentSummary, Digest, digest::ContentHasher, streaming::CHUNK_SIZE,
};

/// Rejects content whose digest differs from the one the caller expected.
pub fn check_expected(
    coordinates: &ArtifactCoordinates,
    expected: Option<&Digest>,
    content: ContentSummary,
) -> Result<(), StoreError> {
    match expected {
        Some(expected) if *expected != content.digest => Err(StoreError::DigestMismatch {
            coordinates: Box::new(coordinates.clone()),
            expected: *expected,
            actual: content.digest,
        }),
        _ => Ok(()),
    }
}

/// Returns the existing artifact when `content` is the same, or a conflict naming both digests.
pub fn reuse_existing(
    existing: StoredArtifact,
    content: ContentSummary,
) -> Result<StoredArtifact, StoreError> {
    if existing.digest == content.digest && existing.size == content.size {
        Ok(existing)
    } else {
        Err(StoreError::Conflict {
            coordinates: Box::new(existing.coordinates),
            existing: existing.digest,
            attempted: content.digest,
        })
    }
}

/// Reads `reader` to its end and returns the digest and size of what it produced.
pub async fn hash_reader<R>(
    coordinates: &ArtifactCoordinates,
    mut reader: R,
) -> Result<ContentSummary, StoreError>
where
    R: AsyncRead + Unpin,
{
    let mut hasher = ContentHasher::new();
    let mut buffer = vec![0; CHUNK_SIZE];
    loop {
        let read = reader
            .read(&mut buffer)
            .await
            .map_err(|source| StoreError::ReadInput {
                coordinates: Box::new(coordinates.clone()),
                source,
            })?;
        if read == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..read]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinates() -> ArtifactCoordinates {
        ArtifactCoordinates::new("acme", "billing", "1").unwrap()
    }

    fn summary(bytes: &[u8]) -> ContentSummary {
        ContentSummary {
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
        }
    }

    fn stored(bytes: &[u8]) -> StoredArtifact {
        StoredArtifact {
            coordinates: coordinates(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn same_content_reuses_existing() {
        let existing = stored(b"a");
        assert_eq!(
            reuse_existing(existing.clone(), summary(b"a")).unwrap(),
            existing
        );
    }

    #[test]
    fn different_content_conflicts_naming_both_digests() {
        let error = reuse_existing(stored(b"a"), summary(b"b")).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(&Digest::of(b"a").to_string()), "{message}");
        assert!(message.contains(&Digest::of(b"b").to_string()), "{message}");
        assert_eq!(error.metric_label(), "conflict");
    }

    #[test]
    fn expected_digest_mismatch_is_rejected() {
        let expected = Digest::of(b"a");
        assert!(check_expected(&coordinates(), Some(&expected), summary(b"a")).is_ok());
        assert!(check_expected(&coordinates(), None, summary(b"b")).is_ok());
        let error = check_expected(&coordinates(), Some(&expected), summary(b"b")).unwrap_err();
        assert!(
            matches!(error, StoreError::DigestMismatch { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn hash_reader_reads_to_end() {
        let content = vec![1u8; CHUNK_SIZE + 3];
        let summary = hash_reader(&coordinates(), content.as_slice())
            .await
            .unwrap();
        assert_eq!(summary.size, content.len() as u64);
        assert_eq!(summary.digest, Digest::of(&content));
    }
}
