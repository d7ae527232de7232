//! Zot's configuration file, `config.json`: a typed model with the key names that Zot reads,
//! and its rendering from `spec.zot` of an `ArtifactRegistry`.
//!
//! The key names come from Zot's Go types (`pkg/api/config/config.go` and
//! `pkg/extensions/config/config.go` in project-zot/zot) and its sample configurations under
//! `examples/`. Zot decodes the file with viper's `UnmarshalExact` and fails to start on an
//! unknown key, so the model contains only keys that Zot v2.1.20 reads.
//!
//! # Rendered settings
//!
//! - `distSpecVersion` = `1.1.1`: the OCI distribution-spec version of Zot v2.1.x. Zot replaces
//!   a different value with its own and logs a warning.
//! - `storage.rootDirectory` = `/var/lib/registry`: the pod's volume. With S3 the directory is
//!   an emptyDir that contains only Zot's local databases.
//! - `storage.dedupe` = `spec.zot.storage.dedupe`: identical blobs are stored once, through hard
//!   links on volumes and through the DynamoDB cache on S3.
//! - `storage.remoteCache` = true exactly when a DynamoDB cache is configured. Zot otherwise
//!   turns it on by itself for S3 with dedupe, and then rejects the missing cache driver.
//! - `storage.gc` = true: Zot removes blobs that no manifest references.
//! - `storage.gcDelay` = `spec.zot.gc.delay`, else 1h: a blob stays unreferenced until the
//!   manifest that uses it is pushed, so the delay must exceed the longest upload (30m by
//!   default, the write timeout).
//! - `storage.gcInterval` = `spec.zot.gc.interval`, else 24h: every run walks all repositories,
//!   and retention policies are applied at the same interval.
//! - `storage.retention.policies` from `spec.zot.retention`: one policy for the given repository
//!   globs (all repositories by default) that keeps the `keepVersions` most recently pushed tags
//!   (`keepTags[].patterns` = `.*`, `mostRecentlyPushedCount`), deletes untagged manifests
//!   (`deleteUntagged`) and referrers whose subject is gone (`deleteReferrers`).
//! - `storage.storageDriver` for `spec.zot.storage.s3`: `name` = `s3`, `region`, `bucket`,
//!   `rootdirectory` = `/zot/{namespace}/{name}` so that registries can share a bucket, and, for
//!   an S3-compatible endpoint, `regionendpoint`, `forcepathstyle` = true and `secure` from the
//!   endpoint's scheme. Access keys stay out of the file: the pod gets them from the credentials
//!   Secret as `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
//! - `storage.cacheDriver` for `spec.zot.storage.s3.cacheDriver`: `name` = `dynamodb`,
//!   `endpoint`, `region` and all seven table names, `{tablePrefix}BlobTable` and so on, because
//!   Zot panics at startup when one of them is missing.
//! - `http.address` = `0.0.0.0`: Zot listens on 127.0.0.1 by default, which other pods cannot
//!   reach.
//! - `http.port` = `5000`, as a string because Zot reads a string.
//! - `http.realm` = `zot`: the realm of the `WWW-Authenticate` challenge.
//! - `http.readTimeout` and `http.writeTimeout` = `spec.zot.httpTimeouts.read` and `.write`,
//!   else 30m each. Zot v2.1.20 ends a request whose body takes longer than 60 s to read, or
//!   whose response takes longer than 60 s to write, which cuts uploads and downloads of large
//!   JARs.
//! - No idle timeout: Zot v2.1.20 has no key for it and fixes its HTTP idle timeout at 120 s,
//!   so `spec.zot.httpTimeouts.idle` is rejected by validation instead of rendered.
//! - `http.auth.htpasswd.path` = `/etc/zot/htpasswd`, mounted from the credentials Secret.
//! - `http.auth.failDelay` = 0: the passwords are 256-bit random values that no guessing rate
//!   can find, so a delay would only slow clients whose credentials are rejected.
//! - `http.accessControl.repositories` = `**` with two policies: `artifact-operator` may `read`,
//!   `create` and `delete`, and `artifact-gateway` may `read`. No account gets `update`: Zot
//!   classifies a push to an existing tag as `update`, so without it tags are immutable.
//!   `defaultPolicy` and `anonymousPolicy` are empty, so other users and anonymous requests get
//!   nothing.
//! - `http.accessControl.adminPolicy` is empty: no account bypasses the repository policies.
//! - `http.accessControl.metrics.users` = `artifact-gateway`: with authentication on, Zot denies
//!   `/metrics` to everyone unless the list names a user, and the read-only account is the one
//!   that is safe to give to a scraper.
//! - `log.level` = `spec.zot.logLevel`.
//! - `extensions.search.enable` = true when scanning or the UI is on: the UI needs search, and
//!   Zot rejects a configuration with the UI but without search.
//! - `extensions.search.cve` when `spec.zot.scanning.enabled`: `updateInterval`, and
//!   `trivy.dbRepository` and `trivy.javaDBRepository` for mirrored vulnerability databases.
//!   Zot raises an interval below 2h to 2h.
//! - `extensions.scrub` when `spec.zot.scrub.enabled`: `enable` and `interval`. Zot defaults the
//!   interval to 24h and raises one below 2h to 2h.
//! - `extensions.metrics` when `spec.zot.metrics.enabled`: `enable` and `prometheus.path` =
//!   `/metrics`.
//! - `extensions.ui.enable` when `spec.zot.ui.enabled`.
//! - `cluster` when `spec.zot.cluster.enabled`: `members` = the DNS names of the StatefulSet's
//!   pods under the headless Service, port 5000, and `hashKey` = the 16 characters kept in the
//!   credentials Secret. Zot hashes each repository name with this key to pick the member that
//!   serves it. No `cluster.tls`, because the members speak plain HTTP to each other.
//!
//! Not rendered: `http.tls`, because TLS ends at Traefik, and a redirect of blob downloads to
//! S3, which Zot v2.1.20 does not offer.
//!
//! NOTE: the 60 s default of the HTTP timeouts in v2.1.20 is taken from statements of Zot's
//! maintainers and from user reports. A later Zot source sets 30 s, and the v2.1.20 source was
//! not available to check.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::resources;
use crate::crd::{self, ZotLogLevel, ZotSpec};

