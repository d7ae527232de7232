//! The mutating admission webhook that gives pods their JARs.
//!
//! A pod opts in with the label [`INJECT_LABEL`] and lists AppArtifacts of its own namespace in
//! the annotation [`ARTIFACTS_ANNOTATION`]. On CREATE the webhook resolves each name from a
//! reflector cache and signs a gateway URL for its digest. It adds the URL, digest, size and file
//! name as environment variables of the pod's loader init container, or adds a loader when the
//! pod requests one. A pod that names a missing, unready or foreign artifact is denied with a
//! message that names the artifact and the reason.
//!
//! The steps are separate so that each is testable on plain values: [`opt_in`] reads the
//! annotations, [`resolve`] turns cached objects into injections or denials, [`patch`] builds
//! the JSON patch from the raw pod, [`review`] reads and writes the admission review's JSON,
//! [`admission`] ties the steps to a review, and [`configuration`] renders the
//! MutatingWebhookConfiguration. [`certs`] keeps the serving certificate and its CA in a Secret
//! and [`tls_server`] serves the routes with it.

pub mod admission;
pub mod certs;
pub mod configuration;
pub mod opt_in;
pub mod patch;
pub mod resolve;
pub mod review;
pub mod tls_server;

/// Label that opts a pod in; the webhook's objectSelector matches it.
pub const INJECT_LABEL: &str = "artifacts.cameleer.io/inject";
/// Annotation listing the AppArtifact names (comma-separated) that the pod needs.
pub const ARTIFACTS_ANNOTATION: &str = "artifacts.cameleer.io/artifacts";
/// Annotation naming the loader init container when it is not called `loader`.
pub const LOADER_CONTAINER_ANNOTATION: &str = "artifacts.cameleer.io/loader-container";
/// Annotation asking the webhook to add a loader init container when the pod has none.
pub const ADD_LOADER_ANNOTATION: &str = "artifacts.cameleer.io/add-loader";
/// Annotation the webhook writes: which artifact and digest went into the pod.
pub const INJECTED_ANNOTATION: &str = "artifacts.cameleer.io/injected";
/// Default name of the loader init container.
pub const DEFAULT_LOADER_CONTAINER: &str = "loader";

/// Reason for refusing a pod. The message reaches the user through the ReplicaSet's events, so it
/// names the artifact or annotation at fault and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denial {
    /// Short, stable code for metrics, such as `artifact_not_found`.
    pub reason: &'static str,
    pub message: String,
}

impl Denial {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}
