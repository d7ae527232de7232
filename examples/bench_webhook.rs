//! Serves the pod webhook in-process, for `bench/run.sh` to load with `ab`, next to a peer: the
//! same TLS server whose handler only parses the admission review and allows the pod.
//!
//! The set-up matches `artifact-operator run`: `--artifacts` Ready AppArtifacts (all pointing at
//! one small pushed JAR) in a tenant namespace, reflector caches of AppArtifacts in all
//! namespaces and of namespaces, a signing key ring and a serving certificate in Secrets, and
//! JSON logs on stderr. Both servers are checked once: ours must return a patch for the review
//! and the peer a bare "allowed". Then their URLs and the review's path are written to
//! `--output` as shell assignments, and the process serves until SIGTERM, then deletes its
//! namespace.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/support/stored_artifact.rs"]
mod stored_artifact;

#[path = "../bench/support.rs"]
mod bench_support;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::ensure;
use artifact_operator::{
    gateway::{
        keys::{self, KeySettings},
        server as gateway,
    },
    telemetry::{self, LogFormat, Metrics},
    webhook::{
        ARTIFACTS_ANNOTATION, INJECT_LABEL,
        admission::{self, InjectionSettings, MUTATE_PODS_PATH, WebhookState},
        certs::{self, CertSettings},
        patch::LoaderTemplate,
        tls_server,
    },
};
use axum::{Json, Router, routing::post};
use bench_support::TenantNamespace;
use clap::Parser;
use futures::StreamExt as _;
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview},
};
use serde_json::{Value, json};
use stored_artifact::StoredArtifact;
use support::{TestEnv, install_crds};

/// AppArtifacts created at once while filling the cache.
const CREATE_CONCURRENCY: usize = 16;

/// Serves the pod webhook with `--artifacts` AppArtifacts in its cache.
#[derive(Debug, Parser)]
struct Args {
    /// Number of Ready AppArtifacts to create.
    #[arg(long, default_value_t = 1000)]
    artifacts: usize,
    /// File to write the URLs into, as `KEY='value'` lines.
    #[arg(long)]
    output: PathBuf,
    /// File to write the admission review into, the body `ab` posts.
    #[arg(long)]
    review: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.artifacts > 0, "--artifacts must be at least 1");
    telemetry::init(LogFormat::Json);
    let env = TestEnv::load();
    let client = env.kube_client().await;
    install_crds(&client).await;
    let tenant = TenantNamespace::create(&env, &client, "bench-wh").await;

    let started = Instant::now();
    create_artifacts(&env, &client, &tenant, args.artifacts).await;
    eprintln!(
        "created {} Ready AppArtifacts in {:.1} s",
        args.artifacts,
        started.elapsed().as_secs_f64()
    );

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop_signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let mut key_settings = KeySettings::new(tenant.namespace.clone());
    key_settings.secret_name = "signing-keys".to_owned();
    let keys = keys::start(client.clone(), key_settings, stop_signal()).await?;
    let artifacts = gateway::artifact_cache(client.clone(), None, stop_signal()).await;
    ensure!(
        artifacts.state().len() >= args.artifacts,
        "the AppArtifact cache holds {} objects, expected at least {}",
        artifacts.state().len(),
        args.artifacts
    );
    let namespaces = admission::namespace_cache(client.clone(), stop_signal()).await;

    let mut cert_settings = CertSettings::new(tenant.namespace.clone());
    cert_settings.dns_names = Vec::new();
    cert_settings.ip_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let certs = certs::start(client.clone(), cert_settings, stop_signal()).await?;
    let state = Arc::new(WebhookState {
        client: client.clone(),
        artifacts,
        namespaces,
        keys,
        settings: InjectionSettings {
            gateway_url: "http://artifact-operator-gateway.artifact-operator.svc:8080".to_owned(),
            url_ttl: Duration::from_secs(24 * 3600),
            loader: LoaderTemplate {
                image: "registry.test/artifact-operator:bench".to_owned(),
                mount_path: "/artifacts".to_owned(),
            },
        },
        metrics: Arc::new(Metrics::default()),
    });

    let mut servers = Vec::new();
    let mut urls = Vec::new();
    let routers = [
        admission::router(state),
        Router::new().route(MUTATE_PODS_PATH, post(allow)),
    ];
    for router in routers {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        urls.push(format!(
            "https://{}{MUTATE_PODS_PATH}",
            listener.local_addr()?
        ));
        let (certs, shutdown) = (certs.clone(), stop_signal());
        servers.push(tokio::spawn(async move {
            tls_server::serve_tls(listener, router, &certs, shutdown).await
        }));
    }

    // The middle artifact, so the lookup is not the first or last one created.
    let name = format!("app-{:05}", args.artifacts / 2);
    let review = admission_review(&tenant.namespace, &name);
    let body = serde_json::to_vec(&review)?;
    std::fs::write(&args.review, &body)?;
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(
            certs.ca_bundle_pem().as_bytes(),
        )?])
        .no_proxy()
        .build()?;
    let ours = post_review(&http, &urls[0], &body).await?;
    ensure!(
        ours["allowed"] == true && ours["patch"].is_string(),
        "the webhook did not inject {name}: {ours}"
    );
    let peer = post_review(&http, &urls[1], &body).await?;
    ensure!(
        peer["allowed"] == true && peer.get("patch").is_none(),
        "the peer did not allow the pod: {peer}"
    );

    bench_support::write_env_file(
        &args.output,
        &[
            ("WEBHOOK_URL", urls[0].clone()),
            ("PEER_URL", urls[1].clone()),
            ("REVIEW_BYTES", body.len().to_string()),
        ],
    )?;

    bench_support::wait_for_shutdown().await;
    let _ = stop.send(true);
    for server in servers {
        let _ = server.await;
    }
    tenant.delete(&client).await;
    Ok(())
}

