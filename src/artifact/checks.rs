//! Checks on a JAR's bytes while they stream: ZIP signature, size limit and SHA-256 pin.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use futures::Stream;

use super::error::{ContentError, SourceError};
use crate::oci::{ContentSummary, Digest, digest::ContentHasher};

/// Default maximum size of a JAR: 512 MiB.
pub const DEFAULT_MAX_SIZE: u64 = 512 * 1024 * 1024;

/// Signature of a ZIP local file header, which starts every JAR that has at least one entry.
///
/// The end-of-central-directory signature `PK\x05\x06` that starts an empty ZIP is rejected on
/// purpose: an archive without entries has no classes and no manifest, so it cannot be an
/// application.
pub const ZIP_SIGNATURE: [u8; 4] = *b"PK\x03\x04";

/// Requirements on the content of a source besides the ZIP signature, which is always checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentChecks {
    /// Maximum size in bytes.
    pub max_size: u64,
    /// Expected SHA-256, when the source pins one.
    pub sha256: Option<Digest>,
}

impl Default for ContentChecks {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
            sha256: None,
        }
    }
}

impl ContentChecks {
    /// Rejects a declared length (`Content-Length`) above the limit before any byte is read.
    pub fn check_declared_size(&self, declared: Option<u64>) -> Result<(), ContentError> {
        match declared {
            Some(declared) if declared > self.max_size => Err(ContentError::DeclaredTooLarge {
                max_size: self.max_size,
                declared,
            }),
            _ => Ok(()),
        }
    }

    /// Wraps `stream` so that it yields an error item, instead of ending normally, as soon as a
    /// check fails. `origin` names the source in errors, such as a URL without credentials.
    pub fn wrap<S>(&self, origin: impl Into<String>, stream: S) -> CheckedStream<S> {
        CheckedStream {
            inner: stream,
            origin: origin.into(),
            verifier: ContentVerifier::new(self.clone()),
            done: false,
        }
    }

    /// Checks a complete piece of content held in memory, such as a ConfigMap value.
    pub fn verify(&self, content: &[u8]) -> Result<(), ContentError> {
        let mut verifier = ContentVerifier::new(self.clone());
        verifier.update(content)?;
        verifier.finish().map(|_| ())
    }
}

/// State of the content checks, fed chunk by chunk and then finished once. It does no I/O.
#[derive(Clone)]
pub struct ContentVerifier {
    checks: ContentChecks,
    hasher: ContentHasher,
    prefix: Vec<u8>,
}

impl std::fmt::Debug for ContentVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentVerifier")
            .field("checks", &self.checks)
            .field("size", &self.hasher.size())
            .finish_non_exhaustive()
    }
}

impl ContentVerifier {
    /// Starts checking content against `checks`.
    pub fn new(checks: ContentChecks) -> Self {
        Self {
            checks,
            hasher: ContentHasher::new(),
            prefix: Vec::with_capacity(ZIP_SIGNATURE.len()),
        }
    }

    /// Feeds the next chunk. Fails as soon as the size passes the limit or the first bytes
    /// differ from [`ZIP_SIGNATURE`].
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), ContentError> {
        let size = self.hasher.size() + chunk.len() as u64;
        if size > self.checks.max_size {
            return Err(ContentError::TooLarge {
                max_size: self.checks.max_size,
            });
        }
        self.collect_prefix(chunk);
        if self.prefix.len() == ZIP_SIGNATURE.len() {
            check_signature(&self.prefix)?;
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// Ends the content: checks that it was long enough to hold a signature and that its digest
    /// matches the pin.
    pub fn finish(self) -> Result<ContentSummary, ContentError> {
        check_signature(&self.prefix)?;
        let summary = self.hasher.finish();
        match self.checks.sha256 {
            Some(expected) if expected != summary.digest => Err(ContentError::DigestMismatch {
                expected,
                actual: summary.digest,
            }),
            _ => Ok(summary),
        }
    }

    fn collect_prefix(&mut self, chunk: &[u8]) {
        let missing = ZIP_SIGNATURE.len() - self.prefix.len();
        self.prefix
            .extend_from_slice(&chunk[..missing.min(chunk.len())]);
    }
}

fn check_signature(prefix: &[u8]) -> Result<(), ContentError> {
    if prefix == ZIP_SIGNATURE {
        Ok(())
    } else {
        Err(ContentError::NotZip {
            actual: prefix.to_vec(),
        })
    }
}

/// A stream of content that yields a [`SourceError::Content`] as its last item when a check
/// fails.
///
/// The content is valid only once the stream has ended without an error. It ends after the
/// first error, whether the error came from a check or from the inner stream.
#[derive(Debug)]
pub struct CheckedStream<S> {
    inner: S,
    origin: String,
    verifier: ContentVerifier,
    done: bool,
}

impl<S> Stream for CheckedStream<S>
where
    S: Stream<Item = Result<Bytes, SourceError>> + Unpin,
{
    type Item = Result<Bytes, SourceError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let item = ready!(Pin::new(&mut self.inner).poll_next(cx));
        let checked = match item {
            Some(Ok(chunk)) => self.verify_chunk(chunk),
            Some(Err(error)) => Some(Err(error)),
            None => self.verify_end(),
        };
        if !matches!(checked, Some(Ok(_))) {
            self.done = true;
        }
        Poll::Ready(checked)
    }
}

