//! Declares every migrated version as an AppArtifact whose `existing` source adopts the JAR
//! already in the registry, so the cluster's view matches the store.
//!
//! Objects are written with server-side apply and the operator's field manager, so a second run
//! changes nothing. The migration never creates namespaces: a tenant's namespace carries the
//! tenant label, quotas and access rules that the platform sets up, so a missing or unlabeled
//! namespace is reported for each of its versions and the run exits non-zero.

use std::collections::BTreeMap;

use futures::{StreamExt as _, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{ListParams, ObjectList},
};
use tracing::{error, info, warn};

use super::{
    MigrateError,
    report::{ResourceOutcome, ResourceResult},
    resource_plan::{
        Action, DesiredResource, NamespaceTemplate, RegistryRefArg, build_app_artifact,
        check_namespace, plan_namespace, resource_name,
    },
};
use crate::{
    crd::{AppArtifact, ArtifactRegistry},
    oci::{ArtifactCoordinates, Digest},
    reconcile,
};

/// Options of `--create-resources`.
#[derive(Debug, Clone)]
pub struct ResourceSettings {
    pub namespace_template: NamespaceTemplate,
    pub registry: RegistryRefArg,
    /// Plan and report, but apply nothing.
    pub dry_run: bool,
    /// Number of applies in flight at once.
    pub concurrency: usize,
}

/// Checks that the AppArtifact CRD is installed and that the ArtifactRegistry of
/// `--registry-ref` exists, before anything is copied.
///
/// # Errors
///
/// [`MigrateError::CrdMissing`], [`MigrateError::RegistryRefNotFound`], and
/// [`MigrateError::RegistryRefLookup`] when the API server fails otherwise.
pub async fn check_cluster(client: &Client, registry: &RegistryRefArg) -> Result<(), MigrateError> {
    let artifacts: Api<AppArtifact> = Api::all(client.clone());
    if let Err(source) = artifacts
        .list_metadata(&ListParams::default().limit(1))
        .await
    {
        return Err(match source {
            kube::Error::Api(ref status) if status.code == 404 => MigrateError::CrdMissing {
                source: Box::new(source),
            },
            source => MigrateError::RegistryRefLookup {
                namespace: registry.namespace.clone(),
                name: registry.name.clone(),
                source: Box::new(source),
            },
        });
    }

    let registries: Api<ArtifactRegistry> = Api::namespaced(client.clone(), &registry.namespace);
    match registries.get_opt(&registry.name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(MigrateError::RegistryRefNotFound {
            namespace: registry.namespace.clone(),
            name: registry.name.clone(),
        }),
        Err(source) => Err(MigrateError::RegistryRefLookup {
            namespace: registry.namespace.clone(),
            name: registry.name.clone(),
            source: Box::new(source),
        }),
    }
}

/// Applies the AppArtifact of each migrated version (coordinates and the digest in the
/// registry) and returns one result per version, sorted by coordinates.
pub async fn declare_resources(
    client: &Client,
    settings: &ResourceSettings,
    mut migrated: Vec<(ArtifactCoordinates, Digest)>,
) -> Vec<ResourceResult> {
    migrated.sort();
    let mut results = Vec::new();
    let mut by_namespace: BTreeMap<String, Vec<DesiredResource>> = BTreeMap::new();
    for (coordinates, digest) in migrated {
        match settings.namespace_template.render(&coordinates) {
            Ok(namespace) => {
                by_namespace
                    .entry(namespace.clone())
                    .or_default()
                    .push(DesiredResource {
                        name: resource_name(&coordinates),
                        coordinates,
                        digest,
                        namespace,
                    })
            }
            Err(invalid) => {
                warn!(reference = %coordinates, error = %invalid, "No AppArtifact");
                results.push(ResourceResult {
                    reference: coordinates.to_string(),
                    namespace: None,
                    name: None,
                    outcome: failed("invalid_namespace", invalid.to_string()),
                });
            }
        }
    }

    let mut applies = Vec::new();
    for (namespace, desired) in by_namespace {
        let planned = plan_in_namespace(client, &namespace, desired).await;
        for (desired, outcome) in planned {
            match outcome {
                Some(outcome) => results.push(result_for(&desired, outcome)),
                None => applies.push(desired),
            }
        }
    }

    let applied: Vec<ResourceResult> = stream::iter(applies)
        .map(|desired| async move {
            let outcome = if settings.dry_run {
                ResourceOutcome::WouldApply
            } else {
                apply(client, settings, &desired).await
            };
            result_for(&desired, outcome)
        })
        .buffer_unordered(settings.concurrency)
        .collect()
        .await;
    results.extend(applied);
    results.sort_by(|left, right| left.reference.cmp(&right.reference));
    results
}

