//! The AppArtifact controller against the real apiserver, controller-manager and distribution
//! registry. Each test runs its own registry and artifact controllers, scoped to the test's
//! namespace, and serves JARs from an HTTP server on 127.0.0.1.

mod support;

#[path = "support/file_server.rs"]
mod file_server;
#[path = "support/registry_process.rs"]
mod registry_process;

use std::{sync::Arc, time::Duration};

use artifact_operator::{
    artifact::{
        address_policy::AddressPolicy,
        controller::{self as artifact_controller, FINALIZER},
        status::{Failure, Observation, reason},
    },
    crd::{AppArtifact, ArtifactRegistry, TENANT_LABEL},
    oci::{ArtifactCoordinates, RegistryClient, RegistryConfig},
    reconcile::{self, StatusWrite},
    registry::controller as registry_controller,
    telemetry::Metrics,
};
use file_server::FileServer;
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Event, Secret},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use registry_process::RegistryProcess;
use serde_json::{Value, json};
use support::{
    TestEnv, create_labeled_namespace, install_crds, merge_json, sha256_hex, unique_name,
};
use tokio::sync::oneshot;

/// Upper bound for the controllers to reach an expected state.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Name of the ArtifactRegistry every test creates in its namespace.
const REGISTRY: &str = "main";

/// A tenant namespace with both controllers watching only it; they stop on drop.
struct Harness {
    env: TestEnv,
    client: Client,
    namespace: String,
    tenant: String,
    server: FileServer,
    artifacts: Arc<artifact_controller::Context>,
    stop: Option<oneshot::Sender<()>>,
}