impl<S> CheckedStream<S> {
    fn verify_chunk(&mut self, chunk: Bytes) -> Option<Result<Bytes, SourceError>> {
        match self.verifier.update(&chunk) {
            Ok(()) => Some(Ok(chunk)),
            Err(error) => Some(Err(SourceError::content(&self.origin, error))),
        }
    }

    fn verify_end(&mut self) -> Option<Result<Bytes, SourceError>> {
        let verifier = self.verifier.clone();
        match verifier.finish() {
            Ok(summary) => {
                tracing::debug!(
                    origin = %self.origin,
                    size = summary.size,
                    digest = %summary.digest,
                    "content checks passed"
                );
                None
            }
            Err(error) => Some(Err(SourceError::content(&self.origin, error))),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::{StreamExt, stream};

    use super::*;

    const JAR_START: &[u8] = b"PK\x03\x04rest of the archive";

    fn checks(max_size: u64, sha256: Option<Digest>) -> ContentChecks {
        ContentChecks { max_size, sha256 }
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, SourceError>> + Unpin {
        stream::iter(
            parts
                .iter()
                .map(|part| Ok(Bytes::from_static(part)))
                .collect::<Vec<_>>(),
        )
    }

    /// Collects the stream's chunks until the first error, and returns them with that error.
    async fn drain(
        mut stream: impl Stream<Item = Result<Bytes, SourceError>> + Unpin,
    ) -> (Vec<u8>, Option<SourceError>) {
        let mut content = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => content.extend_from_slice(&chunk),
                Err(error) => return (content, Some(error)),
            }
        }
        (content, None)
    }

    fn content_error(error: Option<SourceError>) -> ContentError {
        match error {
            Some(SourceError::Content { source, .. }) => source,
            other => panic!("expected a content error, got {other:?}"),
        }
    }

    #[test]
    fn verify_accepts_jar() {
        let pin = Digest::of(JAR_START);
        assert_eq!(checks(1024, Some(pin)).verify(JAR_START), Ok(()));
    }

    #[test]
    fn verify_rejects_empty_zip() {
        let empty_zip = b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        assert_eq!(
            checks(1024, None).verify(empty_zip),
            Err(ContentError::NotZip {
                actual: b"PK\x05\x06".to_vec()
            })
        );
    }

    #[test]
    fn verify_rejects_short_content() {
        assert_eq!(
            checks(1024, None).verify(b"PK"),
            Err(ContentError::NotZip {
                actual: b"PK".to_vec()
            })
        );
    }

    #[test]
    fn verify_reports_digest_mismatch() {
        let expected = Digest::of(b"other");
        assert_eq!(
            checks(1024, Some(expected)).verify(JAR_START),
            Err(ContentError::DigestMismatch {
                expected,
                actual: Digest::of(JAR_START)
            })
        );
    }

    #[test]
    fn declared_size_over_limit_rejected() {
        let checks = checks(10, None);
        assert_eq!(checks.check_declared_size(Some(10)), Ok(()));
        assert_eq!(checks.check_declared_size(None), Ok(()));
        assert_eq!(
            checks.check_declared_size(Some(11)),
            Err(ContentError::DeclaredTooLarge {
                max_size: 10,
                declared: 11
            })
        );
    }

    #[tokio::test]
    async fn stream_passes_jar_split_in_signature() {
        let parts: [&'static [u8]; 3] = [b"P", b"K\x03", b"\x04rest of the archive"];
        let pin = Digest::of(JAR_START);
        let (content, error) = drain(checks(1024, Some(pin)).wrap("test", chunks(&parts))).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(content, JAR_START);
    }

    #[tokio::test]
    async fn stream_rejects_html_at_first_chunk() {
        let parts: [&'static [u8]; 2] = [b"<html>not found</html>", b"more"];
        let (content, error) = drain(checks(1024, None).wrap("test", chunks(&parts))).await;
        assert!(content.is_empty());
        assert_eq!(
            content_error(error),
            ContentError::NotZip {
                actual: b"<htm".to_vec()
            }
        );
    }

    #[tokio::test]
    async fn stream_stops_at_size_limit() {
        let endless = stream::repeat_with(|| Ok(Bytes::from_static(JAR_START)));
        let (content, error) = drain(checks(100, None).wrap("test", endless)).await;
        assert!(content.len() <= 100, "passed {} bytes", content.len());
        assert_eq!(
            content_error(error),
            ContentError::TooLarge { max_size: 100 }
        );
    }

    #[tokio::test]
    async fn stream_ends_with_digest_mismatch() {
        let expected = Digest::of(b"other");
        let (content, error) =
            drain(checks(1024, Some(expected)).wrap("test", chunks(&[JAR_START]))).await;
        assert_eq!(content, JAR_START);
        assert!(matches!(
            content_error(error),
            ContentError::DigestMismatch { .. }
        ));
    }

    #[tokio::test]
    async fn stream_ends_after_error() {
        let mut stream = checks(1024, None).wrap("test", chunks(&[b"nope", JAR_START]));
        assert!(stream.next().await.unwrap().is_err());
        assert!(stream.next().await.is_none());
    }
}