/// Port of Zot's HTTP server.
pub const PORT: u16 = 5000;
/// Directory of Zot's store, the mount path of the pod's data volume.
pub const ROOT_DIRECTORY: &str = "/var/lib/registry";
/// Directory in the pod that contains `config.json` and `htpasswd`.
pub const CONFIG_DIRECTORY: &str = "/etc/zot";
/// File name of the configuration in [`CONFIG_DIRECTORY`] and key in the ConfigMap.
pub const CONFIG_FILE: &str = "config.json";
/// File name of the password file in [`CONFIG_DIRECTORY`].
pub const HTPASSWD_FILE: &str = "htpasswd";
/// Account that pushes and deletes artifacts.
pub const OPERATOR_USERNAME: &str = "artifact-operator";
/// Read-only account of the download gateway.
pub const GATEWAY_USERNAME: &str = "artifact-gateway";
/// HTTP read and write timeout when the spec sets none, as a Go duration.
pub const DEFAULT_HTTP_TIMEOUT: &str = "30m";
/// Minimum age of an unreferenced blob before garbage collection removes it.
pub const DEFAULT_GC_DELAY: &str = "1h";
/// Time between garbage-collection runs.
pub const DEFAULT_GC_INTERVAL: &str = "24h";

const DIST_SPEC_VERSION: &str = "1.1.1";
const LISTEN_ADDRESS: &str = "0.0.0.0";
const REALM: &str = "zot";
const FAIL_DELAY_SECONDS: u32 = 0;
const ALL_REPOSITORIES: &str = "**";
const ALL_TAGS: &str = ".*";
const METRICS_PATH: &str = "/metrics";
const S3_DRIVER: &str = "s3";
const DYNAMODB_DRIVER: &str = "dynamodb";

