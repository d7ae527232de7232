//! The gateway against the real apiserver and distribution registry: each test pushes a JAR,
//! records it in an AppArtifact's status, runs a gateway on 127.0.0.1 with its own key ring
//! Secret, and fetches through signed URLs.

mod support;

#[path = "support/fake_registry.rs"]
mod fake_registry;
#[path = "support/stored_artifact.rs"]
mod stored_artifact;

use std::{process::Command, sync::Arc, time::Duration};

use artifact_operator::{
    crd::{AppArtifact, ArtifactRegistry, TENANT_LABEL},
    gateway::{
        keys::{self, KeyRingHandle, KeySettings, ROTATE_ANNOTATION},
        server::{self, GatewayState},
        signing::{self, UrlTarget},
    },
    telemetry::Metrics,
};
use fake_registry::{FakeRegistry, FakeResponse};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use stored_artifact::StoredArtifact;
use support::{TestEnv, create_labeled_namespace, install_crds, sha256_hex, unique_name};
use tokio::sync::oneshot;

const APP: &str = "billing";
const VERSION: &str = "2.0";

/// A namespace with one stored artifact and a gateway serving it.
struct Harness {
    client: Client,
    namespace: String,
    key_settings: KeySettings,
    keys: KeyRingHandle,
    base_url: String,
    jar: Vec<u8>,
    digest: String,
    metrics: Arc<Metrics>,
    _stop: oneshot::Sender<()>,
}

impl Harness {
    /// Pushes `jar` to the shared distribution registry and starts the gateway.
    async fn start(jar: Vec<u8>) -> Self {
        let env = TestEnv::load();
        let client = env.kube_client().await;
        install_crds(&client).await;
        let tenant = unique_name("t");
        let namespace = create_labeled_namespace(&client, "gw", &[(TENANT_LABEL, &tenant)]).await;

        let pushed = stored_artifact::push(&env, &tenant, APP, VERSION, &jar).await;
        let digest = pushed.layer.digest.to_string();
        stored_artifact::create_external_registry(&env, &client, &namespace).await;
        StoredArtifact {
            name: APP,
            tenant: &tenant,
            app: APP,
            version: VERSION,
            pushed: Some(&pushed),
            ready: None,
        }
        .create(&client, &namespace)
        .await;

        let mut key_settings = KeySettings::new(namespace.clone());
        key_settings.secret_name = "signing-keys".to_owned();
        key_settings.check_interval = Duration::from_secs(3600);
        let (stop, stopped) = oneshot::channel::<()>();
        let (stop_keys, keys_stopped) = oneshot::channel::<()>();
        let (stop_cache, cache_stopped) = oneshot::channel::<()>();
        let keys = keys::start(client.clone(), key_settings.clone(), async move {
            let _ = keys_stopped.await;
        })
        .await
        .unwrap();
        let artifacts = server::artifact_cache(client.clone(), Some(&namespace), async move {
            let _ = cache_stopped.await;
        })
        .await;
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
        tokio::spawn(server::serve(listener, server::router(state), async move {
            let _ = stopped.await;
            let _ = stop_keys.send(());
            let _ = stop_cache.send(());
        }));

        Self {
            client,
            namespace,
            key_settings,
            keys,
            base_url,
            jar,
            digest,
            metrics,
            _stop: stop,
        }
    }

    fn target(&self) -> UrlTarget<'_> {
        UrlTarget {
            namespace: &self.namespace,
            name: APP,
            digest: &self.digest,
        }
    }

    /// Signs the harness's artifact URL, valid for `ttl` from `now`.
    fn url_at(&self, ttl: Duration, now: Timestamp) -> String {
        let signature = signing::sign(&self.keys.get(), &self.target(), ttl, now);
        signing::signed_url(&self.base_url, &self.target(), &signature)
    }

    fn url(&self) -> String {
        self.url_at(signing::DEFAULT_TTL, Timestamp::now())
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Returns a JAR-like file with distinct bytes at every offset, so a wrong range shows.
fn numbered_jar(size: usize) -> Vec<u8> {
    let mut jar = b"PK\x03\x04".to_vec();
    jar.extend((0..size - 4).map(|i| (i % 251) as u8));
    jar
}

async fn refusal(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body)
}