impl Harness {
    async fn start() -> Self {
        let env = TestEnv::load();
        let client = env.kube_client().await;
        install_crds(&client).await;
        let tenant = unique_name("t");
        let namespace = create_labeled_namespace(&client, "art", &[(TENANT_LABEL, &tenant)]).await;
        let (artifacts, stop) = start_controllers(&client, &namespace);
        Self {
            env,
            client,
            namespace,
            tenant,
            server: FileServer::start().await,
            artifacts,
            stop: Some(stop),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates the ArtifactRegistry `main` for the shared distribution registry, with `extra`
    /// merged into its spec.
    async fn create_distribution_registry(&self, extra: Value) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": { "name": "registry-login" },
            "stringData": {
                "username": self.env.var("TESTENV_DISTRIBUTION_USERNAME"),
                "password": self.env.var("TESTENV_DISTRIBUTION_PASSWORD"),
            },
        }))
        .unwrap();
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let mut spec = json!({ "external": {
            "url": format!("https://{}", self.env.var("TESTENV_DISTRIBUTION_HOST")),
            "credentialsSecretRef": { "name": "registry-login" },
            "caBundle": std::fs::read_to_string(self.env.ca_file()).unwrap(),
        } });
        merge_json(&mut spec, extra);
        self.create_registry(spec).await;
    }

    async fn create_registry(&self, spec: Value) {
        let registry: ArtifactRegistry = serde_json::from_value(json!({
            "apiVersion": "artifacts.cameleer.io/v1alpha1",
            "kind": "ArtifactRegistry",
            "metadata": { "name": REGISTRY },
            "spec": spec,
        }))
        .unwrap();
        self.api::<ArtifactRegistry>()
            .create(&PostParams::default(), &registry)
            .await
            .unwrap();
    }

    /// Creates an AppArtifact of this harness's tenant.
    async fn create_artifact(&self, name: &str, app: &str, version: &str, source: Value) {
        self.create_artifact_with(name, app, version, source, json!({}))
            .await;
    }

    async fn create_artifact_with(
        &self,
        name: &str,
        app: &str,
        version: &str,
        source: Value,
        extra: Value,
    ) {
        let mut spec = json!({
            "registryRef": { "name": REGISTRY },
            "tenantId": self.tenant,
            "appId": app,
            "version": version,
            "source": source,
        });
        merge_json(&mut spec, extra);
        let artifact: AppArtifact = serde_json::from_value(json!({
            "apiVersion": "artifacts.cameleer.io/v1alpha1",
            "kind": "AppArtifact",
            "metadata": { "name": name },
            "spec": spec,
        }))
        .unwrap();
        self.api::<AppArtifact>()
            .create(&PostParams::default(), &artifact)
            .await
            .unwrap();
    }

    /// Waits until the AppArtifact's status for its current generation satisfies `check`.
    async fn wait_for(
        &self,
        name: &str,
        expectation: &str,
        check: impl Fn(&AppArtifact) -> bool,
    ) -> AppArtifact {
        let api = self.api::<AppArtifact>();
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let artifact = api.get(name).await.unwrap();
            let current = artifact.status.as_ref().and_then(|s| s.observed_generation)
                == artifact.metadata.generation;
            if current && check(&artifact) {
                return artifact;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "AppArtifact {name} never reached: {expectation}; last status: {:#?}",
                artifact.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_ready(&self, name: &str) -> AppArtifact {
        self.wait_for(name, "Ready=True", |a| has_condition(a, "Ready", "True"))
            .await
    }

    /// Waits until the AppArtifact is stalled with `reason`, and returns its Ready condition.
    async fn wait_stalled(&self, name: &str, reason: &str) -> Condition {
        let artifact = self
            .wait_for(name, &format!("Stalled=True with reason {reason}"), |a| {
                has_condition(a, "Stalled", "True")
                    && condition(a, "Ready").is_some_and(|ready| ready.reason == reason)
            })
            .await;
        condition(&artifact, "Ready").unwrap().clone()
    }

    async fn wait_gone(&self, name: &str) {
        let api = self.api::<AppArtifact>();
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while let Some(artifact) = api.get_opt(name).await.unwrap() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "AppArtifact {name} was not deleted; status: {:#?}",
                artifact.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn coordinates(&self, app: &str, version: &str) -> ArtifactCoordinates {
        ArtifactCoordinates::new(&self.tenant, app, version).unwrap()
    }

    /// Returns a client of the shared distribution registry with the test environment's account.
    fn distribution(&self) -> RegistryClient {
        self.env.distribution_client()
    }

    /// Returns the layer digest the distribution registry holds for a version, if any.
    async fn stored_digest(&self, app: &str, version: &str) -> Option<String> {
        match self
            .distribution()
            .fetch_jar(&self.coordinates(app, version))
            .await
        {
            Ok(jar) => Some(jar.layer.digest.to_string()),
            Err(error) if error.is_not_found() => None,
            Err(error) => panic!("reading {app}:{version} from the registry failed: {error}"),
        }
    }

    /// Returns the reasons of the Events recorded for an AppArtifact.
    async fn event_reasons(&self, name: &str) -> Vec<String> {
        let events = self
            .api::<Event>()
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .unwrap();
        events
            .items
            .into_iter()
            .filter_map(|event| event.reason)
            .collect()
    }

    async fn wait_for_event(&self, name: &str, reason: &str) {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let reasons = self.event_reasons(name).await;
            if reasons.iter().any(|r| r == reason) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no Event {reason} for {name}; Events: {reasons:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the registry and artifact controllers for one namespace. URL sources may reach
/// 127.0.0.1 (the test's file server) and nothing else in loopback; Ready artifacts are checked
/// every 2 s so that tests see re-verification quickly.
fn start_controllers(
    client: &Client,
    namespace: &str,
) -> (Arc<artifact_controller::Context>, oneshot::Sender<()>) {
    let registry_settings = registry_controller::Settings {
        operator_namespace: "artifact-operator".into(),
        traefik_namespace: "traefik".into(),
        watch_namespace: Some(namespace.to_owned()),
    };
    let registries = Arc::new(registry_controller::Context::new(
        client.clone(),
        registry_settings,
    ));
    let policy = AddressPolicy::default().exempt_range("127.0.0.1/32".parse().unwrap());
    let mut settings = artifact_controller::Settings::new(Some(namespace.to_owned()), policy);
    settings.verify_interval = Duration::from_secs(2);
    let artifacts = Arc::new(artifact_controller::Context::new(
        client.clone(),
        settings,
        Arc::new(Metrics::default()),
    ));

    let (stop, stopped) = oneshot::channel::<()>();
    let (stop_registries, registries_stopped) = oneshot::channel::<()>();
    tokio::spawn(registry_controller::run(registries, async move {
        let _ = registries_stopped.await;
    }));
    tokio::spawn(artifact_controller::run(artifacts.clone(), async move {
        let _ = stopped.await;
        let _ = stop_registries.send(());
    }));
    (artifacts, stop)
}

fn condition<'a>(artifact: &'a AppArtifact, type_: &str) -> Option<&'a Condition> {
    artifact
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
}

fn has_condition(artifact: &AppArtifact, type_: &str, status: &str) -> bool {
    condition(artifact, type_).is_some_and(|condition| condition.status == status)
}

/// Returns a small JAR-like file: the ZIP signature followed by `filler`.
fn small_jar(filler: &str) -> Vec<u8> {
    let mut bytes = b"PK\x03\x04".to_vec();
    bytes.extend_from_slice(filler.as_bytes());
    bytes
}

fn url_source(url: &str) -> Value {
    json!({ "url": { "url": url } })
}

// === Sources ===

#[tokio::test]
async fn camel_jar_pushed_and_pullable() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let jar = support::camel_jar();
    let url = harness.server.put("/camel-core-engine.jar", jar.clone());
    harness
        .create_artifact("camel", "camel-core", "4.14.0", url_source(&url))
        .await;

    let artifact = harness.wait_ready("camel").await;
    let status = artifact.status.unwrap();
    let stored = status.artifact.expect("status.artifact is set when Ready");
    let recorded =
        std::fs::read_to_string(format!("{}.sha256", support::camel_jar_path().display())).unwrap();
    let sha256sum = recorded.split_whitespace().next().unwrap();
    assert_eq!(stored.digest, format!("sha256:{sha256sum}"));
    assert_eq!(stored.size, jar.len() as i64);
    assert_eq!(stored.media_type, "application/java-archive");
    assert!(stored.manifest_digest.starts_with("sha256:"));
    let reference = format!("{}/camel-core:v4.14.0", harness.tenant);
    assert_eq!(
        stored.oci_ref,
        format!(
            "{}/{reference}",
            harness.env.var("TESTENV_DISTRIBUTION_HOST")
        )
    );
    let ready = condition_of(&status.conditions, "Ready");
    assert_eq!(ready.reason, "ArtifactPushed");
    assert_eq!(
        condition_of(&status.conditions, "ArtifactInStorage").status,
        "True"
    );
    assert!(status.conditions.iter().all(|c| c.type_ != "FetchFailed"));
    assert!(status.conditions.iter().all(|c| c.type_ != "Reconciling"));

    let pulled = harness.env.oras_pull(&stored.oci_ref);
    assert_eq!(sha256_hex(&pulled), sha256sum);
    assert_eq!(pulled, jar);

    harness.wait_for_event("camel", "Pushed").await;
    harness.wait_for_event("camel", "Fetching").await;
    let metrics = harness.artifacts.metrics.encode();
    assert!(
        metrics.contains(&format!(
            "artifact_operator_artifact_pushed_bytes_total {}",
            jar.len()
        )),
        "{metrics}"
    );
    let object = harness.api::<AppArtifact>().get("camel").await.unwrap();
    assert!(
        object
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&FINALIZER.to_owned())
    );
}

fn condition_of<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
    conditions
        .iter()
        .find(|condition| condition.type_ == type_)
        .unwrap_or_else(|| panic!("no condition {type_} in {conditions:#?}"))
}

