//! The pod webhook against the real control plane: the API server calls our webhook over TLS
//! for pods created by kube-controller-manager and by the tests, and the injected URLs are
//! fetched through a real gateway from the real distribution registry.
//!
//! Each test registers its own MutatingWebhookConfiguration limited to its own namespace, so
//! tests running in parallel never see each other's webhooks.

mod support;

#[path = "support/stored_artifact.rs"]
mod stored_artifact;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    process::Command,
    sync::Arc,
    time::Duration,
};

use artifact_operator::{
    crd::TENANT_LABEL,
    gateway::{
        keys::{self, KeySettings},
        server::{self as gateway, GatewayState},
    },
    oci::JarArtifact,
    telemetry::Metrics,
    webhook::{
        ADD_LOADER_ANNOTATION, ARTIFACTS_ANNOTATION, INJECT_LABEL, INJECTED_ANNOTATION,
        admission::{self, InjectionSettings, WebhookState},
        certs::{self, CertHandle, CertSettings},
        configuration::{self, Endpoint, WebhookConfig},
        patch::LoaderTemplate,
        tls_server,
    },
};
use axum::{Json, routing::post};
use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::Deployment,
    core::v1::{Event, Pod, Secret, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
    core::{
        DynamicObject,
        admission::{AdmissionRequest, AdmissionResponse, AdmissionReview},
    },
};
use serde_json::{Value, json};
use stored_artifact::StoredArtifact;
use support::{TestEnv, create_labeled_namespace, install_crds, sha256_hex, unique_name};
use tokio::sync::oneshot;

const BINARY: &str = env!("CARGO_BIN_EXE_artifact-operator");
const LOADER_IMAGE: &str = "registry.test/artifact-operator:test";
/// Label that the test's second webhook adds to every pod, which makes the API server call
/// ours again (reinvocation).
const REINVOKE_LABEL: &str = "test.artifacts.cameleer.io/touched";

