//! Checks on the response body while it streams: declared length, expected size, size limit,
//! ZIP signature and digest. No I/O happens here.

use crate::{
    artifact::checks::{ContentChecks, ContentVerifier},
    oci::{ContentSummary, Digest},
};

use super::failure::BodyError;

/// State of the body checks of one transfer, fed chunk by chunk and then finished once.
#[derive(Debug, Clone)]
pub struct BodyCheck {
    verifier: ContentVerifier,
    checks: ContentChecks,
    expected_size: Option<u64>,
    received: u64,
}

impl BodyCheck {
    /// Starts the checks of a body that must have `digest`, and `expected_size` bytes when
    /// that is known, and at most `max_size` bytes.
    pub fn new(digest: Digest, expected_size: Option<u64>, max_size: u64) -> Self {
        let checks = ContentChecks {
            max_size,
            sha256: Some(digest),
        };
        Self {
            verifier: ContentVerifier::new(checks.clone()),
            checks,
            expected_size,
            received: 0,
        }
    }

    /// Checks the `Content-Length` before any byte is read. A length that differs from the
    /// expected size is reported as a size mismatch even when it is also over the limit,
    /// because the server is sending some other content.
    pub fn check_declared(&self, declared: Option<u64>) -> Result<(), BodyError> {
        let Some(declared) = declared else {
            return Ok(());
        };
        if let Some(expected) = self.expected_size
            && declared != expected
        {
            return Err(BodyError::DeclaredSizeMismatch { expected, declared });
        }
        Ok(self.checks.check_declared_size(Some(declared))?)
    }

    /// Bytes accepted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Feeds the next chunk, which may be written only when this returns `Ok`.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        let received = self.received + chunk.len() as u64;
        if let Some(expected) = self.expected_size
            && received > expected
        {
            return Err(BodyError::LongerThanExpected { expected });
        }
        self.verifier.update(chunk)?;
        self.received = received;
        Ok(())
    }

    /// Ends the body: checks its length against the expected size, then its signature and
    /// digest.
    pub fn finish(self) -> Result<ContentSummary, BodyError> {
        if let Some(expected) = self.expected_size
            && self.received < expected
        {
            return Err(BodyError::ShorterThanExpected {
                expected,
                received: self.received,
            });
        }
        Ok(self.verifier.finish()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::error::ContentError;

    const JAR: &[u8] = b"PK\x03\x04 the rest of a small archive";

    fn check(expected_size: Option<u64>, max_size: u64) -> BodyCheck {
        BodyCheck::new(Digest::of(JAR), expected_size, max_size)
    }

    fn feed(mut check: BodyCheck, chunks: &[&[u8]]) -> Result<ContentSummary, BodyError> {
        for chunk in chunks {
            check.update(chunk)?;
        }
        check.finish()
    }

    #[test]
    fn body_with_expected_digest_passes() {
        let summary = feed(check(Some(JAR.len() as u64), 1024), &[&JAR[..3], &JAR[3..]]);
        assert_eq!(summary.unwrap().digest, Digest::of(JAR));
    }

    #[test]
    fn body_with_other_digest_fails() {
        let other = b"PK\x03\x04 another archive";
        let error = feed(check(None, 1024), &[other]).unwrap_err();
        assert_eq!(
            error,
            BodyError::Content(ContentError::DigestMismatch {
                expected: Digest::of(JAR),
                actual: Digest::of(other),
            })
        );
    }

    #[test]
    fn non_zip_body_fails_at_first_chunk() {
        let mut check = check(None, 1024);
        let error = check.update(b"<html>").unwrap_err();
        assert!(
            matches!(error, BodyError::Content(ContentError::NotZip { .. })),
            "{error:?}"
        );
    }

    #[test]
    fn body_over_limit_fails_before_write() {
        let mut check = check(None, 10);
        check.update(&JAR[..10]).unwrap();
        let error = check.update(&JAR[10..11]).unwrap_err();
        assert_eq!(
            error,
            BodyError::Content(ContentError::TooLarge { max_size: 10 })
        );
    }

    #[test]
    fn body_longer_than_expected_fails_early() {
        let mut check = check(Some(5), 1024);
        check.update(&JAR[..5]).unwrap();
        let error = check.update(&JAR[5..6]).unwrap_err();
        assert_eq!(error, BodyError::LongerThanExpected { expected: 5 });
    }

    #[test]
    fn body_shorter_than_expected_fails_at_end() {
        let error = feed(check(Some(100), 1024), &[JAR]).unwrap_err();
        assert_eq!(
            error,
            BodyError::ShorterThanExpected {
                expected: 100,
                received: JAR.len() as u64
            }
        );
    }

    #[test]
    fn declared_length_checks() {
        assert_eq!(check(Some(10), 1024).check_declared(Some(10)), Ok(()));
        assert_eq!(check(Some(10), 1024).check_declared(None), Ok(()));
        assert_eq!(
            check(Some(10), 1024).check_declared(Some(2000)),
            Err(BodyError::DeclaredSizeMismatch {
                expected: 10,
                declared: 2000
            })
        );
        assert_eq!(
            check(None, 1024).check_declared(Some(2000)),
            Err(BodyError::Content(ContentError::DeclaredTooLarge {
                max_size: 1024,
                declared: 2000
            }))
        );
    }
}
