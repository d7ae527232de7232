//! Kubernetes objects of a registry that the operator runs, for an ArtifactRegistry named `N`
//! in namespace `NS`:
//!
//! - ConfigMap `N-zot-config` with Zot's `config.json`;
//! - Secret `N-zot-credentials` with the accounts, `htpasswd` and the cluster hash key;
//! - StatefulSet `N-zot` running Zot, with one data volume per pod unless the store is S3;
//! - Service `N-zot-headless`, which gives each pod a DNS name for cluster mode;
//! - Service `N-zot`, the registry's in-cluster endpoint on port 5000;
//! - PodDisruptionBudget `N-zot` and NetworkPolicy `N-zot`;
//! - Traefik IngressRoute `N-zot` when `spec.ingress.traefik` is set.
//!
//! Every builder is a pure function and sets the registry as the controlling owner.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec},
        core::v1::{
            Capabilities, ConfigMap, ConfigMapProjection, Container, ContainerPort,
            EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
            PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec,
            PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
            Secret, SecretKeySelector, SecretProjection, SecurityContext, Service, ServicePort,
            ServiceSpec, Volume, VolumeMount, VolumeProjection, VolumeResourceRequirements,
        },
        networking::v1::{
            NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
            NetworkPolicySpec,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use serde_json::{Value, json};

use super::{
    credentials::{HTPASSWD_KEY, RegistryCredentials},
    zot::{self, CONFIG_DIRECTORY, CONFIG_FILE, HTPASSWD_FILE, PORT, ROOT_DIRECTORY},
};
use crate::crd::{ArtifactRegistrySpec, TraefikIngress, ZotSpec, ZotStorage};

/// Pod-template annotation that carries [`zot::config_hash`], so a new configuration or
/// password file rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "artifacts.cameleer.io/config-hash";
/// Name of the data volume and its claim template. The StatefulSet controller names the claims
/// `data-N-zot-<ordinal>`.
pub const DATA_VOLUME: &str = "data";
/// Value of `app.kubernetes.io/name` on the operator's and the gateway's pods.
pub const OPERATOR_APP_NAME: &str = "artifact-operator";
/// Namespace of Traefik when the operator's settings name none.
pub const DEFAULT_TRAEFIK_NAMESPACE: &str = "traefik";

const NAME_LABEL: &str = "app.kubernetes.io/name";
const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
const APP_NAME: &str = "zot";
const COMPONENT: &str = "registry";
/// Label that Kubernetes sets on every namespace to the namespace's name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

const CONTAINER_NAME: &str = "zot";
const PORT_NAME: &str = "http";
const CONFIG_VOLUME: &str = "config";
const TMP_VOLUME: &str = "tmp";
const TMP_PATH: &str = "/tmp";
/// Zot's image sets no user, so the pod picks one: 65532 is `nonroot` in the distroless base
/// image that Zot's image is built on.
const RUN_AS_ID: i64 = 65532;
/// Owner and group read, for the mounted configuration and password file.
const CONFIG_FILE_MODE: i32 = 0o440;
/// Time for in-flight pushes and pulls to finish after SIGTERM, because Zot waits for open
/// requests before it exits.
const TERMINATION_GRACE_SECONDS: i64 = 120;
const STORAGE_RESOURCE: &str = "storage";
const MEMORY_RESOURCE: &str = "memory";
/// Keys of `spec.zot.storage.s3.credentialsSecretRef`.
const S3_ACCESS_KEY_ID_KEY: &str = "accessKeyId";
const S3_SECRET_ACCESS_KEY_KEY: &str = "secretAccessKey";
/// Share of the memory limit that GOMEMLIMIT gives the Go runtime. The rest is headroom for
/// memory outside the runtime's accounting. The share is an estimate, not a measurement.
const GO_MEMORY_LIMIT_PERCENT: u128 = 90;

const PROBE_TIMEOUT_SECONDS: i32 = 5;
const STARTUP_PERIOD_SECONDS: i32 = 10;
/// Zot opens its port only after it has read every repository of its store into its metadata
/// database, which takes many minutes on a large store. The startup probe therefore allows an
/// hour (360 failures, 10 s apart) before the kubelet restarts the pod. The hour is an estimate,
/// not a measurement.
const STARTUP_FAILURE_THRESHOLD: i32 = 360;
const LIVENESS_PERIOD_SECONDS: i32 = 10;
const LIVENESS_FAILURE_THRESHOLD: i32 = 6;
const READINESS_PERIOD_SECONDS: i32 = 5;
const READINESS_FAILURE_THRESHOLD: i32 = 3;

/// The ArtifactRegistry whose objects are built.
#[derive(Clone, Copy, Debug)]
pub struct ManagedRegistry<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    /// Reference to the ArtifactRegistry. The builders set its `controller` and
    /// `blockOwnerDeletion` to true.
    pub owner: &'a OwnerReference,
}

