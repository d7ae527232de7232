//! Registry clients of the gateway, kept for a short time per ArtifactRegistry.
//!
//! Building a client reads the ArtifactRegistry and its credentials Secret from the API server
//! and sets up a TLS configuration. Done for every download, that fixed cost dominated the time
//! of small JARs. A kept client also keeps its connection pool and its registry token.
//!
//! A change to the ArtifactRegistry or its Secret reaches the gateway within [`CLIENT_TTL`].
//! A download that fails at the registry drops the client, so that the next download reads the
//! current credentials at once.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::oci::RegistryClient;

/// Time for which the gateway reuses a client before it reads the registry's settings again.
pub const CLIENT_TTL: Duration = Duration::from_secs(30);

/// Clients by ArtifactRegistry key, `namespace/name`.
#[derive(Debug, Default)]
pub struct RegistryClients {
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    client: RegistryClient,
    created: Instant,
}

impl RegistryClients {
    /// Returns the client of `registry` when one was built less than [`CLIENT_TTL`] before
    /// `now`.
    pub fn get(&self, registry: &str, now: Instant) -> Option<RegistryClient> {
        let entries = self
            .entries
            .lock()
            .expect("registry client cache lock poisoned");
        entries
            .get(registry)
            .filter(|entry| now.saturating_duration_since(entry.created) < CLIENT_TTL)
            .map(|entry| entry.client.clone())
    }

    /// Keeps `client` for `registry`, built at `now`.
    pub fn insert(&self, registry: &str, client: RegistryClient, now: Instant) {
        let mut entries = self
            .entries
            .lock()
            .expect("registry client cache lock poisoned");
        entries.retain(|_, entry| now.saturating_duration_since(entry.created) < CLIENT_TTL);
        entries.insert(
            registry.to_owned(),
            Entry {
                client,
                created: now,
            },
        );
    }

    /// Drops the client of `registry`, after the registry failed a request.
    pub fn invalidate(&self, registry: &str) {
        let mut entries = self
            .entries
            .lock()
            .expect("registry client cache lock poisoned");
        entries.remove(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::RegistryConfig;

    fn client() -> RegistryClient {
        let config = RegistryConfig::new("http://127.0.0.1:5000").unwrap();
        RegistryClient::new(config).unwrap()
    }

    #[test]
    fn client_is_reused_within_ttl() {
        let clients = RegistryClients::default();
        let start = Instant::now();
        clients.insert("team-a/main", client(), start);

        let later = start + CLIENT_TTL - Duration::from_millis(1);
        assert!(clients.get("team-a/main", later).is_some());
        assert!(clients.get("team-b/main", later).is_none());
    }

    #[test]
    fn client_expires_after_ttl() {
        let clients = RegistryClients::default();
        let start = Instant::now();
        clients.insert("team-a/main", client(), start);

        assert!(clients.get("team-a/main", start + CLIENT_TTL).is_none());
    }

    #[test]
    fn invalidated_client_is_gone() {
        let clients = RegistryClients::default();
        let start = Instant::now();
        clients.insert("team-a/main", client(), start);
        clients.invalidate("team-a/main");

        assert!(clients.get("team-a/main", start).is_none());
    }

    #[test]
    fn insert_drops_expired_entries() {
        let clients = RegistryClients::default();
        let start = Instant::now();
        clients.insert("team-a/main", client(), start);
        clients.insert("team-b/main", client(), start + CLIENT_TTL);

        let entries = clients.entries.lock().unwrap();
        assert_eq!(entries.len(), 1);
        assert!(entries.contains_key("team-b/main"));
    }
}
