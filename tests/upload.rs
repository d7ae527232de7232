//! The gateway's upload API against the real apiserver and distribution registry. Each test
//! runs the registry and artifact controllers and a gateway on 127.0.0.1 for its own tenant
//! namespace, and uploads with tokens of a ServiceAccount issued by the TokenRequest API.

mod support;

use std::{sync::Arc, time::Duration};

use artifact_operator::{
    artifact::{address_policy::AddressPolicy, controller as artifact_controller},
    crd::{AppArtifact, ArtifactRegistry, TENANT_LABEL},
    gateway::{
        keys::{self, KeySettings},
        server::{self, GatewayState},
    },
    oci::ArtifactCoordinates,
    registry::controller as registry_controller,
    telemetry::Metrics,
};
use k8s_openapi::{
    api::{
        authentication::v1::TokenRequest,
        authorization::v1::SubjectAccessReview,
        core::v1::{Event, Secret, ServiceAccount},
        rbac::v1::{Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    TestEnv, create_labeled_namespace, install_crds, merge_json, sha256_hex, unique_name,
};
use tokio::sync::oneshot;

/// Upper bound for the controllers to reach an expected state.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Name of the ArtifactRegistry every test creates in its namespace.
const REGISTRY: &str = "main";
/// ServiceAccount that uploads, with or without the `update` permission.
const UPLOADER: &str = "uploader";

/// A tenant namespace with both controllers and a gateway, which stop on drop.
struct Harness {
    env: TestEnv,
    client: Client,
    namespace: String,
    tenant: String,
    gateway_url: String,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
}

impl Harness {
    /// Starts everything, with `registry_extra` merged into the spec of the ArtifactRegistry
    /// for the shared distribution registry.
    async fn start(registry_extra: Value) -> Self {
        let env = TestEnv::load();
        let client = env.kube_client().await;
        install_crds(&client).await;
        let tenant = unique_name("t");
        let namespace = create_labeled_namespace(&client, "up", &[(TENANT_LABEL, &tenant)]).await;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway_url = format!("http://{}", listener.local_addr().unwrap());
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let (stop_gateway, gateway_stopped) = oneshot::channel::<()>();
        start_controllers(&client, &namespace, &gateway_url, async move {
            let _ = stopped.await;
            let _ = stop_gateway.send(());
        });
        start_gateway(&client, &namespace, listener, metrics.clone(), async move {
            let _ = gateway_stopped.await;
        })
        .await;

        let harness = Self {
            env,
            client,
            namespace,
            tenant,
            gateway_url,
            metrics,
            stop: Some(stop),
        };
        harness.create_distribution_registry(registry_extra).await;
        Api::<ServiceAccount>::namespaced(harness.client.clone(), &harness.namespace)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({ "metadata": { "name": UPLOADER } })).unwrap(),
            )
            .await
            .unwrap();
        harness
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

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

    /// Creates an AppArtifact of this harness's tenant, for app `name` at `version`.
    async fn create_artifact(&self, name: &str, version: &str, source: Value) {
        let artifact: AppArtifact = serde_json::from_value(json!({
            "apiVersion": "artifacts.cameleer.io/v1alpha1",
            "kind": "AppArtifact",
            "metadata": { "name": name },
            "spec": {
                "registryRef": { "name": REGISTRY },
                "tenantId": self.tenant,
                "appId": name,
                "version": version,
                "source": source,
            },
        }))
        .unwrap();
        self.api::<AppArtifact>()
            .create(&PostParams::default(), &artifact)
            .await
            .unwrap();
    }

    /// Creates an upload-source AppArtifact and waits until it waits for its upload.
    async fn create_upload_artifact(&self, name: &str) -> Condition {
        self.create_artifact(name, "1.0", json!({ "upload": {} }))
            .await;
        self.wait_for_ready_reason(name, "AwaitingUpload").await
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

    /// Waits until the Ready condition has `reason`, and returns it.
    async fn wait_for_ready_reason(&self, name: &str, reason: &str) -> Condition {
        let artifact = self
            .wait_for(name, &format!("Ready with reason {reason}"), |artifact| {
                condition(artifact, "Ready").is_some_and(|ready| ready.reason == reason)
            })
            .await;
        condition(&artifact, "Ready").unwrap().clone()
    }

    /// Issues a token of the uploader ServiceAccount with the TokenRequest API.
    async fn token(&self) -> String {
        let request: TokenRequest = serde_json::from_value(json!({
            "spec": { "expirationSeconds": 3600 },
        }))
        .unwrap();
        let issued = self
            .api::<ServiceAccount>()
            .create_token_request(UPLOADER, &PostParams::default(), &request)
            .await
            .unwrap();
        issued
            .status
            .expect("a TokenRequest returns a status")
            .token
    }

    /// Grants the uploader `update` on AppArtifacts, and waits until the authorizer applies it.
    async fn grant_update(&self) {
        let role: Role = serde_json::from_value(json!({
            "metadata": { "name": "artifact-uploader" },
            "rules": [{
                "apiGroups": ["artifacts.cameleer.io"],
                "resources": ["appartifacts"],
                "verbs": ["get", "update"],
            }],
        }))
        .unwrap();
        self.api::<Role>()
            .create(&PostParams::default(), &role)
            .await
            .unwrap();
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": { "name": "artifact-uploader" },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "artifact-uploader",
            },
            "subjects": [{ "kind": "ServiceAccount", "name": UPLOADER, "namespace": self.namespace }],
        }))
        .unwrap();
        self.api::<RoleBinding>()
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();

        // The RBAC authorizer reads roles from an informer cache, which lags behind the write.
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while !self.uploader_may_update().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the RoleBinding for {UPLOADER} did not take effect"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn uploader_may_update(&self) -> bool {
        let review: SubjectAccessReview = serde_json::from_value(json!({
            "spec": {
                "user": self.uploader_user(),
                "resourceAttributes": {
                    "namespace": self.namespace,
                    "verb": "update",
                    "group": "artifacts.cameleer.io",
                    "resource": "appartifacts",
                },
            },
        }))
        .unwrap();
        let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        reviewed.status.is_some_and(|status| status.allowed)
    }

    fn uploader_user(&self) -> String {
        format!("system:serviceaccount:{}:{UPLOADER}", self.namespace)
    }

    fn upload_url(&self, name: &str) -> String {
        format!("{}/v1/uploads/{}/{name}", self.gateway_url, self.namespace)
    }

    /// Uploads `jar` to AppArtifact `name` with `token`, and returns the status and JSON body.
    async fn upload(&self, name: &str, token: Option<&str>, jar: Vec<u8>) -> (StatusCode, Value) {
        let mut request = http().put(self.upload_url(name)).body(jar);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        (status, body)
    }

    fn coordinates(&self, app: &str) -> ArtifactCoordinates {
        ArtifactCoordinates::new(&self.tenant, app, "1.0").unwrap()
    }

    /// Returns the layer digest the distribution registry stores for version 1.0 of `app`.
    async fn stored_digest(&self, app: &str) -> Option<String> {
        match self
            .env
            .distribution_client()
            .fetch_jar(&self.coordinates(app))
            .await
        {
            Ok(jar) => Some(jar.layer.digest.to_string()),
            Err(error) if error.is_not_found() => None,
            Err(error) => panic!("reading {app}:v1.0 from the registry failed: {error}"),
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
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the registry and artifact controllers for one namespace. Ready artifacts are checked
/// every 2 s, so that tests see the re-verification quickly.
fn start_controllers(
    client: &Client,
    namespace: &str,
    gateway_url: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let registry_settings = registry_controller::Settings {
        operator_namespace: "artifact-operator".into(),
        traefik_namespace: "traefik".into(),
        watch_namespace: Some(namespace.to_owned()),
    };
    let registries = Arc::new(registry_controller::Context::new(
        client.clone(),
        registry_settings,
    ));
    let mut settings =
        artifact_controller::Settings::new(Some(namespace.to_owned()), AddressPolicy::default());
    settings.verify_interval = Duration::from_secs(2);
    settings.gateway_url = Some(gateway_url.to_owned());
    let artifacts = Arc::new(artifact_controller::Context::new(
        client.clone(),
        settings,
        Arc::new(Metrics::default()),
    ));

    let (stop_registries, registries_stopped) = oneshot::channel::<()>();
    tokio::spawn(registry_controller::run(registries, async move {
        let _ = registries_stopped.await;
    }));
    tokio::spawn(artifact_controller::run(artifacts, async move {
        shutdown.await;
        let _ = stop_registries.send(());
    }));
}

/// Serves the gateway on `listener` with a key ring Secret in the test's namespace.
async fn start_gateway(
    client: &Client,
    namespace: &str,
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut key_settings = KeySettings::new(namespace.to_owned());
    key_settings.secret_name = "signing-keys".to_owned();
    key_settings.check_interval = Duration::from_secs(3600);
    let (stop_keys, keys_stopped) = oneshot::channel::<()>();
    let (stop_cache, cache_stopped) = oneshot::channel::<()>();
    let keys = keys::start(client.clone(), key_settings, async move {
        let _ = keys_stopped.await;
    })
    .await
    .unwrap();
    let artifacts = server::artifact_cache(client.clone(), Some(namespace), async move {
        let _ = cache_stopped.await;
    })
    .await;
    let state = Arc::new(GatewayState {
        client: client.clone(),
        artifacts,
        keys,
        metrics,
        registry_clients: Default::default(),
    });
    tokio::spawn(server::serve(listener, server::router(state), async move {
        shutdown.await;
        let _ = stop_keys.send(());
        let _ = stop_cache.send(());
    }));
}

fn condition<'a>(artifact: &'a AppArtifact, type_: &str) -> Option<&'a Condition> {
    artifact
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Builds a JAR-like file of `size` bytes: the ZIP signature, then bytes that depend on `seed`.
fn jar_bytes(size: usize, seed: u8) -> Vec<u8> {
    let mut jar = b"PK\x03\x04".to_vec();
    jar.extend((0..size - 4).map(|i| ((i % 251) as u8).wrapping_add(seed)));
    jar
}

// === Accepted uploads ===

#[tokio::test]
async fn authorized_upload_stores_jar() {
    let harness = Harness::start(json!({})).await;
    let awaiting = harness.create_upload_artifact("billing").await;
    assert_eq!(awaiting.status, "False");
    assert!(
        awaiting.message.contains(&harness.upload_url("billing")),
        "{}",
        awaiting.message
    );
    assert!(awaiting.message.contains("curl"), "{}", awaiting.message);
    let waiting = harness.api::<AppArtifact>().get("billing").await.unwrap();
    assert!(condition(&waiting, "Stalled").is_none());
    assert!(condition(&waiting, "Reconciling").is_none());
    assert_eq!(
        condition(&waiting, "ArtifactInStorage").unwrap().status,
        "False"
    );
    harness.grant_update().await;

    // Larger than axum's default body limit of 2 MiB, which must not apply to uploads.
    let jar = jar_bytes(3 * 1024 * 1024, 0);
    let digest = format!("sha256:{}", sha256_hex(&jar));
    let token = harness.token().await;
    let (status, body) = harness.upload("billing", Some(&token), jar.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["digest"], digest.as_str());
    assert_eq!(body["size"], jar.len());
    let reference = format!(
        "{}/{}/billing:v1.0",
        harness.env.var("TESTENV_DISTRIBUTION_HOST"),
        harness.tenant
    );
    assert_eq!(body["reference"], reference.as_str());

    let artifact = harness
        .wait_for("billing", "Ready with the uploaded digest", |artifact| {
            condition(artifact, "Ready").is_some_and(|ready| ready.status == "True")
                && artifact
                    .status
                    .as_ref()
                    .and_then(|status| status.artifact.as_ref())
                    .is_some_and(|stored| stored.digest == digest)
        })
        .await;
    assert_eq!(
        condition(&artifact, "Ready").unwrap().reason,
        "ArtifactUploaded"
    );
    assert_eq!(
        condition(&artifact, "ArtifactInStorage").unwrap().status,
        "True"
    );
    let stored = artifact.status.unwrap().artifact.unwrap();
    assert_eq!(stored.size, jar.len() as i64);
    assert_eq!(stored.oci_ref, reference);
    assert_eq!(stored.media_type, "application/java-archive");
    assert!(stored.manifest_digest.starts_with("sha256:"));

    let pulled = harness.env.oras_pull(&reference);
    assert_eq!(pulled, jar);
    assert!(
        harness
            .event_reasons("billing")
            .await
            .contains(&"Uploaded".to_owned())
    );
    let metrics = harness.metrics.encode();
    assert!(
        metrics.contains("code=\"201\",reason=\"uploaded\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn same_bytes_again_idempotent() {
    let harness = Harness::start(json!({})).await;
    harness.create_upload_artifact("billing").await;
    harness.grant_update().await;
    let token = harness.token().await;
    let jar = jar_bytes(10_000, 1);

    let (first, _) = harness.upload("billing", Some(&token), jar.clone()).await;
    assert_eq!(first, StatusCode::CREATED);
    let (again, body) = harness.upload("billing", Some(&token), jar.clone()).await;
    assert_eq!(again, StatusCode::OK, "{body}");
    assert_eq!(
        body["digest"],
        format!("sha256:{}", sha256_hex(&jar)).as_str()
    );
    harness
        .wait_for_ready_reason("billing", "ArtifactUploaded")
        .await;
}

#[tokio::test]
async fn declared_digest_accepted_when_matching() {
    let harness = Harness::start(json!({})).await;
    harness.create_upload_artifact("billing").await;
    harness.grant_update().await;
    let jar = jar_bytes(5_000, 2);

    let response = http()
        .put(harness.upload_url("billing"))
        .bearer_auth(harness.token().await)
        .header("X-Content-SHA256", sha256_hex(&jar))
        .body(jar)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

// === Rejected requests ===

#[tokio::test]
async fn token_without_update_forbidden() {
    let harness = Harness::start(json!({})).await;
    harness.create_upload_artifact("billing").await;
    let token = harness.token().await;

    let (status, body) = harness
        .upload("billing", Some(&token), jar_bytes(1_000, 0))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["reason"], "forbidden");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(&harness.uploader_user()), "{message}");
    assert!(message.contains("update"), "{message}");
    assert!(!message.contains(&token), "{message}");
    assert_eq!(harness.stored_digest("billing").await, None);
}

#[tokio::test]
async fn bogus_or_missing_token_unauthorized() {
    let harness = Harness::start(json!({})).await;
    harness.create_upload_artifact("billing").await;
    let bogus = "not-a-kubernetes-token-4711";

    let (status, body) = harness
        .upload("billing", Some(bogus), jar_bytes(1_000, 0))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["reason"], "invalid_token");
    assert!(!body.to_string().contains(bogus), "{body}");

    let (status, body) = harness.upload("billing", None, jar_bytes(1_000, 0)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["reason"], "missing_token");
    assert_eq!(harness.stored_digest("billing").await, None);
}

#[tokio::test]
async fn missing_artifact_not_found() {
    let harness = Harness::start(json!({})).await;
    harness.grant_update().await;
    let token = harness.token().await;

    let (status, body) = harness
        .upload("absent", Some(&token), jar_bytes(1_000, 0))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["reason"], "artifact_not_found");
}

