//! Machinery shared by the controllers: server-side apply with one field manager, status
//! writes that skip unchanged status, Events, and per-object exponential backoff.

use std::{collections::HashMap, fmt::Debug, sync::Mutex, time::Duration};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tracing::warn;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "artifact-operator";

/// First retry delay after a failed reconcile.
const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Maximum retry delay after repeated failures.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Parameters for server-side apply. `force` takes ownership of fields another manager set,
/// because the operator is the source of truth for the objects it renders.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Creates or updates `object` with server-side apply. An apply that changes nothing leaves
/// the object's resourceVersion as it is.
pub async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = object
        .meta()
        .name
        .as_deref()
        .expect("an object to apply must have a name");
    api.patch(name, &apply_params(), &Patch::Apply(object))
        .await
}

/// Concurrency mode of a status write: whether it may overwrite changes made since the object
/// was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWrite {
    /// The write wins over any change made since the object was read.
    Unconditional,
    /// The write carries the object's resourceVersion, so the API server rejects it with 409
    /// Conflict when the object changed since it was read. A reconcile that worked from a stale
    /// copy then cannot overwrite a newer status, such as one written by an upload meanwhile.
    IfUnchanged,
}

/// Writes `status` on the status subresource with server-side apply, unless it equals
/// `current`. Returns whether a write happened.
pub async fn write_status<K, S>(
    api: &Api<K>,
    object: &K,
    current: Option<&S>,
    status: &S,
    mode: StatusWrite,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let patch = status_patch(object, status, mode);
    api.patch_status(&object.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await?;
    Ok(true)
}

/// Builds the apply configuration of a status write.
fn status_patch<K, S>(object: &K, status: &S, mode: StatusWrite) -> Value
where
    K: Resource<DynamicType = ()>,
    S: Serialize,
{
    let mut patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let (StatusWrite::IfUnchanged, Some(version)) = (mode, object.resource_version()) {
        patch["metadata"] = json!({ "resourceVersion": version });
    }
    patch
}

/// Returns whether `error` is the API server's 409 Conflict, the response to a write whose
/// resourceVersion is no longer current.
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

// === Backoff ===

/// Delay before retrying after `failures` consecutive failed reconciles (at least one).
pub fn backoff_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

/// Consecutive failure counts per object key, so each object backs off on its own.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records a failure of `key` and returns how long to wait before the next attempt.
    pub fn record_failure(&self, key: &str) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .expect("the backoff lock is never poisoned");
        let count = failures.entry(key.to_owned()).or_default();
        *count = count.saturating_add(1);
        backoff_delay(*count)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn record_success(&self, key: &str) {
        self.failures
            .lock()
            .expect("the backoff lock is never poisoned")
            .remove(key);
    }
}

// === Events ===

/// Publishes Kubernetes Events on the objects the operator manages.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: Client, controller: &str) -> Self {
        let reporter = Reporter {
            controller: controller.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publishes one Event. Events are informational, so a failure is logged and not returned.
    pub async fn publish(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, object).await {
            warn!(%error, reason, object = ?object.name, "Failed to publish event");
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn config_map(resource_version: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("settings".to_owned()),
                resource_version: resource_version.map(str::to_owned),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn guarded_status_patch_carries_resource_version() {
        let patch = status_patch(&config_map(Some("42")), &"ready", StatusWrite::IfUnchanged);
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["status"], "ready");
        assert_eq!(patch["kind"], "ConfigMap");
    }

    #[test]
    fn unconditional_status_patch_has_no_metadata() {
        let patch = status_patch(
            &config_map(Some("42")),
            &"ready",
            StatusWrite::Unconditional,
        );
        assert!(patch.get("metadata").is_none());
        let unversioned = status_patch(&config_map(None), &"ready", StatusWrite::IfUnchanged);
        assert!(unversioned.get("metadata").is_none());
    }

    #[test]
    fn backoff_doubles_from_base() {
        assert_eq!(backoff_delay(1), Duration::from_secs(5));
        assert_eq!(backoff_delay(2), Duration::from_secs(10));
        assert_eq!(backoff_delay(4), Duration::from_secs(40));
    }

    #[test]
    fn backoff_caps_at_max() {
        assert_eq!(backoff_delay(7), Duration::from_secs(300));
        assert_eq!(backoff_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn backoff_resets_after_success() {
        let backoff = Backoff::default();
        backoff.record_failure("ns/a");
        assert_eq!(backoff.record_failure("ns/a"), Duration::from_secs(10));
        assert_eq!(backoff.record_failure("ns/b"), Duration::from_secs(5));
        backoff.record_success("ns/a");
        assert_eq!(backoff.record_failure("ns/a"), Duration::from_secs(5));
    }
}