#[tokio::test]
async fn config_map_source_pushed() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let jar = small_jar("from a ConfigMap");
    let config_map = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("jars".to_owned()),
            ..Default::default()
        },
        binary_data: Some([("app.jar".to_owned(), ByteString(jar.clone()))].into()),
        ..Default::default()
    };
    harness
        .api::<ConfigMap>()
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap();
    harness
        .create_artifact(
            "billing",
            "billing",
            "1.0.0",
            json!({ "configMapKeyRef": { "name": "jars", "key": "app.jar" } }),
        )
        .await;

    let artifact = harness.wait_ready("billing").await;
    let digest = format!("sha256:{}", sha256_hex(&jar));
    assert_eq!(artifact.status.unwrap().artifact.unwrap().digest, digest);
    assert_eq!(
        harness.stored_digest("billing", "1.0.0").await,
        Some(digest)
    );
}

#[tokio::test]
async fn secret_authenticated_url_source() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let jar = small_jar("behind a token");
    let url = harness
        .server
        .put_protected("/private.jar", jar.clone(), "Bearer tenant-token");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "download-token" },
        "stringData": { "Authorization": "Bearer tenant-token" },
    }))
    .unwrap();
    harness
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    harness
        .create_artifact(
            "with-token",
            "private",
            "1.0",
            json!({ "url": { "url": url, "secretRef": { "name": "download-token" } } }),
        )
        .await;
    harness
        .create_artifact("without-token", "private", "2.0", url_source(&url))
        .await;

    let artifact = harness.wait_ready("with-token").await;
    assert_eq!(
        artifact.status.unwrap().artifact.unwrap().digest,
        format!("sha256:{}", sha256_hex(&jar))
    );
    let rejected = harness
        .wait_stalled("without-token", "SourceRejected")
        .await;
    assert!(rejected.message.contains("401"), "{}", rejected.message);
    assert_eq!(harness.stored_digest("private", "2.0").await, None);
}

