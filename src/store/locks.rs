//! One async lock per artifact version, so puts of the same version in this process run one
//! after the other while puts of different versions run in parallel.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::oci::ArtifactCoordinates;

/// Locks keyed by version. An entry exists only while an operation has or waits for it.
#[derive(Debug, Default)]
pub struct VersionLocks {
    locks: Mutex<HashMap<ArtifactCoordinates, Arc<AsyncMutex<()>>>>,
}

/// Holds the lock of one version until dropped.
pub struct VersionGuard<'a> {
    locks: &'a VersionLocks,
    coordinates: ArtifactCoordinates,
    guard: Option<OwnedMutexGuard<()>>,
}

impl VersionLocks {
    /// Returns the lock set of this process. The AppArtifact controller and the gateway's upload
    /// API put through separate stores, and share this set so that they never tag one version
    /// at the same time.
    pub fn process() -> Arc<Self> {
        static PROCESS: std::sync::LazyLock<Arc<VersionLocks>> =
            std::sync::LazyLock::new(Arc::default);
        Arc::clone(&PROCESS)
    }

    /// Waits until no other put of `coordinates` in this process holds the lock, and takes it.
    pub async fn lock(&self, coordinates: &ArtifactCoordinates) -> VersionGuard<'_> {
        let lock = Arc::clone(self.map().entry(coordinates.clone()).or_default());
        VersionGuard {
            locks: self,
            coordinates: coordinates.clone(),
            guard: Some(lock.lock_owned().await),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ArtifactCoordinates, Arc<AsyncMutex<()>>>> {
        // Every update is a single insert or remove, so the map is consistent after a panic.
        self.locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for VersionGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map();
        drop(self.guard.take());
        // The map's reference is the last one when no other operation has or waits for the lock.
        // Waiters clone the Arc under the map lock, so this check cannot race with them.
        if map
            .get(&self.coordinates)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            map.remove(&self.coordinates);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn coordinates(version: &str) -> ArtifactCoordinates {
        ArtifactCoordinates::new("acme", "billing", version).unwrap()
    }

    #[tokio::test]
    async fn same_version_waits_for_release() {
        let locks = VersionLocks::default();
        let version = coordinates("1");
        let first = locks.lock(&version).await;

        let second = tokio::time::timeout(Duration::from_millis(50), locks.lock(&version));
        assert!(second.await.is_err(), "the second lock must wait");

        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), locks.lock(&version));
        assert!(second.await.is_ok(), "the lock must be free after release");
    }

    #[tokio::test]
    async fn other_versions_do_not_wait() {
        let locks = VersionLocks::default();
        let first_version = coordinates("1");
        let other_version = coordinates("2");
        let _first = locks.lock(&first_version).await;
        let other = tokio::time::timeout(Duration::from_millis(50), locks.lock(&other_version));
        assert!(other.await.is_ok());
    }

    #[tokio::test]
    async fn entries_are_removed_after_release() {
        let locks = VersionLocks::default();
        drop(locks.lock(&coordinates("1")).await);
        assert!(locks.map().is_empty());
    }
}