#[tokio::test]
async fn url_source_artifact_conflicts() {
    let harness = Harness::start(json!({})).await;
    harness
        .create_artifact(
            "billing",
            "1.0",
            json!({ "url": { "url": "http://127.0.0.1:9/billing.jar" } }),
        )
        .await;
    harness.grant_update().await;
    let token = harness.token().await;

    let (status, body) = harness
        .upload("billing", Some(&token), jar_bytes(1_000, 0))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["reason"], "not_an_upload_source");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("spec.source.url"), "{message}");
    assert!(message.contains("upload"), "{message}");
}

#[tokio::test]
async fn upload_over_limit_too_large() {
    let harness = Harness::start(json!({ "sources": { "maxArtifactSize": "4Ki" } })).await;
    harness.create_upload_artifact("billing").await;
    harness.grant_update().await;
    let token = harness.token().await;

    // With Content-Length the gateway rejects the request before it reads the body.
    let (status, body) = harness
        .upload("billing", Some(&token), jar_bytes(8 * 1024, 0))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["reason"], "too_large");

    // Without it the limit applies while the body streams.
    let chunks = (0..8).map(|seed| Ok::<_, std::io::Error>(jar_bytes(1024, seed)));
    let response = http()
        .put(harness.upload_url("billing"))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "too_large");
    assert_eq!(harness.stored_digest("billing").await, None);
}