// === Checks that tag nothing ===

#[tokio::test]
async fn pin_mismatch_tags_nothing() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let jar = small_jar("pinned");
    let url = harness.server.put("/pinned.jar", jar.clone());
    let wrong_pin = sha256_hex(b"other content");
    harness
        .create_artifact(
            "pinned",
            "pinned",
            "1.0",
            json!({ "url": { "url": url, "sha256": wrong_pin } }),
        )
        .await;

    let ready = harness.wait_stalled("pinned", "DigestMismatch").await;
    assert!(ready.message.contains(&wrong_pin), "{}", ready.message);
    assert!(
        ready.message.contains(&sha256_hex(&jar)),
        "{}",
        ready.message
    );
    let artifact = harness.api::<AppArtifact>().get("pinned").await.unwrap();
    let fetch_failed = condition(&artifact, "FetchFailed").expect("FetchFailed is set");
    assert_eq!(fetch_failed.status, "True");
    assert_eq!(fetch_failed.reason, "DigestMismatch");
    assert!(artifact.status.unwrap().artifact.is_none());
    assert_eq!(harness.stored_digest("pinned", "1.0").await, None);
}

#[tokio::test]
async fn missing_source_stalls() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let url = harness.server.url("/absent.jar");
    harness
        .create_artifact("absent", "absent", "1.0", url_source(&url))
        .await;

    let ready = harness.wait_stalled("absent", "SourceNotFound").await;
    assert!(ready.message.contains("404"), "{}", ready.message);
    assert!(ready.message.contains("/absent.jar"), "{}", ready.message);
    harness.wait_for_event("absent", "SourceNotFound").await;
    assert_eq!(harness.stored_digest("absent", "1.0").await, None);
}

#[tokio::test]
async fn html_page_is_not_a_jar() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let url = harness
        .server
        .put("/login.html", b"<html>please log in</html>".to_vec());
    harness
        .create_artifact("page", "page", "1.0", url_source(&url))
        .await;

    let ready = harness.wait_stalled("page", "NotAJar").await;
    assert!(ready.message.contains("3c 68 74 6d"), "{}", ready.message);
    assert_eq!(harness.stored_digest("page", "1.0").await, None);
}

#[tokio::test]
async fn jar_over_registry_limit_stalls() {
    let harness = Harness::start().await;
    harness
        .create_distribution_registry(json!({ "sources": { "maxArtifactSize": "1Mi" } }))
        .await;
    let mut large = small_jar("");
    large.resize(2 * 1024 * 1024, 7);
    let url = harness.server.put("/large.jar", large);
    harness
        .create_artifact("large", "large", "1.0", url_source(&url))
        .await;

    let ready = harness.wait_stalled("large", "TooLarge").await;
    assert!(ready.message.contains("1048576"), "{}", ready.message);
    assert_eq!(harness.stored_digest("large", "1.0").await, None);
}

#[tokio::test]
async fn host_outside_allow_list_denied() {
    let harness = Harness::start().await;
    harness
        .create_distribution_registry(
            json!({ "sources": { "allowedHosts": ["artifacts.internal"] } }),
        )
        .await;
    let url = harness.server.put("/app.jar", small_jar("allowed?"));
    harness
        .create_artifact("denied", "denied", "1.0", url_source(&url))
        .await;

    let ready = harness.wait_stalled("denied", "SourceDenied").await;
    assert!(ready.message.contains("allowedHosts"), "{}", ready.message);
    assert_eq!(harness.server.request_count("/app.jar"), 0);
}