/// Reads the namespace and its AppArtifacts and plans each desired object. Returns `None` as
/// the outcome of an object to apply.
async fn plan_in_namespace(
    client: &Client,
    namespace: &str,
    desired: Vec<DesiredResource>,
) -> Vec<(DesiredResource, Option<ResourceOutcome>)> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labels = match namespaces.get_opt(namespace).await {
        Ok(found) => found.map(|object| object.metadata.labels.unwrap_or_default()),
        Err(source) => {
            let message = format!("failed to read namespace {namespace}: {source}");
            error!(%namespace, error = %source, "Failed to read the namespace");
            return fail_all(desired, "kubernetes_api", &message);
        }
    };

    let mut usable = Vec::new();
    let mut planned = Vec::new();
    for resource in desired {
        match check_namespace(namespace, labels.as_ref(), resource.coordinates.tenant_id()) {
            Ok(()) => usable.push(resource),
            Err(problem) => {
                warn!(reference = %resource.coordinates, %namespace, error = %problem, "No AppArtifact");
                let outcome = failed(problem.label(), problem.to_string());
                planned.push((resource, Some(outcome)));
            }
        }
    }
    if usable.is_empty() {
        return planned;
    }

    let artifacts: Api<AppArtifact> = Api::namespaced(client.clone(), namespace);
    let existing: ObjectList<AppArtifact> = match artifacts.list(&ListParams::default()).await {
        Ok(existing) => existing,
        Err(source) => {
            let message =
                format!("failed to list the AppArtifacts of namespace {namespace}: {source}");
            error!(%namespace, error = %source, "Failed to list AppArtifacts");
            planned.extend(fail_all(usable, "kubernetes_api", &message));
            return planned;
        }
    };

    let actions = plan_namespace(&usable, &existing.items);
    for (resource, action) in usable.into_iter().zip(actions) {
        let outcome = match action {
            Action::Apply => None,
            Action::AlreadyDeclared { by } => {
                info!(reference = %resource.coordinates, %namespace, name = %by, "AppArtifact already declared, left alone");
                Some(ResourceOutcome::AlreadyDeclared { by })
            }
            Action::Reject(conflict) => {
                warn!(reference = %resource.coordinates, %namespace, error = %conflict, "No AppArtifact");
                Some(failed("resource_conflict", conflict.to_string()))
            }
        };
        planned.push((resource, outcome));
    }
    planned
}

async fn apply(
    client: &Client,
    settings: &ResourceSettings,
    desired: &DesiredResource,
) -> ResourceOutcome {
    let object = build_app_artifact(desired, &settings.registry);
    let api: Api<AppArtifact> = Api::namespaced(client.clone(), &desired.namespace);
    match reconcile::apply(&api, &object).await {
        Ok(_) => {
            info!(reference = %desired.coordinates, namespace = %desired.namespace, name = %desired.name, "Applied AppArtifact");
            ResourceOutcome::Applied
        }
        Err(source) => {
            error!(reference = %desired.coordinates, namespace = %desired.namespace, name = %desired.name, error = %source, "Failed to apply AppArtifact");
            failed(
                "kubernetes_api",
                format!(
                    "failed to apply AppArtifact {}/{}: {source}",
                    desired.namespace, desired.name
                ),
            )
        }
    }
}

fn fail_all(
    desired: Vec<DesiredResource>,
    kind: &'static str,
    message: &str,
) -> Vec<(DesiredResource, Option<ResourceOutcome>)> {
    desired
        .into_iter()
        .map(|resource| (resource, Some(failed(kind, message.to_owned()))))
        .collect()
}

fn failed(kind: &'static str, error: String) -> ResourceOutcome {
    ResourceOutcome::Failed { kind, error }
}

fn result_for(desired: &DesiredResource, outcome: ResourceOutcome) -> ResourceResult {
    ResourceResult {
        reference: desired.coordinates.to_string(),
        namespace: Some(desired.namespace.clone()),
        name: Some(desired.name.clone()),
        outcome,
    }
}
