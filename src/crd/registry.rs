//! The `ArtifactRegistry` resource: a Zot registry run by the operator, or an existing OCI
//! registry it adopts.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Affinity, ResourceRequirements, Toleration},
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{Condition, LabelSelector},
    },
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Zot image used when `spec.zot.image` is not set: the full build, which includes the search,
/// scrub, metrics and UI extensions.
pub const DEFAULT_ZOT_IMAGE: &str = "ghcr.io/project-zot/zot:v2.1.20";

/// An OCI registry for application artifacts: either a Zot registry that the operator runs
/// (`zot`) or an existing registry that it adopts (`external`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "artifacts.cameleer.io",
    version = "v1alpha1",
    kind = "ArtifactRegistry",
    doc = "An OCI registry for application artifacts: a Zot registry run by the operator, or an existing registry.",
    namespaced,
    status = "ArtifactRegistryStatus",
    shortname = "areg",
    category = "artifacts",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.zot) != has(self.external)").message("set exactly one of spec.zot (a registry run by the operator) or spec.external (an existing registry)"))]
pub struct ArtifactRegistrySpec {
    /// Run a Zot registry in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zot: Option<ZotSpec>,
    /// Adopt an existing OCI distribution-spec registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRegistry>,
    /// Expose the registry outside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<RegistryIngress>,
    /// Limits on the JARs that AppArtifacts fetch into this registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<SourcePolicy>,
    /// Namespaces that may push artifacts into this registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenancy: Option<Tenancy>,
}

/// A Zot registry run by the operator as a StatefulSet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZotSpec {
    /// Container image of Zot; must be a full build for search, scanning and the UI.
    #[serde(default = "default_zot_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Number of Zot pods. More than one needs `storage.s3` or `cluster.enabled`.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 16))]
    pub replicas: i32,
    /// Compute resources of the Zot container. The memory limit also sets GOMEMLIMIT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Scheduling constraints of the Zot pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,
    /// Storage of blobs and manifests.
    pub storage: ZotStorage,
    /// Garbage collection of unreferenced blobs and untagged manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<GarbageCollection>,
    /// Retention of old versions per application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// CVE scanning through Zot's search extension and Trivy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanning: Option<Scanning>,
    /// Periodic integrity check of stored blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub: Option<Scrub>,
    /// Prometheus metrics on `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Toggle>,
    /// Zot's web UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<Toggle>,
    /// HTTP server timeouts. Zot's defaults of 60 s cut large uploads, so the operator sets
    /// longer ones unless these are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_timeouts: Option<HttpTimeouts>,
    /// Zot's scale-out cluster mode, which lets several replicas share one namespace of
    /// repositories on local storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Toggle>,
    /// Zot's log level.
    #[serde(default)]
    pub log_level: ZotLogLevel,
}

fn default_zot_image() -> String {
    DEFAULT_ZOT_IMAGE.to_owned()
}

fn default_replicas() -> i32 {
    1
}

/// Scheduling constraints copied onto the Zot pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Storage of a Zot registry: a persistent volume per pod, or an S3 bucket.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.s3) && has(self.size))").message("set either storage.size (a persistent volume) or storage.s3, not both"))]
#[x_kube(validation = Rule::new("has(self.s3) || has(self.size)").message("set storage.size (for example 20Gi) or storage.s3"))]
pub struct ZotStorage {
    /// Size of each pod's persistent volume, for example `20Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// StorageClass of the persistent volumes. Defaults to the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Keep blobs in an S3 bucket instead of persistent volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
    /// Store identical blobs once. With S3 this needs `s3.cacheDriver`.
    #[serde(default = "default_true")]
    pub dedupe: bool,
}

fn default_true() -> bool {
    true
}

/// An S3 bucket for Zot's blobs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    #[schemars(length(min = 1))]
    pub region: String,
    /// Endpoint of an S3-compatible service; empty for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Secret with `accessKeyId` and `secretAccessKey`; without it Zot uses the pod's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<crate::crd::LocalObjectReference>,
    /// Redirect blob downloads to pre-signed S3 URLs. Zot v2.1.20 has no such option, so the
    /// operator rejects true.
    #[serde(default)]
    pub redirect_blob_url: bool,
    /// Shared cache of blob digests, required when `storage.dedupe` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_driver: Option<DynamoDbCache>,
}