// === Tenancy ===

#[tokio::test]
async fn tenant_label_mismatch_stalls() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let url = harness.server.put("/app.jar", small_jar("tenant"));
    let spec = json!({
        "registryRef": { "name": REGISTRY },
        "tenantId": "someone-else",
        "appId": "app",
        "version": "1.0",
        "source": url_source(&url),
    });
    let artifact: AppArtifact = serde_json::from_value(json!({
        "apiVersion": "artifacts.cameleer.io/v1alpha1",
        "kind": "AppArtifact",
        "metadata": { "name": "foreign" },
        "spec": spec,
    }))
    .unwrap();
    harness
        .api::<AppArtifact>()
        .create(&PostParams::default(), &artifact)
        .await
        .unwrap();

    let ready = harness.wait_stalled("foreign", "TenantMismatch").await;
    assert!(ready.message.contains("someone-else"), "{}", ready.message);
    assert!(ready.message.contains(&harness.tenant), "{}", ready.message);
    assert_eq!(harness.server.request_count("/app.jar"), 0);
    let foreign = ArtifactCoordinates::new("someone-else", "app", "1.0").unwrap();
    assert!(
        harness
            .distribution()
            .fetch_jar(&foreign)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn namespace_not_admitted_by_registry() {
    let harness = Harness::start().await;
    // The registry lives in another namespace and has no selector, so it admits only its own.
    let platform = support::create_namespace(&harness.client, "platform").await;
    let registry: ArtifactRegistry = serde_json::from_value(json!({
        "apiVersion": "artifacts.cameleer.io/v1alpha1",
        "kind": "ArtifactRegistry",
        "metadata": { "name": REGISTRY },
        "spec": { "external": { "url": "https://127.0.0.1:9" } },
    }))
    .unwrap();
    Api::<ArtifactRegistry>::namespaced(harness.client.clone(), &platform)
        .create(&PostParams::default(), &registry)
        .await
        .unwrap();
    let url = harness.server.put("/app.jar", small_jar("admitted?"));
    harness
        .create_artifact_with(
            "outsider",
            "app",
            "1.0",
            url_source(&url),
            json!({ "registryRef": { "name": REGISTRY, "namespace": platform } }),
        )
        .await;

    let ready = harness
        .wait_stalled("outsider", "NamespaceNotAdmitted")
        .await;
    assert!(
        ready.message.contains(&harness.namespace),
        "{}",
        ready.message
    );
    assert!(
        ready.message.contains("namespaceSelector"),
        "{}",
        ready.message
    );
}

// === Immutability ===

#[tokio::test]
async fn second_content_for_version_conflicts() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let first = small_jar("first build");
    let second = small_jar("second build");
    let first_url = harness.server.put("/first.jar", first.clone());
    let second_url = harness.server.put("/second.jar", second.clone());
    harness
        .create_artifact("first", "orders", "3.1", url_source(&first_url))
        .await;
    harness.wait_ready("first").await;

    harness
        .create_artifact("second", "orders", "3.1", url_source(&second_url))
        .await;
    let ready = harness.wait_stalled("second", "VersionConflict").await;
    let first_digest = format!("sha256:{}", sha256_hex(&first));
    assert!(ready.message.contains(&first_digest), "{}", ready.message);
    harness.wait_for_event("second", "VersionConflict").await;

    assert_eq!(
        harness.stored_digest("orders", "3.1").await,
        Some(first_digest.clone())
    );
    let first = harness.wait_ready("first").await;
    assert_eq!(first.status.unwrap().artifact.unwrap().digest, first_digest);

    // The same bytes under a second object are adopted, not pushed again.
    let same_url = harness.server.put("/same.jar", small_jar("first build"));
    harness
        .create_artifact("same", "orders", "3.1", url_source(&same_url))
        .await;
    let same = harness
        .wait_for("same", "Ready=True by adoption", |a| {
            condition(a, "Ready")
                .is_some_and(|c| c.status == "True" && c.reason == "ArtifactAdopted")
        })
        .await;
    assert_eq!(same.status.unwrap().artifact.unwrap().digest, first_digest);
}

