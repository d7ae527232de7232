//! The webhook's TLS certificates against the real apiserver: each test keeps its certificate
//! Secret in a namespace of its own, serves a small router with `serve_tls` on 127.0.0.1, and
//! connects with clients that trust only the published CA bundle. MutatingWebhookConfigurations
//! get unique names and select only objects with a label unique to the test.

mod support;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use artifact_operator::webhook::{
    certs::{self, CertHandle, CertSettings, ca_bundle, material::ServingIssuer},
    tls_server::serve_tls,
};
use axum::{Json, Router, extract::State, routing::get, routing::post};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    core::v1::{ConfigMap, Secret},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use support::{TestEnv, create_namespace, unique_name};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, oneshot},
};
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

// === helpers ===

async fn client_and_namespace(prefix: &str) -> (Client, String) {
    let env = TestEnv::load();
    let client = env.kube_client().await;
    let namespace = create_namespace(&client, prefix).await;
    (client, namespace)
}

/// Settings for 127.0.0.1 whose timer never fires during a test, so only watch events and
/// explicit checks change the certificates.
fn settings(namespace: &str) -> CertSettings {
    let mut settings = CertSettings::new(namespace);
    settings.ip_addresses = vec!["127.0.0.1".parse().unwrap()];
    settings.check_interval = HOUR;
    settings
}

fn never() -> impl Future<Output = ()> + Send + 'static {
    std::future::pending()
}

/// Polls `condition` every 200 ms until it returns true, or panics after [`WAIT`].
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A `serve_tls` server on 127.0.0.1 that stops when dropped.
struct Server {
    address: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn serve(router: Router, certs: &CertHandle) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let certs = certs.clone();
    tokio::spawn(async move {
        serve_tls(listener, router, &certs, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Server {
        address,
        _stop: stop,
    }
}

fn hello_router() -> Router {
    Router::new().route("/hello", get(|| async { "hello" }))
}

fn certificates(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Opens an HTTP/1.1 connection over TLS that trusts only the CAs in `bundle_pem`, and returns
/// it with the certificate the server presented.
async fn connect(
    address: SocketAddr,
    bundle_pem: &str,
) -> Result<(SendRequest<Empty<Bytes>>, CertificateDer<'static>), std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates(bundle_pem) {
        roots.add(certificate).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    let tcp = TcpStream::connect(address).await?;
    let server_name = ServerName::IpAddress(address.ip().into());
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok((sender, presented))
}

async fn get_text(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> (u16, String) {
    let request = hyper::Request::get(path)
        .header("host", "127.0.0.1")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn read_secret(client: &Client, namespace: &str) -> Secret {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .get(certs::DEFAULT_SECRET_NAME)
        .await
        .unwrap()
}

/// Deletes a MutatingWebhookConfiguration when dropped, also when the test panics, from a
/// thread of its own because the test's runtime may be shutting down.
struct ConfigurationGuard {
    name: String,
}

impl Drop for ConfigurationGuard {
    fn drop(&mut self) {
        let name = self.name.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = TestEnv::load().kube_client().await;
                let _ = Api::<MutatingWebhookConfiguration>::all(client)
                    .delete(&name, &DeleteParams::default())
                    .await;
            });
        })
        .join()
        .unwrap();
    }
}

/// Creates a configuration whose only webhook calls `url` for ConfigMaps created in
/// `namespace` with the label `selector_label=true`, with an empty caBundle.
async fn create_configuration(
    client: &Client,
    name: &str,
    namespace: &str,
    selector_label: &str,
    url: &str,
    failure_policy: &str,
) -> ConfigurationGuard {
    let configuration: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": { "name": name },
        "webhooks": [{
            "name": "configmaps.certs-test.artifacts.cameleer.io",
            "clientConfig": { "url": url },
            "rules": [{
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["configmaps"],
            }],
            "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": namespace } },
            "objectSelector": { "matchLabels": { selector_label: "true" } },
            "failurePolicy": failure_policy,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }],
    }))
    .unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &configuration)
        .await
        .unwrap();
    ConfigurationGuard {
        name: name.to_owned(),
    }
}