/// Returns the path of `config.json` in the pod.
pub fn config_path() -> String {
    format!("{CONFIG_DIRECTORY}/{CONFIG_FILE}")
}

/// Returns the path of the htpasswd file in the pod.
pub fn htpasswd_path() -> String {
    format!("{CONFIG_DIRECTORY}/{HTPASSWD_FILE}")
}

/// Zot's configuration file.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZotConfig {
    pub dist_spec_version: String,
    pub storage: StorageConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extensions: Option<ExtensionsConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

/// `storage`: where Zot keeps blobs and manifests, and how it cleans them up.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageConfig {
    pub root_directory: String,
    pub dedupe: bool,
    pub remote_cache: bool,
    pub gc: bool,
    /// Go duration.
    pub gc_delay: String,
    /// Go duration.
    pub gc_interval: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_driver: Option<S3StorageDriver>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_driver: Option<DynamoDbCacheDriver>,
}

/// `storage.retention`: which tags Zot keeps.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionConfig {
    pub policies: Vec<RetentionPolicy>,
}

/// One entry of `storage.retention.policies`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    /// Repository globs the policy applies to.
    pub repositories: Vec<String>,
    pub delete_referrers: bool,
    pub delete_untagged: bool,
    pub keep_tags: Vec<KeepTagsPolicy>,
}

/// One entry of `keepTags`: tags matching `patterns` that Zot keeps.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeepTagsPolicy {
    /// Regular expressions of tag names.
    pub patterns: Vec<String>,
    pub most_recently_pushed_count: i32,
}

/// `storage.storageDriver` for S3, with the parameter names of the distribution S3 driver that
/// Zot embeds, which are lowercase.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct S3StorageDriver {
    pub name: String,
    pub region: String,
    pub bucket: String,
    /// Key prefix of the registry in the bucket.
    #[serde(rename = "rootdirectory")]
    pub root_directory: String,
    #[serde(rename = "regionendpoint", skip_serializing_if = "Option::is_none")]
    pub region_endpoint: Option<String>,
    #[serde(rename = "forcepathstyle", skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// Whether the driver uses HTTPS for an endpoint given without a scheme.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
}

/// `storage.cacheDriver` for DynamoDB: the shared blob cache and metadata tables.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DynamoDbCacheDriver {
    pub name: String,
    pub endpoint: String,
    pub region: String,
    pub cache_tablename: String,
    pub repo_meta_tablename: String,
    pub image_meta_tablename: String,
    pub repo_blobs_info_tablename: String,
    pub user_data_tablename: String,
    pub api_key_tablename: String,
    pub version_tablename: String,
}

/// `http`: the listener, authentication and authorization.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpConfig {
    pub address: String,
    pub port: String,
    pub realm: String,
    /// Go duration.
    pub read_timeout: String,
    /// Go duration.
    pub write_timeout: String,
    pub auth: AuthConfig,
    pub access_control: AccessControlConfig,
}

/// `http.auth`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthConfig {
    pub htpasswd: HtpasswdConfig,
    /// Seconds that Zot waits before it responds to a failed authentication.
    pub fail_delay: u32,
}

/// `http.auth.htpasswd`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct HtpasswdConfig {
    pub path: String,
}

/// `http.accessControl`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessControlConfig {
    /// Policies by repository glob.
    pub repositories: BTreeMap<String, PolicyGroup>,
    pub admin_policy: Policy,
    pub metrics: MetricsAccess,
}

/// The policies of one repository glob.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyGroup {
    pub policies: Vec<Policy>,
    /// Actions of authenticated users that no policy names.
    pub default_policy: Vec<Action>,
    /// Actions of requests without credentials.
    pub anonymous_policy: Vec<Action>,
}

/// Actions that Zot allows to the listed users.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Policy {
    pub users: Vec<String>,
    pub actions: Vec<Action>,
}

