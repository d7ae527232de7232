//! Reconciles `AppArtifact` objects: puts each JAR into its registry and keeps it there.
//!
//! A reconcile runs [`sync::reconcile`], turns its observation into the status, writes the
//! status only when it changed, and publishes Events for fetches, pushes, adoptions and every
//! change of the `Ready` reason. A finalizer removes the registry tag on deletion when
//! `spec.deletionPolicy` is `Delete`.
//!
//! Ready artifacts are checked again at [`Settings::verify_interval`], so a tag that vanished
//! from the registry is noticed and pushed again from the source. Changes of an
//! ArtifactRegistry trigger the AppArtifacts that reference it.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        finalizer::{self, Event as FinalizerEvent},
        reflector::ObjectRef,
        watcher,
    },
};
use tracing::{debug, info, instrument, warn};

use super::{
    address_policy::AddressPolicy,
    source::FetchOptions,
    status::{self, Failure, Observation, reason},
    sync::{self, Report},
};
use crate::{
    conditions::{self, Outcome},
    crd::{AppArtifact, AppArtifactStatus, ArtifactRegistry, DeletionPolicy},
    oci::ArtifactCoordinates,
    reconcile::{self, Backoff, Events, StatusWrite},
    registry::access,
    store::locks::VersionLocks,
    telemetry::Metrics,
};

/// Finalizer that lets the operator delete the registry tag before the object goes away.
pub const FINALIZER: &str = "artifacts.cameleer.io/registry-tag";

/// Name of the controller in Events and metrics.
const CONTROLLER_NAME: &str = "artifact-operator-artifact";
const METRIC_CONTROLLER: &str = "artifact";
/// Delay before reconciling again after a status write lost a race with another writer.
const CONFLICT_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Settings of the AppArtifact controller that come from the operator's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace to watch, or `None` for all namespaces.
    pub watch_namespace: Option<String>,
    /// Addresses that URL sources may reach, before each registry's allow list.
    pub address_policy: AddressPolicy,
    /// Timeouts and redirect limit of URL sources.
    pub fetch_options: FetchOptions,
    /// Interval between checks that a Ready artifact is still in its registry.
    pub verify_interval: Duration,
    /// Interval between attempts for a stalled artifact, whose spec or referenced objects must
    /// change before it can succeed, and for an artifact that waits for its upload.
    pub stalled_interval: Duration,
    /// Base URL at which clients reach the gateway, such as `https://artifacts.example.com`.
    /// The `AwaitingUpload` condition shows the upload command with it, or with a placeholder
    /// when it is `None`.
    pub gateway_url: Option<String>,
}

impl Settings {
    /// Returns the default settings: 10 minutes between checks, 30 minutes between attempts
    /// of a stalled artifact.
    pub fn new(watch_namespace: Option<String>, address_policy: AddressPolicy) -> Self {
        Self {
            watch_namespace,
            address_policy,
            fetch_options: FetchOptions::default(),
            verify_interval: Duration::from_secs(600),
            stalled_interval: Duration::from_secs(1800),
            gateway_url: None,
        }
    }
}

/// State shared by all reconciles.
pub struct Context {
    pub client: Client,
    pub events: Events,
    pub backoff: Backoff,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Version locks shared by the per-reconcile stores and the gateway's uploads, so two
    /// AppArtifacts with the same coordinates never push at the same time.
    pub locks: Arc<VersionLocks>,
    reconciles: AtomicU64,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        Self {
            events: Events::new(client.clone(), CONTROLLER_NAME),
            client,
            backoff: Backoff::default(),
            settings,
            metrics,
            locks: VersionLocks::process(),
            reconciles: AtomicU64::new(0),
        }
    }

    /// Number of reconciles that finished, successfully or not.
    pub fn reconcile_count(&self) -> u64 {
        self.reconciles.load(Ordering::Relaxed)
    }
}

/// An Event that a reconcile wants to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub type_: EventType,
    pub reason: String,
    pub message: String,
}