#[tokio::test]
async fn existing_source_adopts_pushed_artifact() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let jar = small_jar("migrated earlier");
    let coordinates = harness.coordinates("legacy", "7.0");
    let metadata = artifact_operator::oci::JarMetadata::new("legacy-7.0.jar").unwrap();
    harness
        .distribution()
        .push_jar(&coordinates, jar.as_slice(), None, &metadata)
        .await
        .unwrap();
    let digest = sha256_hex(&jar);

    harness
        .create_artifact(
            "legacy",
            "legacy",
            "7.0",
            json!({ "existing": { "sha256": digest } }),
        )
        .await;
    let adopted = harness.wait_ready("legacy").await;
    assert_eq!(
        condition(&adopted, "Ready").unwrap().reason,
        "ArtifactAdopted"
    );
    assert_eq!(
        adopted.status.unwrap().artifact.unwrap().digest,
        format!("sha256:{digest}")
    );

    let wrong = sha256_hex(b"another");
    harness
        .create_artifact(
            "legacy-pin",
            "legacy",
            "7.0",
            json!({ "existing": { "sha256": wrong } }),
        )
        .await;
    let ready = harness.wait_stalled("legacy-pin", "DigestMismatch").await;
    assert!(ready.message.contains(&wrong), "{}", ready.message);

    harness
        .create_artifact("never-pushed", "legacy", "8.0", json!({ "existing": {} }))
        .await;
    harness
        .wait_stalled("never-pushed", "ArtifactNotFound")
        .await;
}

// === Outages and re-verification ===

#[tokio::test]
async fn registry_outage_recovers_without_spec_change() {
    let harness = Harness::start().await;
    let mut registry = RegistryProcess::start().await;
    registry.stop();
    harness
        .create_registry(json!({ "external": { "url": registry.url() } }))
        .await;
    let url = harness.server.put("/app.jar", small_jar("outage"));
    harness
        .create_artifact("outage", "outage", "1.0", url_source(&url))
        .await;

    // While the registry is down the artifact waits, and nothing stalls it.
    harness
        .wait_for("outage", "Reconciling=True", |a| {
            has_condition(a, "Reconciling", "True") && condition(a, "Stalled").is_none()
        })
        .await;

    registry.resume().await;
    let ready = harness.wait_ready("outage").await;
    let generation = ready.metadata.generation;

    // A Ready artifact whose registry stops is reported as transiently failing.
    registry.stop();
    let waiting = harness
        .wait_for(
            "outage",
            "Reconciling=True after the registry stopped",
            |a| has_condition(a, "Reconciling", "True"),
        )
        .await;
    assert_eq!(
        condition(&waiting, "Ready").unwrap().reason,
        "RegistryUnavailable"
    );
    assert!(condition(&waiting, "Stalled").is_none());
    registry.resume().await;
    let recovered = harness.wait_ready("outage").await;
    assert_eq!(recovered.metadata.generation, generation);
}

#[tokio::test]
async fn source_outage_retries_until_served() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let url = harness.server.fail("/app.jar", "503 Service Unavailable");
    harness
        .create_artifact("flaky", "flaky", "1.0", url_source(&url))
        .await;

    let waiting = harness
        .wait_for("flaky", "Reconciling=True with SourceUnavailable", |a| {
            has_condition(a, "Reconciling", "True")
                && condition(a, "Ready").is_some_and(|c| c.reason == "SourceUnavailable")
        })
        .await;
    assert!(condition(&waiting, "Stalled").is_none());
    assert_eq!(condition(&waiting, "FetchFailed").unwrap().status, "True");
    assert!(
        condition(&waiting, "FetchFailed")
            .unwrap()
            .message
            .contains("503")
    );

    // Backoff retries reach the source again without a spec change.
    harness.server.put("/app.jar", small_jar("served at last"));
    let ready = harness.wait_ready("flaky").await;
    assert!(condition(&ready, "FetchFailed").is_none());
    assert!(harness.server.request_count("/app.jar") >= 2);
}