/// Returns the caBundle of the configuration's first webhook as text. It is empty when unset
/// or when the configuration does not exist.
async fn published_bundle(client: &Client, name: &str) -> String {
    let configuration = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt(name)
        .await
        .unwrap();
    configuration
        .and_then(|configuration| configuration.webhooks)
        .and_then(|webhooks| webhooks.into_iter().next())
        .and_then(|webhook| webhook.client_config.ca_bundle)
        .map(|bundle| String::from_utf8(bundle.0).unwrap())
        .unwrap_or_default()
}

fn certificate_count(pem: &str) -> usize {
    certificates(pem).len()
}

// === tests ===

#[tokio::test]
async fn secret_created_once_and_reused() {
    let (client, namespace) = client_and_namespace("certs-reuse").await;
    let settings = settings(&namespace);

    let first = certs::start(client.clone(), settings.clone(), never())
        .await
        .unwrap();
    let created = read_secret(&client, &namespace).await;
    let second = certs::start(client.clone(), settings, never())
        .await
        .unwrap();
    let after = read_secret(&client, &namespace).await;

    assert_eq!(created.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(
        after.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(second.serving_cert_der(), first.serving_cert_der());
    assert_eq!(second.ca_bundle_pem(), first.ca_bundle_pem());
    assert!(first.is_loaded());
}

#[tokio::test]
async fn concurrent_starts_share_one_secret() {
    let (client, namespace) = client_and_namespace("certs-race").await;
    let settings = settings(&namespace);

    let (first, second) = tokio::join!(
        certs::start(client.clone(), settings.clone(), never()),
        certs::start(client.clone(), settings.clone(), never()),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    let stored = certs::check(&client, &settings, Timestamp::now())
        .await
        .unwrap();

    assert_eq!(first.serving_cert_der(), second.serving_cert_der());
    assert_eq!(
        first.serving_cert_der(),
        Some(stored.serving.der().to_vec())
    );
}

#[tokio::test]
async fn client_trusting_bundle_reaches_router() {
    let (client, namespace) = client_and_namespace("certs-serve").await;
    let handle = certs::start(client, settings(&namespace), never())
        .await
        .unwrap();
    let server = serve(hello_router(), &handle).await;

    let trusted = reqwest::Certificate::from_pem_bundle(handle.ca_bundle_pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only(trusted)
        .no_proxy()
        .build()
        .unwrap();
    let response = http
        .get(format!("https://{}/hello", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.unwrap(), "hello");

    // A client that trusts another CA must fail the handshake.
    let other = certs::material::StoredCerts::generate(
        &settings(&namespace).subject_alt_names(),
        YEAR,
        HOUR,
        Timestamp::now(),
    )
    .unwrap();
    assert!(
        connect(server.address, &other.ca_bundle_pem())
            .await
            .is_err()
    );
}

/// Router state for a request that stays in flight until the test releases it.
#[derive(Default)]
struct SlowRequest {
    started: Notify,
    release: Notify,
}

#[tokio::test]
async fn renewal_reaches_new_connections_only() {
    let (client, namespace) = client_and_namespace("certs-renew").await;
    let mut settings = settings(&namespace);
    settings.serving_validity = Duration::from_secs(10);
    settings.serving_renew_before = Duration::from_secs(5);
    settings.check_interval = Duration::from_secs(1);
    let handle = certs::start(client, settings, never()).await.unwrap();

    let slow = Arc::new(SlowRequest::default());
    let router = Router::new()
        .route(
            "/slow",
            get(|State(slow): State<Arc<SlowRequest>>| async move {
                slow.started.notify_one();
                slow.release.notified().await;
                "finished"
            }),
        )
        .with_state(slow.clone())
        .merge(hello_router());
    let server = serve(router, &handle).await;
    let bundle = handle.ca_bundle_pem();

    let (mut old_connection, old_certificate) = connect(server.address, &bundle).await.unwrap();
    let in_flight = tokio::spawn(async move { get_text(&mut old_connection, "/slow").await });
    slow.started.notified().await;

    wait_until("a renewed serving certificate", || {
        let handle = handle.clone();
        let old = Some(old_certificate.to_vec());
        async move { handle.serving_cert_der() != old }
    })
    .await;
    let (mut new_connection, new_certificate) = connect(server.address, &bundle).await.unwrap();
    assert_ne!(new_certificate, old_certificate);
    assert_eq!(
        get_text(&mut new_connection, "/hello").await,
        (200, "hello".to_owned())
    );

    slow.release.notify_one();
    assert_eq!(in_flight.await.unwrap(), (200, "finished".to_owned()));
}

#[tokio::test]
async fn ca_rollover_trusts_old_and_new_bundle() {
    let (client, namespace) = client_and_namespace("certs-rollover").await;
    let configuration = unique_name("certs-rollover");
    let mut settings = settings(&namespace);
    settings.webhook_configuration = Some(configuration.clone());
    let _guard = create_configuration(
        &client,
        &configuration,
        &namespace,
        &unique_name("certs-rollover-unused"),
        "https://127.0.0.1:9/unused",
        "Ignore",
    )
    .await;
    let handle = certs::start(client.clone(), settings.clone(), never())
        .await
        .unwrap();
    let server = serve(hello_router(), &handle).await;
    let old_bundle = handle.ca_bundle_pem();
    assert_eq!(published_bundle(&client, &configuration).await, old_bundle);

    // Step one: a CA 10 years long, due 6 years before expiry, makes the 5-year CA due now.
    let mut rollover = settings.clone();
    rollover.ca_validity = 10 * YEAR;
    rollover.ca_renew_before = 6 * YEAR;
    rollover.bundle_propagation = HOUR;
    let rolled = certs::check(&client, &rollover, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(rolled.serving_issuer, ServingIssuer::Previous);
    let new_ca_pem = rolled.ca.pem().to_owned();
    wait_until(
        "the two-CA bundle in the handle and the configuration",
        || {
            let (client, handle, configuration) =
                (client.clone(), handle.clone(), configuration.clone());
            async move {
                certificate_count(&handle.ca_bundle_pem()) == 2
                    && published_bundle(&client, &configuration).await == handle.ca_bundle_pem()
            }
        },
    )
    .await;
    let new_bundle = handle.ca_bundle_pem();
    let published = published_bundle(&client, &configuration).await;
    assert!(
        published.contains(&new_ca_pem),
        "new CA missing from caBundle"
    );
    assert!(
        published.contains(old_bundle.as_str()),
        "old CA missing from caBundle"
    );

    let (mut old_client, _) = connect(server.address, &old_bundle).await.unwrap();
    assert_eq!(get_text(&mut old_client, "/hello").await.0, 200);
    let (mut new_client, _) = connect(server.address, &new_bundle).await.unwrap();
    assert_eq!(get_text(&mut new_client, "/hello").await.0, 200);

    // Step two: once the bundle has propagated, the serving certificate moves to the new CA.
    rollover.bundle_propagation = Duration::ZERO;
    let moved = certs::check(&client, &rollover, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(moved.serving_issuer, ServingIssuer::Current);
    wait_until("the serving certificate of the new CA", || {
        let handle = handle.clone();
        let expected = Some(moved.serving.der().to_vec());
        async move { handle.serving_cert_der() == expected }
    })
    .await;
    let (mut new_ca_only, _) = connect(server.address, &new_ca_pem).await.unwrap();
    assert_eq!(get_text(&mut new_ca_only, "/hello").await.0, 200);
    let (mut new_client, _) = connect(server.address, &new_bundle).await.unwrap();
    assert_eq!(get_text(&mut new_client, "/hello").await.0, 200);
    assert_eq!(published_bundle(&client, &configuration).await, new_bundle);
}

#[tokio::test]
async fn recreated_configuration_is_repatched() {
    let (client, namespace) = client_and_namespace("certs-repatch").await;
    let configuration = unique_name("certs-repatch");
    let mut settings = settings(&namespace);
    settings.webhook_configuration = Some(configuration.clone());
    let selector_label = unique_name("certs-repatch-unused");

    // The configuration does not exist yet when the certificates start.
    let handle = certs::start(client.clone(), settings, never())
        .await
        .unwrap();
    let bundle = handle.ca_bundle_pem();
    let create = || {
        create_configuration(
            &client,
            &configuration,
            &namespace,
            &selector_label,
            "https://127.0.0.1:9/unused",
            "Ignore",
        )
    };

    let guard = create().await;
    wait_until("caBundle on the new configuration", || {
        let (client, configuration, bundle) =
            (client.clone(), configuration.clone(), bundle.clone());
        async move { published_bundle(&client, &configuration).await == bundle }
    })
    .await;

    drop(guard);
    wait_until("the configuration to be deleted", || {
        let (client, configuration) = (client.clone(), configuration.clone());
        async move { published_bundle(&client, &configuration).await.is_empty() }
    })
    .await;
    let _guard = create().await;
    wait_until("caBundle on the recreated configuration", || {
        let (client, configuration, bundle) =
            (client.clone(), configuration.clone(), bundle.clone());
        async move { published_bundle(&client, &configuration).await == bundle }
    })
    .await;
}

#[tokio::test]
async fn stale_bundle_patch_conflicts() {
    let (client, namespace) = client_and_namespace("certs-conflict").await;
    let name = unique_name("certs-conflict");
    let _guard = create_configuration(
        &client,
        &name,
        &namespace,
        &unique_name("certs-conflict-unused"),
        "https://127.0.0.1:9/unused",
        "Ignore",
    )
    .await;
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let stale = api.get(&name).await.unwrap();
    let label = json!({ "metadata": { "labels": { "changed": "true" } } });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();

    let (patch, _) = ca_bundle::ca_bundle_patch(&stale, b"PEM").unwrap();
    let error = api
        .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(status) if status.code == 409),
        "{error}"
    );
    assert_eq!(published_bundle(&client, &name).await, "");
}

const MUTATED_ANNOTATION: &str = "certs-test.artifacts.cameleer.io/mutated";

/// Allows every object and adds [`MUTATED_ANNOTATION`].
async fn mutate(Json(review): Json<Value>) -> Json<Value> {
    let uid = review["request"]["uid"].clone();
    let patch = json!([{
        "op": "add",
        "path": "/metadata/annotations",
        "value": { MUTATED_ANNOTATION: "true" },
    }]);
    let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
    Json(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": { "uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch },
    }))
}

#[tokio::test]
async fn apiserver_calls_webhook_over_tls() {
    let (client, namespace) = client_and_namespace("certs-e2e").await;
    let configuration = unique_name("certs-e2e");
    let mut settings = settings(&namespace);
    settings.webhook_configuration = Some(configuration.clone());
    let handle = certs::start(client.clone(), settings, never())
        .await
        .unwrap();
    let server = serve(Router::new().route("/mutate", post(mutate)), &handle).await;
    let selector_label = unique_name("certs-e2e");
    let _guard = create_configuration(
        &client,
        &configuration,
        &namespace,
        &selector_label,
        &format!("https://{}/mutate", server.address),
        "Fail",
    )
    .await;
    let bundle = handle.ca_bundle_pem();
    wait_until("caBundle on the configuration", || {
        let (client, configuration, bundle) =
            (client.clone(), configuration.clone(), bundle.clone());
        async move { published_bundle(&client, &configuration).await == bundle }
    })
    .await;

    // The apiserver reads webhook configurations from a cache, so the first creates may still
    // see the empty caBundle and fail the TLS handshake (failurePolicy Fail rejects them).
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "mutated", "labels": { selector_label.as_str(): "true" } },
        "data": { "key": "value" },
    }))
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let created = loop {
        match config_maps
            .create(&PostParams::default(), &config_map)
            .await
        {
            Ok(created) => break created,
            Err(error) => assert!(
                tokio::time::Instant::now() < deadline,
                "the webhook never admitted the ConfigMap; last error: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let annotations = created.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get(MUTATED_ANNOTATION).map(String::as_str),
        Some("true")
    );
}