#[tokio::test]
async fn html_upload_not_a_jar() {
    let harness = Harness::start(json!({})).await;
    harness.create_upload_artifact("billing").await;
    harness.grant_update().await;
    let token = harness.token().await;

    let html = b"<html><body>not a jar</body></html>".to_vec();
    let (status, body) = harness.upload("billing", Some(&token), html).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["reason"], "not_a_jar");
    assert_eq!(harness.stored_digest("billing").await, None);
    let waiting = harness.api::<AppArtifact>().get("billing").await.unwrap();
    assert_eq!(
        condition(&waiting, "Ready").unwrap().reason,
        "AwaitingUpload"
    );
}

#[tokio::test]
async fn declared_digest_mismatch_rejected() {
    let harness = Harness::start(json!({})).await;
    harness.create_upload_artifact("billing").await;
    harness.grant_update().await;

    let response = http()
        .put(harness.upload_url("billing"))
        .bearer_auth(harness.token().await)
        .header("X-Content-SHA256", sha256_hex(b"other content"))
        .body(jar_bytes(5_000, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "digest_mismatch");
    assert_eq!(harness.stored_digest("billing").await, None);
}

#[tokio::test]
async fn different_bytes_version_conflict() {
    let harness = Harness::start(json!({})).await;
    harness.create_upload_artifact("billing").await;
    harness.grant_update().await;
    let token = harness.token().await;
    let first = jar_bytes(10_000, 1);
    let first_digest = format!("sha256:{}", sha256_hex(&first));

    let (status, _) = harness.upload("billing", Some(&token), first).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = harness
        .upload("billing", Some(&token), jar_bytes(10_000, 2))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["reason"], "version_conflict");

    assert_eq!(
        harness.stored_digest("billing").await.as_deref(),
        Some(first_digest.as_str())
    );
    let artifact = harness.api::<AppArtifact>().get("billing").await.unwrap();
    let stored = artifact.status.unwrap().artifact.unwrap();
    assert_eq!(stored.digest, first_digest);
}

// === The controller after an upload ===

#[tokio::test]
async fn vanished_upload_asks_for_reupload() {
    let harness = Harness::start(json!({})).await;
    harness.create_upload_artifact("billing").await;
    harness.grant_update().await;
    let token = harness.token().await;
    let jar = jar_bytes(10_000, 3);
    let (status, _) = harness.upload("billing", Some(&token), jar.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    harness
        .wait_for_ready_reason("billing", "ArtifactUploaded")
        .await;

    let deleted = harness
        .env
        .distribution_client()
        .delete_jar(&harness.coordinates("billing"))
        .await
        .unwrap();
    assert!(deleted);
    let ready = harness
        .wait_for_ready_reason("billing", "ReuploadRequired")
        .await;
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains(&harness.upload_url("billing")),
        "{}",
        ready.message
    );
    let artifact = harness.api::<AppArtifact>().get("billing").await.unwrap();
    assert_eq!(
        condition(&artifact, "ArtifactInStorage").unwrap().status,
        "False"
    );

    let (status, body) = harness.upload("billing", Some(&token), jar).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    harness
        .wait_for_ready_reason("billing", "ArtifactUploaded")
        .await;
}
