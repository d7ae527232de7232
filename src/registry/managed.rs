//! Managed mode: a Zot registry that the operator runs as a StatefulSet.
//!
//! A reconcile first validates the spec against what Zot accepts and what the existing
//! StatefulSet can apply. It then keeps the generated credentials and applies the rendered
//! children with server-side apply. Last, it judges readiness from the StatefulSet and the
//! registry's `/v2/` endpoint.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Secret, Service},
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch},
    core::{ApiResource, GroupVersionKind},
};
use tracing::debug;

use super::{
    controller::{CONFIG_VALID, Context, Error, INGRESS_READY, Observation},
    credentials::RegistryCredentials,
    resources::{self, ManagedRegistry, NetworkPeers},
    validation, zot,
};
use crate::{
    conditions::{Desired, Outcome},
    crd::{ArtifactRegistry, TraefikIngress, ZotSpec},
    oci::{Credentials, RegistryClient, RegistryConfig},
    reconcile,
};

/// Validates, renders and applies a managed registry, and reports its state.
pub async fn reconcile(
    registry: &ArtifactRegistry,
    zot_spec: &ZotSpec,
    context: &Context,
) -> Result<Observation, Error> {
    let namespace = registry.namespace().unwrap_or_default();
    let name = registry.name_any();
    let key = format!("{namespace}/{name}");
    let kube_error = |action: &'static str| {
        let registry = key.clone();
        move |source| Error::Kube {
            action,
            registry,
            source,
        }
    };
    let client = context.client.clone();
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);

    // Validate before touching anything, so an invalid spec changes nothing.
    let existing = statefulsets
        .get_opt(&resources::workload_name(&name))
        .await
        .map_err(kube_error("read the StatefulSet"))?;
    if let Err(problems) = validate(registry, zot_spec, existing.as_ref()) {
        return Ok(invalid(&problems));
    }

    // Credentials are generated once and reused, so the config hash stays stable.
    let stored = secrets
        .get_opt(&resources::secret_name(&name))
        .await
        .map_err(kube_error("read the credentials Secret"))?;
    let stored_data = stored.and_then(|secret| secret.data).unwrap_or_default();
    let credentials = RegistryCredentials::reconcile(&stored_data, &mut rand::rng());

    let render_inputs = zot::RenderInputs {
        name: &name,
        namespace: &namespace,
        cluster_hash_key: credentials.cluster_hash_key.expose(),
    };
    let config_json = zot::to_json(&zot::render(zot_spec, &render_inputs));
    let config_hash = zot::config_hash(&config_json, &credentials.htpasswd);

    let owner = registry
        .controller_owner_ref(&())
        .expect("a stored registry has a name and uid");
    let managed = ManagedRegistry {
        name: &name,
        namespace: &namespace,
        owner: &owner,
    };
    let peers = NetworkPeers {
        operator_namespace: &context.settings.operator_namespace,
        traefik_namespace: &context.settings.traefik_namespace,
    };
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &namespace);

    reconcile::apply(
        &secrets,
        &resources::credentials_secret(&managed, &credentials),
    )
    .await
    .map_err(kube_error("apply the credentials Secret"))?;
    reconcile::apply(&configmaps, &resources::config_map(&managed, &config_json))
        .await
        .map_err(kube_error("apply the ConfigMap"))?;
    reconcile::apply(&services, &resources::headless_service(&managed))
        .await
        .map_err(kube_error("apply the headless Service"))?;
    reconcile::apply(&services, &resources::service(&managed))
        .await
        .map_err(kube_error("apply the Service"))?;
    let statefulset = reconcile::apply(
        &statefulsets,
        &resources::stateful_set(&managed, zot_spec, &config_hash),
    )
    .await
    .map_err(kube_error("apply the StatefulSet"))?;
    reconcile::apply(&budgets, &resources::pod_disruption_budget(&managed))
        .await
        .map_err(kube_error("apply the PodDisruptionBudget"))?;
    reconcile::apply(
        &policies,
        &resources::network_policy(&managed, &peers, &registry.spec),
    )
    .await
    .map_err(kube_error("apply the NetworkPolicy"))?;
    let traefik = registry
        .spec
        .ingress
        .as_ref()
        .and_then(|ingress| ingress.traefik.as_ref());
    let ingress = reconcile_ingress(&managed, traefik, context)
        .await
        .map_err(kube_error("apply the IngressRoute"))?;

    let endpoint = resources::endpoint(&name, &namespace);
    let outcome = readiness(&statefulset, zot_spec.replicas, &endpoint, &credentials).await;
    let mut observation = Observation::outcome(outcome);
    observation.conditions.push(Desired::new(
        CONFIG_VALID,
        true,
        "Valid",
        "the spec is a valid Zot configuration",
    ));
    observation.conditions.extend(ingress);
    observation.endpoint = Some(endpoint);
    observation.external_url = traefik.map(|traefik| format!("https://{}", traefik.host));
    observation.ready_replicas = Some(
        statefulset
            .status
            .as_ref()
            .and_then(|status| status.ready_replicas)
            .unwrap_or(0),
    );
    observation.config_hash = Some(config_hash);
    Ok(observation)
}

