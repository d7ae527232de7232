//! A catalogue of hostile and malformed inputs, one table per surface: AppArtifact coordinates
//! (the real apiserver), pre-signed URLs (the gateway), opted-in pods (the real apiserver calling
//! the webhook), URL sources (the artifact controller), the upload API and `migrate`.
//!
//! Every row names its input and the rejection it must get. Its check asserts that the error
//! names the offending value (or field) and the fix, and that nothing stored changed: no tag in
//! the registry, no status or spec written, no pod created. Each surface runs all its rows and
//! then fails once, listing every row that failed, so one run shows the whole damage.
//! `catalogue_size` prints the number of rows per surface and their total.

mod support;

#[path = "support/fault_server.rs"]
mod fault_server;
#[path = "support/stored_artifact.rs"]
mod stored_artifact;

use std::{
    collections::BTreeMap,
    future::Future,
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use artifact_operator::{
    artifact::{address_policy::AddressPolicy, controller as artifact_controller},
    crd::{AppArtifact, ArtifactRegistry, TENANT_LABEL},
    gateway::{
        keys::{self, KeyRingHandle, KeySettings},
        server::{self, GatewayState},
        signing::{self, UrlTarget},
    },
    oci::ArtifactCoordinates,
    registry::controller as registry_controller,
    telemetry::Metrics,
    webhook::{
        ADD_LOADER_ANNOTATION, ARTIFACTS_ANNOTATION, INJECT_LABEL, LOADER_CONTAINER_ANNOTATION,
        admission::{self, InjectionSettings, WebhookState},
        certs::{self, CertSettings},
        configuration::{self, Endpoint, WebhookConfig},
        patch::LoaderTemplate,
        tls_server,
    },
};
use fault_server::{FaultServer, Reply};
use jiff::Timestamp;
use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    authentication::v1::{TokenRequest, TokenReview},
    core::v1::{Pod, Secret, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use stored_artifact::StoredArtifact;
use support::{TestEnv, create_labeled_namespace, install_crds, merge_json, unique_name};
use tokio::sync::watch;

const BINARY: &str = env!("CARGO_BIN_EXE_artifact-operator");
/// Upper bound for the controllers to reach an expected state.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Size limit of the registries in this file, small so that oversize rows stay cheap.
const MAX_SIZE: u64 = 64 * 1024;

// === The catalogue's bookkeeping ===

/// Outcome of one check: `Err` describes what was wrong.
type Check = Result<(), String>;

/// Outcome of one row: the error the hostile input got, or what was wrong.
type RowResult = Result<String, String>;

/// Collects the outcome of every row of one surface, and fails once with all failing rows.
struct Tally {
    surface: &'static str,
    rows: usize,
    failures: Vec<String>,
}

impl Tally {
    fn new(surface: &'static str) -> Self {
        Self {
            surface,
            rows: 0,
            failures: Vec::new(),
        }
    }

    /// Counts a row and prints the error it got, so that the output documents every message.
    fn record(&mut self, row: &str, result: RowResult) {
        self.rows += 1;
        match result {
            Ok(observed) => println!("ok   {}/{row}: {observed}", self.surface),
            Err(problem) => {
                println!("FAIL {}/{row}: {problem}", self.surface);
                self.failures.push(format!("row {row}: {problem}"));
            }
        }
    }

    /// Records a check that spans the rows, such as "nothing changed", without counting a row.
    fn invariant(&mut self, what: &str, result: Check) {
        if let Err(problem) = result {
            self.failures.push(format!("{what}: {problem}"));
        }
    }

    fn finish(self) {
        println!(
            "hostile catalogue: {}: {} rows, {} failed",
            self.surface,
            self.rows,
            self.failures.len()
        );
        assert!(
            self.failures.is_empty(),
            "{} of {} {} rows failed:\n{}",
            self.failures.len(),
            self.rows,
            self.surface,
            self.failures.join("\n")
        );
    }
}

fn ensure(condition: bool, problem: impl FnOnce() -> String) -> Check {
    if condition { Ok(()) } else { Err(problem()) }
}

/// Checks that `text` contains every fragment.
fn contains_all(what: &str, text: &str, fragments: &[String]) -> Check {
    match fragments
        .iter()
        .find(|fragment| !text.contains(fragment.as_str()))
    {
        None => Ok(()),
        Some(missing) => Err(format!("{what} lacks {missing:?}: {text}")),
    }
}

fn strings(fragments: &[&str]) -> Vec<String> {
    fragments
        .iter()
        .map(|&fragment| fragment.to_owned())
        .collect()
}

#[test]
fn catalogue_size() {
    let sizes = [
        ("coordinates", coordinate_rows().len()),
        ("signed URLs", url_rows().len()),
        ("pods", pod_rows().len()),
        ("URL sources", source_rows().len()),
        ("uploads", upload_rows().len()),
        ("migrate", layout_rows().len()),
    ];
    let total: usize = sizes.iter().map(|(_, size)| size).sum();
    for (surface, size) in sizes {
        println!("hostile catalogue: {surface}: {size} rows");
    }
    println!("hostile catalogue: {total} rows in total");
    assert!(total >= 40, "the catalogue has only {total} rows");
}

// === Shared set-up ===

/// A tenant namespace with an ArtifactRegistry `main` for the shared distribution registry.
struct Tenant {
    env: TestEnv,
    client: Client,
    namespace: String,
    tenant: String,
}

impl Tenant {
    /// Creates the namespace and the registry, with `registry_extra` merged into its spec.
    async fn create(prefix: &str, registry_extra: Value) -> Self {
        let env = TestEnv::load();
        let client = env.kube_client().await;
        install_crds(&client).await;
        let tenant = unique_name("t");
        let namespace = create_labeled_namespace(&client, prefix, &[(TENANT_LABEL, &tenant)]).await;
        stored_artifact::create_external_registry(&env, &client, &namespace).await;
        if registry_extra != json!({}) {
            let api: Api<ArtifactRegistry> = Api::namespaced(client.clone(), &namespace);
            let mut patch = json!({ "spec": {} });
            merge_json(&mut patch["spec"], registry_extra);
            api.patch(
                stored_artifact::REGISTRY,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
        }
        Self {
            env,
            client,
            namespace,
            tenant,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates an AppArtifact of this tenant for app `name` at version 1.0.
    async fn create_artifact(&self, name: &str, source: Value) {
        let artifact: AppArtifact = serde_json::from_value(json!({
            "apiVersion": "artifacts.cameleer.io/v1alpha1",
            "kind": "AppArtifact",
            "metadata": { "name": name },
            "spec": {
                "registryRef": { "name": stored_artifact::REGISTRY },
                "tenantId": self.tenant, "appId": name, "version": "1.0",
                "source": source,
            },
        }))
        .unwrap();
        self.api::<AppArtifact>()
            .create(&PostParams::default(), &artifact)
            .await
            .unwrap();
    }

    /// Returns the manifest digest the registry stores for version 1.0 of `app`, if any.
    async fn stored_manifest(&self, app: &str) -> Option<String> {
        let coordinates = ArtifactCoordinates::new(&self.tenant, app, "1.0").unwrap();
        match self.env.distribution_client().fetch_jar(&coordinates).await {
            Ok(jar) => Some(jar.manifest_digest.to_string()),
            Err(error) if error.is_not_found() => None,
            Err(error) => panic!("reading {app}:v1.0 from the registry failed: {error}"),
        }
    }

    /// Waits until the Ready condition of the current generation has `reason`, and returns
    /// the AppArtifact, or an error with the last status.
    async fn wait_for_reason(&self, name: &str, reason: &str) -> Result<AppArtifact, String> {
        let api = self.api::<AppArtifact>();
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let artifact = api.get(name).await.unwrap();
            let current = artifact.status.as_ref().and_then(|s| s.observed_generation)
                == artifact.metadata.generation;
            if current && ready_reason(&artifact).as_deref() == Some(reason) {
                return Ok(artifact);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "never reached Ready reason {reason}; status: {:?}",
                    artifact.status
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn ready_condition(
    artifact: &AppArtifact,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let status = artifact.status.as_ref()?;
    status.conditions.iter().find(|c| c.type_ == "Ready")
}

fn ready_reason(artifact: &AppArtifact) -> Option<String> {
    ready_condition(artifact).map(|condition| condition.reason.clone())
}

/// Returns a future that completes when `stop` turns true, to shut down one component.
fn stopped(stop: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + Sync + 'static {
    let mut stop = stop.clone();
    async move {
        let _ = stop.wait_for(|stop| *stop).await;
    }
}

/// Starts the registry and artifact controllers for one namespace until `stop` turns true.
fn start_controllers(
    client: &Client,
    namespace: &str,
    policy: AddressPolicy,
    stop: &watch::Receiver<bool>,
) {
    let registries = Arc::new(registry_controller::Context::new(
        client.clone(),
        registry_controller::Settings {
            operator_namespace: "artifact-operator".into(),
            traefik_namespace: "traefik".into(),
            watch_namespace: Some(namespace.to_owned()),
        },
    ));
    let settings = artifact_controller::Settings::new(Some(namespace.to_owned()), policy);
    let artifacts = Arc::new(artifact_controller::Context::new(
        client.clone(),
        settings,
        Arc::new(Metrics::default()),
    ));
    tokio::spawn(registry_controller::run(registries, stopped(stop)));
    tokio::spawn(artifact_controller::run(artifacts, stopped(stop)));
}

/// Serves the gateway for one namespace on 127.0.0.1 until `stop` turns true, and returns its
/// base URL, key ring and metrics.
async fn start_gateway(
    client: &Client,
    namespace: &str,
    stop: &watch::Receiver<bool>,
) -> (String, KeyRingHandle, Arc<Metrics>) {
    let mut key_settings = KeySettings::new(namespace.to_owned());
    key_settings.secret_name = "signing-keys".to_owned();
    key_settings.check_interval = Duration::from_secs(3600);
    let keys = keys::start(client.clone(), key_settings, stopped(stop))
        .await
        .unwrap();
    let artifacts = server::artifact_cache(client.clone(), Some(namespace), stopped(stop)).await;
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(GatewayState {
        client: client.clone(),
        artifacts,
        keys: keys.clone(),
        metrics: metrics.clone(),
        registry_clients: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server::serve(
        listener,
        server::router(state),
        stopped(stop),
    ));
    (base_url, keys, metrics)
}

/// Sends one HTTP/1.1 request with the target exactly as given, so that no client normalizes a
/// hostile path such as `%2e%2e`, and returns the status and body.
async fn raw_request(
    base_url: &str,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let address = base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|error| format!("connecting to {address} failed: {error}"))?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    // The server may respond and close before it reads a rejected body, so a failed write is
    // not an error as long as a response arrives.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response: {response:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Checks a JSON refusal of the gateway: status, reason code and message fragments. Returns the
/// status and body.
fn check_refusal(
    response: &(u16, String),
    status: u16,
    reason: &str,
    message: &[String],
) -> RowResult {
    let (actual, text) = response;
    ensure(*actual == status, || {
        format!("status {actual} instead of {status}: {text}")
    })?;
    let body: Value =
        serde_json::from_str(text).map_err(|_| format!("the body is not JSON: {text}"))?;
    ensure(body["reason"] == reason, || {
        format!("reason {} instead of {reason}: {body}", body["reason"])
    })?;
    contains_all(
        "the message",
        body["message"].as_str().unwrap_or_default(),
        message,
    )?;
    Ok(format!("{actual} {text}"))
}

/// Returns a JAR-like file: the ZIP signature, then `size - 4` bytes that depend on `seed`.
fn jar_bytes(size: usize, seed: u8) -> Vec<u8> {
    let mut jar = b"PK\x03\x04".to_vec();
    jar.extend((0..size - 4).map(|i| ((i % 251) as u8).wrapping_add(seed)));
    jar
}

// === Coordinates: the apiserver's validation of AppArtifact ===

/// One invalid AppArtifact spec: `change` is merged into a valid spec, and the apiserver's
/// message must contain every fragment of `expected`.
struct CoordinateRow {
    name: &'static str,
    change: Value,
    expected: Vec<String>,
}

fn coordinate_row(name: &'static str, change: Value, expected: &[&str]) -> CoordinateRow {
    CoordinateRow {
        name,
        change,
        expected: strings(expected),
    }
}

/// The OCI path component pattern that the schema prints for tenantId and appId.
const COMPONENT_PATTERN: &str = "should match '^[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*$'";

fn coordinate_rows() -> Vec<CoordinateRow> {
    vec![
        coordinate_row(
            "tenant-dot-dot-slash",
            json!({ "tenantId": "../kube-system" }),
            &["spec.tenantId", "\"../kube-system\"", COMPONENT_PATTERN],
        ),
        coordinate_row(
            "app-percent-encoded-dots",
            json!({ "appId": "%2e%2e" }),
            &["spec.appId", "\"%2e%2e\"", COMPONENT_PATTERN],
        ),
        coordinate_row(
            "app-uppercase",
            json!({ "appId": "Billing" }),
            &["spec.appId", "\"Billing\"", COMPONENT_PATTERN],
        ),
        coordinate_row(
            "tenant-unicode",
            json!({ "tenantId": "b\u{e9}ta" }),
            &["spec.tenantId", "\"b\u{e9}ta\"", COMPONENT_PATTERN],
        ),
        coordinate_row(
            "app-control-character",
            json!({ "appId": "bill\u{7}ing" }),
            &["spec.appId", "\"bill\\aing\"", COMPONENT_PATTERN],
        ),
        coordinate_row(
            "version-newline",
            json!({ "version": "1.0\nlatest" }),
            &["spec.version", "\"1.0\\nlatest\""],
        ),
        coordinate_row(
            "version-129-character-tag",
            json!({ "version": format!("1{}", "0".repeat(127)) }),
            &["spec.version", "Too long", "127"],
        ),
        coordinate_row(
            "app-empty",
            json!({ "appId": "" }),
            &["spec.appId", "should be at least 1 chars long"],
        ),
        coordinate_row(
            "version-leading-dash",
            json!({ "version": "-rf" }),
            &["spec.version", "\"-rf\""],
        ),
        coordinate_row(
            "tenant-leading-dash",
            json!({ "tenantId": "-acme" }),
            &["spec.tenantId", "\"-acme\"", COMPONENT_PATTERN],
        ),
        coordinate_row(
            "tenant-spanning-two-components",
            json!({ "tenantId": "acme/billing" }),
            &["spec.tenantId", "\"acme/billing\"", COMPONENT_PATTERN],
        ),
        coordinate_row(
            "app-carrying-a-tag",
            json!({ "appId": "billing:v9" }),
            &["spec.appId", "\"billing:v9\"", COMPONENT_PATTERN],
        ),
        coordinate_row(
            "version-with-slashes",
            json!({ "version": "1.0/../../2.0" }),
            &["spec.version", "\"1.0/../../2.0\""],
        ),
        coordinate_row(
            "version-double-dot",
            json!({ "version": "1..0" }),
            &["spec.version", "\"1..0\"", "'..'"],
        ),
        coordinate_row(
            "version-leading-underscore",
            json!({ "version": "_1.0" }),
            &["spec.version", "\"_1.0\""],
        ),
        coordinate_row(
            "file-name-traversal",
            json!({ "fileName": "../../etc/cron.d/x.jar" }),
            &["spec.fileName", "\"../../etc/cron.d/x.jar\""],
        ),
    ]
}

#[tokio::test]
async fn hostile_coordinates_rejected_by_apiserver() {
    let env = TestEnv::load();
    let client = env.kube_client().await;
    install_crds(&client).await;
    let namespace = support::create_namespace(&client, "hostile-crd").await;
    let gvk = GroupVersionKind::gvk("artifacts.cameleer.io", "v1alpha1", "AppArtifact");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &ApiResource::from_gvk(&gvk));

    let mut tally = Tally::new("coordinates");
    for row in coordinate_rows() {
        // The CRD is cluster-wide, and tests built from other revisions may apply theirs while
        // this one runs, so each row applies this build's schema again first.
        install_crds(&client).await;
        tally.record(row.name, coordinate_case(&api, &row).await);
    }
    tally.finish();
}

async fn coordinate_case(api: &Api<DynamicObject>, row: &CoordinateRow) -> RowResult {
    let mut spec = json!({
        "registryRef": { "name": "main" },
        "tenantId": "acme", "appId": "billing", "version": "1.2.3",
        "source": { "url": { "url": "https://127.0.0.1:9/billing.jar" } },
    });
    merge_json(&mut spec, row.change.clone());
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "artifacts.cameleer.io/v1alpha1",
        "kind": "AppArtifact",
        "metadata": { "name": row.name },
        "spec": spec,
    }))
    .unwrap();
    let message = match api.create(&PostParams::default(), &object).await {
        Ok(_) => "the apiserver accepted it".to_owned(),
        Err(kube::Error::Api(status)) => status.message,
        Err(other) => return Err(format!("the request failed otherwise: {other}")),
    };
    let stored = api.get_opt(row.name).await.unwrap();
    ensure(stored.is_none(), || {
        format!("the AppArtifact was stored: {message}")
    })?;
    contains_all("the apiserver's message", &message, &row.expected)?;
    Ok(message)
}

// === Pre-signed URLs: the gateway ===

/// How a row turns the valid URL of the artifact `billing` into a hostile one.
#[derive(Debug, Clone, Copy)]
enum Tamper {
    /// The path carries the digest of `ledger`, the signature is that of `billing`.
    SwapDigest,
    /// A valid signature over a digest that `billing` does not store.
    SignedForeignDigest,
    /// The signature loses its last characters.
    TruncateSignature,
    /// Signed for `billing` in another namespace.
    OtherNamespace,
    /// Signed for `ledger`, requested as `billing`.
    OtherArtifact,
    /// Validly signed, expiring 30 days ahead.
    FarExpiry,
    /// `kid` twice, the second one unknown.
    DuplicateKid,
    /// `exp` twice.
    DuplicateExp,
    MissingKid,
    MissingExp,
    MissingSig,
    /// A key id the ring never had.
    WrongKeyId,
    /// An expiry that does not fit in 64 bits.
    OverflowExp,
    /// The name `..`, percent-encoded so that no client normalizes it away.
    EncodedDotDotName,
    /// The path without its digest segment.
    NoDigest,
    /// A valid URL sent with `POST`.
    PostMethod,
}

struct UrlRow {
    name: &'static str,
    tamper: Tamper,
    status: u16,
    reason: &'static str,
    message: Vec<String>,
}

fn url_row(
    name: &'static str,
    tamper: Tamper,
    status: u16,
    reason: &'static str,
    message: &[&str],
) -> UrlRow {
    UrlRow {
        name,
        tamper,
        status,
        reason,
        message: strings(message),
    }
}

fn url_rows() -> Vec<UrlRow> {
    let forbidden = 403;
    vec![
        url_row(
            "swapped-digest",
            Tamper::SwapDigest,
            forbidden,
            "invalid_signature",
            &["signature does not match", "recreate the pod"],
        ),
        url_row(
            "signed-digest-not-stored",
            Tamper::SignedForeignDigest,
            410,
            "revoked",
            &["no longer stores digest sha256:"],
        ),
        url_row(
            "truncated-signature",
            Tamper::TruncateSignature,
            forbidden,
            "malformed_signature",
            &["sig", "not unpadded base64url"],
        ),
        url_row(
            "signed-for-other-namespace",
            Tamper::OtherNamespace,
            forbidden,
            "invalid_signature",
            &["signature does not match"],
        ),
        url_row(
            "signed-for-other-artifact",
            Tamper::OtherArtifact,
            forbidden,
            "invalid_signature",
            &["signature does not match"],
        ),
        url_row(
            "expiry-30-days-ahead",
            Tamper::FarExpiry,
            forbidden,
            "expiry_too_far",
            &["exp", "7 days", "recreate the pod"],
        ),
        url_row(
            "duplicate-kid",
            Tamper::DuplicateKid,
            forbidden,
            "malformed_signature",
            &["kid", "more than once"],
        ),
        url_row(
            "duplicate-exp",
            Tamper::DuplicateExp,
            forbidden,
            "malformed_signature",
            &["exp", "more than once"],
        ),
        url_row(
            "missing-kid",
            Tamper::MissingKid,
            forbidden,
            "malformed_signature",
            &["kid", "missing"],
        ),
        url_row(
            "missing-exp",
            Tamper::MissingExp,
            forbidden,
            "malformed_signature",
            &["exp", "missing"],
        ),
        url_row(
            "missing-sig",
            Tamper::MissingSig,
            forbidden,
            "malformed_signature",
            &["sig", "missing"],
        ),
        url_row(
            "wrong-key-id",
            Tamper::WrongKeyId,
            forbidden,
            "unknown_key",
            &["kid names no key", "recreate the pod"],
        ),
        url_row(
            "expiry-overflowing-64-bits",
            Tamper::OverflowExp,
            forbidden,
            "malformed_signature",
            &["exp", "99999999999999999999999"],
        ),
        url_row(
            "path-without-digest",
            Tamper::NoDigest,
            404,
            "not_found",
            &[
                "serves no GET /v1/artifacts/",
                "/v1/artifacts/{namespace}/{name}/{digest}",
            ],
        ),
        url_row(
            "post-to-signed-url",
            Tamper::PostMethod,
            405,
            "method_not_allowed",
            &["serves no POST /v1/artifacts/", "GET and HEAD"],
        ),
        url_row(
            "encoded-dot-dot-name",
            Tamper::EncodedDotDotName,
            forbidden,
            "invalid_signature",
            &["signature does not match"],
        ),
    ]
}

/// A namespace with two stored artifacts, `billing` and `ledger`, and a gateway.
struct GatewayWorld {
    tenant: Tenant,
    base_url: String,
    keys: KeyRingHandle,
    metrics: Arc<Metrics>,
    digests: BTreeMap<&'static str, String>,
    _stop: watch::Sender<bool>,
}

impl GatewayWorld {
    async fn start() -> Self {
        let tenant = Tenant::create("hostile-gw", json!({})).await;
        let mut digests = BTreeMap::new();
        for (app, seed) in [("billing", 1), ("ledger", 2)] {
            let jar = jar_bytes(2_000, seed);
            let pushed = stored_artifact::push(&tenant.env, &tenant.tenant, app, "1.0", &jar).await;
            digests.insert(app, pushed.layer.digest.to_string());
            StoredArtifact {
                name: app,
                tenant: &tenant.tenant,
                app,
                version: "1.0",
                pushed: Some(&pushed),
                ready: Some(("True", "ArtifactPushed")),
            }
            .create(&tenant.client, &tenant.namespace)
            .await;
        }
        let (stop, stop_receiver) = watch::channel(false);
        let (base_url, keys, metrics) =
            start_gateway(&tenant.client, &tenant.namespace, &stop_receiver).await;
        Self {
            tenant,
            base_url,
            keys,
            metrics,
            digests,
            _stop: stop,
        }
    }

    /// Signs `name` in `namespace` with `digest`, for one hour from `now`, and returns the path
    /// and query separately.
    fn signed(
        &self,
        namespace: &str,
        name: &str,
        digest: &str,
        now: Timestamp,
    ) -> (String, String) {
        let target = UrlTarget {
            namespace,
            name,
            digest,
        };
        let signature = signing::sign(&self.keys.get(), &target, Duration::from_secs(3600), now);
        let url = signing::signed_url("", &target, &signature);
        let (path, query) = url.split_once('?').unwrap();
        (path.to_owned(), query.to_owned())
    }

    /// Returns the method and the target (path and query) of the row's request.
    fn hostile_request(&self, tamper: Tamper) -> (&'static str, String) {
        let namespace = self.tenant.namespace.as_str();
        let (billing, ledger) = (&self.digests["billing"], &self.digests["ledger"]);
        let now = Timestamp::now();
        let (path, query) = self.signed(namespace, "billing", billing, now);
        let billing_path = path.clone();
        let drop_param = |name: &str| -> String {
            query
                .split('&')
                .filter(|pair| !pair.starts_with(&format!("{name}=")))
                .collect::<Vec<_>>()
                .join("&")
        };
        let (path, query) = match tamper {
            Tamper::SwapDigest => (path.replace(billing.as_str(), ledger), query.clone()),
            Tamper::SignedForeignDigest => self.signed(namespace, "billing", ledger, now),
            Tamper::TruncateSignature => (path, query[..query.len() - 6].to_owned()),
            Tamper::OtherNamespace => {
                let (_, query) = self.signed("kube-system", "billing", billing, now);
                (path, query)
            }
            Tamper::OtherArtifact => {
                let (_, query) = self.signed(namespace, "ledger", billing, now);
                (path, query)
            }
            Tamper::FarExpiry => self.signed(
                namespace,
                "billing",
                billing,
                now + Duration::from_secs(30 * 86_400),
            ),
            Tamper::DuplicateKid => (path, format!("{query}&kid=0000000000000000")),
            Tamper::DuplicateExp => (path, format!("{query}&exp=1")),
            Tamper::MissingKid => (path, drop_param("kid")),
            Tamper::MissingExp => (path, drop_param("exp")),
            Tamper::MissingSig => (path, drop_param("sig")),
            Tamper::WrongKeyId => (path, format!("kid=deadbeefdeadbeef&{}", drop_param("kid"))),
            Tamper::OverflowExp => (
                path,
                format!("exp=99999999999999999999999&{}", drop_param("exp")),
            ),
            Tamper::EncodedDotDotName => {
                (billing_path.replace("/billing/", "/%2e%2e/"), query.clone())
            }
            Tamper::NoDigest => (
                billing_path.replace(&format!("/{billing}"), ""),
                query.clone(),
            ),
            Tamper::PostMethod => return ("POST", format!("{path}?{query}")),
        };
        ("GET", format!("{path}?{query}"))
    }

    /// Resource versions of both AppArtifacts and manifest digests of both tags.
    async fn snapshot(&self) -> Vec<String> {
        let mut state = Vec::new();
        for app in ["billing", "ledger"] {
            let artifact = self.tenant.api::<AppArtifact>().get(app).await.unwrap();
            state.push(format!("{app}: {:?}", artifact.metadata.resource_version));
            state.push(format!(
                "{app}: {:?}",
                self.tenant.stored_manifest(app).await
            ));
        }
        state
    }
}

#[tokio::test]
async fn hostile_signed_urls_refused_by_gateway() {
    let world = GatewayWorld::start().await;
    let before = world.snapshot().await;

    let mut tally = Tally::new("signed URLs");
    for row in url_rows() {
        let (method, target) = world.hostile_request(row.tamper);
        let result = raw_request(&world.base_url, method, &target, &[], b"")
            .await
            .and_then(|response| {
                let observed = check_refusal(&response, row.status, row.reason, &row.message)?;
                // Key ids are not secret, but a refusal has no reason to name one of the ring's.
                let active = world.keys.get().active.clone();
                ensure(!response.1.contains(&active), || {
                    "the body names the active key id".to_owned()
                })?;
                Ok(observed)
            });
        tally.record(row.name, result);
    }
    let after = world.snapshot().await;
    tally.invariant(
        "stored state",
        ensure(before == after, || format!("{before:?} became {after:?}")),
    );
    let metrics = world.metrics.encode();
    let sent = metrics
        .lines()
        .find_map(|line| line.strip_prefix("artifact_operator_gateway_sent_bytes_total "));
    tally.invariant(
        "bytes served",
        ensure(matches!(sent, None | Some("0")), || {
            format!("the gateway sent JAR bytes: {sent:?}")
        }),
    );
    tally.finish();
}

// === Pods: the real apiserver calling the webhook ===

/// One opted-in pod. `{ns}` in the expected fragments stands for the test's namespace.
struct PodRow {
    name: &'static str,
    annotations: Vec<(&'static str, String)>,
    /// Whether the pod has an init container named `loader`.
    has_loader: bool,
    expected: Vec<String>,
}

fn pod_row(
    name: &'static str,
    annotations: &[(&'static str, &str)],
    has_loader: bool,
    expected: &[&str],
) -> PodRow {
    PodRow {
        name,
        annotations: annotations
            .iter()
            .map(|(key, value)| (*key, (*value).to_owned()))
            .collect(),
        has_loader,
        expected: strings(expected),
    }
}

fn pod_rows() -> Vec<PodRow> {
    let many: Vec<String> = (0..2_000).map(|index| format!("app-{index}")).collect();
    let many = many.join(",");
    let long_name = "a".repeat(300);
    vec![
        pod_row(
            "artifact-in-other-namespace",
            &[(ARTIFACTS_ANNOTATION, "kube-system/ready")],
            true,
            &["\"kube-system\"/\"ready\"", "own namespace {ns}"],
        ),
        pod_row(
            "artifact-behind-dot-dot",
            &[(ARTIFACTS_ANNOTATION, "../ready")],
            true,
            &["\"..\"/\"ready\"", "list it by name alone"],
        ),
        pod_row(
            "two-thousand-names",
            &[(ARTIFACTS_ANNOTATION, &many)],
            true,
            &["more than 16", "at most 16"],
        ),
        pod_row(
            "name-of-300-characters",
            &[(ARTIFACTS_ANNOTATION, &long_name)],
            true,
            &["at most 253 characters"],
        ),
        pod_row(
            "semicolon-separator",
            &[(ARTIFACTS_ANNOTATION, "ready;ready")],
            true,
            &["\"ready;ready\"", "not an AppArtifact name"],
        ),
        pod_row(
            "space-separator",
            &[(ARTIFACTS_ANNOTATION, "ready ready")],
            true,
            &["\"ready ready\"", "not an AppArtifact name"],
        ),
        pod_row(
            "only-empty-names",
            &[(ARTIFACTS_ANNOTATION, " ,, , ")],
            true,
            &["lists no AppArtifact", "separated by commas"],
        ),
        pod_row(
            "duplicated-missing-name",
            &[(ARTIFACTS_ANNOTATION, "ghost,ghost,ghost")],
            true,
            &["AppArtifact {ns}/ghost does not exist"],
        ),
        pod_row(
            "loader-container-missing",
            &[
                (ARTIFACTS_ANNOTATION, "ready"),
                (LOADER_CONTAINER_ANNOTATION, "fetcher"),
            ],
            true,
            &[
                "no init container named fetcher",
                LOADER_CONTAINER_ANNOTATION,
            ],
        ),
        pod_row(
            "loader-container-empty",
            &[
                (ARTIFACTS_ANNOTATION, "ready"),
                (LOADER_CONTAINER_ANNOTATION, ""),
            ],
            true,
            &["is \"\"", "not a container name"],
        ),
        pod_row(
            "add-loader-shouting",
            &[
                (ARTIFACTS_ANNOTATION, "ready"),
                (ADD_LOADER_ANNOTATION, "TRUE"),
            ],
            false,
            &["\"TRUE\"", "set it to \"true\" or \"false\""],
        ),
        pod_row(
            "unicode-name",
            &[(ARTIFACTS_ANNOTATION, "r\u{e9}ady")],
            true,
            &["\"r\u{e9}ady\"", "lowercase letters"],
        ),
        pod_row(
            "label-without-annotation",
            &[],
            true,
            &["lists no AppArtifact"],
        ),
    ]
}

/// A namespace with a Ready artifact `ready`, and the webhook registered for it alone.
struct WebhookWorld {
    tenant: Tenant,
    configuration: String,
    _stop: watch::Sender<bool>,
}

impl WebhookWorld {
    async fn start() -> Self {
        let tenant = Tenant::create("hostile-wh", json!({})).await;
        let jar = jar_bytes(1_000, 3);
        let pushed = stored_artifact::push(&tenant.env, &tenant.tenant, "ready", "1.0", &jar).await;
        StoredArtifact {
            name: "ready",
            tenant: &tenant.tenant,
            app: "ready",
            version: "1.0",
            pushed: Some(&pushed),
            ready: Some(("True", "ArtifactPushed")),
        }
        .create(&tenant.client, &tenant.namespace)
        .await;

        let (stop, stop_receiver) = watch::channel(false);
        let client = &tenant.client;
        let namespace = &tenant.namespace;
        let mut key_settings = KeySettings::new(namespace.clone());
        key_settings.secret_name = "signing-keys".to_owned();
        let keys = keys::start(client.clone(), key_settings, stopped(&stop_receiver))
            .await
            .unwrap();
        let artifacts =
            server::artifact_cache(client.clone(), Some(namespace), stopped(&stop_receiver)).await;
        let namespaces = admission::namespace_cache(client.clone(), stopped(&stop_receiver)).await;
        let mut cert_settings = CertSettings::new(namespace.clone());
        cert_settings.dns_names = Vec::new();
        cert_settings.ip_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let certs = certs::start(client.clone(), cert_settings, stopped(&stop_receiver))
            .await
            .unwrap();
        let state = Arc::new(WebhookState {
            client: client.clone(),
            artifacts,
            namespaces,
            keys,
            settings: InjectionSettings {
                gateway_url: "http://127.0.0.1:9".to_owned(),
                url_ttl: Duration::from_secs(3600),
                loader: LoaderTemplate {
                    image: "registry.test/artifact-operator:test".to_owned(),
                    mount_path: "/artifacts".to_owned(),
                },
            },
            metrics: Arc::new(Metrics::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("https://{}", listener.local_addr().unwrap());
        let server_certs = certs.clone();
        let server_stop = stopped(&stop_receiver);
        let router = admission::router(state);
        tokio::spawn(async move {
            tls_server::serve_tls(listener, router, &server_certs, server_stop).await
        });

        let mut config = WebhookConfig::new(
            Endpoint::Url(base_url),
            certs.ca_bundle_pem(),
            "artifact-operator",
        );
        config.name = unique_name("hostile-webhook");
        config.only_namespaces = vec![namespace.clone()];
        configuration::apply(client, &config).await.unwrap();
        let world = Self {
            configuration: config.name.clone(),
            tenant,
            _stop: stop,
        };
        world.wait_until_webhook_called().await;
        world
    }

    fn pod(row: &PodRow) -> Pod {
        let annotations: serde_json::Map<String, Value> = row
            .annotations
            .iter()
            .map(|(key, value)| ((*key).to_owned(), json!(value)))
            .collect();
        let mut spec = json!({
            "containers": [{ "name": "app", "image": "registry.test/app:1" }],
            "automountServiceAccountToken": false,
        });
        if row.has_loader {
            spec["initContainers"] = json!([{ "name": "loader", "image": "registry.test/curl:1" }]);
        }
        serde_json::from_value(json!({
            "metadata": {
                "name": row.name,
                "labels": { INJECT_LABEL: "true" },
                "annotations": annotations,
            },
            "spec": spec,
        }))
        .unwrap()
    }

    /// Waits for the namespace's default ServiceAccount and until the apiserver calls the
    /// webhook, which it picks up asynchronously: dry-run pods that name a missing artifact are
    /// created until one is denied by it.
    async fn wait_until_webhook_called(&self) {
        let probe = pod_row(
            "probe",
            &[(ARTIFACTS_ANNOTATION, "probe-not-an-artifact")],
            true,
            &[],
        );
        let pod = Self::pod(&probe);
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let pods = self.tenant.api::<Pod>();
        for _ in 0..600 {
            match pods.create(&params, &pod).await {
                Err(kube::Error::Api(status))
                    if status.message.contains("probe-not-an-artifact") =>
                {
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!(
            "the apiserver never called the webhook for {}",
            self.tenant.namespace
        );
    }

    async fn secret_names(&self) -> Vec<String> {
        let secrets = self.tenant.api::<Secret>();
        let list = secrets.list(&Default::default()).await.unwrap();
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|secret| secret.metadata.name)
            .collect();
        names.sort();
        names
    }

    async fn stop(self) {
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.tenant.client.clone());
        api.delete(&self.configuration, &DeleteParams::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn hostile_pods_denied_by_webhook() {
    let world = WebhookWorld::start().await;
    let secrets_before = world.secret_names().await;
    let pods = world.tenant.api::<Pod>();

    let mut tally = Tally::new("pods");
    for row in pod_rows() {
        let expected: Vec<String> = row
            .expected
            .iter()
            .map(|fragment| fragment.replace("{ns}", &world.tenant.namespace))
            .collect();
        let result = match pods
            .create(&PostParams::default(), &WebhookWorld::pod(&row))
            .await
        {
            Ok(pod) => Err(format!("the pod was admitted: {:?}", pod.spec)),
            Err(kube::Error::Api(status)) => ensure(status.code == 403, || {
                format!("code {} instead of 403: {}", status.code, status.message)
            })
            .and_then(|()| contains_all("the denial", &status.message, &expected))
            .map(|()| status.message),
            Err(error) => Err(format!("creating the pod failed otherwise: {error}")),
        };
        let stored = pods.get_opt(row.name).await.unwrap();
        let result = result.and_then(|message| {
            ensure(stored.is_none(), || "the pod was stored".to_owned())?;
            Ok(message)
        });
        tally.record(row.name, result);
    }
    let secrets_after = world.secret_names().await;
    tally.invariant(
        "Secrets",
        ensure(secrets_before == secrets_after, || {
            format!("{secrets_before:?} became {secrets_after:?}")
        }),
    );
    world.stop().await;
    tally.finish();
}

// === URL sources: the artifact controller ===

/// How the second loopback address 127.0.0.2, on the deny list, is written in a redirect.
#[derive(Debug, Clone, Copy)]
enum DeniedForm {
    Dotted,
    /// `2130706434`, the address as one decimal number.
    Decimal,
    /// `[::ffff:127.0.0.2]`, the IPv4-mapped IPv6 address.
    Mapped,
    /// `127.0.0.1:PORT@127.0.0.2`, the allowed address disguised as user information.
    UserInfo,
    /// `//127.0.0.2:PORT/...`, without a scheme.
    SchemeRelative,
}

/// Response of the source server.
#[derive(Debug, Clone)]
enum Served {
    RedirectTo(DeniedForm),
    /// A body without `Content-Length` that never ends.
    Endless,
    /// Declares 4000 bytes, sends 100 and closes.
    CutShort,
    /// Declares 10 GiB.
    DeclaredHuge,
    /// [`MAX_SIZE`] + 1 bytes without `Content-Length`.
    OneByteOver,
    Bytes(Vec<u8>),
}

struct SourceRow {
    name: &'static str,
    served: Served,
    reason: &'static str,
    message: Vec<String>,
}

fn source_row(
    name: &'static str,
    served: Served,
    reason: &'static str,
    message: &[&str],
) -> SourceRow {
    SourceRow {
        name,
        served,
        reason,
        message: strings(message),
    }
}

fn source_rows() -> Vec<SourceRow> {
    let denied = ["127.0.0.2", "denied range", "Use a host outside loopback"];
    let limit = MAX_SIZE.to_string();
    let limit = limit.as_str();
    let raise = "raise spec.sources.maxArtifactSize";
    vec![
        source_row(
            "redirect-to-denied-address",
            Served::RedirectTo(DeniedForm::Dotted),
            "SourceDenied",
            &denied,
        ),
        source_row(
            "redirect-to-decimal-address",
            Served::RedirectTo(DeniedForm::Decimal),
            "SourceDenied",
            &denied,
        ),
        source_row(
            "redirect-to-mapped-address",
            Served::RedirectTo(DeniedForm::Mapped),
            "SourceDenied",
            &denied,
        ),
        source_row(
            "redirect-behind-user-info",
            Served::RedirectTo(DeniedForm::UserInfo),
            "SourceDenied",
            &denied,
        ),
        source_row(
            "redirect-scheme-relative",
            Served::RedirectTo(DeniedForm::SchemeRelative),
            "SourceDenied",
            &denied,
        ),
        source_row("endless-body", Served::Endless, "TooLarge", &[limit, raise]),
        source_row(
            "content-length-short",
            Served::CutShort,
            "SourceUnavailable",
            &[
                "/content-length-short",
                "end of file before message length reached",
            ],
        ),
        source_row(
            "content-length-huge",
            Served::DeclaredHuge,
            "TooLarge",
            &["10737418240", limit, raise],
        ),
        source_row(
            "one-byte-over-limit",
            Served::OneByteOver,
            "TooLarge",
            &[limit, raise],
        ),
        source_row(
            "gzip-not-jar",
            Served::Bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00".to_vec()),
            "NotAJar",
            &["1f 8b 08 00"],
        ),
        source_row(
            "elf-not-jar",
            Served::Bytes(b"\x7fELF\x02\x01\x01\x00".to_vec()),
            "NotAJar",
            &["7f 45 4c 46"],
        ),
        source_row(
            "empty-zip-not-jar",
            Served::Bytes(b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec()),
            "NotAJar",
            &["50 4b 05 06"],
        ),
        source_row(
            "empty-body",
            Served::Bytes(Vec::new()),
            "NotAJar",
            &["empty content"],
        ),
    ]
}

/// A listener on the denied address 127.0.0.2 that counts the connections it accepts, to show
/// that no redirect reached it.
struct Trap {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Trap {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .expect("127.0.0.2 must be bindable; Linux routes all of 127.0.0.0/8 to lo");
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        Self { port, accepted }
    }

    fn url(&self, form: DeniedForm, server_port: u16) -> String {
        let port = self.port;
        match form {
            DeniedForm::Dotted => format!("http://127.0.0.2:{port}/app.jar"),
            DeniedForm::Decimal => format!("http://2130706434:{port}/app.jar"),
            DeniedForm::Mapped => format!("http://[::ffff:127.0.0.2]:{port}/app.jar"),
            DeniedForm::UserInfo => {
                format!("http://127.0.0.1:{server_port}@127.0.0.2:{port}/app.jar")
            }
            DeniedForm::SchemeRelative => format!("//127.0.0.2:{port}/app.jar"),
        }
    }
}

fn reply_for(served: &Served, trap: &Trap, server_port: u16) -> Reply {
    match served {
        Served::RedirectTo(form) => {
            Reply::status_with_header(302, "Location", &trap.url(*form, server_port))
        }
        Served::Endless => Reply::Generated {
            length: u64::MAX,
            declared: false,
        },
        Served::CutShort => Reply::CutShort {
            body: Arc::new(jar_bytes(4_000, 4)),
            sent: 100,
            etag: None,
        },
        Served::DeclaredHuge => Reply::Generated {
            length: 10 * 1024 * 1024 * 1024,
            declared: true,
        },
        Served::OneByteOver => Reply::Generated {
            length: MAX_SIZE + 1,
            declared: false,
        },
        Served::Bytes(bytes) => Reply::body(bytes),
    }
}

#[tokio::test]
async fn hostile_sources_stall_without_push() {
    let tenant = Tenant::create(
        "hostile-src",
        json!({ "sources": { "maxArtifactSize": MAX_SIZE.to_string() } }),
    )
    .await;
    // The test's server on 127.0.0.1 stays reachable; 127.0.0.2 joins the deny list explicitly,
    // as an administrator would add a range with --source-deny-cidr.
    let policy = AddressPolicy::default()
        .exempt_range("127.0.0.1/32".parse().unwrap())
        .deny_range("127.0.0.2/32".parse().unwrap());
    let (_stop, stop_receiver) = watch::channel(false);
    start_controllers(&tenant.client, &tenant.namespace, policy, &stop_receiver);
    let server = FaultServer::start().await;
    let server_port: u16 = server.url("").rsplit(':').next().unwrap().parse().unwrap();
    let trap = Trap::start().await;

    let rows = source_rows();
    for row in &rows {
        let url = server.script(
            &format!("/{}", row.name),
            vec![reply_for(&row.served, &trap, server_port)],
        );
        tenant
            .create_artifact(row.name, json!({ "url": { "url": url } }))
            .await;
    }

    let mut tally = Tally::new("URL sources");
    for row in &rows {
        tally.record(row.name, source_case(&tenant, row).await);
    }
    tally.invariant(
        "127.0.0.2",
        ensure(trap.accepted.load(Ordering::SeqCst) == 0, || {
            "a redirect reached the denied address".to_owned()
        }),
    );
    tally.finish();
}

async fn source_case(tenant: &Tenant, row: &SourceRow) -> RowResult {
    let artifact = tenant.wait_for_reason(row.name, row.reason).await?;
    let message = ready_condition(&artifact)
        .map(|ready| ready.message.clone())
        .unwrap_or_default();
    contains_all("the Ready message", &message, &row.message)?;
    let status = artifact.status.as_ref().unwrap();
    ensure(status.artifact.is_none(), || {
        format!("the status records an artifact: {:?}", status.artifact)
    })?;
    let stored = tenant.stored_manifest(row.name).await;
    ensure(stored.is_none(), || {
        format!("the registry has a tag: {stored:?}")
    })?;
    Ok(format!("{}: {message}", row.reason))
}

// === The upload API ===

/// Whose token, if any, goes into the `Authorization` header.
///
/// No row waits for a token to expire: TokenRequest's minimum `expirationSeconds` is 600. A
/// token of another audience, one bound to a deleted Secret and one of a deleted ServiceAccount
/// stand in for it, as the apiserver rejects all of them in the same TokenReview.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    None,
    /// `Basic` with the uploader's token as the password.
    Basic,
    /// `Bearer` followed by nothing.
    EmptyBearer,
    /// The uploader's token, issued for the audience `not-the-apiserver`.
    OtherAudience,
    /// A token of the uploader bound to a Secret that was deleted since.
    BoundToDeletedSecret,
    /// A token of a ServiceAccount, allowed to update, that was deleted since.
    DeletedAccount,
    /// A ServiceAccount of another namespace, allowed to update AppArtifacts there.
    OtherNamespace,
    /// A ServiceAccount allowed `get` and `patch`, but not `update`.
    PatchOnly,
    /// The uploader, allowed to update.
    Uploader,
}

#[derive(Debug, Clone, Copy)]
enum UploadBody {
    Jar,
    /// [`MAX_SIZE`] + 1 bytes, declared in `Content-Length`.
    OneByteOver,
    Elf,
}

struct UploadRow {
    name: &'static str,
    credential: Credential,
    /// Path after `/v1/uploads/`; `{ns}` is the test's namespace.
    path: &'static str,
    body: UploadBody,
    status: u16,
    reason: &'static str,
    /// Fragments of the message; `{ns}` and `{other}` are the namespaces.
    message: Vec<String>,
}

#[allow(clippy::too_many_arguments)] // A table row, read column by column.
fn upload_row(
    name: &'static str,
    credential: Credential,
    path: &'static str,
    body: UploadBody,
    status: u16,
    reason: &'static str,
    message: &[&str],
) -> UploadRow {
    UploadRow {
        name,
        credential,
        path,
        body,
        status,
        reason,
        message: strings(message),
    }
}

fn upload_rows() -> Vec<UploadRow> {
    use Credential::*;
    let billing = "{ns}/billing";
    let fix_token = ["Authorization: Bearer TOKEN", "kubectl create token"];
    let rejected_token = ["did not accept the bearer token", "expired, revoked"];
    vec![
        upload_row(
            "no-token",
            None,
            billing,
            UploadBody::Jar,
            401,
            "missing_token",
            &fix_token,
        ),
        upload_row(
            "basic-scheme",
            Basic,
            billing,
            UploadBody::Jar,
            401,
            "missing_token",
            &fix_token,
        ),
        upload_row(
            "empty-bearer",
            EmptyBearer,
            billing,
            UploadBody::Jar,
            401,
            "missing_token",
            &fix_token,
        ),
        upload_row(
            "token-for-other-audience",
            OtherAudience,
            billing,
            UploadBody::Jar,
            401,
            "invalid_token",
            &rejected_token,
        ),
        upload_row(
            "token-bound-to-deleted-secret",
            BoundToDeletedSecret,
            billing,
            UploadBody::Jar,
            401,
            "invalid_token",
            &rejected_token,
        ),
        upload_row(
            "token-of-deleted-account",
            DeletedAccount,
            billing,
            UploadBody::Jar,
            401,
            "invalid_token",
            &rejected_token,
        ),
        upload_row(
            "token-of-other-namespace",
            OtherNamespace,
            billing,
            UploadBody::Jar,
            403,
            "forbidden",
            &[
                "system:serviceaccount:{other}:uploader",
                "namespace {ns}",
                "RoleBinding",
            ],
        ),
        upload_row(
            "token-with-patch-not-update",
            PatchOnly,
            billing,
            UploadBody::Jar,
            403,
            "forbidden",
            &[
                "system:serviceaccount:{ns}:patcher",
                "grant the verb update",
            ],
        ),
        upload_row(
            "dot-dot-namespace",
            Uploader,
            "%2e%2e/billing",
            UploadBody::Jar,
            403,
            "forbidden",
            &["in namespace .."],
        ),
        upload_row(
            "uppercase-name",
            Uploader,
            "{ns}/Billing",
            UploadBody::Jar,
            404,
            "artifact_not_found",
            &[
                "{ns}/Billing not found",
                "create it with spec.source.upload",
            ],
        ),
        upload_row(
            "one-byte-over-limit",
            Uploader,
            billing,
            UploadBody::OneByteOver,
            413,
            "too_large",
            &["65536", "raise spec.sources.maxArtifactSize"],
        ),
        upload_row(
            "elf-binary",
            Uploader,
            billing,
            UploadBody::Elf,
            422,
            "not_a_jar",
            &["7f 45 4c 46"],
        ),
    ]
}

/// A tenant namespace with an upload-source AppArtifact `billing`, the controllers, a gateway
/// and the ServiceAccounts of the rows. A second namespace contains the foreign uploader.
struct UploadWorld {
    tenant: Tenant,
    other_namespace: String,
    gateway_url: String,
    tokens: BTreeMap<&'static str, String>,
    _stop: watch::Sender<bool>,
}

impl UploadWorld {
    async fn start() -> Self {
        let tenant = Tenant::create(
            "hostile-up",
            json!({ "sources": { "maxArtifactSize": MAX_SIZE.to_string() } }),
        )
        .await;
        let (stop, stop_receiver) = watch::channel(false);
        start_controllers(
            &tenant.client,
            &tenant.namespace,
            AddressPolicy::default(),
            &stop_receiver,
        );
        let (gateway_url, _, _) =
            start_gateway(&tenant.client, &tenant.namespace, &stop_receiver).await;
        tenant
            .create_artifact("billing", json!({ "upload": {} }))
            .await;
        tenant
            .wait_for_reason("billing", "AwaitingUpload")
            .await
            .unwrap();
        let other_namespace = create_labeled_namespace(
            &tenant.client,
            "hostile-up-other",
            &[(TENANT_LABEL, "other")],
        )
        .await;

        let mut world = Self {
            tenant,
            other_namespace,
            gateway_url,
            tokens: BTreeMap::new(),
            _stop: stop,
        };
        world.issue_tokens().await;
        world
    }

    /// Creates the ServiceAccounts and Roles, and issues every token the rows use.
    async fn issue_tokens(&mut self) {
        let client = self.tenant.client.clone();
        let namespace = self.tenant.namespace.clone();
        let other = self.other_namespace.clone();
        for (ns, account, verbs) in [
            (&namespace, "uploader", &["get", "update"][..]),
            (&namespace, "patcher", &["get", "patch"][..]),
            (&namespace, "doomed", &["get", "update"][..]),
            (&other, "uploader", &["get", "update"][..]),
        ] {
            grant(&client, ns, account, verbs).await;
        }
        self.tokens.insert(
            "uploader",
            token(&client, &namespace, "uploader", json!({})).await,
        );
        self.tokens.insert(
            "patcher",
            token(&client, &namespace, "patcher", json!({})).await,
        );
        self.tokens
            .insert("other", token(&client, &other, "uploader", json!({})).await);
        self.tokens.insert(
            "audience",
            token(
                &client,
                &namespace,
                "uploader",
                json!({ "audiences": ["not-the-apiserver"] }),
            )
            .await,
        );

        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let bound: Secret =
            serde_json::from_value(json!({ "metadata": { "name": "bound" } })).unwrap();
        let bound = secrets
            .create(&PostParams::default(), &bound)
            .await
            .unwrap();
        let bound_token = token(
            &client,
            &namespace,
            "uploader",
            json!({ "boundObjectRef": {
                "apiVersion": "v1", "kind": "Secret", "name": "bound",
                "uid": bound.metadata.uid.unwrap(),
            } }),
        )
        .await;
        secrets
            .delete("bound", &DeleteParams::default())
            .await
            .unwrap();
        wait_until_rejected(&client, &bound_token).await;
        self.tokens.insert("bound", bound_token);

        let doomed_token = token(&client, &namespace, "doomed", json!({})).await;
        Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
            .delete("doomed", &DeleteParams::default())
            .await
            .unwrap();
        wait_until_rejected(&client, &doomed_token).await;
        self.tokens.insert("doomed", doomed_token);
        wait_until_allowed(&client, &namespace, "uploader").await;
        wait_until_allowed(&client, &other, "uploader").await;
    }

    fn authorization(&self, credential: Credential) -> Option<String> {
        let token = |key: &str| self.tokens[key].clone();
        match credential {
            Credential::None => None,
            Credential::Basic => {
                use base64::Engine as _;
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("uploader:{}", token("uploader")));
                Some(format!("Basic {basic}"))
            }
            Credential::EmptyBearer => Some("Bearer ".to_owned()),
            Credential::OtherAudience => Some(format!("Bearer {}", token("audience"))),
            Credential::BoundToDeletedSecret => Some(format!("Bearer {}", token("bound"))),
            Credential::DeletedAccount => Some(format!("Bearer {}", token("doomed"))),
            Credential::OtherNamespace => Some(format!("Bearer {}", token("other"))),
            Credential::PatchOnly => Some(format!("Bearer {}", token("patcher"))),
            Credential::Uploader => Some(format!("Bearer {}", token("uploader"))),
        }
    }

    fn expand(&self, text: &str) -> String {
        text.replace("{ns}", &self.tenant.namespace)
            .replace("{other}", &self.other_namespace)
    }

    async fn send(&self, row: &UploadRow) -> Result<(u16, String), String> {
        let body = match row.body {
            UploadBody::Jar => jar_bytes(1_000, 5),
            UploadBody::OneByteOver => jar_bytes(MAX_SIZE as usize + 1, 6),
            UploadBody::Elf => b"\x7fELF\x02\x01\x01\x00 not a JAR".to_vec(),
        };
        let target = format!("/v1/uploads/{}", self.expand(row.path));
        let headers: Vec<(&str, String)> = self
            .authorization(row.credential)
            .map(|value| ("Authorization", value))
            .into_iter()
            .collect();
        raw_request(&self.gateway_url, "PUT", &target, &headers, &body).await
    }

    /// Generation, Ready reason, recorded artifact and registry tag of `billing`.
    async fn snapshot(&self) -> String {
        let artifact = self
            .tenant
            .api::<AppArtifact>()
            .get("billing")
            .await
            .unwrap();
        format!(
            "generation {:?}, Ready {:?}, artifact {:?}, tag {:?}",
            artifact.metadata.generation,
            ready_reason(&artifact),
            artifact
                .status
                .as_ref()
                .and_then(|status| status.artifact.clone()),
            self.tenant.stored_manifest("billing").await
        )
    }
}

/// Returns whether the response's body contains `token`.
fn response_leaks(response: &(u16, String), token: &str) -> bool {
    response.1.contains(token)
}

/// Creates ServiceAccount `account` in `namespace` with a Role of `verbs` on AppArtifacts.
async fn grant(client: &Client, namespace: &str, account: &str, verbs: &[&str]) {
    fn create<T: serde::de::DeserializeOwned>(value: Value) -> T {
        serde_json::from_value(value).unwrap()
    }
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(
            &PostParams::default(),
            &create(json!({ "metadata": { "name": account } })),
        )
        .await
        .unwrap();
    Api::<Role>::namespaced(client.clone(), namespace)
        .create(
            &PostParams::default(),
            &create(json!({
                "metadata": { "name": account },
                "rules": [{
                    "apiGroups": ["artifacts.cameleer.io"],
                    "resources": ["appartifacts"],
                    "verbs": verbs,
                }],
            })),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(
            &PostParams::default(),
            &create(json!({
                "metadata": { "name": account },
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account,
                },
                "subjects": [{ "kind": "ServiceAccount", "name": account, "namespace": namespace }],
            })),
        )
        .await
        .unwrap();
}

/// Issues a token of `account` with the TokenRequest API; `spec` is merged into the request.
async fn token(client: &Client, namespace: &str, account: &str, spec: Value) -> String {
    let mut request = json!({ "spec": { "expirationSeconds": 3600 } });
    merge_json(&mut request["spec"], spec);
    let request: TokenRequest = serde_json::from_value(request).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .expect("a TokenRequest returns a status")
        .token
}

/// Waits until the apiserver's authenticator, which reads bound objects from a cache, rejects
/// `token`.
async fn wait_until_rejected(client: &Client, token: &str) {
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review: TokenReview =
        serde_json::from_value(json!({ "spec": { "token": token } })).unwrap();
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let reviewed = reviews
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        if reviewed.status.and_then(|status| status.authenticated) != Some(true) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the apiserver kept accepting a token whose bound object was deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until RBAC, which reads roles from a cache, lets `account` update AppArtifacts.
async fn wait_until_allowed(client: &Client, namespace: &str, account: &str) {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let review: SubjectAccessReview = serde_json::from_value(json!({ "spec": {
        "user": format!("system:serviceaccount:{namespace}:{account}"),
        "resourceAttributes": {
            "namespace": namespace, "verb": "update",
            "group": "artifacts.cameleer.io", "resource": "appartifacts",
        },
    } }))
    .unwrap();
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let reviewed = reviews
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        if reviewed.status.is_some_and(|status| status.allowed) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the RoleBinding of {namespace}/{account} did not take effect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn hostile_uploads_refused() {
    let world = UploadWorld::start().await;
    let before = world.snapshot().await;

    let mut tally = Tally::new("uploads");
    for row in upload_rows() {
        let message: Vec<String> = row.message.iter().map(|text| world.expand(text)).collect();
        let result = world.send(&row).await.and_then(|response| {
            let observed = check_refusal(&response, row.status, row.reason, &message)?;
            let tokens = world.tokens.values();
            let leaked = tokens
                .into_iter()
                .find(|token| response_leaks(&response, token));
            ensure(leaked.is_none(), || {
                "the response contains a token".to_owned()
            })?;
            Ok(observed)
        });
        tally.record(row.name, result);
    }
    let after = world.snapshot().await;
    tally.invariant(
        "billing",
        ensure(before == after, || format!("{before} became {after}")),
    );
    tally.finish();
}

// === migrate: hostile filesystem stores ===

/// A store entry that does not belong in the registry. Paths are relative to the store root,
/// and `{t}` stands for the row's tenant.
#[derive(Debug, Clone)]
enum Entry {
    /// A file with this content.
    File(&'static str, &'static [u8]),
    /// A symbolic link at the path to this target; `{outside}` is a directory outside the root
    /// that contains `app/1.0.jar` and `outside.jar`, both valid JARs.
    Link(&'static str, &'static str),
    /// A valid JAR whose permissions deny reading it.
    Unreadable(&'static str),
}

struct LayoutRow {
    name: &'static str,
    entry: Entry,
    /// Path of the entry that the report must list, relative to the root.
    path: &'static str,
    /// `kind` of the rejected path in the JSON report.
    kind: &'static str,
    /// Exit code of the run.
    exit_code: i32,
    /// Fragments of the standard output.
    stdout: Vec<String>,
}

fn layout_row(
    name: &'static str,
    entry: Entry,
    path: &'static str,
    kind: &'static str,
    stdout: &[&str],
) -> LayoutRow {
    LayoutRow {
        name,
        entry,
        path,
        kind,
        exit_code: 0,
        stdout: strings(stdout),
    }
}

fn layout_rows() -> Vec<LayoutRow> {
    let long_version: &'static str =
        Box::leak(format!("{{t}}/app/1{}.jar", "0".repeat(127)).into_boxed_str());
    vec![
        layout_row(
            "app-directory-linked-outside",
            Entry::Link("{t}/app", "{outside}/app"),
            "{t}/app",
            "symlink_outside_root",
            &["outside the store root"],
        ),
        layout_row(
            "tenant-directory-linked-outside",
            Entry::Link("{t}", "{outside}"),
            "{t}",
            "symlink_outside_root",
            &["outside the store root"],
        ),
        layout_row(
            "relative-link-climbing-out",
            Entry::Link("{t}/app/1.0.jar", "../../../outside/outside.jar"),
            "{t}/app/1.0.jar",
            "symlink_outside_root",
            &["outside the store root"],
        ),
        layout_row(
            "link-to-system-file",
            Entry::Link("{t}/app/1.0.jar", "/etc/hostname"),
            "{t}/app/1.0.jar",
            "symlink_outside_root",
            &["/etc/hostname", "outside the store root"],
        ),
        layout_row(
            "encoded-traversal-name",
            Entry::File("{t}/app/%2e%2e%2f1.0.jar", b"PK\x03\x04x"),
            "{t}/app/%2e%2e%2f1.0.jar",
            "invalid_coordinates",
            &["%2e%2e%2f1.0"],
        ),
        layout_row(
            "newline-in-name",
            Entry::File("{t}/app/1.0\nfake.jar", b"PK\x03\x04x"),
            "{t}/app/1.0\nfake.jar",
            "invalid_coordinates",
            &["app/1.0\\nfake.jar: invalid version \"1.0\\nfake\""],
        ),
        layout_row(
            "version-of-128-characters",
            Entry::File(long_version, b"PK\x03\x04x"),
            long_version,
            "invalid_coordinates",
            &["at most 127 bytes"],
        ),
        layout_row(
            "tenant-with-colon",
            Entry::File("{t}:v1/app/1.0.jar", b"PK\x03\x04x"),
            "{t}:v1/app/1.0.jar",
            "invalid_coordinates",
            &["OCI repository path component"],
        ),
        // An unreadable version file, or one that is no JAR, is a version that was not migrated:
        // a failure.
        LayoutRow {
            exit_code: 1,
            ..layout_row(
                "unreadable-jar",
                Entry::Unreadable("{t}/app/1.0.jar"),
                "{t}/app/1.0.jar",
                "unreadable",
                &["unreadable: Permission denied"],
            )
        },
        LayoutRow {
            exit_code: 1,
            ..layout_row(
                "html-named-jar",
                Entry::File("{t}/app/1.0.jar", b"<html>login</html>"),
                "{t}/app/1.0.jar",
                "not_zip",
                &[
                    "found 3c 68 74 6d",
                    "replace the file with the application's JAR",
                ],
            )
        },
        LayoutRow {
            exit_code: 1,
            ..layout_row(
                "empty-jar",
                Entry::File("{t}/app/1.0.jar", b""),
                "{t}/app/1.0.jar",
                "not_zip",
                &["found empty content"],
            )
        },
    ]
}

/// UID and GID of `nobody`, which the migration runs as: root reads every file whatever its
/// permissions, so only an unprivileged run can meet an unreadable one.
const NOBODY: u32 = 65534;

/// The binary and the registry's login and CA, copied where `nobody` can read them.
struct Migrator {
    dir: tempfile::TempDir,
    options: Vec<String>,
}

impl Migrator {
    fn new(env: &TestEnv) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(BINARY, path.join("artifact-operator")).unwrap();
        std::fs::copy(env.ca_file(), path.join("ca.pem")).unwrap();
        let credentials = path.join("registry.credentials");
        std::fs::write(
            &credentials,
            format!(
                "{}:{}\n",
                env.var("TESTENV_DISTRIBUTION_USERNAME"),
                env.var("TESTENV_DISTRIBUTION_PASSWORD")
            ),
        )
        .unwrap();
        // migrate requires a credentials file that only its owner may read.
        std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&credentials, Some(NOBODY), Some(NOBODY)).unwrap();
        let options = vec![
            "--registry".to_owned(),
            format!("https://{}", env.var("TESTENV_DISTRIBUTION_HOST")),
            "--credentials-file".to_owned(),
            credentials.display().to_string(),
            "--ca".to_owned(),
            path.join("ca.pem").display().to_string(),
        ];
        Self { dir, options }
    }

    /// Builds `migrate --from ROOT ... --report REPORT`, run as `nobody` by `setpriv`.
    fn command(&self, root: &Path, report: &Path) -> Command {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg(self.dir.path().join("artifact-operator"))
            .arg("migrate")
            .arg("--from")
            .arg(root)
            .args(&self.options)
            .arg("--report")
            .arg(report)
            .env_remove("KUBECONFIG");
        command
    }
}

/// Builds the row's store under `dir/store`, next to `dir/outside`, and returns the root.
fn build_store(dir: &Path, tenant: &str, entry: &Entry) -> PathBuf {
    let root = dir.join("store");
    let outside = dir.join("outside");
    std::fs::create_dir_all(outside.join("app")).unwrap();
    std::fs::write(outside.join("app/1.0.jar"), jar_bytes(100, 7)).unwrap();
    std::fs::write(outside.join("outside.jar"), jar_bytes(100, 8)).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    let expand = |text: &str| {
        text.replace("{t}", tenant)
            .replace("{outside}", &outside.display().to_string())
    };
    let create_parent = |path: &Path| std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    match entry {
        Entry::File(path, content) => {
            let path = root.join(expand(path));
            create_parent(&path);
            std::fs::write(path, content).unwrap();
        }
        Entry::Link(path, target) => {
            let path = root.join(expand(path));
            create_parent(&path);
            symlink(expand(target), path).unwrap();
        }
        Entry::Unreadable(path) => {
            let path = root.join(expand(path));
            create_parent(&path);
            std::fs::write(&path, jar_bytes(100, 9)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
    }
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_store_layouts_reported_and_not_pushed() {
    let env = TestEnv::load();
    let migrator = Migrator::new(&env);
    let mut tally = Tally::new("migrate");
    for row in layout_rows() {
        tally.record(row.name, layout_case(&env, &migrator, &row).await);
    }
    tally.finish();
}

async fn layout_case(env: &TestEnv, migrator: &Migrator, row: &LayoutRow) -> RowResult {
    let dir = tempfile::tempdir().unwrap();
    // `nobody` reads the store and writes the report here.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let tenant = unique_name("hostile-mig");
    let root = build_store(dir.path(), &tenant, &row.entry);
    let report_path = dir.path().join("report.json");
    let output = migrator
        .command(&root, &report_path)
        .output()
        .expect("setpriv must start the binary");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let describe = || format!("exit {}\n{stdout}\n{stderr}", output.status);

    ensure(output.status.code() == Some(row.exit_code), || {
        format!("exit code is not {}: {}", row.exit_code, describe())
    })?;
    let report: Value = std::fs::read(&report_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| format!("no JSON report: {}", describe()))?;
    let path = root.join(row.path.replace("{t}", &tenant));
    let listed = report["rejectedPaths"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|rejected| rejected["path"] == path.display().to_string());
    let kind = listed.map(|rejected| rejected["kind"].clone());
    ensure(kind == Some(json!(row.kind)), || {
        format!(
            "{} is not rejected as {}: {}",
            path.display(),
            row.kind,
            report["rejectedPaths"]
        )
    })?;
    contains_all("the summary", &stdout, &row.stdout)?;
    ensure(report["counts"]["copied"] == 0, || {
        format!("something was copied: {}", report["counts"])
    })?;
    let pushed = env
        .distribution_client()
        .fetch_jar(&ArtifactCoordinates::new(&tenant, "app", "1.0").unwrap())
        .await;
    ensure(
        pushed.as_ref().is_err_and(|error| error.is_not_found()),
        || format!("the registry has {tenant}/app:v1.0"),
    )?;
    let line = stdout.lines().find(|line| line.contains(&tenant));
    Ok(format!(
        "exit {}, {}",
        output.status,
        line.unwrap_or("(no line names the path)")
    ))
}