/// Errors that end a reconcile early; the controller retries them with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} for AppArtifact {artifact}: {source}")]
    Kube {
        action: &'static str,
        artifact: String,
        #[source]
        source: kube::Error,
    },
    #[error("AppArtifact {artifact}: {message}")]
    DeletionBlocked { artifact: String, message: String },
    #[error("finalizer of AppArtifact {artifact} failed: {source}")]
    Finalizer {
        artifact: String,
        #[source]
        source: Box<finalizer::Error<Error>>,
    },
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::DeletionBlocked { .. } => "deletion_blocked",
            Error::Finalizer { .. } => "finalizer",
        }
    }
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    context: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let (artifacts, registries) = match &context.settings.watch_namespace {
        Some(namespace) => (
            Api::<AppArtifact>::namespaced(client.clone(), namespace),
            Api::<ArtifactRegistry>::namespaced(client, namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };

    let controller = Controller::new(artifacts, watcher::Config::default().any_semantic());
    let store = controller.store();
    controller
        .watches(
            registries,
            watcher::Config::default().any_semantic(),
            move |registry| {
                let registry_namespace = registry.namespace().unwrap_or_default();
                let registry_name = registry.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|artifact| {
                        let reference = &artifact.spec.registry_ref;
                        let namespace = reference
                            .namespace
                            .clone()
                            .or_else(|| artifact.namespace())
                            .unwrap_or_default();
                        reference.name == registry_name && namespace == registry_namespace
                    })
                    .map(|artifact| ObjectRef::from_obj(&*artifact))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "AppArtifact reconcile failed");
            }
        })
        .await;
}

/// Returns `namespace/name` of an AppArtifact, the key of its logs and backoff.
pub fn key(artifact: &AppArtifact) -> String {
    format!(
        "{}/{}",
        artifact.namespace().unwrap_or_default(),
        artifact.name_any()
    )
}

#[instrument(skip_all, fields(artifact = %key(&artifact)))]
async fn reconcile(artifact: Arc<AppArtifact>, context: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let api: Api<AppArtifact> = Api::namespaced(
        context.client.clone(),
        &artifact.namespace().unwrap_or_default(),
    );
    let result = finalizer::finalizer(&api, FINALIZER, artifact.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(artifact) => apply(&artifact, &context).await,
            FinalizerEvent::Cleanup(artifact) => cleanup(&artifact, &context).await,
        }
    })
    .await
    .map_err(|source| match source {
        finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => error,
        source => Error::Finalizer {
            artifact: key(&artifact),
            source: Box::new(source),
        },
    });
    context.reconciles.fetch_add(1, Ordering::Relaxed);
    context
        .metrics
        .record_reconcile_duration(METRIC_CONTROLLER, started.elapsed());
    result
}

fn error_policy(artifact: Arc<AppArtifact>, error: &Error, context: Arc<Context>) -> Action {
    let delay = context.backoff.record_failure(&key(&artifact));
    context.metrics.record_reconcile(METRIC_CONTROLLER, "error");
    context
        .metrics
        .record_error(METRIC_CONTROLLER, error.metric_label());
    warn!(artifact = %key(&artifact), %error, kind = error.metric_label(), retry_in = ?delay, "Reconcile failed");
    Action::requeue(delay)
}

async fn apply(artifact: &AppArtifact, context: &Context) -> Result<Action, Error> {
    let Report { observation, notes } = sync::reconcile(artifact, context).await?;
    let previous = artifact.status.clone().unwrap_or_default();
    let written = write_observation(
        &context.client,
        artifact,
        &observation,
        StatusWrite::IfUnchanged,
    )
    .await;
    if let Err(Error::Kube { source, .. }) = &written
        && reconcile::is_conflict(source)
    {
        // The object changed while this reconcile worked from an older copy, for example an
        // upload stored a JAR and wrote its status. The watch delivers the new version.
        debug!("AppArtifact changed during the reconcile; reconciling the new version");
        return Ok(Action::requeue(CONFLICT_RETRY));
    }
    written?;

    let reference = artifact.object_ref(&());
    for note in notes {
        context
            .events
            .publish(
                &reference,
                note.type_,
                &note.reason,
                "Reconcile",
                note.message,
            )
            .await;
    }
    publish_failure_transition(artifact, &previous, &observation.outcome, context).await;
    Ok(requeue(artifact, &observation, context))
}