/// A tenant namespace with a registry, a gateway and a webhook registered for it alone.
struct Harness {
    env: TestEnv,
    client: Client,
    namespace: String,
    tenant: String,
    configurations: Vec<String>,
    metrics: Arc<Metrics>,
    certs: CertHandle,
    _stop: oneshot::Sender<()>,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(false, |_| {}).await
    }

    /// Starts everything; with `reinvoke`, a second webhook that runs after ours adds a label.
    /// `tune_certs` may change the lifetimes of the webhook's certificates, and every change of
    /// their CA bundle is published to our configuration.
    async fn start_with(reinvoke: bool, tune_certs: impl FnOnce(&mut CertSettings)) -> Self {
        let env = TestEnv::load();
        let client = env.kube_client().await;
        install_crds(&client).await;
        let tenant = unique_name("t");
        let namespace = create_labeled_namespace(&client, "wh", &[(TENANT_LABEL, &tenant)]).await;
        stored_artifact::create_external_registry(&env, &client, &namespace).await;

        let (stop, stopped) = oneshot::channel::<()>();
        let stop_all = {
            let (sender, receiver) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                let _ = stopped.await;
                let _ = sender.send(true);
            });
            move || {
                let mut receiver = receiver.clone();
                async move {
                    let _ = receiver.wait_for(|stop| *stop).await;
                }
            }
        };

        let mut key_settings = KeySettings::new(namespace.clone());
        key_settings.secret_name = "signing-keys".to_owned();
        let keys = keys::start(client.clone(), key_settings, stop_all())
            .await
            .unwrap();
        let artifacts = gateway::artifact_cache(client.clone(), Some(&namespace), stop_all()).await;
        let namespaces = admission::namespace_cache(client.clone(), stop_all()).await;
        let metrics = Arc::new(Metrics::default());

        let gateway_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway_url = format!("http://{}", gateway_listener.local_addr().unwrap());
        let gateway_state = Arc::new(GatewayState {
            client: client.clone(),
            artifacts: artifacts.clone(),
            keys: keys.clone(),
            metrics: metrics.clone(),
            registry_clients: Default::default(),
        });
        tokio::spawn(gateway::serve(
            gateway_listener,
            gateway::router(gateway_state),
            stop_all(),
        ));

        // Configurations are called in name order, so the touching one sorts after ours.
        let name = unique_name("a-webhook");
        let mut cert_settings = CertSettings::new(namespace.clone());
        cert_settings.dns_names = Vec::new();
        cert_settings.ip_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        cert_settings.webhook_configuration = Some(name.clone());
        tune_certs(&mut cert_settings);
        let certs = certs::start(client.clone(), cert_settings, stop_all())
            .await
            .unwrap();
        let state = Arc::new(WebhookState {
            client: client.clone(),
            artifacts,
            namespaces,
            keys,
            settings: InjectionSettings {
                gateway_url,
                url_ttl: Duration::from_secs(3600),
                loader: LoaderTemplate {
                    image: LOADER_IMAGE.to_owned(),
                    mount_path: "/artifacts".to_owned(),
                },
            },
            metrics: metrics.clone(),
        });
        let router = admission::router(state).route("/test/touch", post(touch));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("https://{}", listener.local_addr().unwrap());
        let server_certs = certs.clone();
        let server_stop = stop_all();
        tokio::spawn(async move {
            tls_server::serve_tls(listener, router, &server_certs, server_stop).await
        });

        let mut config = WebhookConfig::new(
            Endpoint::Url(base_url.clone()),
            certs.ca_bundle_pem(),
            "artifact-operator",
        );
        config.name = name.clone();
        config.only_namespaces = vec![namespace.clone()];
        configuration::apply(&client, &config).await.unwrap();
        let mut configurations = vec![name];
        if reinvoke {
            let touching = touching_configuration(&config, &base_url);
            configurations.push(touching.metadata.name.clone().unwrap());
            Api::<MutatingWebhookConfiguration>::all(client.clone())
                .create(&PostParams::default(), &touching)
                .await
                .unwrap();
        }

        let harness = Self {
            env,
            client,
            namespace,
            tenant,
            configurations,
            metrics,
            certs,
            _stop: stop,
        };
        harness.wait_for_service_account().await;
        harness.wait_until_webhook_called().await;
        harness
    }

    /// Pushes `jar` under `app` and creates a Ready AppArtifact `name` for it.
    async fn ready_artifact(&self, name: &str, app: &str, jar: &[u8]) -> JarArtifact {
        let pushed = stored_artifact::push(&self.env, &self.tenant, app, "1.0", jar).await;
        StoredArtifact {
            name,
            tenant: &self.tenant,
            app,
            version: "1.0",
            pushed: Some(&pushed),
            ready: Some(("True", "ArtifactPushed")),
        }
        .create(&self.client, &self.namespace)
        .await;
        pushed
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn create_pod(&self, pod: Value) -> kube::Result<Pod> {
        let pod: Pod = serde_json::from_value(pod).unwrap();
        self.pods().create(&PostParams::default(), &pod).await
    }

    /// Creates a pod and returns the API server's refusal message.
    async fn denial(&self, pod: Value) -> String {
        match self.create_pod(pod).await {
            Ok(pod) => panic!("the pod was admitted: {:?}", pod.spec),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{status:?}");
                status.message
            }
            Err(error) => panic!("creating the pod failed otherwise: {error}"),
        }
    }

    /// Waits for the namespace's default ServiceAccount, which kube-controller-manager creates
    /// shortly after the namespace: the ServiceAccount admission plugin rejects pods until then.
    async fn wait_for_service_account(&self) {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        for _ in 0..300 {
            if accounts.get_opt("default").await.unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("namespace {} got no default ServiceAccount", self.namespace);
    }

    /// Waits until the API server calls our webhook. It picks up a new configuration
    /// asynchronously, so the test creates dry-run pods that name a missing artifact until one
    /// is denied.
    async fn wait_until_webhook_called(&self) {
        let probe = pod_json(&["probe-not-an-artifact"], true, false);
        let pod: Pod = serde_json::from_value(probe).unwrap();
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        for _ in 0..300 {
            match self.pods().create(&params, &pod).await {
                Err(kube::Error::Api(status))
                    if status.message.contains("probe-not-an-artifact") =>
                {
                    return;
                }
                Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!(
            "the API server never called the webhook for {}",
            self.namespace
        );
    }

    async fn stop(self) {
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        for name in &self.configurations {
            api.delete(name, &DeleteParams::default()).await.unwrap();
        }
    }
}

/// Builds a second webhook, called after ours, that adds [`REINVOKE_LABEL`].
fn touching_configuration(ours: &WebhookConfig, base_url: &str) -> MutatingWebhookConfiguration {
    let mut touching = configuration::build(ours);
    touching.metadata.name = Some(format!("z-{}", ours.name));
    let webhook = &mut touching.webhooks.as_mut().unwrap()[0];
    webhook.name = "touch.test.artifacts.cameleer.io".to_owned();
    webhook.client_config.url = Some(format!("{base_url}/test/touch"));
    webhook.reinvocation_policy = Some("Never".to_owned());
    touching
}

/// Handler of the touching webhook.
async fn touch(
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<DynamicObject> = review.try_into().unwrap();
    let labels_exist = request
        .object
        .as_ref()
        .is_some_and(|pod| pod.metadata.labels.is_some());
    let operation = if labels_exist {
        json!({ "op": "add", "path": format!("/metadata/labels/{}", REINVOKE_LABEL.replace('/', "~1")), "value": "yes" })
    } else {
        json!({ "op": "add", "path": "/metadata/labels", "value": { REINVOKE_LABEL: "yes" } })
    };
    let patch: json_patch::Patch = serde_json::from_value(json!([operation])).unwrap();
    Json(
        AdmissionResponse::from(&request)
            .with_patch(patch)
            .unwrap()
            .into_review(),
    )
}

/// Returns the metadata and spec of a pod that opts in to `artifacts`, with a loader init
/// container unless `add_loader`.
fn pod_spec(artifacts: &[&str], add_loader: bool) -> (Value, Value) {
    let mut annotations = json!({ ARTIFACTS_ANNOTATION: artifacts.join(",") });
    if add_loader {
        annotations[ADD_LOADER_ANNOTATION] = json!("true");
    }
    let metadata = json!({
        "labels": { INJECT_LABEL: "true", "app": "shop" },
        "annotations": annotations,
    });
    let mut spec = json!({
        "containers": [{ "name": "app", "image": "registry.test/app:1" }],
        "automountServiceAccountToken": false,
    });
    if !add_loader {
        spec["initContainers"] = json!([{ "name": "loader", "image": "registry.test/curl:1" }]);
    }
    (metadata, spec)
}

fn pod_json(artifacts: &[&str], opted_in: bool, add_loader: bool) -> Value {
    let (mut metadata, spec) = pod_spec(artifacts, add_loader);
    if !opted_in {
        metadata["labels"] = json!({ "app": "shop" });
    }
    metadata["generateName"] = json!("shop-");
    json!({ "metadata": metadata, "spec": spec })
}

fn env_of(container: &k8s_openapi::api::core::v1::Container) -> BTreeMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
        .collect()
}

fn init_container<'a>(pod: &'a Pod, name: &str) -> &'a k8s_openapi::api::core::v1::Container {
    let spec = pod.spec.as_ref().unwrap();
    let containers = spec.init_containers.as_ref().unwrap();
    containers
        .iter()
        .find(|container| container.name == name)
        .unwrap_or_else(|| panic!("no init container {name} in {containers:?}"))
}

