//! Fixtures for tests that need an artifact already in the shared distribution registry: the
//! registry's client and login, an external ArtifactRegistry pointing at it, and an AppArtifact
//! with the status the controller writes after a push.

#![allow(dead_code)] // Each test crate uses a different subset.

use artifact_operator::{
    crd::{AppArtifact, ArtifactRegistry},
    oci::{
        ArtifactCoordinates, Credentials, JarArtifact, JarMetadata, RegistryClient, RegistryConfig,
        TlsRoots,
    },
};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::TestEnv;

/// Name of the ArtifactRegistry that [`create_external_registry`] creates.
pub const REGISTRY: &str = "main";

pub fn distribution_login(env: &TestEnv) -> (String, String) {
    (
        env.var("TESTENV_DISTRIBUTION_USERNAME").to_owned(),
        env.var("TESTENV_DISTRIBUTION_PASSWORD").to_owned(),
    )
}

pub fn distribution_client(env: &TestEnv) -> RegistryClient {
    let (username, password) = distribution_login(env);
    let url = format!("https://{}", env.var("TESTENV_DISTRIBUTION_HOST"));
    let config = RegistryConfig::new(&url)
        .unwrap()
        .with_credentials(Credentials::Basic { username, password })
        .with_tls_roots(TlsRoots::Only(std::fs::read(env.ca_file()).unwrap()));
    RegistryClient::new(config).unwrap()
}

/// Pushes `jar` as `{tenant}/{app}:v{version}` into the distribution registry.
pub async fn push(
    env: &TestEnv,
    tenant: &str,
    app: &str,
    version: &str,
    jar: &[u8],
) -> JarArtifact {
    let coordinates = ArtifactCoordinates::new(tenant, app, version).unwrap();
    let metadata = JarMetadata::new(format!("{app}-{version}.jar")).unwrap();
    distribution_client(env)
        .push_jar(&coordinates, jar, None, &metadata)
        .await
        .unwrap()
}

/// Creates a login Secret and the ArtifactRegistry [`REGISTRY`] that adopts the distribution
/// registry.
pub async fn create_external_registry(env: &TestEnv, client: &Client, namespace: &str) {
    let (username, password) = distribution_login(env);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "registry-login" },
        "stringData": { "username": username, "password": password },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    create_registry(
        client,
        namespace,
        json!({ "external": {
            "url": format!("https://{}", env.var("TESTENV_DISTRIBUTION_HOST")),
            "credentialsSecretRef": { "name": "registry-login" },
            "caBundle": std::fs::read_to_string(env.ca_file()).unwrap(),
        } }),
    )
    .await;
}

pub async fn create_registry(client: &Client, namespace: &str, spec: Value) {
    let registry: ArtifactRegistry = serde_json::from_value(json!({
        "apiVersion": "artifacts.cameleer.io/v1alpha1",
        "kind": "ArtifactRegistry",
        "metadata": { "name": REGISTRY },
        "spec": spec,
    }))
    .unwrap();
    Api::<ArtifactRegistry>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &registry)
        .await
        .unwrap();
}

/// An AppArtifact to create with a status, as the controller would leave it.
pub struct StoredArtifact<'a> {
    pub name: &'a str,
    pub tenant: &'a str,
    pub app: &'a str,
    pub version: &'a str,
    /// The pushed JAR, or `None` for an artifact that was never stored.
    pub pushed: Option<&'a JarArtifact>,
    /// Status and reason of the Ready condition, or `None` for no conditions.
    pub ready: Option<(&'a str, &'a str)>,
}

impl StoredArtifact<'_> {
    /// Creates the AppArtifact and writes its status.
    pub async fn create(&self, client: &Client, namespace: &str) {
        let api: Api<AppArtifact> = Api::namespaced(client.clone(), namespace);
        let artifact: AppArtifact = serde_json::from_value(json!({
            "apiVersion": "artifacts.cameleer.io/v1alpha1",
            "kind": "AppArtifact",
            "metadata": { "name": self.name },
            "spec": {
                "registryRef": { "name": REGISTRY },
                "tenantId": self.tenant, "appId": self.app, "version": self.version,
                "source": { "existing": {} },
            },
        }))
        .unwrap();
        api.create(&PostParams::default(), &artifact).await.unwrap();

        let mut status = json!({});
        if let Some(pushed) = self.pushed {
            status["artifact"] = json!({
                "ociRef": format!("registry.test/{}/{}:v{}", self.tenant, self.app, self.version),
                "digest": pushed.layer.digest.to_string(),
                "manifestDigest": pushed.manifest_digest.to_string(),
                "size": pushed.layer.size,
                "mediaType": "application/java-archive",
                "lastUpdateTime": "2026-12-04T00:00:00Z",
            });
        }
        if let Some((ready, reason)) = self.ready {
            status["conditions"] = json!([{
                "type": "Ready", "status": ready, "reason": reason,
                "message": format!("set by the test ({reason})"),
                "lastTransitionTime": "2026-12-04T00:00:00Z",
            }]);
        }
        let body = json!({
            "apiVersion": "artifacts.cameleer.io/v1alpha1",
            "kind": "AppArtifact",
            "status": status,
        });
        api.patch_status(
            self.name,
            &PatchParams::apply("test-fixture").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
    }
}