/// Clients outside the registry's namespace that the NetworkPolicy admits.
#[derive(Clone, Copy, Debug)]
pub struct NetworkPeers<'a> {
    /// Namespace of the operator's and the gateway's pods.
    pub operator_namespace: &'a str,
    /// Namespace of Traefik, admitted when the registry has an IngressRoute.
    pub traefik_namespace: &'a str,
}

/// Returns the name of the StatefulSet, the ClusterIP Service, the PodDisruptionBudget, the
/// NetworkPolicy and the IngressRoute.
pub fn workload_name(name: &str) -> String {
    format!("{name}-zot")
}

/// Returns the name of the headless Service.
pub fn headless_service_name(name: &str) -> String {
    format!("{name}-zot-headless")
}

/// Returns the name of the ConfigMap with `config.json`.
pub fn config_map_name(name: &str) -> String {
    format!("{name}-zot-config")
}

/// Returns the name of the credentials Secret.
pub fn secret_name(name: &str) -> String {
    format!("{name}-zot-credentials")
}

/// Returns the URL of the registry inside the cluster, for example
/// `http://main-zot.apps.svc:5000`.
pub fn endpoint(name: &str, namespace: &str) -> String {
    format!("http://{}.{namespace}.svc:{PORT}", workload_name(name))
}

/// Returns `host:port` of every pod, the members of Zot's cluster mode.
pub fn cluster_members(name: &str, namespace: &str, replicas: i32) -> Vec<String> {
    let (pods, service) = (workload_name(name), headless_service_name(name));
    (0..replicas.max(0))
        .map(|ordinal| format!("{pods}-{ordinal}.{service}.{namespace}.svc:{PORT}"))
        .collect()
}

/// Returns the labels of every object and pod of the registry.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(MANAGED_BY_LABEL.to_owned(), OPERATOR_APP_NAME.to_owned());
    labels.insert(COMPONENT_LABEL.to_owned(), COMPONENT.to_owned());
    labels
}

/// Returns the labels that select the registry's pods. A StatefulSet's selector cannot change,
/// so this set stays minimal.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), APP_NAME.to_owned()),
        (INSTANCE_LABEL.to_owned(), name.to_owned()),
    ])
}

/// Builds ConfigMap `N-zot-config` with `config.json`.
pub fn config_map(registry: &ManagedRegistry<'_>, config_json: &str) -> ConfigMap {
    ConfigMap {
        metadata: metadata(registry, config_map_name(registry.name)),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_owned(),
            config_json.to_owned(),
        )])),
        ..Default::default()
    }
}

/// Builds Secret `N-zot-credentials` with the data of `credentials`.
pub fn credentials_secret(
    registry: &ManagedRegistry<'_>,
    credentials: &RegistryCredentials,
) -> Secret {
    Secret {
        metadata: metadata(registry, secret_name(registry.name)),
        type_: Some("Opaque".to_owned()),
        data: Some(credentials.to_secret_data()),
        ..Default::default()
    }
}

