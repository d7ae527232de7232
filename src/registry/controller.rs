//! Reconciles `ArtifactRegistry` objects.
//!
//! One reconcile runs the steps of the registry's mode (managed Zot or external registry), then
//! turns their outcome into kstatus conditions, writes the status only when it changed, and
//! publishes an Event when the `Ready` or `ConfigValid` condition changes.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{api::apps::v1::StatefulSet, jiff::Timestamp};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{Controller, controller::Action, events::EventType, watcher},
};
use tracing::{info, instrument, warn};

use super::{external, managed};
use crate::{
    conditions::{self, Desired, Outcome},
    crd::{ArtifactRegistry, ArtifactRegistryStatus},
    reconcile::{self, Backoff, Events, StatusWrite},
    telemetry::Metrics,
};

/// Condition type that reports whether the spec is one Zot accepts.
pub const CONFIG_VALID: &str = "ConfigValid";
/// Condition type that reports whether the Traefik IngressRoute exists.
pub const INGRESS_READY: &str = "IngressReady";

/// Label that marks every object the operator renders, so owned watches stay small.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=artifact-operator";

/// Name of the controller in Events.
const CONTROLLER_NAME: &str = "artifact-operator-registry";

/// Interval between reconciles of a ready registry, to notice drift and outages.
const READY_REQUEUE: Duration = Duration::from_secs(300);
/// Interval between reconciles of a registry that is still starting.
const PROGRESSING_REQUEUE: Duration = Duration::from_secs(15);
/// Interval between reconciles of a stalled registry: its spec must change, but referenced
/// Secrets may be fixed without a spec change.
const STALLED_REQUEUE: Duration = Duration::from_secs(120);

/// Settings of the registry controller that come from the operator's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace the operator runs in; its pods may reach the registries.
    pub operator_namespace: String,
    /// Namespace of Traefik, whose pods may reach registries that have an ingress.
    pub traefik_namespace: String,
    /// Namespace to watch, or `None` for all namespaces.
    pub watch_namespace: Option<String>,
}

/// State shared by all reconciles.
pub struct Context {
    pub client: Client,
    pub events: Events,
    pub backoff: Backoff,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    reconciles: AtomicU64,
}

impl Context {
    pub fn new(client: Client, settings: Settings) -> Self {
        Self {
            events: Events::new(client.clone(), CONTROLLER_NAME),
            client,
            backoff: Backoff::default(),
            settings,
            metrics: Arc::new(Metrics::default()),
            reconciles: AtomicU64::new(0),
        }
    }

    /// Records this controller's metrics into `metrics`, shared with the rest of the process.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Number of reconciles that finished, successfully or not.
    pub fn reconcile_count(&self) -> u64 {
        self.reconciles.load(Ordering::Relaxed)
    }
}

/// Result of one reconcile of a mode, before it becomes the status.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub outcome: Outcome,
    /// Conditions specific to the mode, such as `ConfigValid`.
    pub conditions: Vec<Desired>,
    pub endpoint: Option<String>,
    pub external_url: Option<String>,
    pub ready_replicas: Option<i32>,
    pub config_hash: Option<String>,
    pub version: Option<String>,
}

impl Observation {
    /// Creates an observation with only an outcome.
    pub fn outcome(outcome: Outcome) -> Self {
        Self {
            outcome,
            conditions: Vec::new(),
            endpoint: None,
            external_url: None,
            ready_replicas: None,
            config_hash: None,
            version: None,
        }
    }
}

/// Errors that end a reconcile early; the controller retries them with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} for ArtifactRegistry {registry}: {source}")]
    Kube {
        action: &'static str,
        registry: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
        }
    }
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    context: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let (registries, statefulsets) = match &context.settings.watch_namespace {
        Some(namespace) => (
            Api::<ArtifactRegistry>::namespaced(client.clone(), namespace),
            Api::<StatefulSet>::namespaced(client, namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let owned = watcher::Config::default().labels(MANAGED_BY_SELECTOR);

    Controller::new(registries, watcher::Config::default().any_semantic())
        .owns(statefulsets, owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "Registry reconcile failed");
            }
        })
        .await;
}

fn key(registry: &ArtifactRegistry) -> String {
    format!(
        "{}/{}",
        registry.namespace().unwrap_or_default(),
        registry.name_any()
    )
}

