//! Faults injected into real processes: the operator binary killed in the middle of a push, a
//! registry stopped in the middle of a push and of a gateway download, and a kube-apiserver
//! killed while the controllers watch through it.
//!
//! Every test checks the same four promises once the fault is over: no artifact is lost, no
//! digest is wrong, no object is stuck, and the status is accurate. Each one owns the
//! process it breaks (the operator, a registry or an API server); the shared environment's
//! processes are never touched.

mod support;

#[path = "support/apiserver_process.rs"]
mod apiserver_process;
#[path = "support/file_server.rs"]
mod file_server;
#[path = "support/gated_proxy.rs"]
mod gated_proxy;
#[path = "support/operator_process.rs"]
mod operator_process;
#[path = "support/registry_process.rs"]
mod registry_process;
#[path = "support/stored_artifact.rs"]
mod stored_artifact;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use apiserver_process::ApiserverProcess;
use artifact_operator::{
    crd::{AppArtifact, TENANT_LABEL},
    gateway::{
        keys::{self, KeySettings},
        signing::{self, UrlTarget},
    },
    oci::{ArtifactCoordinates, JarMetadata, RegistryClient, RegistryConfig},
};
use file_server::FileServer;
use gated_proxy::GatedProxy;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use operator_process::OperatorProcess;
use registry_process::RegistryProcess;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stored_artifact::StoredArtifact;
use support::{
    TestEnv, create_labeled_namespace, create_namespace, install_crds, sha256_hex, unique_name,
};

/// Upper bound for the operator to bring an AppArtifact to an expected state. A restarted
/// operator first waits for the killed one's Lease to expire (15 s). After an API server
/// outage, kube-runtime's watch backoff delays the relist by up to 30 s per failed attempt,
/// and its jitter can double that.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(240);
/// Upper bound for a transfer to reach the proxy's hold point.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
/// Size of the JAR that the operator is killed in the middle of pushing.
const LARGE_JAR: u64 = 256 * 1024 * 1024;
/// Size of the JARs that a stopped registry cuts off.
const MEDIUM_JAR: u64 = 96 * 1024 * 1024;
/// Flag that lets URL sources reach the test's servers on loopback.
const EXEMPT_LOOPBACK: [&str; 2] = ["--source-exempt-cidr", "127.0.0.1/32"];

/// A tenant namespace and an operator namespace on the shared API server.
struct Scene {
    env: TestEnv,
    client: Client,
    tenant: String,
    namespace: String,
    operator_namespace: String,
}

impl Scene {
    async fn new(prefix: &str) -> Self {
        let env = TestEnv::load();
        let client = env.kube_client().await;
        install_crds(&client).await;
        let tenant = unique_name("t");
        let namespace = create_labeled_namespace(&client, prefix, &[(TENANT_LABEL, &tenant)]).await;
        let operator_namespace = create_namespace(&client, &format!("{prefix}-op")).await;
        Self {
            env,
            client,
            tenant,
            namespace,
            operator_namespace,
        }
    }

    fn artifacts(&self) -> Api<AppArtifact> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Starts the operator binary against `kubeconfig`, watching this scene's namespace.
    fn start_operator(&self, kubeconfig: &Path, extra: &[&str]) -> OperatorProcess {
        let args: Vec<&str> = EXEMPT_LOOPBACK.iter().chain(extra).copied().collect();
        OperatorProcess::start(kubeconfig, &self.operator_namespace, &self.namespace, &args)
    }

    fn coordinates(&self, app: &str, version: &str) -> ArtifactCoordinates {
        ArtifactCoordinates::new(&self.tenant, app, version).unwrap()
    }

    /// Creates an AppArtifact of this scene's tenant in the registry `main`.
    async fn create_artifact(&self, name: &str, version: &str, source: Value, extra: Value) {
        let mut spec = json!({
            "registryRef": { "name": stored_artifact::REGISTRY },
            "tenantId": self.tenant,
            "appId": name,
            "version": version,
            "source": source,
        });
        support::merge_json(&mut spec, extra);
        let artifact: AppArtifact = serde_json::from_value(json!({
            "apiVersion": "artifacts.cameleer.io/v1alpha1",
            "kind": "AppArtifact",
            "metadata": { "name": name },
            "spec": spec,
        }))
        .unwrap();
        self.artifacts()
            .create(&PostParams::default(), &artifact)
            .await
            .unwrap();
    }

