//! The ArtifactRegistry controller against the real apiserver, controller-manager and
//! distribution registry. Each test runs its own controller, scoped to the test's namespace.

mod support;

use std::{sync::Arc, time::Duration};

use artifact_operator::{
    crd::ArtifactRegistry,
    registry::controller::{self, Context, Settings},
};
use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Secret, Service},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
    },
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use support::{TestEnv, create_namespace, install_crds};
use tokio::sync::oneshot;

/// Upper bound for the controller to reach an expected state.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A namespace with a controller that watches only it; the controller stops on drop.
struct Harness {
    client: Client,
    namespace: String,
    context: Arc<Context>,
    stop: Option<oneshot::Sender<()>>,
}

impl Harness {
    async fn start(env: &TestEnv) -> Self {
        let client = env.kube_client().await;
        install_crds(&client).await;
        let namespace = create_namespace(&client, "reg").await;

        let settings = Settings {
            operator_namespace: "artifact-operator".into(),
            traefik_namespace: "traefik".into(),
            watch_namespace: Some(namespace.clone()),
        };
        let context = Arc::new(Context::new(client.clone(), settings));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(controller::run(context.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            client,
            namespace,
            context,
            stop: Some(stop),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn create_registry(&self, name: &str, spec: Value) {
        let object: ArtifactRegistry = serde_json::from_value(json!({
            "apiVersion": "artifacts.cameleer.io/v1alpha1",
            "kind": "ArtifactRegistry",
            "metadata": { "name": name },
            "spec": spec,
        }))
        .unwrap();
        self.api::<ArtifactRegistry>()
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }

    /// Waits until the registry's status satisfies `check`, and returns the registry.
    async fn wait_for(
        &self,
        name: &str,
        expectation: &str,
        check: impl Fn(&ArtifactRegistry) -> bool,
    ) -> ArtifactRegistry {
        let api = self.api::<ArtifactRegistry>();
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let registry = api.get(name).await.unwrap();
            if check(&registry) {
                return registry;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "registry {name} never reached: {expectation}; last status: {:#?}",
                registry.status
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

fn condition<'a>(
    registry: &'a ArtifactRegistry,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    registry
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
}

fn has_condition(registry: &ArtifactRegistry, type_: &str, status: &str) -> bool {
    condition(registry, type_).is_some_and(|condition| condition.status == status)
        && registry.status.as_ref().unwrap().observed_generation == registry.metadata.generation
}

fn managed_spec() -> Value {
    json!({ "zot": { "storage": { "size": "1Gi" }, "gc": { "interval": "24h" } } })
}

#[tokio::test]
async fn managed_registry_renders_children() {
    let env = TestEnv::load();
    let harness = Harness::start(&env).await;
    harness.create_registry("main", managed_spec()).await;

    let registry = harness
        .wait_for("main", "Ready=False with Reconciling=True", |r| {
            has_condition(r, "Ready", "False") && has_condition(r, "Reconciling", "True")
        })
        .await;
    let ready = condition(&registry, "Ready").unwrap();
    assert!(
        ready.message.contains("main-zot"),
        "the Ready message names the StatefulSet: {}",
        ready.message
    );
    assert!(has_condition(&registry, "ConfigValid", "True"));
    let status = registry.status.as_ref().unwrap();
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("http://main-zot.{}.svc:5000", harness.namespace).as_str())
    );
    let config_hash = status
        .config_hash
        .clone()
        .expect("the status carries the config hash");

    let uid = registry.uid().unwrap();
    let owned_by_registry =
        |owners: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
            owners
                .iter()
                .any(|owner| owner.uid == uid && owner.controller == Some(true))
        };

    let config_map = harness
        .api::<ConfigMap>()
        .get("main-zot-config")
        .await
        .unwrap();
    assert!(owned_by_registry(config_map.owner_references()));
    let config: Value = serde_json::from_str(&config_map.data.unwrap()["config.json"]).unwrap();
    assert_eq!(config["http"]["address"], "0.0.0.0");
    assert_eq!(config["storage"]["gcInterval"], "24h");
    let config_text = config["http"]["accessControl"].to_string();
    assert!(
        !config_text.contains("\"update\""),
        "nobody may update a tag: {config_text}"
    );

    let secret = harness
        .api::<Secret>()
        .get("main-zot-credentials")
        .await
        .unwrap();
    assert!(owned_by_registry(secret.owner_references()));
    let ByteString(htpasswd) = &secret.data.as_ref().unwrap()["htpasswd"];
    let htpasswd = String::from_utf8(htpasswd.clone()).unwrap();
    assert_eq!(htpasswd.lines().count(), 2, "{htpasswd}");
    assert!(
        htpasswd.lines().all(|line| line.contains(":$2")),
        "bcrypt hashes only"
    );

    let statefulset = harness.api::<StatefulSet>().get("main-zot").await.unwrap();
    assert!(owned_by_registry(statefulset.owner_references()));
    let template = statefulset
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap();
    assert_eq!(
        template.annotations.as_ref().unwrap()["artifacts.cameleer.io/config-hash"],
        config_hash
    );
    let claims = statefulset
        .spec
        .as_ref()
        .unwrap()
        .volume_claim_templates
        .as_ref()
        .unwrap();
    assert_eq!(
        claims[0]
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "1Gi"
    );

    for service in ["main-zot", "main-zot-headless"] {
        let service = harness.api::<Service>().get(service).await.unwrap();
        assert!(owned_by_registry(service.owner_references()));
    }
    let pdb = harness
        .api::<PodDisruptionBudget>()
        .get("main-zot")
        .await
        .unwrap();
    assert!(owned_by_registry(pdb.owner_references()));
    let policy = harness
        .api::<NetworkPolicy>()
        .get("main-zot")
        .await
        .unwrap();
    assert!(owned_by_registry(policy.owner_references()));
}

/// resourceVersions of the registry's children, in a fixed order.
async fn child_versions(harness: &Harness) -> Vec<String> {
    vec![
        harness
            .api::<ConfigMap>()
            .get("main-zot-config")
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
        harness
            .api::<Secret>()
            .get("main-zot-credentials")
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
        harness
            .api::<StatefulSet>()
            .get("main-zot")
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
        harness
            .api::<Service>()
            .get("main-zot")
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
        harness
            .api::<Service>()
            .get("main-zot-headless")
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
        harness
            .api::<PodDisruptionBudget>()
            .get("main-zot")
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
        harness
            .api::<NetworkPolicy>()
            .get("main-zot")
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
    ]
}

/// Waits until the controller has finished `count` more reconciles than `since`.
async fn wait_for_reconciles(harness: &Harness, since: u64, count: u64) {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    while harness.context.reconcile_count() < since + count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller did not reconcile again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn unchanged_registry_writes_nothing() {
    let env = TestEnv::load();
    let harness = Harness::start(&env).await;
    harness.create_registry("main", managed_spec()).await;
    harness
        .wait_for("main", "Reconciling", |r| {
            has_condition(r, "Reconciling", "True")
        })
        .await;

    // Trigger reconciles without changing the spec: an annotation is not part of the spec.
    let before_children = child_versions(&harness).await;
    let since = harness.context.reconcile_count();
    let patch = json!({ "metadata": { "annotations": { "test/poke": "1" } } });
    let poked = harness
        .api::<ArtifactRegistry>()
        .patch("main", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for_reconciles(&harness, since, 1).await;

    assert_eq!(
        child_versions(&harness).await,
        before_children,
        "a reconcile without changes wrote a child"
    );
    let after = harness.api::<ArtifactRegistry>().get("main").await.unwrap();
    assert_eq!(
        after.resource_version(),
        poked.resource_version(),
        "a reconcile without changes wrote the status"
    );
}

#[tokio::test]
async fn config_change_rolls_pods() {
    let env = TestEnv::load();
    let harness = Harness::start(&env).await;
    harness.create_registry("main", managed_spec()).await;
    let first = harness
        .wait_for("main", "config hash", |r| {
            r.status.as_ref().is_some_and(|s| s.config_hash.is_some())
        })
        .await;
    let first_hash = first.status.unwrap().config_hash.unwrap();

    let patch = json!({ "spec": { "zot": { "gc": { "interval": "6h" } } } });
    harness
        .api::<ArtifactRegistry>()
        .patch("main", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let second = harness
        .wait_for("main", "a new config hash", |r| {
            r.status
                .as_ref()
                .and_then(|s| s.config_hash.as_ref())
                .is_some_and(|hash| *hash != first_hash)
                && r.status.as_ref().unwrap().observed_generation == r.metadata.generation
        })
        .await;
    let second_hash = second.status.unwrap().config_hash.unwrap();

    let statefulset = harness.api::<StatefulSet>().get("main-zot").await.unwrap();
    let annotations = statefulset
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap();
    assert_eq!(
        annotations["artifacts.cameleer.io/config-hash"],
        second_hash
    );
    let config_map = harness
        .api::<ConfigMap>()
        .get("main-zot-config")
        .await
        .unwrap();
    assert!(config_map.data.unwrap()["config.json"].contains("\"6h\""));
}

#[tokio::test]
async fn credentials_survive_reconciles() {
    let env = TestEnv::load();
    let harness = Harness::start(&env).await;
    harness.create_registry("main", managed_spec()).await;
    harness
        .wait_for("main", "Reconciling", |r| {
            has_condition(r, "Reconciling", "True")
        })
        .await;
    let before = harness
        .api::<Secret>()
        .get("main-zot-credentials")
        .await
        .unwrap()
        .data;

    let patch = json!({ "spec": { "zot": { "gc": { "interval": "1h" } } } });
    harness
        .api::<ArtifactRegistry>()
        .patch("main", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    harness
        .wait_for("main", "the new generation", |r| {
            r.status.as_ref().unwrap().observed_generation == r.metadata.generation
        })
        .await;
    let after = harness
        .api::<Secret>()
        .get("main-zot-credentials")
        .await
        .unwrap()
        .data;
    assert_eq!(before, after, "credentials are generated once and kept");
}

#[tokio::test]
async fn invalid_combination_sets_config_valid_false() {
    let env = TestEnv::load();
    let harness = Harness::start(&env).await;
    harness
        .create_registry(
            "main",
            json!({ "zot": { "replicas": 2, "storage": { "size": "1Gi" } } }),
        )
        .await;

    let registry = harness
        .wait_for("main", "ConfigValid=False", |r| {
            has_condition(r, "ConfigValid", "False")
        })
        .await;
    assert!(has_condition(&registry, "Stalled", "True"));
    let message = &condition(&registry, "ConfigValid").unwrap().message;
    assert!(message.contains("spec.zot.replicas"), "{message}");
    let statefulset = harness
        .api::<StatefulSet>()
        .get_opt("main-zot")
        .await
        .unwrap();
    assert!(
        statefulset.is_none(),
        "nothing is deployed for an invalid spec"
    );
}

#[tokio::test]
async fn deleted_registry_children_collected() {
    let env = TestEnv::load();
    let harness = Harness::start(&env).await;
    harness.create_registry("main", managed_spec()).await;
    harness
        .wait_for("main", "Reconciling", |r| {
            has_condition(r, "Reconciling", "True")
        })
        .await;
    assert!(
        harness
            .api::<StatefulSet>()
            .get_opt("main-zot")
            .await
            .unwrap()
            .is_some()
    );

    harness
        .api::<ArtifactRegistry>()
        .delete("main", &DeleteParams::foreground())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let remaining = [
            harness
                .api::<StatefulSet>()
                .get_opt("main-zot")
                .await
                .unwrap()
                .is_some(),
            harness
                .api::<ConfigMap>()
                .get_opt("main-zot-config")
                .await
                .unwrap()
                .is_some(),
            harness
                .api::<Secret>()
                .get_opt("main-zot-credentials")
                .await
                .unwrap()
                .is_some(),
            harness
                .api::<Service>()
                .get_opt("main-zot")
                .await
                .unwrap()
                .is_some(),
        ];
        if remaining.iter().all(|exists| !exists) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "children left after deletion: {remaining:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn external_spec(env: &TestEnv, secret: &str) -> Value {
    let ca = std::fs::read_to_string(env.ca_file()).unwrap();
    json!({ "external": {
        "url": format!("https://{}", env.var("TESTENV_DISTRIBUTION_HOST")),
        "credentialsSecretRef": { "name": secret },
        "caBundle": ca,
    } })
}

async fn create_credentials(harness: &Harness, name: &str, username: &str, password: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": name },
        "stringData": { "username": username, "password": password },
    }))
    .unwrap();
    harness
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

#[tokio::test]
async fn external_registry_becomes_ready() {
    let env = TestEnv::load();
    let harness = Harness::start(&env).await;
    let (username, password) = (
        env.var("TESTENV_DISTRIBUTION_USERNAME"),
        env.var("TESTENV_DISTRIBUTION_PASSWORD"),
    );
    create_credentials(&harness, "registry-login", username, password).await;
    harness
        .create_registry("ext", external_spec(&env, "registry-login"))
        .await;

    let registry = harness
        .wait_for("ext", "Ready=True", |r| has_condition(r, "Ready", "True"))
        .await;
    assert!(condition(&registry, "Reconciling").is_none());
    assert!(condition(&registry, "Stalled").is_none());
}

#[tokio::test]
async fn external_wrong_password_reports_401() {
    let env = TestEnv::load();
    let harness = Harness::start(&env).await;
    let username = env.var("TESTENV_DISTRIBUTION_USERNAME");
    create_credentials(&harness, "registry-login", username, "wrong-password").await;
    harness
        .create_registry("ext", external_spec(&env, "registry-login"))
        .await;

    let registry = harness
        .wait_for("ext", "Stalled=True", |r| {
            has_condition(r, "Stalled", "True")
        })
        .await;
    let ready = condition(&registry, "Ready").unwrap();
    assert_eq!(ready.reason, "Unauthorized");
    assert!(ready.message.contains("401"), "{}", ready.message);
    assert!(
        ready.message.contains(username),
        "the message names the user: {}",
        ready.message
    );
    assert!(
        !ready.message.contains("wrong-password"),
        "the message must not contain the password"
    );
}

#[tokio::test]
async fn external_missing_secret_stalls() {
    let env = TestEnv::load();
    let harness = Harness::start(&env).await;
    harness
        .create_registry("ext", external_spec(&env, "absent"))
        .await;

    let registry = harness
        .wait_for("ext", "Stalled=True", |r| {
            has_condition(r, "Stalled", "True")
        })
        .await;
    let ready = condition(&registry, "Ready").unwrap();
    assert_eq!(ready.reason, "CredentialsNotFound");
    assert!(ready.message.contains("absent"), "{}", ready.message);
}

fn ingress_route_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("traefik.io", "v1alpha1", "IngressRoute");
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(&gvk))
}

/// Runs `kubectl` against the test environment and asserts that it succeeds.
fn kubectl(env: &TestEnv, args: &[&str]) {
    let output = std::process::Command::new(env.var("TESTENV_KUBECTL"))
        .args(["--kubeconfig", env.var("TESTENV_KUBECONFIG")])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The only test that installs or removes Traefik's CRDs, so other tests never see them change.
#[tokio::test]
async fn ingress_route_follows_traefik_crds() {
    let env = TestEnv::load();
    let crds = env.var("TESTENV_TRAEFIK_CRDS");
    kubectl(
        &env,
        &["delete", "--ignore-not-found", "--wait", "-f", crds],
    );

    let harness = Harness::start(&env).await;
    let mut spec = managed_spec();
    spec["ingress"] = json!({ "traefik": {
        "host": "registry.example.invalid",
        "entryPoints": ["websecure"],
        "tls": { "certResolver": "letsencrypt" }
    } });
    harness.create_registry("main", spec).await;
    let registry = harness
        .wait_for("main", "IngressReady=False", |r| {
            has_condition(r, "IngressReady", "False")
        })
        .await;
    let ingress = condition(&registry, "IngressReady").unwrap();
    assert_eq!(ingress.reason, "TraefikNotInstalled");
    assert!(
        harness
            .api::<StatefulSet>()
            .get_opt("main-zot")
            .await
            .unwrap()
            .is_some(),
        "the registry still reconciles"
    );

    kubectl(&env, &["apply", "--server-side", "-f", crds]);
    kubectl(
        &env,
        &[
            "wait",
            "--for=condition=Established",
            "crd/ingressroutes.traefik.io",
        ],
    );
    let patch = json!({ "metadata": { "annotations": { "test/poke": "1" } } });
    harness
        .api::<ArtifactRegistry>()
        .patch("main", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    harness
        .wait_for("main", "IngressReady=True", |r| {
            has_condition(r, "IngressReady", "True")
        })
        .await;

    let route = ingress_route_api(&harness.client, &harness.namespace)
        .get("main-zot")
        .await
        .unwrap();
    assert_eq!(route.data["spec"]["entryPoints"], json!(["websecure"]));
    let rule = route.data["spec"]["routes"][0]["match"].as_str().unwrap();
    assert!(rule.contains("registry.example.invalid"), "{rule}");
}
