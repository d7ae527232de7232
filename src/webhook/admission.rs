//! The webhook's HTTP handler: reads an admission review for a pod, resolves the artifacts it
//! requests and responds with a JSON patch or a denial.
//!
//! Reads come from reflector caches so that admission costs no API server round trip. A cache
//! may lag the API server by a moment. So before a pod is denied because a namespace or an
//! AppArtifact is missing or not Ready, the webhook reads them live, and a denial reflects the
//! current state.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, routing::post};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::PartialObjectMeta,
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde_json::Value;
use tracing::{debug, info, instrument, warn};

use super::{
    Denial, opt_in,
    patch::{self, LoaderTemplate},
    resolve::{self, Signer},
    review::{Request, Response, Review},
};
use crate::{
    crd::{AppArtifact, TENANT_LABEL},
    gateway::keys::KeyRingHandle,
    telemetry::Metrics,
};

/// Path of the pod mutation endpoint.
pub const MUTATE_PODS_PATH: &str = "/v1/mutate/pods";

/// Settings of what the webhook injects into pods.
#[derive(Debug, Clone)]
pub struct InjectionSettings {
    /// Base URL of the gateway as pods reach it, such as
    /// `http://artifact-operator-gateway.artifact-operator.svc:8080`.
    pub gateway_url: String,
    /// Lifetime of an injected URL.
    pub url_ttl: Duration,
    /// Template of an added loader.
    pub loader: LoaderTemplate,
}

/// State shared by admission requests.
pub struct WebhookState {
    pub client: Client,
    pub artifacts: Store<AppArtifact>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub keys: KeyRingHandle,
    pub settings: InjectionSettings,
    pub metrics: Arc<Metrics>,
}

/// Builds the webhook's routes.
pub fn router(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route(MUTATE_PODS_PATH, post(mutate_pods))
        .with_state(state)
}