/// Turns an observation into the status and writes it, unless it equals `artifact`'s status.
/// Returns whether a write happened.
pub async fn write_observation(
    client: &Client,
    artifact: &AppArtifact,
    observation: &Observation,
    mode: StatusWrite,
) -> Result<bool, Error> {
    let previous = artifact.status.clone().unwrap_or_default();
    let status = status::build_status(artifact, &previous, observation, Timestamp::now());
    let api: Api<AppArtifact> =
        Api::namespaced(client.clone(), &artifact.namespace().unwrap_or_default());
    reconcile::write_status(&api, artifact, artifact.status.as_ref(), &status, mode)
        .await
        .map_err(|source| Error::Kube {
            action: "write the status",
            artifact: key(artifact),
            source,
        })
}

/// Publishes a Warning when the outcome turns into a failure or changes its reason, so that a
/// retry loop of the same failure does not flood the Events. A wait for the user, such as
/// `AwaitingUpload`, is published once as a Normal Event and not counted as an error.
async fn publish_failure_transition(
    artifact: &AppArtifact,
    previous: &AppArtifactStatus,
    outcome: &Outcome,
    context: &Context,
) {
    if matches!(outcome, Outcome::Ready { .. }) {
        return;
    }
    let before = conditions::find(&previous.conditions, conditions::READY);
    if before.is_some_and(|ready| ready.reason == outcome.reason()) {
        return;
    }
    let type_ = if matches!(outcome, Outcome::Waiting { .. }) {
        info!(
            reason = outcome.reason(),
            message = outcome.message(),
            "AppArtifact waiting"
        );
        EventType::Normal
    } else {
        context
            .metrics
            .record_error(METRIC_CONTROLLER, metric_kind(outcome.reason()));
        if outcome.reason() == reason::VERSION_CONFLICT {
            context.metrics.record_push("conflict", 0);
        }
        warn!(
            reason = outcome.reason(),
            message = outcome.message(),
            "AppArtifact not ready"
        );
        EventType::Warning
    };
    context
        .events
        .publish(
            &artifact.object_ref(&()),
            type_,
            outcome.reason(),
            "Reconcile",
            outcome.message().to_owned(),
        )
        .await;
}

/// Maps a condition reason to a metric label, keeping label values to a fixed set.
fn metric_kind(reason: &str) -> &'static str {
    const KNOWN: [&str; 19] = [
        reason::MISSING,
        reason::NOT_FOUND,
        reason::REPLACED,
        reason::TENANT_MISMATCH,
        reason::NAMESPACE_NOT_ADMITTED,
        reason::INVALID_COORDINATES,
        reason::REGISTRY_NOT_FOUND,
        reason::REGISTRY_NOT_READY,
        reason::REGISTRY_UNAVAILABLE,
        reason::REGISTRY_UNAUTHORIZED,
        reason::REGISTRY_ERROR,
        reason::VERSION_CONFLICT,
        reason::DIGEST_MISMATCH,
        reason::NOT_A_JAR,
        reason::TOO_LARGE,
        reason::SOURCE_NOT_FOUND,
        reason::SOURCE_DENIED,
        reason::SOURCE_UNAVAILABLE,
        reason::REUPLOAD_REQUIRED,
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == reason)
        .unwrap_or("other")
}

/// Decides when to reconcile again: Ready artifacts at the verification interval, transient
/// failures with per-object backoff, stalled and waiting artifacts at the stalled interval.
fn requeue(artifact: &AppArtifact, observation: &Observation, context: &Context) -> Action {
    let key = key(artifact);
    let (result, delay) = match &observation.outcome {
        Outcome::Ready { .. } => {
            context.backoff.record_success(&key);
            ("ready", context.settings.verify_interval)
        }
        Outcome::Progressing { .. } => ("progressing", context.backoff.record_failure(&key)),
        Outcome::Stalled { .. } => {
            context.backoff.record_success(&key);
            ("stalled", context.settings.stalled_interval)
        }
        // The gateway writes the status after an upload, and that write triggers a reconcile,
        // so the wait needs no polling.
        Outcome::Waiting { .. } => {
            context.backoff.record_success(&key);
            ("waiting", context.settings.stalled_interval)
        }
    };
    context.metrics.record_reconcile(METRIC_CONTROLLER, result);
    Action::requeue(delay)
}

// === Deletion ===

