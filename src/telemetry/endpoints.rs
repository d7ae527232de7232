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

type CertificateCheck = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Readiness of the parts that must work before the replica takes traffic.
#[derive(Default)]
pub struct Readiness {
    caches_synced: AtomicBool,
    /// Check that the webhook's serving certificate is loaded and valid. Its error names the
    /// reason when it is not.
    certificate: std::sync::OnceLock<CertificateCheck>,
}

impl Readiness {
    /// Records that every cache has completed its first list.
    pub fn set_caches_synced(&self) {
        self.caches_synced.store(true, Ordering::Release);
    }

    /// Sets the check of the webhook's serving certificate.
    pub fn set_certificate_check(
        &self,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        let _ = self.certificate.set(Box::new(check));
    }

    /// Returns the names of the parts that are not ready yet.
    pub fn missing(&self) -> Vec<&'static str> {
        self.reasons().into_iter().map(|(part, _)| part).collect()
    }

    /// Returns each part that is not ready yet with the reason.
    pub fn reasons(&self) -> Vec<(&'static str, String)> {
        let mut reasons = Vec::new();
        if !self.caches_synced.load(Ordering::Acquire) {
            reasons.push(("caches", "the first list has not completed".to_owned()));
        }
        let certificate = match self.certificate.get() {
            Some(check) => check(),
            None => Err("not loaded yet".to_owned()),
        };
        if let Err(reason) = certificate {
            reasons.push(("webhook_certificate", reason));
        }
        reasons
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
    let reasons = state.readiness.reasons();
    if reasons.is_empty() {
        return (StatusCode::OK, Json(json!({ "ready": true })));
    }
    let missing: Vec<_> = reasons.iter().map(|(part, _)| *part).collect();
    let reasons: serde_json::Map<_, _> = reasons
        .into_iter()
        .map(|(part, reason)| (part.to_owned(), reason.into()))
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "ready": false, "waitingFor": missing, "reasons": reasons })),
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
        readiness.set_certificate_check(move || {
            if flag.load(Ordering::Acquire) {
                Ok(())
            } else {
                Err("Secret ops/tls: tls.crt: expired".to_owned())
            }
        });
        assert_eq!(
            readiness.reasons(),
            [(
                "webhook_certificate",
                "Secret ops/tls: tls.crt: expired".to_owned()
            )]
        );

        loaded.store(true, Ordering::Release);
        assert!(readiness.missing().is_empty());
    }
}