/// Starts a metadata-only cache of namespaces, for their tenant labels.
pub async fn namespace_cache(
    client: Client,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Store<PartialObjectMeta<Namespace>> {
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
    crate::cluster::start_cache(
        "Namespace",
        watcher(api, watcher::Config::default()),
        shutdown,
    )
    .await
}

async fn mutate_pods(
    State(state): State<Arc<WebhookState>>,
    Json(review): Json<Review>,
) -> Json<Value> {
    let started = Instant::now();
    let (response, result) = match review.into_request() {
        Ok(request) => {
            let response = admit(&state, &request).await;
            let result = match (response.allowed, &response.patch) {
                (false, _) => "denied",
                (true, Some(_)) => "injected",
                (true, None) => "allowed",
            };
            (response, result)
        }
        Err(message) => {
            warn!(%message, "Rejected a malformed admission review");
            (Response::deny("", 400, message), "invalid")
        }
    };
    state.metrics.record_admission(result, started.elapsed());
    Json(response.into_review())
}

/// Returns the response to one admission request.
#[instrument(skip_all, fields(namespace = request.namespace.as_deref().unwrap_or_default(), pod = pod_name(request)))]
pub async fn admit(state: &WebhookState, request: &Request) -> Response {
    let (Some(pod), Some(namespace)) = (&request.object, request.namespace.as_deref()) else {
        return Response::allow(&request.uid);
    };
    if !request.is_pod_creation() {
        return Response::allow(&request.uid);
    }

    match inject(state, namespace, pod).await {
        Ok(None) => Response::allow(&request.uid),
        Ok(Some((operations, injected))) => {
            debug!(artifacts = ?injected, "Injected");
            with_operations(&request.uid, &operations)
        }
        Err(denial) => {
            info!(reason = denial.reason, message = %denial.message, "Denied");
            Response::deny(&request.uid, 403, denial.message)
        }
    }
}

type Injected = (Vec<patch::Operation>, Vec<String>);

async fn inject(
    state: &WebhookState,
    namespace: &str,
    pod: &Value,
) -> Result<Option<Injected>, Denial> {
    let metadata = pod.get("metadata").unwrap_or(&Value::Null);
    let Some(opt_in) = opt_in::read(namespace, metadata)? else {
        return Ok(None);
    };

    let tenant = namespace_tenant(state, namespace).await;
    let ring = state.keys.get();
    let signer = Signer {
        ring: &ring,
        base_url: &state.settings.gateway_url,
        ttl: state.settings.url_ttl,
        now: Timestamp::now(),
    };
    let cached = |name: &str| {
        state
            .artifacts
            .get(&ObjectRef::<AppArtifact>::new(name).within(namespace))
    };
    let names = &opt_in.artifacts;
    let injections = match resolve::resolve(namespace, tenant.as_deref(), names, cached, &signer) {
        Err(denial) if STALE_CACHE_REASONS.contains(&denial.reason) => {
            let live = read_artifacts(state, namespace, names).await?;
            let lookup = |name: &str| live.get(name).cloned();
            resolve::resolve(namespace, tenant.as_deref(), names, lookup, &signer)?
        }
        resolved => resolved?,
    };

    let operations = patch::build(pod, &opt_in, &injections, &state.settings.loader)?;
    Ok(Some((operations, opt_in.artifacts)))
}

/// Denials that a cache lagging behind the API server could cause: the AppArtifact was created,
/// or became Ready, a moment ago.
const STALE_CACHE_REASONS: [&str; 2] = ["artifact_not_found", "artifact_not_ready"];

/// Reads the named AppArtifacts from the API server, before a pod is refused on the cache's
/// word.
async fn read_artifacts(
    state: &WebhookState,
    namespace: &str,
    names: &[String],
) -> Result<BTreeMap<String, Arc<AppArtifact>>, Denial> {
    let api: Api<AppArtifact> = Api::namespaced(state.client.clone(), namespace);
    let mut found = BTreeMap::new();
    for name in names {
        let artifact = api.get_opt(name).await.map_err(|error| {
            warn!(%error, namespace, name, "Reading the AppArtifact failed");
            Denial::new(
                "api_unavailable",
                format!(
                    "AppArtifact {namespace}/{name} could not be read from the API server \
                     ({error}); the pod can be created again once the API server responds"
                ),
            )
        })?;
        if let Some(artifact) = artifact {
            found.insert(name.clone(), Arc::new(artifact));
        }
    }
    Ok(found)
}

/// Returns the namespace's tenant label, from the cache or, on a miss, from the API server.
async fn namespace_tenant(state: &WebhookState, namespace: &str) -> Option<String> {
    let tenant_of = |labels: Option<&BTreeMap<String, String>>| {
        labels.and_then(|labels| labels.get(TENANT_LABEL)).cloned()
    };
    if let Some(cached) = state
        .namespaces
        .get(&ObjectRef::<PartialObjectMeta<Namespace>>::new(namespace))
    {
        return tenant_of(cached.metadata.labels.as_ref());
    }
    let api: Api<Namespace> = Api::all(state.client.clone());
    match api.get_metadata_opt(namespace).await {
        Ok(found) => found.and_then(|found| tenant_of(found.metadata.labels.as_ref())),
        Err(error) => {
            warn!(%error, namespace, "Reading the namespace failed");
            None
        }
    }
}

fn with_operations(uid: &str, operations: &[patch::Operation]) -> Response {
    if operations.is_empty() {
        return Response::allow(uid);
    }
    let patch = serde_json::to_vec(operations)
        .expect("operations of strings and JSON values must serialize");
    Response::patch(uid, &patch)
}

fn pod_name(request: &Request) -> &str {
    let metadata = request.object.as_ref().and_then(|pod| pod.get("metadata"));
    let name = |key| metadata.and_then(|metadata| metadata.get(key)?.as_str());
    name("name")
        .or_else(|| name("generateName"))
        .unwrap_or_default()
}