#[instrument(skip_all, fields(registry = %key(&registry)))]
async fn reconcile(
    registry: Arc<ArtifactRegistry>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_once(&registry, &context).await;
    context.reconciles.fetch_add(1, Ordering::Relaxed);
    context
        .metrics
        .record_reconcile_duration(METRIC_CONTROLLER, started.elapsed());
    result
}

async fn reconcile_once(registry: &ArtifactRegistry, context: &Context) -> Result<Action, Error> {
    let observation = match &registry.spec.zot {
        Some(zot) => managed::reconcile(registry, zot, context).await?,
        None => external::reconcile(registry, context).await?,
    };

    let previous = registry.status.clone().unwrap_or_default();
    let status = build_status(registry, &previous, &observation, Timestamp::now());
    let api: Api<ArtifactRegistry> = Api::namespaced(
        context.client.clone(),
        &registry.namespace().unwrap_or_default(),
    );
    let written = reconcile::write_status(
        &api,
        registry,
        registry.status.as_ref(),
        &status,
        StatusWrite::Unconditional,
    )
    .await
    .map_err(|source| Error::Kube {
        action: "write the status",
        registry: key(registry),
        source,
    })?;
    if written {
        publish_transitions(registry, &previous, &status, context).await;
    }

    context.backoff.record_success(&key(registry));
    context
        .metrics
        .record_reconcile(METRIC_CONTROLLER, metric_result(&observation.outcome));
    Ok(Action::requeue(requeue_interval(&observation.outcome)))
}

fn error_policy(registry: Arc<ArtifactRegistry>, error: &Error, context: Arc<Context>) -> Action {
    let delay = context.backoff.record_failure(&key(&registry));
    context.metrics.record_reconcile(METRIC_CONTROLLER, "error");
    context
        .metrics
        .record_error(METRIC_CONTROLLER, error.metric_label());
    warn!(registry = %key(&registry), %error, kind = error.metric_label(), retry_in = ?delay, "Reconcile failed");
    Action::requeue(delay)
}

/// Label of the registry controller in metrics.
const METRIC_CONTROLLER: &str = "registry";

fn metric_result(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Ready { .. } => "ready",
        Outcome::Progressing { .. } => "progressing",
        Outcome::Stalled { .. } => "stalled",
        Outcome::Waiting { .. } => "waiting",
    }
}

fn requeue_interval(outcome: &Outcome) -> Duration {
    match outcome {
        Outcome::Ready { .. } => READY_REQUEUE,
        Outcome::Progressing { .. } => PROGRESSING_REQUEUE,
        // The registry controller produces no wait outcome, so one would be polled like a
        // stalled state.
        Outcome::Stalled { .. } | Outcome::Waiting { .. } => STALLED_REQUEUE,
    }
}

/// Builds the status from an observation, keeping transition times of unchanged conditions.
pub fn build_status(
    registry: &ArtifactRegistry,
    previous: &ArtifactRegistryStatus,
    observation: &Observation,
    now: Timestamp,
) -> ArtifactRegistryStatus {
    let generation = registry.meta().generation;
    let desired = conditions::summarize(&observation.outcome, observation.conditions.clone());
    ArtifactRegistryStatus {
        observed_generation: generation,
        conditions: conditions::merge(&previous.conditions, &desired, generation, now),
        endpoint: observation.endpoint.clone(),
        external_url: observation.external_url.clone(),
        ready_replicas: observation.ready_replicas,
        config_hash: observation.config_hash.clone(),
        version: observation.version.clone(),
    }
}

/// Publishes one Event per condition among `Ready` and `ConfigValid` whose status or reason
/// changed.
async fn publish_transitions(
    registry: &ArtifactRegistry,
    previous: &ArtifactRegistryStatus,
    current: &ArtifactRegistryStatus,
    context: &Context,
) {
    let reference = registry.object_ref(&());
    for type_ in [conditions::READY, CONFIG_VALID, INGRESS_READY] {
        let Some(now) = conditions::find(&current.conditions, type_) else {
            continue;
        };
        let before = conditions::find(&previous.conditions, type_);
        if before.is_some_and(|b| b.status == now.status && b.reason == now.reason) {
            continue;
        }
        let event_type = if now.status == "True" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        info!(condition = type_, status = %now.status, reason = %now.reason, "Condition changed");
        context
            .events
            .publish(
                &reference,
                event_type,
                &now.reason,
                "Reconcile",
                now.message.clone(),
            )
            .await;
    }
}