/// Creates `count` Ready AppArtifacts, `app-00000` onwards, all pointing at one pushed JAR.
async fn create_artifacts(
    env: &TestEnv,
    client: &kube::Client,
    tenant: &TenantNamespace,
    count: usize,
) {
    // A local file header signature and numbered bytes: the webhook never reads the content.
    let mut jar = b"PK\x03\x04".to_vec();
    jar.extend((0..64 * 1024).map(|i| (i % 251) as u8));
    let pushed = stored_artifact::push(env, &tenant.tenant, "app", "1", &jar).await;
    futures::stream::iter(0..count)
        .map(|index| {
            let pushed = &pushed;
            async move {
                let name = format!("app-{index:05}");
                StoredArtifact {
                    name: &name,
                    tenant: &tenant.tenant,
                    app: &name,
                    version: "1",
                    pushed: Some(pushed),
                    ready: Some(("True", "ArtifactPushed")),
                }
                .create(client, &tenant.namespace)
                .await;
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

/// Handler of the peer: parses the review and allows the pod, with no other work.
async fn allow(
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: Result<AdmissionRequest<DynamicObject>, _> = review.try_into();
    let response = match request {
        Ok(request) => AdmissionResponse::from(&request),
        Err(error) => AdmissionResponse::invalid(error),
    };
    Json(response.into_review())
}

/// Posts `body` and returns the review's `response` as JSON, so that both servers' responses
/// are read the same way whatever types they use.
async fn post_review(http: &reqwest::Client, url: &str, body: &[u8]) -> anyhow::Result<Value> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await?
        .error_for_status()?;
    let mut review: Value = response.json().await?;
    match review.get_mut("response") {
        Some(response) => Ok(response.take()),
        None => anyhow::bail!("the admission review has no response: {review}"),
    }
}

/// An admission review as the API server sends it when the ReplicaSet controller creates a pod of
/// a Deployment that opts in to the AppArtifact `artifact`: the pod has a loader init container,
/// an app container with probes and resources, and the service account token volume.
fn admission_review(namespace: &str, artifact: &str) -> Value {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "shop-7d9c6b5f4-",
            "namespace": namespace,
            "labels": {
                "app": "shop",
                "pod-template-hash": "7d9c6b5f4",
                INJECT_LABEL: "true",
            },
            "annotations": { ARTIFACTS_ANNOTATION: artifact },
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "shop-7d9c6b5f4",
                "uid": "5f0a3c1e-8d2b-4c6e-9a7f-1b3d5e7f9a0c",
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "initContainers": [{
                "name": "loader",
                "image": "registry.test/curl:8.11.1",
                "command": ["sh", "-c", "curl -fsSL \"$ARTIFACT_URL\" -o /app/app.jar"],
                "resources": { "limits": { "cpu": "200m", "memory": "64Mi" } },
                "volumeMounts": [
                    { "name": "app", "mountPath": "/app" },
                    kube_api_access_mount(),
                ],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }],
            "containers": [{
                "name": "app",
                "image": "registry.test/temurin:21-jre",
                "args": ["java", "-XX:MaxRAMPercentage=75", "-jar", "/app/app.jar"],
                "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }],
                "env": [
                    { "name": "SPRING_PROFILES_ACTIVE", "value": "production" },
                    { "name": "JAVA_TOOL_OPTIONS", "value": "-XX:+ExitOnOutOfMemoryError" },
                ],
                "resources": {
                    "requests": { "cpu": "500m", "memory": "768Mi" },
                    "limits": { "memory": "768Mi" },
                },
                "readinessProbe": {
                    "httpGet": { "path": "/actuator/health/readiness", "port": "http", "scheme": "HTTP" },
                    "periodSeconds": 5, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3,
                },
                "livenessProbe": {
                    "httpGet": { "path": "/actuator/health/liveness", "port": "http", "scheme": "HTTP" },
                    "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3,
                },
                "volumeMounts": [
                    { "name": "app", "mountPath": "/app", "readOnly": true },
                    kube_api_access_mount(),
                ],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }],
            "volumes": [
                { "name": "app", "emptyDir": { "sizeLimit": "256Mi" } },
                {
                    "name": "kube-api-access-x7k2p",
                    "projected": {
                        "defaultMode": 420,
                        "sources": [
                            { "serviceAccountToken": { "expirationSeconds": 3607, "path": "token" } },
                            { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
                            { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } },
                        ],
                    },
                },
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": { "runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001 },
            "schedulerName": "default-scheduler",
            "tolerations": [
                { "key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300 },
                { "key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300 },
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    });
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0d7f6a52-3c1b-4e8a-b5d9-2f4c6e8a0b1d",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
            "requestResource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "8a1c3e5f-7b9d-4f2a-8c6e-0d2f4a6c8e1b",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" },
        },
    })
}

fn kube_api_access_mount() -> Value {
    json!({
        "name": "kube-api-access-x7k2p",
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "readOnly": true,
    })
}