/// Builds StatefulSet `N-zot`, which runs Zot with the given configuration hash.
pub fn stateful_set(
    registry: &ManagedRegistry<'_>,
    spec: &ZotSpec,
    config_hash: &str,
) -> StatefulSet {
    let on_volumes = spec.storage.s3.is_none();
    StatefulSet {
        metadata: metadata(registry, workload_name(registry.name)),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            selector: selector(registry.name),
            // Kubernetes rejects changes of serviceName and podManagementPolicy, so both are the
            // same with and without cluster mode. In cluster mode every pod resolves the DNS
            // names of all members at startup and exits when one is missing, so all pods have
            // to start together rather than one after the other.
            service_name: Some(headless_service_name(registry.name)),
            pod_management_policy: Some("Parallel".to_owned()),
            template: pod_template(registry, spec, config_hash),
            volume_claim_templates: on_volumes
                .then(|| vec![data_claim_template(registry.name, &spec.storage)]),
            // Deleting the registry or lowering replicas keeps the volumes and their artifacts.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds headless Service `N-zot-headless`, which gives each pod the DNS name that cluster
/// mode lists in `cluster.members`.
pub fn headless_service(registry: &ManagedRegistry<'_>) -> Service {
    Service {
        metadata: metadata(registry, headless_service_name(registry.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            // Pods resolve each other's names before any of them is ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(registry.name)),
            ports: Some(service_ports()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds ClusterIP Service `N-zot` on port 5000, the registry's [`endpoint`].
pub fn service(registry: &ManagedRegistry<'_>) -> Service {
    Service {
        metadata: metadata(registry, workload_name(registry.name)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(registry.name)),
            ports: Some(service_ports()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds PodDisruptionBudget `N-zot`, which lets one pod at a time be evicted.
///
/// `maxUnavailable: 1` rather than `minAvailable`: with one replica a `minAvailable: 1` budget
/// would block every node drain, and in cluster mode each pod alone serves its repositories,
/// so no budget keeps those available anyway.
pub fn pod_disruption_budget(registry: &ManagedRegistry<'_>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(registry, workload_name(registry.name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector(registry.name)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds NetworkPolicy `N-zot`, which admits traffic to port 5000 only from the operator and
/// gateway pods, from the registry's own pods in cluster mode, and from Traefik's namespace when
/// an IngressRoute exists. Egress stays open for S3, DynamoDB and Trivy's databases.
///
/// NOTE: a Prometheus that scrapes `/metrics` needs a policy of its own.
pub fn network_policy(
    registry: &ManagedRegistry<'_>,
    peers: &NetworkPeers<'_>,
    spec: &ArtifactRegistrySpec,
) -> NetworkPolicy {
    let clustered = spec
        .zot
        .as_ref()
        .and_then(|zot| zot.cluster)
        .is_some_and(|cluster| cluster.enabled);
    let exposed = spec
        .ingress
        .as_ref()
        .is_some_and(|ingress| ingress.traefik.is_some());

    let mut sources = vec![operator_peer(peers.operator_namespace)];
    if clustered {
        // Cluster members forward requests for repositories that another member serves.
        sources.push(NetworkPolicyPeer {
            pod_selector: Some(selector(registry.name)),
            ..Default::default()
        });
    }
    if exposed {
        sources.push(namespace_peer(peers.traefik_namespace));
    }

    NetworkPolicy {
        metadata: metadata(registry, workload_name(registry.name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(registry.name)),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(sources),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(PORT.into())),
                    protocol: Some("TCP".to_owned()),
                    ..Default::default()
                }]),
            }]),
            ..Default::default()
        }),
    }
}

/// Builds Traefik IngressRoute `N-zot` (`traefik.io/v1alpha1`), which routes `Host(host)` to
/// the ClusterIP Service.
///
/// The host goes into the rule unescaped, so it must have passed
/// [`super::validation::validate_ingress`].
pub fn ingress_route(registry: &ManagedRegistry<'_>, traefik: &TraefikIngress) -> Value {
    let mut route = json!({
        "kind": "Rule",
        "match": format!("Host(`{}`)", traefik.host),
        "services": [{ "name": workload_name(registry.name), "port": PORT }],
    });
    if !traefik.middlewares.is_empty() {
        route["middlewares"] = json!(traefik.middlewares);
    }

    let mut spec = json!({ "routes": [route] });
    if !traefik.entry_points.is_empty() {
        spec["entryPoints"] = json!(traefik.entry_points);
    }
    if let Some(tls) = &traefik.tls {
        spec["tls"] = json!(tls);
    }

    json!({
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "IngressRoute",
        "metadata": metadata(registry, workload_name(registry.name)),
        "spec": spec,
    })
}

/// Returns GOMEMLIMIT in bytes for the Zot container: 90% of its memory limit, or none without
/// a limit or with one that is not a valid quantity.
///
/// Go's garbage collector does not see the container's limit. With GOMEMLIMIT it collects
/// harder as the heap nears the limit, so the kernel does not kill the pod. Zot needs this
/// because in cluster mode it buffers whole request and response bodies that it forwards to
/// another member.
pub fn go_memory_limit(resources: Option<&ResourceRequirements>) -> Option<u64> {
    let limit = resources?.limits.as_ref()?.get(MEMORY_RESOURCE)?;
    let bytes = quantity_bytes(limit)? * GO_MEMORY_LIMIT_PERCENT / 100;
    u64::try_from(bytes).ok()
}

/// Returns the value of a Kubernetes quantity in whole units, rounded up as Kubernetes does:
/// `1Gi` is 1073741824 and `1.5k` is 1500. Accepts binary (`Ki` to `Ei`) and decimal (`m`,
/// `k` to `E`) suffixes and exponents (`1e3`). Returns `None` for negative or malformed
/// quantities and on overflow.
pub fn quantity_bytes(quantity: &Quantity) -> Option<u128> {
    let text = quantity.0.trim();
    let number_length = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_length);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }

    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    let (multiplier, divisor) = suffix_scale(suffix)?;
    let divisor = divisor.checked_mul(10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?)?;
    Some(digits.checked_mul(multiplier)?.div_ceil(divisor))
}

/// Returns the suffix's factor as a fraction `(multiplier, divisor)`.
fn suffix_scale(suffix: &str) -> Option<(u128, u128)> {
    let binary = |power: u32| Some((1u128 << (10 * power), 1));
    let decimal = |power: u32| Some((10u128.pow(power), 1));
    match suffix {
        "" => decimal(0),
        "m" => Some((1, 1000)),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        _ => exponent_scale(suffix),
    }
}

/// Returns the factor of an exponent suffix such as `e3`, `E+6` or `e-2`.
fn exponent_scale(suffix: &str) -> Option<(u128, u128)> {
    let exponent = suffix.strip_prefix(['e', 'E'])?;
    let (negative, magnitude) = match exponent.strip_prefix('-') {
        Some(magnitude) => (true, magnitude),
        None => (false, exponent.strip_prefix('+').unwrap_or(exponent)),
    };
    if magnitude.is_empty() || !magnitude.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let power = 10u128.checked_pow(magnitude.parse().ok()?)?;
    Some(if negative { (1, power) } else { (power, 1) })
}

fn metadata(registry: &ManagedRegistry<'_>, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(registry.namespace.to_owned()),
        labels: Some(labels(registry.name)),
        owner_references: Some(vec![controller_reference(registry.owner)]),
        ..Default::default()
    }
}