/// An action of Zot's access control.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Create,
    /// Overwriting an existing tag. `render` never grants it.
    Update,
    Delete,
}

/// `http.accessControl.metrics`: users who may read `/metrics`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MetricsAccess {
    pub users: Vec<String>,
}

/// `log`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct LogConfig {
    pub level: ZotLogLevel,
}

/// `extensions`: features of Zot's full build beyond the distribution spec.
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
pub struct ExtensionsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrub: Option<ScrubConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ui: Option<UiConfig>,
}

/// `extensions.search`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct SearchConfig {
    pub enable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cve: Option<CveConfig>,
}

/// `extensions.search.cve`: vulnerability scanning with Trivy.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CveConfig {
    /// Go duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trivy: Option<TrivyConfig>,
}

/// `extensions.search.cve.trivy`: where Trivy downloads its databases.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct TrivyConfig {
    #[serde(rename = "dbRepository", skip_serializing_if = "Option::is_none")]
    pub db_repository: Option<String>,
    #[serde(rename = "javaDBRepository", skip_serializing_if = "Option::is_none")]
    pub java_db_repository: Option<String>,
}

/// `extensions.scrub`: periodic integrity check of blobs.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ScrubConfig {
    pub enable: bool,
    /// Go duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// `extensions.metrics`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MetricsConfig {
    pub enable: bool,
    pub prometheus: PrometheusConfig,
}

/// `extensions.metrics.prometheus`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct PrometheusConfig {
    pub path: String,
}

/// `extensions.ui`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct UiConfig {
    pub enable: bool,
}

/// `cluster`: Zot's scale-out mode, in which each repository is served by one member.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    /// `host:port` of every member, the same list on every member.
    pub members: Vec<String>,
    /// SipHash key of exactly 16 characters.
    pub hash_key: String,
}

/// Values that [`render`] needs besides `spec.zot`.
#[derive(Clone, Copy, Debug)]
pub struct RenderInputs<'a> {
    /// Name of the ArtifactRegistry.
    pub name: &'a str,
    /// Namespace of the ArtifactRegistry.
    pub namespace: &'a str,
    /// Value for `cluster.hashKey`, kept in the credentials Secret.
    pub cluster_hash_key: &'a str,
}

/// Builds Zot's configuration for `spec.zot` of the registry named in `inputs`.
///
/// The spec is expected to have passed [`super::validation::validate`]. The settings and their
/// reasons are listed in the module documentation.
pub fn render(spec: &ZotSpec, inputs: &RenderInputs<'_>) -> ZotConfig {
    ZotConfig {
        dist_spec_version: DIST_SPEC_VERSION.to_owned(),
        storage: render_storage(spec, inputs),
        http: render_http(spec),
        log: LogConfig {
            level: spec.log_level,
        },
        extensions: render_extensions(spec),
        cluster: render_cluster(spec, inputs),
    }
}

/// Serialises the configuration as indented JSON, with keys in the order of the model's fields
/// and of the sorted maps, so the same configuration always gives the same text.
pub fn to_json(config: &ZotConfig) -> String {
    serde_json::to_string_pretty(config).expect(
        "a Zot configuration contains only strings, numbers, booleans and string-keyed maps",
    )
}

/// Returns the SHA-256 of the configuration and the htpasswd file as 64 lowercase hex digits.
///
/// A NUL byte separates the two inputs. Neither JSON text nor an htpasswd file contains one, so
/// different pairs never hash the same bytes. The pod template carries the hash, so a change of
/// either file rolls the pods.
pub fn config_hash(config_json: &str, htpasswd: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(config_json.as_bytes());
    hasher.update([0]);
    hasher.update(htpasswd.as_bytes());
    format!("{:x}", hasher.finalize())
}

