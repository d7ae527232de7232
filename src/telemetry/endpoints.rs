//! The operations listener: `/metrics` in the Prometheus text format, `/healthz` for liveness
//! and `/readyz` for readiness.
//!
//! A replica is ready once its caches have listed everything and the webhook has a valid
//! serving certificate, so the Service sends admission reviews only to replicas that can
//! respond to them. Liveness reports only that the process serves HTTP: a replica waiting for
//! leadership or for its caches is alive and must not be restarted.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde_json::json;

use super::Metrics;

/// Readiness of the parts that must work before the replica takes traffic.
#[derive(Default)]
pub struct Readiness {
    caches_synced: AtomicBool,
    /// Check that the webhook's serving certificate is loaded and valid.
    certificate: std::sync::OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl Readiness {
    /// Records that every cache has completed its first list.
    pub fn set_caches_synced(&self) {
        self.caches_synced.store(true, Ordering::Release);
    }

    /// Sets the check of the webhook's serving certificate.
    pub fn set_certificate_check(&self, check: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.certificate.set(Box::new(check));
    }

    /// Returns the names of the parts that are not ready yet.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.caches_synced.load(Ordering::Acquire) {
            missing.push("caches");
        }
        if !self.certificate.get().is_some_and(|check| check()) {
            missing.push("webhook_certificate");
        }
        missing
    }
}

/// State of the operations routes.
pub struct OperationsState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

/// Builds the operations routes.
pub fn router(state: Arc<OperationsState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<OperationsState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<OperationsState>>) -> impl IntoResponse {
    let missing = state.readiness.missing();
    if missing.is_empty() {
        return (StatusCode::OK, Json(json!({ "ready": true })));
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "ready": false, "waitingFor": missing })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_lists_what_is_missing() {
        let readiness = Readiness::default();
        assert_eq!(readiness.missing(), ["caches", "webhook_certificate"]);

        readiness.set_caches_synced();
        let loaded = Arc::new(AtomicBool::new(false));
        let flag = loaded.clone();
        readiness.set_certificate_check(move || flag.load(Ordering::Acquire));
        assert_eq!(readiness.missing(), ["webhook_certificate"]);

        loaded.store(true, Ordering::Release);
        assert!(readiness.missing().is_empty());
    }
}