/// Runs before the finalizer is removed: deletes the registry tag under `Delete`.
///
/// Only a tag that still points to the digest this AppArtifact pushed or adopted is deleted, so an
/// AppArtifact that lost a version conflict never deletes the winner's artifact. When the
/// ArtifactRegistry itself is gone, the tag cannot be reached and the finalizer is released
/// with a Warning. When the registry exists but fails, the deletion is retried with backoff and
/// the status explains how to release the object by hand.
async fn cleanup(artifact: &AppArtifact, context: &Context) -> Result<Action, Error> {
    if artifact.spec.deletion_policy == DeletionPolicy::Retain {
        info!("deletionPolicy is Retain; the registry tag stays");
        return Ok(Action::await_change());
    }
    let Some(stored) = artifact.status.as_ref().and_then(|s| s.artifact.clone()) else {
        info!("nothing was pushed or adopted; no registry tag to delete");
        return Ok(Action::await_change());
    };
    let Ok(coordinates) = sync::coordinates(artifact) else {
        return Ok(Action::await_change());
    };
    match delete_tag(artifact, context, &coordinates, &stored.digest).await {
        Ok(()) => Ok(Action::await_change()),
        Err(failure) => {
            let message = format!(
                "{}. The operator retries; to delete the AppArtifact without deleting the tag, \
                 remove the finalizer: kubectl patch appartifact {} -n {} --type=json \
                 -p '[{{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}}]'",
                failure.message,
                artifact.name_any(),
                artifact.namespace().unwrap_or_default()
            );
            let blocked = Failure::transient(reason::DELETION_BLOCKED, message.clone());
            let previous = artifact.status.clone().unwrap_or_default();
            let observation = Observation::failed(&blocked, Some(stored));
            write_observation(
                &context.client,
                artifact,
                &observation,
                StatusWrite::Unconditional,
            )
            .await?;
            publish_failure_transition(artifact, &previous, &observation.outcome, context).await;
            Err(Error::DeletionBlocked {
                artifact: key(artifact),
                message,
            })
        }
    }
}

async fn delete_tag(
    artifact: &AppArtifact,
    context: &Context,
    coordinates: &ArtifactCoordinates,
    digest: &str,
) -> Result<(), Failure> {
    let reference = coordinates.reference().to_string();
    let registry_ref = &artifact.spec.registry_ref;
    let namespace = artifact.namespace().unwrap_or_default();
    let registry_namespace = registry_ref.namespace.as_deref().unwrap_or(&namespace);
    let registry = Api::<ArtifactRegistry>::namespaced(context.client.clone(), registry_namespace)
        .get_opt(&registry_ref.name)
        .await
        .map_err(|error| {
            Failure::transient(
                reason::DELETION_BLOCKED,
                format!("failed to read the ArtifactRegistry: {error}"),
            )
        })?;
    let object = artifact.object_ref(&());
    let Some(registry) = registry else {
        let message = format!(
            "ArtifactRegistry {registry_namespace}/{} no longer exists, so the tag {reference} \
             was not deleted",
            registry_ref.name
        );
        warn!("{message}");
        context
            .events
            .publish(
                &object,
                EventType::Warning,
                "RegistryGone",
                "Delete",
                message,
            )
            .await;
        return Ok(());
    };

    let client = access::operator_client(&context.client, &registry)
        .await
        .map_err(|error| status::access_failure(&error))?;
    let jar = match client.fetch_jar(coordinates).await {
        Ok(jar) => jar,
        Err(error) if error.is_not_found() => {
            info!(%reference, "the registry tag is already gone");
            return Ok(());
        }
        Err(error) => return Err(status::registry_failure(&error)),
    };
    if jar.layer.digest.to_string() != digest {
        let message = format!(
            "{reference} points to digest {}, not the digest {digest} of this AppArtifact; the tag \
             was left alone",
            jar.layer.digest
        );
        warn!("{message}");
        context
            .events
            .publish(
                &object,
                EventType::Warning,
                "TagNotDeleted",
                "Delete",
                message,
            )
            .await;
        return Ok(());
    }
    client
        .delete_jar(coordinates)
        .await
        .map_err(|error| status::registry_failure(&error))?;
    info!(%reference, "deleted the registry tag");
    context
        .events
        .publish(
            &object,
            EventType::Normal,
            "Deleted",
            "Delete",
            format!("deleted {reference} from the registry"),
        )
        .await;
    Ok(())
}