fn render_storage(spec: &ZotSpec, inputs: &RenderInputs<'_>) -> StorageConfig {
    let s3 = spec.storage.s3.as_ref();
    let cache_driver = s3
        .and_then(|s3| s3.cache_driver.as_ref())
        .map(render_cache_driver);
    let gc = spec.gc.clone().unwrap_or_default();
    StorageConfig {
        root_directory: ROOT_DIRECTORY.to_owned(),
        dedupe: spec.storage.dedupe,
        remote_cache: cache_driver.is_some(),
        gc: true,
        gc_delay: gc.delay.unwrap_or_else(|| DEFAULT_GC_DELAY.to_owned()),
        gc_interval: gc
            .interval
            .unwrap_or_else(|| DEFAULT_GC_INTERVAL.to_owned()),
        retention: spec.retention.as_ref().map(render_retention),
        storage_driver: s3.map(|s3| render_s3_driver(s3, inputs)),
        cache_driver,
    }
}

fn render_retention(retention: &crd::Retention) -> RetentionConfig {
    let repositories = if retention.patterns.is_empty() {
        vec![ALL_REPOSITORIES.to_owned()]
    } else {
        retention.patterns.clone()
    };
    let keep_recent = KeepTagsPolicy {
        patterns: vec![ALL_TAGS.to_owned()],
        most_recently_pushed_count: retention.keep_versions,
    };
    RetentionConfig {
        policies: vec![RetentionPolicy {
            repositories,
            delete_referrers: true,
            delete_untagged: true,
            keep_tags: vec![keep_recent],
        }],
    }
}

fn render_s3_driver(s3: &crd::S3Storage, inputs: &RenderInputs<'_>) -> S3StorageDriver {
    let endpoint = s3
        .endpoint
        .as_deref()
        .filter(|endpoint| !endpoint.is_empty());
    S3StorageDriver {
        name: S3_DRIVER.to_owned(),
        region: s3.region.clone(),
        bucket: s3.bucket.clone(),
        root_directory: format!("/zot/{}/{}", inputs.namespace, inputs.name),
        region_endpoint: endpoint.map(str::to_owned),
        // S3-compatible services address buckets by path rather than by subdomain, and Zot
        // forces path style for any custom endpoint anyway, with a deprecation warning.
        force_path_style: endpoint.map(|_| true),
        secure: endpoint.map(|endpoint| !endpoint.starts_with("http://")),
    }
}

fn render_cache_driver(cache: &crd::DynamoDbCache) -> DynamoDbCacheDriver {
    let table = |suffix: &str| format!("{}{suffix}", cache.table_prefix);
    DynamoDbCacheDriver {
        name: DYNAMODB_DRIVER.to_owned(),
        endpoint: cache.endpoint.clone(),
        region: cache.region.clone(),
        cache_tablename: table("BlobTable"),
        repo_meta_tablename: table("RepoMetadataTable"),
        image_meta_tablename: table("ImageMetaTable"),
        repo_blobs_info_tablename: table("RepoBlobsInfoTable"),
        user_data_tablename: table("UserDataTable"),
        api_key_tablename: table("ApiKeyTable"),
        version_tablename: table("VersionTable"),
    }
}

fn render_http(spec: &ZotSpec) -> HttpConfig {
    let timeouts = spec.http_timeouts.clone().unwrap_or_default();
    HttpConfig {
        address: LISTEN_ADDRESS.to_owned(),
        port: PORT.to_string(),
        realm: REALM.to_owned(),
        read_timeout: timeouts
            .read
            .unwrap_or_else(|| DEFAULT_HTTP_TIMEOUT.to_owned()),
        write_timeout: timeouts
            .write
            .unwrap_or_else(|| DEFAULT_HTTP_TIMEOUT.to_owned()),
        auth: AuthConfig {
            htpasswd: HtpasswdConfig {
                path: htpasswd_path(),
            },
            fail_delay: FAIL_DELAY_SECONDS,
        },
        access_control: render_access_control(),
    }
}