/// Waits until kube-controller-manager created a pod for the Deployment and returns it.
async fn deployment_pod(harness: &Harness, app: &str) -> Pod {
    let selector = format!("app={app}");
    for _ in 0..600 {
        let pods = harness
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap();
        if let Some(pod) = pods.items.into_iter().next() {
            return pod;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no pod of Deployment {app} appeared in {}",
        harness.namespace
    );
}

async fn create_deployment(harness: &Harness, app: &str, artifacts: &[&str]) {
    let (mut metadata, spec) = pod_spec(artifacts, false);
    metadata["labels"]["app"] = json!(app);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": app },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": app } },
            "template": { "metadata": metadata, "spec": spec },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(harness.client.clone(), &harness.namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
}

fn run_blocking(command: &mut Command) -> std::process::Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test]
async fn deployment_pod_gets_url_that_downloads_the_jar() {
    let harness = Harness::start().await;
    let jar = support::camel_jar();
    let expected = format!("sha256:{}", sha256_hex(&jar));
    harness.ready_artifact("camel", "camel-core", &jar).await;
    create_deployment(&harness, "web", &["camel"]).await;

    let pod = deployment_pod(&harness, "web").await;
    assert_eq!(
        pod.metadata
            .generate_name
            .as_deref()
            .map(|n| n.starts_with("web-")),
        Some(true)
    );
    let env = env_of(init_container(&pod, "loader"));
    assert_eq!(env["ARTIFACT_DIGEST"], expected);
    assert_eq!(env["ARTIFACT_SIZE"], jar.len().to_string());
    assert_eq!(env["ARTIFACT_FILENAME"], "camel-core-1.0.jar");
    let annotations = pod.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations[INJECTED_ANNOTATION],
        format!("camel={expected}")
    );

    let dir = tempfile::tempdir().unwrap();
    let url = env["ARTIFACT_URL"].clone();
    let curl_file = dir.path().join("curl.jar");
    let downloaded = curl_file.clone();
    tokio::task::spawn_blocking(move || {
        run_blocking(
            Command::new("curl")
                .args(["-fsSL", &url, "-o"])
                .arg(&downloaded),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        format!("sha256:{}", sha256_hex(&std::fs::read(&curl_file).unwrap())),
        expected
    );

    // The loader writes into an existing directory, as into a pod's emptyDir.
    let output_dir = dir.path().join("loader/");
    std::fs::create_dir(&output_dir).unwrap();
    let loader_env = env.clone();
    let output = output_dir.clone();
    tokio::task::spawn_blocking(move || {
        run_blocking(
            Command::new(BINARY)
                .args(["loader", "--output"])
                .arg(&output)
                .env_clear()
                .envs(loader_env),
        )
    })
    .await
    .unwrap();
    let loaded = std::fs::read(output_dir.join("camel-core-1.0.jar")).unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&loaded)), expected);
    harness.stop().await;
}