#[tokio::test]
async fn vanished_artifact_pushed_again() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let jar = small_jar("keeps coming back");
    let url = harness.server.put("/app.jar", jar.clone());
    harness
        .create_artifact("phoenix", "phoenix", "1.0", url_source(&url))
        .await;
    harness.wait_ready("phoenix").await;
    let digest = format!("sha256:{}", sha256_hex(&jar));
    let coordinates = harness.coordinates("phoenix", "1.0");

    // Deleted while the source is still available: pushed again.
    assert!(
        harness
            .distribution()
            .delete_jar(&coordinates)
            .await
            .unwrap()
    );
    harness.wait_for_event("phoenix", "ArtifactMissing").await;
    harness.wait_ready("phoenix").await;
    assert_eq!(
        harness.stored_digest("phoenix", "1.0").await,
        Some(digest.clone())
    );

    // Deleted after the source went away: reported missing.
    harness.server.remove("/app.jar");
    assert!(
        harness
            .distribution()
            .delete_jar(&coordinates)
            .await
            .unwrap()
    );
    let missing = harness
        .wait_for("phoenix", "ArtifactInStorage=False", |a| {
            has_condition(a, "ArtifactInStorage", "False")
        })
        .await;
    assert_eq!(
        condition(&missing, "ArtifactInStorage").unwrap().reason,
        "ArtifactMissing"
    );
    assert_eq!(
        condition(&missing, "Ready").unwrap().reason,
        "SourceNotFound"
    );
    assert_eq!(condition(&missing, "FetchFailed").unwrap().status, "True");
    assert_eq!(missing.status.unwrap().artifact.unwrap().digest, digest);

    // A missing source is permanent, so the operator waits for a spec change; a new file name
    // is one.
    harness.server.put("/app.jar", jar);
    harness
        .api::<AppArtifact>()
        .patch(
            "phoenix",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "spec": { "fileName": "phoenix.jar" } })),
        )
        .await
        .unwrap();
    harness.wait_ready("phoenix").await;
    assert_eq!(harness.stored_digest("phoenix", "1.0").await, Some(digest));
}

// === Deletion ===

#[tokio::test]
async fn delete_policy_removes_tag() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let url = harness.server.put("/app.jar", small_jar("short-lived"));
    harness
        .create_artifact_with(
            "doomed",
            "doomed",
            "1.0",
            url_source(&url),
            json!({ "deletionPolicy": "Delete" }),
        )
        .await;
    harness.wait_ready("doomed").await;
    assert!(harness.stored_digest("doomed", "1.0").await.is_some());

    harness
        .api::<AppArtifact>()
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    harness.wait_gone("doomed").await;
    assert_eq!(harness.stored_digest("doomed", "1.0").await, None);
}

#[tokio::test]
async fn retain_policy_keeps_tag() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let url = harness.server.put("/app.jar", small_jar("kept"));
    harness
        .create_artifact("kept", "kept", "1.0", url_source(&url))
        .await;
    let ready = harness.wait_ready("kept").await;
    let digest = ready.status.unwrap().artifact.unwrap().digest;

    harness
        .api::<AppArtifact>()
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    harness.wait_gone("kept").await;
    assert_eq!(harness.stored_digest("kept", "1.0").await, Some(digest));
}

#[tokio::test]
async fn conflicting_object_deletes_nothing() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let first_url = harness.server.put("/first.jar", small_jar("winner"));
    let second_url = harness.server.put("/second.jar", small_jar("loser"));
    harness
        .create_artifact("winner", "shared", "1.0", url_source(&first_url))
        .await;
    let winner = harness.wait_ready("winner").await;
    let digest = winner.status.unwrap().artifact.unwrap().digest;
    harness
        .create_artifact_with(
            "loser",
            "shared",
            "1.0",
            url_source(&second_url),
            json!({ "deletionPolicy": "Delete" }),
        )
        .await;
    harness.wait_stalled("loser", "VersionConflict").await;

    harness
        .api::<AppArtifact>()
        .delete("loser", &DeleteParams::default())
        .await
        .unwrap();
    harness.wait_gone("loser").await;
    assert_eq!(harness.stored_digest("shared", "1.0").await, Some(digest));
}