fn render_access_control() -> AccessControlConfig {
    let operator = Policy {
        users: vec![OPERATOR_USERNAME.to_owned()],
        actions: vec![Action::Read, Action::Create, Action::Delete],
    };
    let gateway = Policy {
        users: vec![GATEWAY_USERNAME.to_owned()],
        actions: vec![Action::Read],
    };
    let all_repositories = PolicyGroup {
        policies: vec![operator, gateway],
        default_policy: Vec::new(),
        anonymous_policy: Vec::new(),
    };
    AccessControlConfig {
        repositories: BTreeMap::from([(ALL_REPOSITORIES.to_owned(), all_repositories)]),
        admin_policy: Policy {
            users: Vec::new(),
            actions: Vec::new(),
        },
        metrics: MetricsAccess {
            users: vec![GATEWAY_USERNAME.to_owned()],
        },
    }
}

fn render_extensions(spec: &ZotSpec) -> Option<ExtensionsConfig> {
    let scanning = spec.scanning.as_ref().filter(|scanning| scanning.enabled);
    let ui = is_enabled(spec.ui);
    let extensions = ExtensionsConfig {
        search: (scanning.is_some() || ui).then(|| SearchConfig {
            enable: true,
            cve: scanning.map(render_cve),
        }),
        scrub: spec
            .scrub
            .as_ref()
            .filter(|scrub| scrub.enabled)
            .map(|scrub| ScrubConfig {
                enable: true,
                interval: scrub.interval.clone(),
            }),
        metrics: is_enabled(spec.metrics).then(|| MetricsConfig {
            enable: true,
            prometheus: PrometheusConfig {
                path: METRICS_PATH.to_owned(),
            },
        }),
        ui: ui.then_some(UiConfig { enable: true }),
    };
    (extensions != ExtensionsConfig::default()).then_some(extensions)
}

fn render_cve(scanning: &crd::Scanning) -> CveConfig {
    let mirrored = scanning.db_repository.is_some() || scanning.java_db_repository.is_some();
    CveConfig {
        update_interval: scanning.update_interval.clone(),
        trivy: mirrored.then(|| TrivyConfig {
            db_repository: scanning.db_repository.clone(),
            java_db_repository: scanning.java_db_repository.clone(),
        }),
    }
}

fn render_cluster(spec: &ZotSpec, inputs: &RenderInputs<'_>) -> Option<ClusterConfig> {
    is_enabled(spec.cluster).then(|| ClusterConfig {
        members: resources::cluster_members(inputs.name, inputs.namespace, spec.replicas),
        hash_key: inputs.cluster_hash_key.to_owned(),
    })
}