fn controller_reference(owner: &OwnerReference) -> OwnerReference {
    OwnerReference {
        controller: Some(true),
        block_owner_deletion: Some(true),
        ..owner.clone()
    }
}

fn selector(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(name)),
        ..Default::default()
    }
}

fn service_ports() -> Vec<ServicePort> {
    vec![ServicePort {
        name: Some(PORT_NAME.to_owned()),
        port: PORT.into(),
        target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }]
}

fn operator_peer(operator_namespace: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(namespace_selector(operator_namespace)),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAME_LABEL.to_owned(),
                OPERATOR_APP_NAME.to_owned(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn namespace_peer(namespace: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(namespace_selector(namespace)),
        ..Default::default()
    }
}

fn namespace_selector(namespace: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_owned(),
            namespace.to_owned(),
        )])),
        ..Default::default()
    }
}

fn pod_template(
    registry: &ManagedRegistry<'_>,
    spec: &ZotSpec,
    config_hash: &str,
) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(registry.name)),
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH_ANNOTATION.to_owned(),
                config_hash.to_owned(),
            )])),
            ..Default::default()
        }),
        spec: Some(pod_spec(registry.name, spec)),
    }
}

fn pod_spec(name: &str, spec: &ZotSpec) -> PodSpec {
    let scheduling = spec.scheduling.clone().unwrap_or_default();
    PodSpec {
        containers: vec![zot_container(spec)],
        volumes: Some(pod_volumes(name, &spec.storage)),
        security_context: Some(pod_security_context()),
        // Zot never calls the Kubernetes API.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        node_selector: (!scheduling.node_selector.is_empty()).then_some(scheduling.node_selector),
        tolerations: (!scheduling.tolerations.is_empty()).then_some(scheduling.tolerations),
        affinity: scheduling.affinity,
        priority_class_name: scheduling.priority_class_name,
        ..Default::default()
    }
}

fn zot_container(spec: &ZotSpec) -> Container {
    let env = container_env(spec);
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(spec.image.clone()),
        args: Some(vec!["serve".to_owned(), zot::config_path()]),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_owned()),
            container_port: PORT.into(),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        env: (!env.is_empty()).then_some(env),
        resources: spec.resources.clone(),
        startup_probe: Some(http_probe(
            "/startupz",
            STARTUP_PERIOD_SECONDS,
            STARTUP_FAILURE_THRESHOLD,
        )),
        liveness_probe: Some(http_probe(
            "/livez",
            LIVENESS_PERIOD_SECONDS,
            LIVENESS_FAILURE_THRESHOLD,
        )),
        readiness_probe: Some(http_probe(
            "/readyz",
            READINESS_PERIOD_SECONDS,
            READINESS_FAILURE_THRESHOLD,
        )),
        security_context: Some(container_security_context()),
        volume_mounts: Some(volume_mounts()),
        ..Default::default()
    }
}

fn container_env(spec: &ZotSpec) -> Vec<EnvVar> {
    let mut env = Vec::new();
    if let Some(limit) = go_memory_limit(spec.resources.as_ref()) {
        env.push(EnvVar {
            name: "GOMEMLIMIT".to_owned(),
            value: Some(limit.to_string()),
            ..Default::default()
        });
    }
    // Zot's S3 driver and DynamoDB client take the keys from the standard AWS variables, so the
    // keys stay out of the ConfigMap.
    let credentials = spec
        .storage
        .s3
        .as_ref()
        .and_then(|s3| s3.credentials_secret_ref.as_ref());
    if let Some(secret) = credentials {
        env.push(secret_env(
            "AWS_ACCESS_KEY_ID",
            &secret.name,
            S3_ACCESS_KEY_ID_KEY,
        ));
        env.push(secret_env(
            "AWS_SECRET_ACCESS_KEY",
            &secret.name,
            S3_SECRET_ACCESS_KEY_KEY,
        ));
    }
    env
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Zot serves `/livez`, `/readyz` and `/startupz` without authentication.
fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(PORT_NAME.to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(PROBE_TIMEOUT_SECONDS),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_ID),
        run_as_group: Some(RUN_AS_ID),
        fs_group: Some(RUN_AS_ID),
        // The default changes the group of every file on each mount, which takes long on a
        // large store.
        fs_group_change_policy: Some("OnRootMismatch".to_owned()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Default::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..Default::default()
    }
}