#[tokio::test]
async fn deleted_registry_does_not_wedge_finalizer() {
    let harness = Harness::start().await;
    harness.create_distribution_registry(json!({})).await;
    let url = harness.server.put("/app.jar", small_jar("orphan"));
    harness
        .create_artifact_with(
            "orphan",
            "orphan",
            "1.0",
            url_source(&url),
            json!({ "deletionPolicy": "Delete" }),
        )
        .await;
    let ready = harness.wait_ready("orphan").await;
    let digest = ready.status.unwrap().artifact.unwrap().digest;

    harness
        .api::<ArtifactRegistry>()
        .delete(REGISTRY, &DeleteParams::default())
        .await
        .unwrap();
    harness
        .api::<AppArtifact>()
        .delete("orphan", &DeleteParams::default())
        .await
        .unwrap();
    harness.wait_gone("orphan").await;
    // The registry object is gone, so the operator could not reach the tag and kept it.
    assert_eq!(harness.stored_digest("orphan", "1.0").await, Some(digest));
    assert!(
        harness
            .event_reasons("orphan")
            .await
            .contains(&"RegistryGone".to_owned())
    );
}

#[tokio::test]
async fn unreachable_registry_blocks_deletion_with_hint() {
    let harness = Harness::start().await;
    let mut registry = RegistryProcess::start().await;
    harness
        .create_registry(json!({ "external": { "url": registry.url() } }))
        .await;
    let url = harness.server.put("/app.jar", small_jar("blocked"));
    harness
        .create_artifact_with(
            "blocked",
            "blocked",
            "1.0",
            url_source(&url),
            json!({ "deletionPolicy": "Delete" }),
        )
        .await;
    harness.wait_ready("blocked").await;

    registry.stop();
    harness
        .api::<AppArtifact>()
        .delete("blocked", &DeleteParams::default())
        .await
        .unwrap();
    let blocked = harness
        .wait_for("blocked", "Ready=False with DeletionBlocked", |a| {
            condition(a, "Ready").is_some_and(|c| c.reason == "DeletionBlocked")
        })
        .await;
    let message = &condition(&blocked, "Ready").unwrap().message;
    assert!(
        message.contains("kubectl patch appartifact blocked"),
        "{message}"
    );

    registry.resume().await;
    harness.wait_gone("blocked").await;
    let client = RegistryClient::new(RegistryConfig::new(&registry.url()).unwrap()).unwrap();
    let coordinates = harness.coordinates("blocked", "1.0");
    assert!(
        client
            .fetch_jar(&coordinates)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

/// A status write computed from a stale copy of an AppArtifact is rejected and leaves the newer
/// status alone, so a reconcile that started before an upload cannot overwrite the upload's
/// status. The upload's own write is unconditional.
#[tokio::test]
async fn stale_status_write_conflicts() {
    let env = TestEnv::load();
    let client = env.kube_client().await;
    install_crds(&client).await;
    let namespace = create_labeled_namespace(&client, "stale", &[(TENANT_LABEL, "t")]).await;
    let api: Api<AppArtifact> = Api::namespaced(client.clone(), &namespace);
    let artifact: AppArtifact = serde_json::from_value(json!({
        "apiVersion": "artifacts.cameleer.io/v1alpha1",
        "kind": "AppArtifact",
        "metadata": { "name": "app" },
        "spec": {
            "registryRef": { "name": REGISTRY },
            "tenantId": "t",
            "appId": "app",
            "version": "1",
            "source": { "upload": {} },
        },
    }))
    .unwrap();
    api.create(&PostParams::default(), &artifact).await.unwrap();
    let stale = api.get("app").await.unwrap();

    let newer = Observation::failed(
        &Failure::transient(reason::REUPLOAD_REQUIRED, "newer"),
        None,
    );
    let written =
        artifact_controller::write_observation(&client, &stale, &newer, StatusWrite::Unconditional)
            .await
            .unwrap();
    assert!(written);

    let older = Observation::failed(&Failure::transient(reason::AWAITING_UPLOAD, "older"), None);
    let error =
        artifact_controller::write_observation(&client, &stale, &older, StatusWrite::IfUnchanged)
            .await
            .unwrap_err();
    assert!(
        matches!(&error, artifact_controller::Error::Kube { source, .. } if reconcile::is_conflict(source)),
        "{error}"
    );

    let stored = api.get("app").await.unwrap();
    let ready = condition(&stored, "Ready").expect("the newer status must have Ready");
    assert_eq!(ready.reason, reason::REUPLOAD_REQUIRED);
    assert_eq!(ready.message, "newer");
}