/// A DynamoDB table set that Zot uses as its shared blob cache with S3 storage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DynamoDbCache {
    /// Endpoint of DynamoDB or a compatible service.
    pub endpoint: String,
    pub region: String,
    /// Prefix of the tables Zot creates.
    #[schemars(length(min = 1, max = 200))]
    pub table_prefix: String,
}

/// Garbage collection settings, as Go durations such as `1h` or `30m`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GarbageCollection {
    /// Age below which unreferenced blobs are kept, so uploads in progress survive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub delay: Option<String>,
    /// Time between garbage-collection runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub interval: Option<String>,
}

/// Number of versions of each application that Zot keeps.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Number of most recently pushed versions kept per application.
    #[schemars(range(min = 1))]
    pub keep_versions: i32,
    /// Repository globs the policy applies to, for example `tenant-a/**`. Defaults to all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
}

/// CVE scanning through Zot's search extension.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Scanning {
    pub enabled: bool,
    /// Time between updates of the vulnerability database, as a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub update_interval: Option<String>,
    /// OCI repository mirroring the Trivy vulnerability database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_repository: Option<String>,
    /// OCI repository mirroring the Trivy Java vulnerability database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub java_db_repository: Option<String>,
}

/// Periodic integrity check of stored blobs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Scrub {
    pub enabled: bool,
    /// Time between scrub runs, as a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub interval: Option<String>,
}

/// A feature that is either on or off.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Toggle {
    pub enabled: bool,
}

/// Timeouts of Zot's HTTP server, as Go durations.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub read: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub write: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub idle: Option<String>,
}

/// Zot's log level.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ZotLogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

/// An existing OCI distribution-spec registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRegistry {
    /// Base URL, for example `https://registry.example.com`.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^https?://[^\s/]+(/[^\s]*)?$")
    )]
    pub url: String,
    /// Secret with `username` and `password` keys for the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<crate::crd::LocalObjectReference>,
    /// PEM bundle of certificate authorities that replaces the system roots for this registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Accept any server certificate. Off by default; the operator logs a warning while on.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
}

/// Exposure of the registry outside the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegistryIngress {
    /// A Traefik IngressRoute (`traefik.io/v1alpha1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traefik: Option<TraefikIngress>,
}

/// A Traefik IngressRoute in front of the registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TraefikIngress {
    /// Host name the route matches.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Traefik entry points, for example `websecure`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_points: Vec<String>,
    /// TLS termination at Traefik.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TraefikTls>,
    /// Middlewares applied before the registry, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub middlewares: Vec<MiddlewareRef>,
}

/// TLS of a Traefik route: a certificate Secret or an ACME resolver.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.certResolver)").message("set exactly one of tls.secretName or tls.certResolver"))]
pub struct TraefikTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_resolver: Option<String>,
}

/// Reference to a Traefik Middleware.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MiddlewareRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Limits on the JARs that AppArtifacts fetch into a registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SourcePolicy {
    /// Maximum size of one JAR, for example `512Mi` (the default). The limit is enforced while
    /// the JAR streams, so a larger source is cut off and nothing is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_artifact_size: Option<Quantity>,
    /// Host names or CIDR ranges that URL sources may download from. Empty allows every host
    /// outside the operator's denied address ranges; a non-empty list allows only these, and
    /// never a denied address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub allowed_hosts: Vec<String>,
}

/// Namespaces that may push into the registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Tenancy {
    /// Namespaces whose AppArtifacts the registry accepts. Empty or absent admits the
    /// registry's own namespace only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// Observed state of an ArtifactRegistry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactRegistryStatus {
    /// Generation of the spec that the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled and ConfigValid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// URL of the registry inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// URL of the registry through the ingress, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    /// Zot pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Hash of the rendered Zot configuration and credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Version the registry reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}