fn volume_mounts() -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..Default::default()
    };
    vec![
        mount(CONFIG_VOLUME, CONFIG_DIRECTORY, true),
        mount(DATA_VOLUME, ROOT_DIRECTORY, false),
        mount(TMP_VOLUME, TMP_PATH, false),
    ]
}

fn pod_volumes(name: &str, storage: &ZotStorage) -> Vec<Volume> {
    let mut volumes = vec![config_volume(name), empty_dir(TMP_VOLUME)];
    if storage.s3.is_some() {
        // With S3 the data directory holds only Zot's local databases, which it rebuilds.
        volumes.push(empty_dir(DATA_VOLUME));
    }
    volumes
}

/// Builds the projected volume that puts `config.json` from the ConfigMap and `htpasswd` from
/// the Secret into one directory.
fn config_volume(name: &str) -> Volume {
    let item = |key: &str, path: &str| {
        Some(vec![KeyToPath {
            key: key.to_owned(),
            path: path.to_owned(),
            ..Default::default()
        }])
    };
    let config = VolumeProjection {
        config_map: Some(ConfigMapProjection {
            name: config_map_name(name),
            items: item(CONFIG_FILE, CONFIG_FILE),
            ..Default::default()
        }),
        ..Default::default()
    };
    let htpasswd = VolumeProjection {
        secret: Some(SecretProjection {
            name: secret_name(name),
            items: item(HTPASSWD_KEY, HTPASSWD_FILE),
            ..Default::default()
        }),
        ..Default::default()
    };
    Volume {
        name: CONFIG_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![config, htpasswd]),
            default_mode: Some(CONFIG_FILE_MODE),
        }),
        ..Default::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

