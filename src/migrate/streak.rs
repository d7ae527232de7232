//! Stops starting artifacts once the registry keeps failing, so an outage ends the run in
//! seconds instead of failing every remaining artifact after its own retries.

use std::sync::atomic::{AtomicU32, Ordering};

use super::ArtifactError;

/// Number of artifacts in a row that may fail with a transient registry error before the run
/// stops starting new ones. Each failure has already gone through the client's retries.
pub const MAX_TRANSIENT_FAILURES: u32 = 10;

/// Count of artifacts in a row whose failure was transient.
#[derive(Debug, Default)]
pub struct FailureStreak {
    count: AtomicU32,
}

impl FailureStreak {
    /// Returns an error for an artifact that should not be started because the streak reached
    /// [`MAX_TRANSIENT_FAILURES`].
    pub fn check(&self) -> Result<(), ArtifactError> {
        let failures = self.count.load(Ordering::Relaxed);
        if failures >= MAX_TRANSIENT_FAILURES {
            return Err(ArtifactError::NotAttempted { failures });
        }
        Ok(())
    }

    /// Extends the streak after a transient failure and ends it after anything else.
    pub fn record<T>(&self, result: &Result<T, ArtifactError>) {
        match result {
            Err(ArtifactError::NotAttempted { .. }) => {}
            Err(error) if error.is_transient() => {
                self.count.fetch_add(1, Ordering::Relaxed);
            }
            _ => self.count.store(0, Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{io, path::PathBuf};

    use super::*;

    fn transient() -> Result<(), ArtifactError> {
        Err(ArtifactError::Store(crate::store::StoreError::Filesystem {
            operation: "write",
            path: PathBuf::from("/x"),
            source: io::Error::from(io::ErrorKind::TimedOut),
        }))
    }

    fn permanent() -> Result<(), ArtifactError> {
        Err(ArtifactError::ReadSource {
            path: PathBuf::from("/x"),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        })
    }

    #[test]
    fn streak_stops_after_max_transient_failures() {
        let streak = FailureStreak::default();
        for _ in 0..MAX_TRANSIENT_FAILURES - 1 {
            streak.record(&transient());
        }
        assert!(streak.check().is_ok());
        streak.record(&transient());
        let error = streak.check().unwrap_err();
        assert!(
            matches!(error, ArtifactError::NotAttempted { failures } if failures == MAX_TRANSIENT_FAILURES),
            "{error}"
        );
    }

    #[test]
    fn success_or_permanent_failure_ends_streak() {
        let streak = FailureStreak::default();
        for _ in 0..MAX_TRANSIENT_FAILURES - 1 {
            streak.record(&transient());
        }
        streak.record(&Ok(()));
        streak.record(&transient());
        assert!(streak.check().is_ok());

        for _ in 0..MAX_TRANSIENT_FAILURES - 1 {
            streak.record(&transient());
        }
        streak.record(&permanent());
        assert!(streak.check().is_ok());
    }

    #[test]
    fn not_attempted_does_not_extend_streak() {
        let streak = FailureStreak::default();
        for _ in 0..3 {
            streak.record::<()>(&Err(ArtifactError::NotAttempted { failures: 10 }));
        }
        assert!(streak.check().is_ok());
    }
}