#[tokio::test]
async fn added_loader_serves_two_artifacts() {
    let harness = Harness::start().await;
    let billing = harness
        .ready_artifact("billing", "billing", b"PK\x03\x04billing")
        .await;
    let ledger = harness
        .ready_artifact("ledger", "ledger", b"PK\x03\x04ledger!")
        .await;

    let pod = harness
        .create_pod(pod_json(&["billing", "ledger"], true, true))
        .await
        .unwrap();

    let first = init_container(&pod, "loader-1");
    assert_eq!(first.image.as_deref(), Some(LOADER_IMAGE));
    assert_eq!(
        env_of(first)["ARTIFACT_BILLING_DIGEST"],
        billing.layer.digest.to_string()
    );
    let second = env_of(init_container(&pod, "loader-2"));
    assert_eq!(
        second["ARTIFACT_LEDGER_DIGEST"],
        ledger.layer.digest.to_string()
    );
    let security = first.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));

    let spec = pod.spec.unwrap();
    let volume = spec
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "artifact-operator-jars");
    let size_limit = volume.unwrap().empty_dir.unwrap().size_limit.unwrap();
    let expected = billing.layer.size + ledger.layer.size + 1024 * 1024;
    assert_eq!(size_limit.0, expected.to_string());
    let mounts = spec.containers[0].volume_mounts.clone().unwrap();
    assert_eq!(mounts[0].mount_path, "/artifacts");
    assert_eq!(mounts[0].read_only, Some(true));
    harness.stop().await;
}

#[tokio::test]
async fn reinvocation_adds_nothing_twice() {
    let harness = Harness::start_with(true, |_| {}).await;
    harness
        .ready_artifact("billing", "billing", b"PK\x03\x04billing")
        .await;
    let before = harness.metrics.encode();

    let pod = harness
        .create_pod(pod_json(&["billing"], true, false))
        .await
        .unwrap();

    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels.get(REINVOKE_LABEL).map(String::as_str), Some("yes"));
    let names: Vec<String> = init_container(&pod, "loader")
        .env
        .iter()
        .flatten()
        .map(|var| var.name.clone())
        .collect();
    assert_eq!(
        names,
        [
            "ARTIFACT_URL",
            "ARTIFACT_DIGEST",
            "ARTIFACT_SIZE",
            "ARTIFACT_FILENAME"
        ]
    );
    // The first call injected; the reinvocation after the label was added found nothing to do.
    let after = harness.metrics.encode();
    assert_eq!(
        count(&after, "injected") - count(&before, "injected"),
        1.0,
        "{after}"
    );
    assert_eq!(
        count(&after, "allowed") - count(&before, "allowed"),
        1.0,
        "{after}"
    );
    harness.stop().await;
}