/// Builds the data volume's claim template. The template is immutable once the StatefulSet
/// exists, so its labels are the selector's, which never change either.
fn data_claim_template(name: &str, storage: &ZotStorage) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(selector_labels(name)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: storage
                    .size
                    .clone()
                    .map(|size| BTreeMap::from([(STORAGE_RESOURCE.to_owned(), size)])),
                ..Default::default()
            }),
            storage_class_name: storage.storage_class_name.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::crd::GROUP;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "artifacts.cameleer.io/v1alpha1".to_owned(),
            kind: "ArtifactRegistry".to_owned(),
            name: "main".to_owned(),
            uid: "1f6c0a4e-0000-4000-8000-000000000001".to_owned(),
            ..Default::default()
        }
    }

    fn with_registry<T>(build: impl FnOnce(&ManagedRegistry<'_>) -> T) -> T {
        let owner = owner();
        build(&ManagedRegistry {
            name: "main",
            namespace: "apps",
            owner: &owner,
        })
    }

    fn to_json<T: serde::Serialize>(object: &T) -> Value {
        serde_json::to_value(object).unwrap()
    }

    fn zot_spec(value: Value) -> ZotSpec {
        serde_json::from_value(value).unwrap()
    }

    fn expected_metadata(name: &str) -> Value {
        json!({
            "name": name,
            "namespace": "apps",
            "labels": {
                "app.kubernetes.io/component": "registry",
                "app.kubernetes.io/instance": "main",
                "app.kubernetes.io/managed-by": "artifact-operator",
                "app.kubernetes.io/name": "zot"
            },
            "ownerReferences": [{
                "apiVersion": "artifacts.cameleer.io/v1alpha1",
                "kind": "ArtifactRegistry",
                "name": "main",
                "uid": "1f6c0a4e-0000-4000-8000-000000000001",
                "controller": true,
                "blockOwnerDeletion": true
            }]
        })
    }

    fn expected_selector() -> Value {
        json!({ "matchLabels": { "app.kubernetes.io/instance": "main", "app.kubernetes.io/name": "zot" } })
    }

    #[test]
    fn names_and_endpoint() {
        assert_eq!(workload_name("main"), "main-zot");
        assert_eq!(headless_service_name("main"), "main-zot-headless");
        assert_eq!(config_map_name("main"), "main-zot-config");
        assert_eq!(secret_name("main"), "main-zot-credentials");
        assert_eq!(endpoint("main", "apps"), "http://main-zot.apps.svc:5000");
    }

    #[test]
    fn cluster_members_name_every_pod() {
        assert_eq!(
            cluster_members("main", "apps", 2),
            [
                "main-zot-0.main-zot-headless.apps.svc:5000",
                "main-zot-1.main-zot-headless.apps.svc:5000"
            ]
        );
        assert_eq!(cluster_members("main", "apps", 0), Vec::<String>::new());
    }

    #[test]
    fn config_hash_annotation_uses_api_group() {
        assert_eq!(CONFIG_HASH_ANNOTATION, format!("{GROUP}/config-hash"));
    }

    #[test]
    fn config_map_holds_config_json() {
        let config_map = with_registry(|registry| config_map(registry, "{}"));

        let expected = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": expected_metadata("main-zot-config"),
            "data": { "config.json": "{}" }
        });
        assert_eq!(to_json(&config_map), expected);
    }

    #[test]
    fn secret_holds_credentials() {
        use rand::{SeedableRng, rngs::StdRng};

        let credentials = RegistryCredentials::generate(&mut StdRng::seed_from_u64(1));
        let secret = with_registry(|registry| credentials_secret(registry, &credentials));

        assert_eq!(
            to_json(&secret.metadata),
            expected_metadata("main-zot-credentials")
        );
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert_eq!(secret.data, Some(credentials.to_secret_data()));
    }

    #[test]
    fn stateful_set_on_volumes() {
        let spec = zot_spec(json!({
            "image": "ghcr.io/project-zot/zot:v2.1.20",
            "storage": { "size": "20Gi", "storageClassName": "fast" },
            "resources": { "limits": { "memory": "1Gi", "cpu": "2" }, "requests": { "memory": "512Mi" } }
        }));

        let stateful_set = with_registry(|registry| stateful_set(registry, &spec, "abc123"));
        let json = to_json(&stateful_set);

        assert_eq!(json["apiVersion"], "apps/v1");
        assert_eq!(json["kind"], "StatefulSet");
        assert_eq!(json["metadata"], expected_metadata("main-zot"));
        let expected_spec = json!({
            "replicas": 1,
            "selector": expected_selector(),
            "serviceName": "main-zot-headless",
            "podManagementPolicy": "Parallel",
            "persistentVolumeClaimRetentionPolicy": { "whenDeleted": "Retain", "whenScaled": "Retain" },
            "volumeClaimTemplates": [{
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": "data",
                    "labels": { "app.kubernetes.io/instance": "main", "app.kubernetes.io/name": "zot" }
                },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": "20Gi" } },
                    "storageClassName": "fast"
                }
            }],
            "template": {
                "metadata": {
                    "labels": expected_metadata("main-zot")["labels"],
                    "annotations": { "artifacts.cameleer.io/config-hash": "abc123" }
                },
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": 120,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "fsGroupChangePolicy": "OnRootMismatch",
                        "seccompProfile": { "type": "RuntimeDefault" }
                    },
                    "containers": [{
                        "name": "zot",
                        "image": "ghcr.io/project-zot/zot:v2.1.20",
                        "args": ["serve", "/etc/zot/config.json"],
                        "ports": [{ "name": "http", "containerPort": 5000, "protocol": "TCP" }],
                        // 90% of 1 GiB.
                        "env": [{ "name": "GOMEMLIMIT", "value": "966367641" }],
                        "resources": {
                            "limits": { "cpu": "2", "memory": "1Gi" },
                            "requests": { "memory": "512Mi" }
                        },
                        "startupProbe": {
                            "httpGet": { "path": "/startupz", "port": "http" },
                            "periodSeconds": 10,
                            "timeoutSeconds": 5,
                            "failureThreshold": 360
                        },
                        "livenessProbe": {
                            "httpGet": { "path": "/livez", "port": "http" },
                            "periodSeconds": 10,
                            "timeoutSeconds": 5,
                            "failureThreshold": 6
                        },
                        "readinessProbe": {
                            "httpGet": { "path": "/readyz", "port": "http" },
                            "periodSeconds": 5,
                            "timeoutSeconds": 5,
                            "failureThreshold": 3
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "capabilities": { "drop": ["ALL"] },
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true
                        },
                        "volumeMounts": [
                            { "name": "config", "mountPath": "/etc/zot", "readOnly": true },
                            { "name": "data", "mountPath": "/var/lib/registry" },
                            { "name": "tmp", "mountPath": "/tmp" }
                        ]
                    }],
                    "volumes": [
                        {
                            "name": "config",
                            "projected": {
                                "defaultMode": 288,
                                "sources": [
                                    { "configMap": {
                                        "name": "main-zot-config",
                                        "items": [{ "key": "config.json", "path": "config.json" }]
                                    } },
                                    { "secret": {
                                        "name": "main-zot-credentials",
                                        "items": [{ "key": "htpasswd", "path": "htpasswd" }]
                                    } }
                                ]
                            }
                        },
                        { "name": "tmp", "emptyDir": {} }
                    ]
                }
            }
        });
        assert_eq!(json["spec"], expected_spec);
    }

    #[test]
    fn stateful_set_on_s3() {
        let spec = zot_spec(json!({
            "replicas": 3,
            "cluster": { "enabled": true },
            "storage": { "s3": {
                "bucket": "artifacts",
                "region": "eu-west-1",
                "credentialsSecretRef": { "name": "s3-keys" }
            } }
        }));

        let stateful_set = with_registry(|registry| stateful_set(registry, &spec, "abc123"));
        let json = to_json(&stateful_set);

        assert_eq!(json["spec"]["replicas"], 3);
        assert_eq!(json["spec"].get("volumeClaimTemplates"), None);
        let pod = &json["spec"]["template"]["spec"];
        let expected_env = json!([
            { "name": "AWS_ACCESS_KEY_ID",
              "valueFrom": { "secretKeyRef": { "name": "s3-keys", "key": "accessKeyId" } } },
            { "name": "AWS_SECRET_ACCESS_KEY",
              "valueFrom": { "secretKeyRef": { "name": "s3-keys", "key": "secretAccessKey" } } }
        ]);
        assert_eq!(pod["containers"][0]["env"], expected_env);
        assert_eq!(pod["volumes"][2], json!({ "name": "data", "emptyDir": {} }));
        assert_eq!(
            pod["containers"][0]["volumeMounts"][1],
            json!({ "name": "data", "mountPath": "/var/lib/registry" })
        );
    }

    fn toleration() -> Value {
        json!({ "key": "dedicated", "operator": "Equal", "value": "registry", "effect": "NoSchedule" })
    }

    #[test]
    fn stateful_set_copies_scheduling() {
        let spec = zot_spec(json!({
            "storage": { "size": "1Gi" },
            "scheduling": {
                "nodeSelector": { "disk": "ssd" },
                "tolerations": [toleration()],
                "affinity": { "podAntiAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 100,
                    "podAffinityTerm": { "topologyKey": "kubernetes.io/hostname" }
                }] } },
                "priorityClassName": "registry-critical"
            }
        }));

        let stateful_set = with_registry(|registry| stateful_set(registry, &spec, "abc123"));
        let pod = to_json(&stateful_set)["spec"]["template"]["spec"].clone();

        assert_eq!(pod["nodeSelector"], json!({ "disk": "ssd" }));
        assert_eq!(pod["tolerations"], json!([toleration()]));
        assert_eq!(
            pod["affinity"],
            json!({ "podAntiAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100,
                "podAffinityTerm": { "topologyKey": "kubernetes.io/hostname" }
            }] } })
        );
        assert_eq!(pod["priorityClassName"], "registry-critical");
        assert_eq!(
            pod["containers"][0].get("env"),
            None,
            "no memory limit, no GOMEMLIMIT"
        );
    }

    #[test]
    fn services_select_zot_pods() {
        let (service, headless) =
            with_registry(|registry| (service(registry), headless_service(registry)));
        let ports =
            json!([{ "name": "http", "port": 5000, "targetPort": "http", "protocol": "TCP" }]);
        let pod_labels =
            json!({ "app.kubernetes.io/instance": "main", "app.kubernetes.io/name": "zot" });

        let expected_service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": expected_metadata("main-zot"),
            "spec": { "type": "ClusterIP", "selector": pod_labels, "ports": ports }
        });
        let expected_headless = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": expected_metadata("main-zot-headless"),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": pod_labels,
                "ports": ports
            }
        });
        assert_eq!(to_json(&service), expected_service);
        assert_eq!(to_json(&headless), expected_headless);
    }

    #[test]
    fn disruption_budget_allows_one() {
        let budget = with_registry(pod_disruption_budget);

        let expected = json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": expected_metadata("main-zot"),
            "spec": { "maxUnavailable": 1, "selector": expected_selector() }
        });
        assert_eq!(to_json(&budget), expected);
    }

    fn registry_spec(value: Value) -> ArtifactRegistrySpec {
        serde_json::from_value(value).unwrap()
    }

    const PEERS: NetworkPeers<'static> = NetworkPeers {
        operator_namespace: "artifact-system",
        traefik_namespace: "traefik",
    };

    fn operator_source() -> Value {
        json!({
            "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "artifact-system" } },
            "podSelector": { "matchLabels": { "app.kubernetes.io/name": "artifact-operator" } }
        })
    }

    fn expected_policy(sources: Value) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": expected_metadata("main-zot"),
            "spec": {
                "podSelector": expected_selector(),
                "policyTypes": ["Ingress"],
                "ingress": [{ "from": sources, "ports": [{ "port": 5000, "protocol": "TCP" }] }]
            }
        })
    }

    #[test]
    fn network_policy_admits_operator_only() {
        let spec = registry_spec(json!({ "zot": { "storage": { "size": "1Gi" } } }));

        let policy = with_registry(|registry| network_policy(registry, &PEERS, &spec));

        assert_eq!(
            to_json(&policy),
            expected_policy(json!([operator_source()]))
        );
    }

    #[test]
    fn network_policy_admits_peers_and_traefik() {
        let spec = registry_spec(json!({
            "zot": { "replicas": 2, "cluster": { "enabled": true }, "storage": { "size": "1Gi" } },
            "ingress": { "traefik": { "host": "registry.example.com" } }
        }));

        let policy = with_registry(|registry| network_policy(registry, &PEERS, &spec));

        let sources = json!([
            operator_source(),
            { "podSelector": expected_selector() },
            { "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "traefik" } } }
        ]);
        assert_eq!(to_json(&policy), expected_policy(sources));
    }

    #[test]
    fn ingress_route_with_secret_and_middlewares() {
        let traefik: TraefikIngress = serde_json::from_value(json!({
            "host": "registry.example.com",
            "entryPoints": ["websecure"],
            "tls": { "secretName": "registry-tls" },
            "middlewares": [{ "name": "ip-allow" }, { "name": "headers", "namespace": "traefik" }]
        }))
        .unwrap();

        let route = with_registry(|registry| ingress_route(registry, &traefik));

        let expected = json!({
            "apiVersion": "traefik.io/v1alpha1",
            "kind": "IngressRoute",
            "metadata": expected_metadata("main-zot"),
            "spec": {
                "entryPoints": ["websecure"],
                "routes": [{
                    "kind": "Rule",
                    "match": "Host(`registry.example.com`)",
                    "services": [{ "name": "main-zot", "port": 5000 }],
                    "middlewares": [{ "name": "ip-allow" }, { "name": "headers", "namespace": "traefik" }]
                }],
                "tls": { "secretName": "registry-tls" }
            }
        });
        assert_eq!(route, expected);
    }

    #[test]
    fn ingress_route_with_cert_resolver() {
        let traefik: TraefikIngress = serde_json::from_value(json!({
            "host": "registry.example.com",
            "tls": { "certResolver": "letsencrypt" }
        }))
        .unwrap();

        let route = with_registry(|registry| ingress_route(registry, &traefik));

        let expected_spec = json!({
            "routes": [{
                "kind": "Rule",
                "match": "Host(`registry.example.com`)",
                "services": [{ "name": "main-zot", "port": 5000 }]
            }],
            "tls": { "certResolver": "letsencrypt" }
        });
        assert_eq!(route["spec"], expected_spec);
    }

    #[test]
    fn owner_reference_forced_to_controller() {
        let mut owner = owner();
        owner.controller = Some(false);
        owner.block_owner_deletion = None;
        let registry = ManagedRegistry {
            name: "main",
            namespace: "apps",
            owner: &owner,
        };

        let references = service(&registry).metadata.owner_references.unwrap();

        assert_eq!(references.len(), 1);
        assert_eq!(references[0].controller, Some(true));
        assert_eq!(references[0].block_owner_deletion, Some(true));
    }

    #[test]
    fn quantity_bytes_table() {
        let cases: [(&str, Option<u128>); 20] = [
            ("0", Some(0)),
            ("1024", Some(1024)),
            ("1Ki", Some(1024)),
            ("20Gi", Some(20 * (1 << 30))),
            ("20480Mi", Some(20 * (1 << 30))),
            ("1.5Gi", Some(1_610_612_736)),
            ("1Ti", Some(1 << 40)),
            ("1Ei", Some(1 << 60)),
            ("1k", Some(1000)),
            ("1.5k", Some(1500)),
            ("128M", Some(128_000_000)),
            ("1G", Some(1_000_000_000)),
            ("1500m", Some(2)),
            ("1e3", Some(1000)),
            ("2E+6", Some(2_000_000)),
            ("5e-1", Some(1)),
            ("-1Gi", None),
            ("1Gb", None),
            ("Gi", None),
            ("1.2.3", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                quantity_bytes(&Quantity(text.to_owned())),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn go_memory_limit_is_ninety_percent() {
        let resources = |limits: Value| -> ResourceRequirements {
            serde_json::from_value(json!({ "limits": limits })).unwrap()
        };

        assert_eq!(
            go_memory_limit(Some(&resources(json!({ "memory": "1Gi" })))),
            Some(966_367_641)
        );
        assert_eq!(
            go_memory_limit(Some(&resources(json!({ "memory": "1000" })))),
            Some(900)
        );
        assert_eq!(
            go_memory_limit(Some(&resources(json!({ "cpu": "1" })))),
            None
        );
        assert_eq!(
            go_memory_limit(Some(&resources(json!({ "memory": "lots" })))),
            None
        );
        assert_eq!(go_memory_limit(None), None);
    }
}