fn validate(
    registry: &ArtifactRegistry,
    zot_spec: &ZotSpec,
    existing: Option<&StatefulSet>,
) -> Result<(), Vec<validation::ConfigProblem>> {
    let observed = validation::ObservedState::from_stateful_set(existing);
    let mut problems = validation::validate(zot_spec, &observed)
        .err()
        .unwrap_or_default();
    if let Some(ingress) = &registry.spec.ingress {
        problems.extend(
            validation::validate_ingress(ingress)
                .err()
                .unwrap_or_default(),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Builds the observation of a spec that Zot would reject or that would lose data.
fn invalid(problems: &[validation::ConfigProblem]) -> Observation {
    let message = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let mut observation = Observation::outcome(Outcome::Stalled {
        reason: "InvalidConfig".to_owned(),
        message: message.clone(),
    });
    observation
        .conditions
        .push(Desired::new(CONFIG_VALID, false, "InvalidConfig", message));
    observation
}

/// Applies or removes the Traefik IngressRoute, and returns the `IngressReady` condition when
/// an ingress is configured. A missing Traefik CRD is reported in the condition instead of
/// failing the reconcile, so the registry itself keeps working.
async fn reconcile_ingress(
    managed: &ManagedRegistry<'_>,
    traefik: Option<&TraefikIngress>,
    context: &Context,
) -> Result<Option<Desired>, kube::Error> {
    let gvk = GroupVersionKind::gvk("traefik.io", "v1alpha1", "IngressRoute");
    let routes: Api<DynamicObject> = Api::namespaced_with(
        context.client.clone(),
        managed.namespace,
        &ApiResource::from_gvk(&gvk),
    );
    let route_name = resources::workload_name(managed.name);

    let Some(traefik) = traefik else {
        return match routes.delete(&route_name, &DeleteParams::default()).await {
            Ok(_) => Ok(None),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(error),
        };
    };

    let route: DynamicObject = serde_json::from_value(resources::ingress_route(managed, traefik))
        .expect("a rendered IngressRoute must deserialise as a dynamic object");
    let applied = routes
        .patch(
            &route_name,
            &reconcile::apply_params(),
            &Patch::Apply(&route),
        )
        .await;
    match applied {
        Ok(_) => Ok(Some(Desired::new(
            INGRESS_READY,
            true,
            "IngressRouteApplied",
            format!(
                "IngressRoute {route_name} routes {} to the registry",
                traefik.host
            ),
        ))),
        Err(error) if is_not_found(&error) => {
            debug!(%error, "Traefik IngressRoute CRD not installed");
            Ok(Some(Desired::new(
                INGRESS_READY,
                false,
                "TraefikNotInstalled",
                "the IngressRoute was not created because the CRD ingressroutes.traefik.io is not \
                 installed; install Traefik's CRDs or remove spec.ingress.traefik",
            )))
        }
        Err(error) => Err(error),
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Judges readiness: every replica ready, then `/v2/` accepting the operator's credentials.
async fn readiness(
    statefulset: &StatefulSet,
    replicas: i32,
    endpoint: &str,
    credentials: &RegistryCredentials,
) -> Outcome {
    let name = statefulset.name_any();
    let ready = statefulset
        .status
        .as_ref()
        .and_then(|status| status.ready_replicas)
        .unwrap_or(0);
    if ready < replicas {
        return Outcome::Progressing {
            reason: "StatefulSetNotReady".to_owned(),
            message: format!("StatefulSet {name} has {ready} of {replicas} replicas ready"),
        };
    }

    let login = Credentials::Basic {
        username: credentials.operator.username.clone(),
        password: credentials.operator.password.expose().to_owned(),
    };
    let client = RegistryConfig::new(endpoint)
        .map(|config| config.with_credentials(login))
        .and_then(RegistryClient::new);
    let checked = match client {
        Ok(client) => client.check_api().await,
        Err(error) => Err(error),
    };
    match checked {
        Ok(()) => Outcome::Ready {
            reason: "RegistryReady".to_owned(),
            message: format!(
                "{ready} of {replicas} replicas ready and {endpoint} accepts the operator's credentials"
            ),
        },
        Err(error) => Outcome::Progressing {
            reason: "RegistryUnreachable".to_owned(),
            message: error.to_string(),
        },
    }
}