fn is_enabled(toggle: Option<crd::Toggle>) -> bool {
    toggle.is_some_and(|toggle| toggle.enabled)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const INPUTS: RenderInputs<'static> = RenderInputs {
        name: "main",
        namespace: "apps",
        cluster_hash_key: "0123456789abcdef",
    };

    fn spec(value: Value) -> ZotSpec {
        serde_json::from_value(value).unwrap()
    }

    fn render_json(spec_value: Value) -> Value {
        serde_json::to_value(render(&spec(spec_value), &INPUTS)).unwrap()
    }

    fn expected_http() -> Value {
        json!({
            "address": "0.0.0.0",
            "port": "5000",
            "realm": "zot",
            "readTimeout": "30m",
            "writeTimeout": "30m",
            "auth": { "htpasswd": { "path": "/etc/zot/htpasswd" }, "failDelay": 0 },
            "accessControl": {
                "repositories": {
                    "**": {
                        "policies": [
                            { "users": ["artifact-operator"], "actions": ["read", "create", "delete"] },
                            { "users": ["artifact-gateway"], "actions": ["read"] }
                        ],
                        "defaultPolicy": [],
                        "anonymousPolicy": []
                    }
                },
                "adminPolicy": { "users": [], "actions": [] },
                "metrics": { "users": ["artifact-gateway"] }
            }
        })
    }

    #[test]
    fn render_minimal_spec() {
        let rendered = render_json(json!({ "storage": { "size": "1Gi" } }));

        let expected = json!({
            "distSpecVersion": "1.1.1",
            "storage": {
                "rootDirectory": "/var/lib/registry",
                "dedupe": true,
                "remoteCache": false,
                "gc": true,
                "gcDelay": "1h",
                "gcInterval": "24h"
            },
            "http": expected_http(),
            "log": { "level": "info" }
        });
        assert_eq!(rendered, expected);
    }

    #[test]
    fn render_every_local_feature() {
        let rendered = render_json(json!({
            "replicas": 3,
            "storage": { "size": "50Gi", "dedupe": false },
            "gc": { "delay": "2h", "interval": "6h" },
            "retention": { "keepVersions": 5, "patterns": ["tenant-a/**", "tenant-b/**"] },
            "scanning": {
                "enabled": true,
                "updateInterval": "12h",
                "dbRepository": "mirror.example/trivy-db",
                "javaDbRepository": "mirror.example/trivy-java-db"
            },
            "scrub": { "enabled": true, "interval": "48h" },
            "metrics": { "enabled": true },
            "ui": { "enabled": true },
            "httpTimeouts": { "read": "1h", "write": "2h" },
            "cluster": { "enabled": true },
            "logLevel": "debug"
        }));

        let mut http = expected_http();
        http["readTimeout"] = json!("1h");
        http["writeTimeout"] = json!("2h");
        let expected = json!({
            "distSpecVersion": "1.1.1",
            "storage": {
                "rootDirectory": "/var/lib/registry",
                "dedupe": false,
                "remoteCache": false,
                "gc": true,
                "gcDelay": "2h",
                "gcInterval": "6h",
                "retention": {
                    "policies": [{
                        "repositories": ["tenant-a/**", "tenant-b/**"],
                        "deleteReferrers": true,
                        "deleteUntagged": true,
                        "keepTags": [{ "patterns": [".*"], "mostRecentlyPushedCount": 5 }]
                    }]
                }
            },
            "http": http,
            "log": { "level": "debug" },
            "extensions": {
                "search": {
                    "enable": true,
                    "cve": {
                        "updateInterval": "12h",
                        "trivy": {
                            "dbRepository": "mirror.example/trivy-db",
                            "javaDBRepository": "mirror.example/trivy-java-db"
                        }
                    }
                },
                "scrub": { "enable": true, "interval": "48h" },
                "metrics": { "enable": true, "prometheus": { "path": "/metrics" } },
                "ui": { "enable": true }
            },
            "cluster": {
                "members": [
                    "main-zot-0.main-zot-headless.apps.svc:5000",
                    "main-zot-1.main-zot-headless.apps.svc:5000",
                    "main-zot-2.main-zot-headless.apps.svc:5000"
                ],
                "hashKey": "0123456789abcdef"
            }
        });
        assert_eq!(rendered, expected);
    }

    #[test]
    fn render_s3_with_dynamodb() {
        let rendered = render_json(json!({
            "replicas": 2,
            "storage": { "s3": {
                "bucket": "artifacts",
                "region": "eu-central-1",
                "endpoint": "http://minio.storage.svc:9000",
                "cacheDriver": {
                    "endpoint": "http://dynamodb.storage.svc:8000",
                    "region": "eu-central-1",
                    "tablePrefix": "Main"
                }
            } }
        }));

        let expected = json!({
            "rootDirectory": "/var/lib/registry",
            "dedupe": true,
            "remoteCache": true,
            "gc": true,
            "gcDelay": "1h",
            "gcInterval": "24h",
            "storageDriver": {
                "name": "s3",
                "region": "eu-central-1",
                "bucket": "artifacts",
                "rootdirectory": "/zot/apps/main",
                "regionendpoint": "http://minio.storage.svc:9000",
                "forcepathstyle": true,
                "secure": false
            },
            "cacheDriver": {
                "name": "dynamodb",
                "endpoint": "http://dynamodb.storage.svc:8000",
                "region": "eu-central-1",
                "cacheTablename": "MainBlobTable",
                "repoMetaTablename": "MainRepoMetadataTable",
                "imageMetaTablename": "MainImageMetaTable",
                "repoBlobsInfoTablename": "MainRepoBlobsInfoTable",
                "userDataTablename": "MainUserDataTable",
                "apiKeyTablename": "MainApiKeyTable",
                "versionTablename": "MainVersionTable"
            }
        });
        assert_eq!(rendered["storage"], expected);
        assert_eq!(rendered.get("cluster"), None);
    }

    #[test]
    fn render_s3_on_aws() {
        let rendered = render_json(json!({
            "storage": { "dedupe": false, "s3": { "bucket": "artifacts", "region": "us-east-1" } }
        }));

        let expected = json!({
            "name": "s3",
            "region": "us-east-1",
            "bucket": "artifacts",
            "rootdirectory": "/zot/apps/main"
        });
        assert_eq!(rendered["storage"]["storageDriver"], expected);
        assert_eq!(rendered["storage"]["remoteCache"], false);
        assert_eq!(rendered["storage"].get("cacheDriver"), None);
    }

    #[test]
    fn render_ui_enables_search() {
        let rendered =
            render_json(json!({ "storage": { "size": "1Gi" }, "ui": { "enabled": true } }));

        let expected = json!({ "search": { "enable": true }, "ui": { "enable": true } });
        assert_eq!(rendered["extensions"], expected);
    }

    #[test]
    fn render_disabled_features_omitted() {
        let rendered = render_json(json!({
            "storage": { "size": "1Gi" },
            "scanning": { "enabled": false, "updateInterval": "12h" },
            "scrub": { "enabled": false },
            "metrics": { "enabled": false },
            "ui": { "enabled": false },
            "cluster": { "enabled": false }
        }));

        assert_eq!(rendered.get("extensions"), None);
        assert_eq!(rendered.get("cluster"), None);
    }

    #[test]
    fn render_scanning_without_mirrors() {
        let rendered =
            render_json(json!({ "storage": { "size": "1Gi" }, "scanning": { "enabled": true } }));

        assert_eq!(
            rendered["extensions"],
            json!({ "search": { "enable": true, "cve": {} } })
        );
    }

    #[test]
    fn render_never_grants_update() {
        let config = render(&spec(json!({ "storage": { "size": "1Gi" } })), &INPUTS);
        let access = &config.http.access_control;

        for group in access.repositories.values() {
            for policy in &group.policies {
                assert!(!policy.actions.contains(&Action::Update), "{policy:?}");
            }
            assert_eq!(group.default_policy, Vec::new());
            assert_eq!(group.anonymous_policy, Vec::new());
        }
        assert_eq!(access.admin_policy.actions, Vec::new());
    }

    #[test]
    fn to_json_keeps_field_order() {
        let config = render(&spec(json!({ "storage": { "size": "1Gi" } })), &INPUTS);

        let text = to_json(&config);

        let keys: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("  \""))
            .filter_map(|line| line.split('"').next())
            .collect();
        assert_eq!(keys, ["distSpecVersion", "storage", "http", "log"]);
        assert_eq!(text, to_json(&config.clone()));
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            serde_json::to_value(&config).unwrap()
        );
    }

    #[test]
    fn config_hash_is_sha256_hex() {
        // printf 'config\0htpasswd' | sha256sum
        let expected = "a099dc8d26b3347bf6ef3f11ff0b7ae1459490e548cc17f24a73a9c790a1d9fd";

        assert_eq!(config_hash("config", "htpasswd"), expected);
    }

    #[test]
    fn config_hash_separates_inputs() {
        assert_ne!(config_hash("ab", "c"), config_hash("a", "bc"));
        assert_ne!(
            config_hash("config", "htpasswd"),
            config_hash("config", "htpasswd2")
        );
        assert_ne!(
            config_hash("config", "htpasswd"),
            config_hash("config2", "htpasswd")
        );
    }

    #[test]
    fn paths_join_directory_and_file() {
        assert_eq!(config_path(), "/etc/zot/config.json");
        assert_eq!(htpasswd_path(), "/etc/zot/htpasswd");
    }
}
