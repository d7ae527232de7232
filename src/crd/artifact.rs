//! The `AppArtifact` resource: one JAR stored at `{tenantId}/{appId}:v{version}`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of `tenantId` and `appId`: one path component of an OCI repository name.
pub const COMPONENT_PATTERN: &str = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$";
/// Maximum length of `tenantId` and `appId`.
pub const COMPONENT_MAX_LENGTH: u32 = 63;
/// Pattern of `version`, chosen so that `v{version}` is a valid OCI tag and `{version}.jar` a
/// plain file name: a rule of the schema also rejects `..`, as `oci::coordinates` does.
pub const VERSION_PATTERN: &str = r"^[a-zA-Z0-9][a-zA-Z0-9._-]*$";
/// Maximum length of `version`: an OCI tag has at most 128 characters, one of them the `v`.
pub const VERSION_MAX_LENGTH: u32 = 127;

/// One application JAR, pushed by the operator to `{tenantId}/{appId}:v{version}` in the
/// registry named by `registryRef`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "artifacts.cameleer.io",
    version = "v1alpha1",
    kind = "AppArtifact",
    doc = "One application JAR stored as an OCI artifact at {tenantId}/{appId}:v{version}.",
    namespaced,
    status = "AppArtifactStatus",
    shortname = "appart",
    category = "artifacts",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reference","type":"string","jsonPath":".status.artifact.ociRef"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.artifact.digest","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AppArtifactSpec {
    /// ArtifactRegistry that stores the artifact.
    pub registry_ref: RegistryRef,

    /// Tenant that owns the artifact. It must equal the `artifacts.cameleer.io/tenant` label of
    /// the namespace, and becomes the first component of the OCI repository. Immutable.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("tenantId is immutable; create a new AppArtifact instead"))]
    pub tenant_id: String,

    /// Application within the tenant; the second component of the OCI repository. Immutable.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("appId is immutable; create a new AppArtifact instead"))]
    pub app_id: String,

    /// Version of the application. The artifact is tagged `v{version}`, and a pushed version is
    /// never overwritten. Immutable.
    // The schema mirrors `oci::coordinates::validate_version`, so that the apiserver rejects
    // every version the controller would stall on: a leading '_' passes the OCI tag grammar but
    // not that rule, and `..` would make `{version}.jar` an unsafe file name.
    #[schemars(
        length(min = 1, max = 127),
        regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9._-]*$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("version is immutable; create a new AppArtifact for a new version"))]
    #[x_kube(validation = Rule::new("!self.contains('..')").message("version must not contain '..'; use single dots between its parts, such as 1.2.3"))]
    pub version: String,

    /// File name recorded in the artifact and offered to loaders. Defaults to
    /// `{appId}-{version}.jar`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[A-Za-z0-9._-]+\.jar$"))]
    pub file_name: Option<String>,

    /// Source of the JAR.
    pub source: ArtifactSource,

    /// Fate of the registry tag when this object is deleted: Retain (default) or Delete.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

impl AppArtifactSpec {
    /// Returns `spec.fileName`, or `{appId}-{version}.jar` when it is not set.
    pub fn jar_file_name(&self) -> String {
        self.file_name
            .clone()
            .unwrap_or_else(|| format!("{}-{}.jar", self.app_id, self.version))
    }
}

/// Reference to an ArtifactRegistry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistryRef {
    /// Name of the ArtifactRegistry.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the ArtifactRegistry. Defaults to the AppArtifact's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Origin of the JAR. Exactly one field is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.url), has(self.configMapKeyRef), has(self.secretKeyRef), has(self.upload), has(self.existing)].filter(x, x).size() == 1").message("set exactly one of url, configMapKeyRef, secretKeyRef, upload or existing"))]
pub struct ArtifactSource {
    /// Download the JAR over HTTP or HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlSource>,
    /// Read the JAR from a key of a ConfigMap's `binaryData` in the AppArtifact's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    /// Read the JAR from a key of a Secret in the AppArtifact's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    /// Wait for the JAR to arrive through the operator's upload API
    /// (`PUT /v1/uploads/{namespace}/{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadSource>,
    /// Adopt the JAR that is already in the registry at `{tenantId}/{appId}:v{version}`, for
    /// example after a migration. The operator never pushes for this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing: Option<ExistingSource>,
}

/// An HTTP or HTTPS download.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UrlSource {
    /// Address of the JAR. Hosts that resolve to denied address ranges (loopback,
    /// link-local, the cluster's ranges) are rejected before connecting.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: String,
    /// Expected sha256 of the JAR as 64 lowercase hex digits. A mismatch stops the push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: Option<String>,
    /// Secret in the AppArtifact's namespace with either an `Authorization` key (sent as the
    /// header value) or `username` and `password` keys (sent as basic credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// PEM bundle of certificate authorities that replaces the system roots for this URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

/// A key of a ConfigMap or Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeySelector {
    /// Name of the ConfigMap or Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key whose value is the JAR.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Name of an object in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LocalObjectReference {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A JAR that arrives through the upload API.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UploadSource {
    /// Expected sha256 of the uploaded JAR as 64 lowercase hex digits. An upload with another
    /// digest is rejected and nothing is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: Option<String>,
}

/// A JAR already stored in the registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExistingSource {
    /// Expected sha256 of the stored JAR as 64 lowercase hex digits. A mismatch stalls the
    /// AppArtifact and leaves the registry unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: Option<String>,
}

/// Fate of the registry tag when the AppArtifact is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Keep the artifact in the registry.
    #[default]
    Retain,
    /// Delete the tag from the registry before the object goes away.
    Delete,
}

/// Observed state of an AppArtifact.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AppArtifactStatus {
    /// Generation of the spec that the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled, ArtifactInStorage and FetchFailed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The artifact as stored in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<StoredArtifact>,
}

/// An artifact as stored in the registry: the contract that the webhook and loaders consume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoredArtifact {
    /// Full reference, `{registry}/{tenantId}/{appId}:v{version}`.
    pub oci_ref: String,
    /// Digest of the JAR, `sha256:` and 64 hex digits.
    pub digest: String,
    /// Digest of the OCI manifest that references the JAR.
    pub manifest_digest: String,
    /// Size of the JAR in bytes.
    pub size: i64,
    /// Media type of the JAR layer.
    pub media_type: String,
    /// When the operator last pushed or adopted the artifact. Periodic checks that find it
    /// unchanged leave this time as it is.
    pub last_update_time: Time,
}