    /// Serves `jar` behind a proxy that pauses the download at its middle, and creates the
    /// AppArtifact `name` (version 1.0) that fetches it through the proxy.
    async fn create_held_artifact(&self, name: &str, jar: &GeneratedJar) -> HeldSource {
        let server = FileServer::start().await;
        let path = format!("/{name}.jar");
        server.put(&path, jar.bytes());
        let proxy = GatedProxy::start(server.address(), jar.size / 2).await;
        let source = url_source(&proxy.url(&path));
        self.create_artifact(name, "1.0", source, json!({})).await;
        HeldSource {
            _server: server,
            proxy,
        }
    }

    /// Waits until the AppArtifact's status describes its current generation and satisfies
    /// `check`.
    async fn wait_for(
        &self,
        name: &str,
        expectation: &str,
        operator: &OperatorProcess,
        check: impl Fn(&AppArtifact) -> bool,
    ) -> AppArtifact {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let artifact = self.artifacts().get(name).await.unwrap();
            if is_current(&artifact) && check(&artifact) {
                return artifact;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "AppArtifact {name} never reached: {expectation}; last status: {:#?}\n\
                 operator log:\n{}",
                artifact.status,
                operator.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_ready(&self, name: &str, operator: &OperatorProcess) -> AppArtifact {
        self.wait_for(name, "Ready=True", operator, |artifact| {
            has_condition(artifact, "Ready", "True")
        })
        .await
    }

    async fn wait_gone(&self, name: &str, operator: &OperatorProcess) {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while let Some(artifact) = self.artifacts().get_opt(name).await.unwrap() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "AppArtifact {name} was not deleted; metadata: {:#?}\noperator log:\n{}",
                artifact.metadata,
                operator.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A JAR source whose download pauses half-way until the test releases it.
struct HeldSource {
    _server: FileServer,
    proxy: GatedProxy,
}

/// A valid JAR (a stored ZIP archive with a manifest and random entries) on disk.
struct GeneratedJar {
    _dir: tempfile::TempDir,
    path: PathBuf,
    sha256: String,
    size: u64,
}

impl GeneratedJar {
    /// Writes a JAR of about `size` bytes whose content depends only on `seed`.
    fn new(size: u64, seed: u64) -> Self {
        // Python's zipfile writes the archive; nothing in Rust here does, and tests/env
        // already requires Python 3.
        const SCRIPT: &str = r#"
import random, sys, zipfile
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as jar:
    jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
    entry = written = 0
    while written < size:
        chunk = rng.randbytes(min(16 << 20, size - written))
        jar.writestr(f"data/part-{entry:03}.bin", chunk)
        written += len(chunk)
        entry += 1
"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.jar");
        let status = Command::new("python3")
            .args(["-c", SCRIPT])
            .arg(&path)
            .args([size.to_string(), seed.to_string()])
            .status()
            .expect("python3 must run");
        assert!(status.success(), "generating {} failed", path.display());
        let bytes = std::fs::read(&path).unwrap();
        Self {
            sha256: format!("sha256:{}", sha256_hex(&bytes)),
            size: bytes.len() as u64,
            _dir: dir,
            path,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

fn url_source(url: &str) -> Value {
    json!({ "url": { "url": url } })
}

fn condition<'a>(artifact: &'a AppArtifact, type_: &str) -> Option<&'a Condition> {
    let status = artifact.status.as_ref()?;
    status.conditions.iter().find(|c| c.type_ == type_)
}

fn has_condition(artifact: &AppArtifact, type_: &str, status: &str) -> bool {
    condition(artifact, type_).is_some_and(|c| c.status == status)
}

/// Returns whether the status was written for the object's current generation.
fn is_current(artifact: &AppArtifact) -> bool {
    let observed = artifact.status.as_ref().and_then(|s| s.observed_generation);
    observed.is_some() && observed == artifact.metadata.generation
}

/// Checks that a Ready AppArtifact records `jar` and that no condition contradicts Ready.
fn assert_truthful_ready(artifact: &AppArtifact, sha256: &str, size: u64) {
    let name = artifact.metadata.name.as_deref().unwrap_or_default();
    let status = artifact.status.as_ref().unwrap();
    let stored = status
        .artifact
        .as_ref()
        .expect("a Ready artifact has status.artifact");
    assert_eq!(stored.digest, sha256, "{name}: status.artifact.digest");
    assert_eq!(stored.size, size as i64, "{name}: status.artifact.size");
    assert!(is_current(artifact), "{name}: observedGeneration is stale");
    assert!(
        has_condition(artifact, "ArtifactInStorage", "True"),
        "{name}: {:#?}",
        status.conditions
    );
    for contradiction in ["Reconciling", "Stalled", "FetchFailed"] {
        assert!(
            !has_condition(artifact, contradiction, "True"),
            "{name} is Ready but {contradiction}=True: {:#?}",
            status.conditions
        );
    }
    for condition in &status.conditions {
        if let Some(observed) = condition.observed_generation {
            assert_eq!(
                Some(observed),
                artifact.metadata.generation,
                "{name}: condition {} describes another generation",
                condition.type_
            );
        }
    }
}

/// Waits for `proxy` to hold a transfer, failing with the operator's log after a deadline.
async fn wait_held(proxy: &GatedProxy, operator: &OperatorProcess) {
    if tokio::time::timeout(TRANSFER_TIMEOUT, proxy.wait_held())
        .await
        .is_err()
    {
        panic!(
            "no transfer reached the hold point within {TRANSFER_TIMEOUT:?} ({} bytes \
             forwarded); operator log:\n{}",
            proxy.forwarded(),
            operator.log()
        );
    }
}

/// Total bytes in the shared distribution registry's open upload sessions of one repository.
fn open_upload_bytes(env: &TestEnv, repository: &str) -> u64 {
    let uploads = env
        .path("TESTENV_STATE")
        .join("distribution/data/docker/registry/v2/repositories")
        .join(repository)
        .join("_uploads");
    let Ok(sessions) = std::fs::read_dir(uploads) else {
        return 0;
    };
    sessions
        .filter_map(|session| std::fs::metadata(session.ok()?.path().join("data")).ok())
        .map(|data| data.len())
        .sum()
}

/// The operator binary is killed with SIGKILL while it streams a 256 MiB JAR into the shared
/// distribution registry (half of the JAR sent, a blob upload session open), then started
/// again.
///
/// Must hold afterwards: the AppArtifact is Ready for its current generation with the JAR's
/// sha256 and size, and no condition contradicts Ready. The tag's manifest has that digest as
/// its one layer, and `oras pull` returns the same bytes. Before the restart the status does
/// not claim Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_killed_mid_push_recovers() {
    let scene = Scene::new("fault-kill").await;
    stored_artifact::create_external_registry(&scene.env, &scene.client, &scene.namespace).await;
    let jar = GeneratedJar::new(LARGE_JAR, 1);
    let source = scene.create_held_artifact("large", &jar).await;

    let kubeconfig = scene.env.kubeconfig();
    let mut operator = scene.start_operator(&kubeconfig, &[]);
    wait_held(&source.proxy, &operator).await;
    // The registry has part of the blob in an upload session, so the push is under way.
    let repository = scene.coordinates("large", "1.0").reference().repository;
    let deadline = tokio::time::Instant::now() + TRANSFER_TIMEOUT;
    while open_upload_bytes(&scene.env, &repository) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the registry has no upload session for {repository}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    operator.kill();
    source.proxy.release();

    let interrupted = scene.artifacts().get("large").await.unwrap();
    assert!(
        !has_condition(&interrupted, "Ready", "True"),
        "Ready before the push finished: {:#?}",
        interrupted.status
    );
    assert!(
        interrupted
            .status
            .as_ref()
            .is_none_or(|status| status.artifact.is_none()),
        "status.artifact before the push finished: {:#?}",
        interrupted.status
    );

    let operator = scene.start_operator(&kubeconfig, &[]);
    let ready = scene.wait_ready("large", &operator).await;
    assert_truthful_ready(&ready, &jar.sha256, jar.size);
    let stored = scene
        .env
        .distribution_client()
        .fetch_jar(&scene.coordinates("large", "1.0"))
        .await
        .unwrap();
    assert_eq!(stored.layer.digest.to_string(), jar.sha256);
    assert_eq!(stored.layer.size, jar.size);
    let status = ready.status.as_ref().unwrap().artifact.as_ref().unwrap();
    assert_eq!(stored.manifest_digest.to_string(), status.manifest_digest);
    let host = scene.env.var("TESTENV_DISTRIBUTION_HOST");
    let pulled = scene.env.oras_pull(&format!("{host}/{repository}:v1.0"));
    assert_eq!(format!("sha256:{}", sha256_hex(&pulled)), jar.sha256);
}

/// The registry of an ArtifactRegistry stops while the operator streams a 96 MiB JAR into it,
/// and starts again later.
///
/// Must hold: while it is down, the AppArtifact is Ready=False with reason RegistryUnavailable
/// and a message that names the registry's address, is not Stalled, and records no artifact.
/// After the restart it becomes Ready with the JAR's digest and size, and the registry's tag
/// has that digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_stopped_mid_push_recovers() {
    let scene = Scene::new("fault-reg").await;
    let mut registry = RegistryProcess::start().await;
    stored_artifact::create_registry(
        &scene.client,
        &scene.namespace,
        json!({ "external": { "url": registry.url() } }),
    )
    .await;
    let jar = GeneratedJar::new(MEDIUM_JAR, 2);
    let source = scene.create_held_artifact("medium", &jar).await;

    let operator = scene.start_operator(&scene.env.kubeconfig(), &[]);
    wait_held(&source.proxy, &operator).await;
    registry.stop();
    source.proxy.release();

    let registry_address = registry.url().trim_start_matches("http://").to_owned();
    let waiting = scene
        .wait_for(
            "medium",
            "Ready=False with RegistryUnavailable",
            &operator,
            |artifact| {
                condition(artifact, "Ready").is_some_and(|ready| {
                    ready.status == "False" && ready.reason == "RegistryUnavailable"
                })
            },
        )
        .await;
    let ready = condition(&waiting, "Ready").unwrap();
    assert!(
        ready.message.contains(&registry_address),
        "the message does not name the registry {registry_address}: {}",
        ready.message
    );
    // The upload session's URL, with the registry's state token in its query, stays out.
    assert!(!ready.message.contains("/v2/"), "{}", ready.message);
    assert!(has_condition(&waiting, "Reconciling", "True"));
    assert!(!has_condition(&waiting, "Stalled", "True"));
    assert!(waiting.status.as_ref().unwrap().artifact.is_none());

    registry.resume().await;
    let recovered = scene.wait_ready("medium", &operator).await;
    assert_truthful_ready(&recovered, &jar.sha256, jar.size);
    let client = RegistryClient::new(RegistryConfig::new(&registry.url()).unwrap()).unwrap();
    let stored = client
        .fetch_jar(&scene.coordinates("medium", "1.0"))
        .await
        .unwrap();
    assert_eq!(stored.layer.digest.to_string(), jar.sha256);
    assert_eq!(stored.layer.size, jar.size);
}

/// Signs a gateway URL for the AppArtifact `name` with the operator's key ring.
async fn signed_url(scene: &Scene, gateway: &str, name: &str, digest: &str) -> String {
    let settings = KeySettings::new(scene.operator_namespace.clone());
    let ring = keys::check(&scene.client, &settings, Timestamp::now())
        .await
        .unwrap();
    let target = UrlTarget {
        namespace: &scene.namespace,
        name,
        digest,
    };
    let signature = signing::sign(&ring, &target, signing::DEFAULT_TTL, Timestamp::now());
    signing::signed_url(gateway, &target, &signature)
}

/// Sends a GET and reads the whole body. Returns the body, or the error that ended it.
async fn download(url: &str) -> Result<Vec<u8>, String> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let body = response.bytes().await.map_err(|e| format!("{e:?}"))?;
    Ok(body.to_vec())
}

/// Runs `artifact-operator loader` for `url` into `dir/app.jar` with quick retries, and
/// returns its exit code and standard error.
async fn run_loader(url: &str, sha256: &str, size: u64, dir: &Path) -> (i32, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_artifact-operator"))
        .arg("loader")
        .args(["--url", url, "--digest", sha256])
        .args(["--size", &size.to_string()])
        .arg("--output")
        .arg(dir.join("app.jar"))
        .args(["--max-attempts", "3", "--initial-backoff", "200ms"])
        .args(["--read-timeout", "20s"])
        .arg("--termination-log")
        .arg(dir.join("termination-log"))
        .env_remove("ARTIFACT_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let code = output.status.code().expect("the loader exited on a signal");
    (code, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The registry behind the gateway stops while a 96 MiB JAR streams through a pre-signed URL,
/// once under a plain HTTP client and once under `artifact-operator loader`, and starts again.
///
/// Must hold: the plain client's transfer fails (the body ends short of Content-Length) and
/// never completes with other bytes. The loader exits with a network or server error and
/// leaves no file at its output path. After the restart the same URL serves exactly the JAR,
/// and the loader writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_stopped_mid_download_fails() {
    let scene = Scene::new("fault-gw").await;
    let mut registry = RegistryProcess::start().await;
    stored_artifact::create_registry(
        &scene.client,
        &scene.namespace,
        json!({ "external": { "url": registry.url() } }),
    )
    .await;
    let jar = GeneratedJar::new(MEDIUM_JAR, 3);
    let client = RegistryClient::new(RegistryConfig::new(&registry.url()).unwrap()).unwrap();
    let pushed = client
        .push_jar(
            &scene.coordinates("app", "1.0"),
            tokio::fs::File::open(&jar.path).await.unwrap(),
            None,
            &JarMetadata::new("app-1.0.jar").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(pushed.layer.digest.to_string(), jar.sha256);
    StoredArtifact {
        name: "app",
        tenant: &scene.tenant,
        app: "app",
        version: "1.0",
        pushed: Some(&pushed),
        ready: Some(("True", "ArtifactPushed")),
    }
    .create(&scene.client, &scene.namespace)
    .await;

    let mut operator = scene.start_operator(&scene.env.kubeconfig(), &[]);
    let gateway = operator.listener_address("gateway").await;
    operator.wait_for_line("Operator started").await;
    let gateway_address = gateway.parse().unwrap();
    let url_path = |url: &str| url.split_once(&gateway).unwrap().1.to_owned();
    let direct = signed_url(&scene, &format!("http://{gateway}"), "app", &jar.sha256).await;

    // A plain client, cut off in the middle. The gateway has sent a complete-looking head.
    let proxy = GatedProxy::start(gateway_address, jar.size / 4).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = http
        .get(proxy.url(&url_path(&direct)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.content_length(), Some(jar.size));
    let body = tokio::spawn(response.bytes());
    wait_held(&proxy, &operator).await;
    registry.stop();
    proxy.release();
    match body.await.unwrap() {
        Err(error) => assert!(error.is_body() || error.is_decode(), "{error:?}"),
        Ok(body) => panic!(
            "the transfer completed with {} bytes (sha256:{}) while the registry was stopped",
            body.len(),
            sha256_hex(&body)
        ),
    }

    // The loader, cut off in the middle, then retrying against a stopped registry.
    registry.resume().await;
    let proxy = GatedProxy::start(gateway_address, jar.size / 4).await;
    let output = tempfile::tempdir().unwrap();
    let loader = tokio::spawn({
        let (url, dir) = (proxy.url(&url_path(&direct)), output.path().to_owned());
        let (sha256, size) = (jar.sha256.clone(), jar.size);
        async move { run_loader(&url, &sha256, size, &dir).await }
    });
    wait_held(&proxy, &operator).await;
    registry.stop();
    proxy.release();
    let (code, stderr) = loader.await.unwrap();
    assert!(
        code == 30 || code == 31,
        "the loader must fail with a network or server error, got exit code {code}: {stderr}"
    );
    // The result line comes last, after the log lines of each attempt.
    let result = stderr.lines().last().unwrap_or_default();
    assert!(
        result.starts_with("network:") || result.starts_with("server_error:"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(output.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name != "termination-log")
        .collect();
    assert!(left.is_empty(), "the failed loader left {left:?}");

    registry.resume().await;
    let body = download(&direct)
        .await
        .expect("the URL must serve the JAR again");
    assert_eq!(body.len() as u64, jar.size);
    assert_eq!(format!("sha256:{}", sha256_hex(&body)), jar.sha256);
    let (code, stderr) = run_loader(&direct, &jar.sha256, jar.size, output.path()).await;
    assert_eq!(code, 0, "{stderr}");
    let written = std::fs::read(output.path().join("app.jar")).unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&written)), jar.sha256);
}

/// Waits until a GET of `url` through the gateway returns `expected`, as the gateway's cache of
/// AppArtifacts follows the API server.
async fn wait_for_status(url: &str, expected: StatusCode, operator: &OperatorProcess) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let status = http.get(url).send().await.unwrap().status();
        if status == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway still returns {status} instead of {expected}; operator log:\n{}",
            operator.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn small_jar_digest(label: &str) -> String {
    format!("sha256:{}", sha256_hex(&small_jar(label)))
}

/// Returns a small JAR-like file whose content names `label`.
fn small_jar(label: &str) -> Vec<u8> {
    let mut bytes = b"PK\x03\x04".to_vec();
    bytes.extend_from_slice(format!("fault test {label}").as_bytes());
    bytes
}

/// The operator watches through a kube-apiserver of the test's own, on the shared etcd, that
/// is killed with SIGKILL and started again on the same port. During the outage AppArtifacts
/// are created, changed and deleted through the shared API server.
///
/// Must hold afterwards: every AppArtifact created or changed during the outage is Ready for
/// its current generation with the right digest, and the gateway serves it. The one deleted
/// during the outage is gone, its tag is removed from the registry (which only its finalizer
/// does), and the gateway revokes its URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apiserver_restart_misses_no_change() {
    let scene = Scene::new("fault-api").await;
    stored_artifact::create_external_registry(&scene.env, &scene.client, &scene.namespace).await;
    let mut apiserver = ApiserverProcess::start(&scene.env).await;
    let kubeconfig = apiserver.kubeconfig(&scene.env);
    let server = FileServer::start().await;
    let delete = json!({ "deletionPolicy": "Delete" });
    let url = server.put("/doomed.jar", small_jar("doomed"));
    scene
        .create_artifact("doomed", "1.0", url_source(&url), delete)
        .await;
    scene
        .create_artifact(
            "fixed",
            "1.0",
            url_source(&server.url("/missing.jar")),
            json!({}),
        )
        .await;

    // Leader election would end the process once the Lease cannot be renewed for 15 s. That is
    // a restart, not the watch resumption under test, and a single replica needs no Lease.
    let mut operator = scene.start_operator(&kubeconfig, &["--leader-election", "false"]);
    let gateway = format!("http://{}", operator.listener_address("gateway").await);
    scene.wait_ready("doomed", &operator).await;
    let doomed_url = signed_url(&scene, &gateway, "doomed", &small_jar_digest("doomed")).await;
    wait_for_status(&doomed_url, StatusCode::OK, &operator).await;
    scene
        .wait_for("fixed", "Ready=False", &operator, |artifact| {
            has_condition(artifact, "Ready", "False")
        })
        .await;

    apiserver.kill();
    let created = ["during-a", "during-b"];
    for name in created {
        let url = server.put(&format!("/{name}.jar"), small_jar(name));
        scene
            .create_artifact(name, "1.0", url_source(&url), json!({}))
            .await;
    }
    let fixed_url = server.put("/fixed.jar", small_jar("fixed"));
    let patch = json!({ "spec": { "source": { "url": { "url": fixed_url } } } });
    scene
        .artifacts()
        .patch("fixed", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    scene
        .artifacts()
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    // The operator's watches fail and retry against the dead port for a while.
    tokio::time::sleep(Duration::from_secs(5)).await;
    apiserver.resume().await;

    for name in created.into_iter().chain(["fixed"]) {
        let ready = scene.wait_ready(name, &operator).await;
        let digest = small_jar_digest(name);
        assert_truthful_ready(&ready, &digest, small_jar(name).len() as u64);
        // The gateway's cache of AppArtifacts resumed its watch too.
        let url = signed_url(&scene, &gateway, name, &digest).await;
        wait_for_status(&url, StatusCode::OK, &operator).await;
    }
    let fixed = scene.artifacts().get("fixed").await.unwrap();
    assert_eq!(fixed.metadata.generation, Some(2));
    scene.wait_gone("doomed", &operator).await;
    let removed = scene
        .env
        .distribution_client()
        .fetch_jar(&scene.coordinates("doomed", "1.0"))
        .await
        .unwrap_err();
    assert!(removed.is_not_found(), "{removed}");
    wait_for_status(&doomed_url, StatusCode::GONE, &operator).await;
}