#[tokio::test]
async fn signed_url_streams_verified_jar() {
    let harness = Harness::start(numbered_jar(300_000)).await;
    let url = harness.url();

    let response = http().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/java-archive");
    assert_eq!(
        headers["content-length"],
        harness.jar.len().to_string().as_str()
    );
    assert_eq!(headers["etag"], format!("\"{}\"", harness.digest).as_str());
    assert_eq!(headers["accept-ranges"], "bytes");
    let body = response.bytes().await.unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&body)), harness.digest);

    let head = http().head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"],
        harness.jar.len().to_string().as_str()
    );

    let metrics = harness.metrics.encode();
    assert!(
        metrics.contains(&format!(
            "artifact_operator_gateway_sent_bytes_total {}",
            harness.jar.len()
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn plain_curl_downloads_jar() {
    let harness = Harness::start(numbered_jar(50_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("app.jar");
    // curl blocks, so it runs off the test's runtime thread, which also serves the gateway.
    let (url, path) = (harness.url(), output.clone());
    let status = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-fsSL", "--noproxy", "*", &url, "-o"])
            .arg(&path)
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&output).unwrap();
    assert_eq!(bytes, harness.jar);
}

#[tokio::test]
async fn tampered_urls_rejected_with_reason() {
    let harness = Harness::start(numbered_jar(1_000)).await;
    let url = harness.url();
    let (base, query) = url.split_once('?').unwrap();

    let cases = [
        (
            url.replace(&harness.digest, &format!("sha256:{}", "0".repeat(64))),
            "invalid_signature",
        ),
        (url.replacen("sig=", "sig=AAAA", 1), "invalid_signature"),
        (url.replacen("kid=", "kid=0000", 1), "unknown_key"),
        (base.to_owned(), "malformed_signature"),
        (
            format!("{base}?{}", query.replace("exp=", "exp=x")),
            "malformed_signature",
        ),
    ];
    for (tampered, reason) in cases {
        let (status, body) = refusal(http().get(&tampered).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{tampered}");
        assert_eq!(body["reason"], reason, "{tampered}: {body}");
        assert!(
            !body.to_string().contains(&harness.keys.get().active),
            "{body}"
        );
    }

    let expired = harness.url_at(
        Duration::from_secs(3600),
        Timestamp::now() - Duration::from_secs(2 * 3600),
    );
    let (status, body) = refusal(http().get(&expired).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["reason"], "expired");

    let metrics = harness.metrics.encode();
    assert!(metrics.contains("reason=\"expired\""), "{metrics}");
}

/// The gateway verifies, with its own clock, URLs from signers whose clocks are off by about the
/// allowed skew. Each edge is met just inside (served) and just outside (403 with a reason).
#[tokio::test]
async fn signer_clock_skew_edges() {
    let harness = Harness::start(numbered_jar(1_000)).await;
    let skew = signing::CLOCK_SKEW;
    // A request reaches the gateway a moment after it was signed. Every case stays on its side
    // of the edge for this long, and the gateway's later clock only pushes the cases that are
    // outside further out.
    let margin = Duration::from_secs(10);
    let short = Duration::from_secs(60);
    let now = Timestamp::now();
    let cases = [
        (
            "signer behind: expired skew - 10 s ago",
            harness.url_at(short, now - (short + skew - margin)),
            None,
        ),
        (
            "signer behind: expired skew + 10 s ago",
            harness.url_at(short, now - (short + skew + margin)),
            Some(("expired", "the URL expired at exp=")),
        ),
        (
            "signer ahead by skew - 10 s, longest lifetime",
            harness.url_at(signing::MAX_TTL, now + (skew - margin)),
            None,
        ),
        (
            "signer ahead by skew + 10 s, longest lifetime",
            harness.url_at(signing::MAX_TTL, now + (skew + margin)),
            Some(("expiry_too_far", "further ahead than the maximum lifetime")),
        ),
    ];

    for (case, url, refusal_expected) in cases {
        let response = http().get(&url).send().await.unwrap();
        match refusal_expected {
            None => {
                assert_eq!(response.status(), StatusCode::OK, "{case}");
                assert_eq!(response.bytes().await.unwrap(), harness.jar, "{case}");
            }
            Some((reason, message)) => {
                let (status, body) = refusal(response).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{case}: {body}");
                assert_eq!(body["reason"], reason, "{case}: {body}");
                let text = body["message"].as_str().unwrap();
                assert!(text.contains(message), "{case}: {body}");
            }
        }
    }
}

#[tokio::test]
async fn deleted_artifact_revokes_url() {
    let harness = Harness::start(numbered_jar(1_000)).await;
    let url = harness.url();
    assert_eq!(
        http().get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );

    Api::<AppArtifact>::namespaced(harness.client.clone(), &harness.namespace)
        .delete(APP, &DeleteParams::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = http().get(&url).send().await.unwrap();
        if response.status() == StatusCode::GONE {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["reason"], "revoked");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the URL still works 30 s after the AppArtifact was deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn range_requests_served() {
    let harness = Harness::start(numbered_jar(10_000)).await;
    let url = harness.url();

    let cases = [
        ("bytes=100-199", 100, 199),
        ("bytes=9990-", 9990, 9999),
        ("bytes=-16", 9984, 9999),
    ];
    for (range, start, end) in cases {
        let response = http()
            .get(&url)
            .header("Range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes {start}-{end}/10000").as_str(),
            "{range}"
        );
        let body = response.bytes().await.unwrap();
        assert_eq!(&body[..], &harness.jar[start..=end], "{range}");
    }

    let response = http()
        .get(&url)
        .header("Range", "bytes=10000-")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(response.headers()["content-range"], "bytes */10000");
}

#[tokio::test]
async fn rotation_keeps_old_urls_valid() {
    let harness = Harness::start(numbered_jar(1_000)).await;
    let old_url = harness.url();
    let old_key = harness.keys.get().active.clone();

    let secrets: Api<Secret> = Api::namespaced(harness.client.clone(), &harness.namespace);
    let request = json!({ "metadata": { "annotations": { ROTATE_ANNOTATION: "first" } } });
    secrets
        .patch(
            "signing-keys",
            &PatchParams::default(),
            &Patch::Merge(&request),
        )
        .await
        .unwrap();
    let ring = keys::check(&harness.client, &harness.key_settings, Timestamp::now())
        .await
        .unwrap();
    assert_ne!(ring.active, old_key);
    assert_eq!(ring.keys.len(), 2);
    // A second check with the same request changes nothing.
    let again = keys::check(&harness.client, &harness.key_settings, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(again, ring);

    // The gateway picks up the new ring at its next check; the test applies it directly.
    let rotated = KeyRingHandle::new(ring);
    let signature = signing::sign(
        &rotated.get(),
        &harness.target(),
        signing::DEFAULT_TTL,
        Timestamp::now(),
    );
    assert_ne!(signature.kid, old_key);
    assert_eq!(
        signing::verify(
            &rotated.get(),
            &harness.target(),
            &signature,
            Timestamp::now()
        ),
        Ok(())
    );
    let old = reqwest::Url::parse(&old_url).unwrap();
    let old_signature = signing::UrlSignature {
        kid: query_value(&old, "kid"),
        exp: query_value(&old, "exp").parse().unwrap(),
        sig: query_value(&old, "sig"),
    };
    assert_eq!(
        signing::verify(
            &rotated.get(),
            &harness.target(),
            &old_signature,
            Timestamp::now()
        ),
        Ok(())
    );
}

fn query_value(url: &reqwest::Url, name: &str) -> String {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .unwrap()
}

#[tokio::test]
async fn wrong_registry_bytes_cut_transfer() {
    let harness = Harness::start(numbered_jar(4_096)).await;
    // A registry that serves every blob with the right length and wrong content,
    // which a content-addressed registry never does on its own.
    let wrong = format!("PK\u{3}\u{4}{}", "x".repeat(4_092));
    let fake = FakeRegistry::start(move |request, _| {
        if request.path().starts_with("/v2/") && request.path().contains("/blobs/") {
            FakeResponse::new(200).body(&wrong)
        } else {
            FakeResponse::new(200).body("{}")
        }
    })
    .await;
    let api: Api<ArtifactRegistry> = Api::namespaced(harness.client.clone(), &harness.namespace);
    let redirect = json!({ "spec": { "external": { "url": fake.url(), "credentialsSecretRef": null, "caBundle": null } } });
    api.patch("main", &PatchParams::default(), &Patch::Merge(&redirect))
        .await
        .unwrap();

    // The gateway withholds the end of the body, so the client either loses the connection
    // before the response head or gets a body shorter than Content-Length. Both fail.
    let transfer = match http().get(harness.url()).send().await {
        Ok(response) => response.bytes().await.map(|body| body.len()),
        Err(error) => Err(error),
    };
    assert!(
        transfer.is_err(),
        "the transfer of bytes that do not match the digest must fail, got {transfer:?}"
    );
    assert_eq!(fake.count("GET", "/v2/"), 1);
}