/// Reads `artifact_operator_admissions_total{result="…"}` from the text exposition.
fn count(metrics: &str, result: &str) -> f64 {
    let prefix = format!("artifact_operator_admissions_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0.0, |value| value.parse().unwrap())
}

#[tokio::test]
async fn pod_without_label_is_untouched() {
    let harness = Harness::start().await;
    let pod = harness
        .create_pod(pod_json(&["missing"], false, false))
        .await
        .unwrap();
    assert!(init_container(&pod, "loader").env.is_none());
    assert!(
        !pod.metadata
            .annotations
            .unwrap()
            .contains_key(INJECTED_ANNOTATION)
    );
    harness.stop().await;
}

#[tokio::test]
async fn pods_naming_unusable_artifacts_are_denied() {
    let harness = Harness::start().await;
    StoredArtifact {
        name: "pending",
        tenant: &harness.tenant,
        app: "pending",
        version: "1.0",
        pushed: None,
        ready: Some(("False", "SourceNotFound")),
    }
    .create(&harness.client, &harness.namespace)
    .await;
    let foreign =
        stored_artifact::push(&harness.env, "globex", "billing", "1.0", b"PK\x03\x04g").await;
    StoredArtifact {
        name: "foreign",
        tenant: "globex",
        app: "billing",
        version: "1.0",
        pushed: Some(&foreign),
        ready: Some(("True", "ArtifactPushed")),
    }
    .create(&harness.client, &harness.namespace)
    .await;

    let namespace = &harness.namespace;
    for (artifacts, expected) in [
        (
            &["missing"][..],
            format!("AppArtifact {namespace}/missing does not exist"),
        ),
        (
            &["pending"][..],
            format!("AppArtifact {namespace}/pending is not Ready (SourceNotFound"),
        ),
        (&["foreign"][..], "belongs to tenant globex".to_owned()),
        (
            &["other/billing"][..],
            format!("only use AppArtifacts of its own namespace {namespace}"),
        ),
    ] {
        let message = harness.denial(pod_json(artifacts, true, false)).await;
        assert!(message.contains(&expected), "{artifacts:?}: {message}");
        assert!(message.contains("pods.artifacts.cameleer.io"), "{message}");
    }
    harness.stop().await;
}

#[tokio::test]
async fn denial_reaches_replica_set_events() {
    let harness = Harness::start().await;
    create_deployment(&harness, "broken", &["missing"]).await;

    let events: Api<Event> = Api::namespaced(harness.client.clone(), &harness.namespace);
    let expected = format!("AppArtifact {}/missing does not exist", harness.namespace);
    for _ in 0..600 {
        let list = events.list(&ListParams::default()).await.unwrap();
        let found = list.items.iter().find(|event| {
            event.involved_object.kind.as_deref() == Some("ReplicaSet")
                && event.reason.as_deref() == Some("FailedCreate")
                && event
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains(&expected))
        });
        if found.is_some() {
            harness.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no FailedCreate event with {expected:?} on the ReplicaSet");
}

/// Serial number and issuer of a DER certificate.
fn serial_and_issuer(der: &[u8]) -> (String, String) {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).unwrap();
    (
        certificate.raw_serial_as_string(),
        certificate.issuer().to_string(),
    )
}

/// What the webhook's certificates went through while pods were created.
#[derive(Debug, Default)]
struct RotationLog {
    /// Serial number and issuer of every serving certificate the webhook presented.
    serving: Vec<(String, String)>,
    /// Maximum number of CAs that the bundle trusted at once.
    max_trusted_cas: usize,
}

impl RotationLog {
    fn record(&mut self, certs: &CertHandle) {
        let der = certs
            .serving_cert_der()
            .expect("a self-managed webhook always has a serving certificate");
        let serving = serial_and_issuer(&der);
        if self.serving.last() != Some(&serving) {
            self.serving.push(serving);
        }
        let trusted = certs.ca_bundle_pem().matches("BEGIN CERTIFICATE").count();
        self.max_trusted_cas = self.max_trusted_cas.max(trusted);
    }

    /// Returns whether the serving certificate was renewed by its CA at least once, was issued
    /// by at least two CAs, and whether the bundle trusted two CAs at once.
    fn renewed_and_rolled_over(&self) -> bool {
        let issuers: std::collections::BTreeSet<_> =
            self.serving.iter().map(|(_, issuer)| issuer).collect();
        let renewed_by_same_ca = self
            .serving
            .windows(2)
            .any(|pair| pair[0].1 == pair[1].1 && pair[0].0 != pair[1].0);
        renewed_by_same_ca && issuers.len() >= 2 && self.max_trusted_cas >= 2
    }
}

/// The API server keeps creating pods (failurePolicy Fail) while the webhook renews its serving
/// certificate and rolls its CA over: every pod is admitted and injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_fails_no_admission() {
    // The background check runs every second. It renews the 20 s serving certificate 12 s
    // before it expires. It starts a rollover of the 60 s CA 45 s before the CA expires, which
    // is 15 s after the harness started, and 5 s later moves the serving certificate to the
    // new CA.
    let harness = Harness::start_with(false, |settings| {
        settings.serving_validity = Duration::from_secs(20);
        settings.serving_renew_before = Duration::from_secs(12);
        settings.ca_validity = Duration::from_secs(60);
        settings.ca_renew_before = Duration::from_secs(45);
        settings.bundle_propagation = Duration::from_secs(5);
        settings.check_interval = Duration::from_secs(1);
    })
    .await;
    harness
        .ready_artifact("billing", "billing", b"PK\x03\x04billing")
        .await;
    let secret_before = read_tls_secret(&harness).await;

    // One pod every 75 ms, each on a task of its own so a slow admission does not slow the
    // rate. Creation stops 2 s after the rotation has been seen, or after 800 pods.
    let mut log = RotationLog::default();
    let mut creations = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(75));
    let mut rotated_at = None;
    while creations.len() < 800 {
        ticker.tick().await;
        log.record(&harness.certs);
        if log.renewed_and_rolled_over() {
            let rotated_at = *rotated_at.get_or_insert_with(tokio::time::Instant::now);
            if rotated_at.elapsed() >= Duration::from_secs(2) {
                break;
            }
        }
        let pods = harness.pods();
        let pod: Pod = serde_json::from_value(pod_json(&["billing"], true, false)).unwrap();
        creations.push(tokio::spawn(async move {
            pods.create(&PostParams::default(), &pod).await
        }));
    }

    let created = creations.len();
    let mut failures = Vec::new();
    for creation in creations {
        match creation.await.unwrap() {
            Ok(pod) if env_of(init_container(&pod, "loader")).contains_key("ARTIFACT_URL") => {}
            Ok(pod) => failures.push(format!("{:?} was not injected", pod.metadata.name)),
            Err(error) => failures.push(error.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {created} pod creations failed, the first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(
        log.renewed_and_rolled_over(),
        "the certificates did not renew and roll over while {created} pods were created: {log:?}"
    );
    let secret_after = read_tls_secret(&harness).await;
    for key in [certs::TLS_CERT_KEY, certs::CA_CERT_KEY] {
        assert_ne!(
            secret_after[key], secret_before[key],
            "{key} did not change"
        );
    }
    harness.stop().await;
}

/// Returns the data of the webhook's TLS Secret as text.
async fn read_tls_secret(harness: &Harness) -> BTreeMap<String, String> {
    let secret = Api::<Secret>::namespaced(harness.client.clone(), &harness.namespace)
        .get(certs::DEFAULT_SECRET_NAME)
        .await
        .unwrap();
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, String::from_utf8(value.0).unwrap()))
        .collect()
}
