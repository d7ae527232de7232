//! One conformance suite for every `ArtifactStore` backend: a temporary directory, the
//! distribution registry of the test environment (htpasswd over TLS) and its crane registry
//! (plain HTTP, anonymous). The cases are generic functions, and `conformance_suite!` runs
//! each of them against each backend.
//!
//! The registry backends also exchange artifacts with the real `oras` CLI in both directions.

mod support;

#[path = "support/generated.rs"]
mod generated;

use std::{path::Path, process::Command, sync::Arc};

use artifact_operator::{
    oci::{
        ApplicationRef, ArtifactCoordinates, Credentials, Digest, JarMetadata, OciError,
        RegistryClient, RegistryConfig, TlsRoots,
        manifest::{JAR_ARTIFACT_TYPE, JAR_MEDIA_TYPE, annotation},
    },
    store::{ArtifactStore, FilesystemArtifactStore, OciArtifactStore, StoreError},
};
use futures::StreamExt as _;
use generated::GeneratedContent;
use sha2::Digest as _;
use support::{TestEnv, unique_name};

const MIB: u64 = 1024 * 1024;

/// Size of the streamed artifact case.
const LARGE_ARTIFACT_SIZE: u64 = 300 * MIB;

// === Backends ===

/// A store under test, with whatever must live as long as it.
struct Backend<S> {
    store: S,
    _dir: Option<tempfile::TempDir>,
}

fn filesystem() -> Backend<FilesystemArtifactStore> {
    let dir = tempfile::tempdir().expect("a temporary directory must be creatable");
    Backend {
        store: FilesystemArtifactStore::new(dir.path().join("store")),
        _dir: Some(dir),
    }
}

fn distribution() -> Backend<OciArtifactStore> {
    let env = TestEnv::load();
    Backend {
        store: OciArtifactStore::new(distribution_client(&env, &password(&env))),
        _dir: None,
    }
}

fn crane() -> Backend<OciArtifactStore> {
    let env = TestEnv::load();
    Backend {
        store: OciArtifactStore::new(crane_client(&env)),
        _dir: None,
    }
}

fn password(env: &TestEnv) -> String {
    env.var("TESTENV_DISTRIBUTION_PASSWORD").to_owned()
}

fn distribution_client(env: &TestEnv, password: &str) -> RegistryClient {
    let url = format!("https://{}", env.var("TESTENV_DISTRIBUTION_HOST"));
    let config = RegistryConfig::new(&url)
        .unwrap()
        .with_credentials(Credentials::Basic {
            username: env.var("TESTENV_DISTRIBUTION_USERNAME").to_owned(),
            password: password.to_owned(),
        })
        .with_tls_roots(TlsRoots::only_from_pem_file(&env.ca_file()).unwrap());
    RegistryClient::new(config).expect("the distribution client must build")
}

fn crane_client(env: &TestEnv) -> RegistryClient {
    let url = format!("http://{}", env.var("TESTENV_CRANE_HOST"));
    RegistryClient::new(RegistryConfig::new(&url).unwrap()).expect("the crane client must build")
}

// === Helpers ===

/// Returns an application unique to this test run, so tests can run in parallel and repeatedly.
fn fresh_application() -> ApplicationRef {
    ApplicationRef::new(unique_name("tenant"), "billing").unwrap()
}

fn version(application: &ApplicationRef, version: &str) -> ArtifactCoordinates {
    ArtifactCoordinates::for_application(application.clone(), version).unwrap()
}

fn jar_metadata() -> JarMetadata {
    JarMetadata::new("billing.jar").unwrap()
}

fn content(label: &str) -> Vec<u8> {
    format!("PK\u{3}\u{4} jar content for {label} {}", unique_name("c")).into_bytes()
}

/// Reads a stored artifact to its end and returns its bytes.
async fn read_all<S: ArtifactStore>(store: &S, coordinates: &ArtifactCoordinates) -> Vec<u8> {
    let mut opened = store
        .open(coordinates)
        .await
        .unwrap_or_else(|error| panic!("open {coordinates}: {error}"));
    let mut bytes = Vec::new();
    while let Some(chunk) = opened.stream.next().await {
        bytes.extend_from_slice(
            &chunk.unwrap_or_else(|error| panic!("read {coordinates}: {error}")),
        );
    }
    bytes
}

/// Reads a stored artifact to its end, hashing it, and returns its SHA-256 (hex) and size.
async fn hash_stored<S: ArtifactStore>(
    store: &S,
    coordinates: &ArtifactCoordinates,
) -> (String, u64) {
    let mut opened = store.open(coordinates).await.unwrap();
    let mut hasher = sha2::Sha256::new();
    let mut size = 0;
    while let Some(chunk) = opened.stream.next().await {
        let chunk = chunk.unwrap_or_else(|error| panic!("read {coordinates}: {error}"));
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (format!("{:x}", hasher.finalize()), size)
}

// === Cases ===

async fn round_trip<S: ArtifactStore>(store: &S) {
    let application = fresh_application();
    let coordinates = version(&application, "1.0.0");
    let bytes = content("round trip");
    let digest = Digest::of(&bytes);

    let stored = store
        .put(
            &coordinates,
            bytes.as_slice(),
            Some(&digest),
            &jar_metadata(),
        )
        .await
        .unwrap();

    assert_eq!(stored.coordinates, coordinates);
    assert_eq!(stored.digest, digest);
    assert_eq!(stored.size, bytes.len() as u64);
    assert_eq!(
        store.stat(&coordinates).await.unwrap(),
        Some(stored.clone())
    );
    assert_eq!(read_all(store, &coordinates).await, bytes);
    let opened = store.open(&coordinates).await.unwrap();
    assert_eq!(opened.artifact, stored);
    assert_eq!(store.list_versions(&application).await.unwrap(), ["1.0.0"]);
}

async fn round_trip_without_expected_digest<S: ArtifactStore>(store: &S) {
    let coordinates = version(&fresh_application(), "1.0.0");
    let bytes = content("no expected digest");

    let stored = store
        .put(&coordinates, bytes.as_slice(), None, &jar_metadata())
        .await
        .unwrap();

    assert_eq!(stored.digest, Digest::of(&bytes));
    assert_eq!(read_all(store, &coordinates).await, bytes);
}

async fn idempotent_reput<S: ArtifactStore>(store: &S) {
    let application = fresh_application();
    let coordinates = version(&application, "2.1");
    let bytes = content("idempotent");
    let digest = Digest::of(&bytes);

    let first = store
        .put(&coordinates, bytes.as_slice(), None, &jar_metadata())
        .await
        .unwrap();
    let again = store
        .put(&coordinates, bytes.as_slice(), None, &jar_metadata())
        .await
        .unwrap();
    let again_with_digest = store
        .put(
            &coordinates,
            bytes.as_slice(),
            Some(&digest),
            &jar_metadata(),
        )
        .await
        .unwrap();

    assert_eq!(again, first);
    assert_eq!(again_with_digest, first);
    assert_eq!(store.list_versions(&application).await.unwrap(), ["2.1"]);
    assert_eq!(read_all(store, &coordinates).await, bytes);
}

async fn conflicting_reput_rejected<S: ArtifactStore>(store: &S) {
    let coordinates = version(&fresh_application(), "3.0");
    let original = content("original");
    let other = content("other");
    let stored = store
        .put(&coordinates, original.as_slice(), None, &jar_metadata())
        .await
        .unwrap();

    let error = store
        .put(&coordinates, other.as_slice(), None, &jar_metadata())
        .await
        .expect_err("different bytes for an existing version must be rejected");

    let StoreError::Conflict {
        existing,
        attempted,
        ..
    } = &error
    else {
        panic!("expected a conflict, got {error}");
    };
    assert_eq!(*existing, Digest::of(&original));
    assert_eq!(*attempted, Digest::of(&other));
    let message = error.to_string();
    assert!(message.contains(&existing.to_string()), "{message}");
    assert!(message.contains(&attempted.to_string()), "{message}");
    assert_eq!(store.stat(&coordinates).await.unwrap(), Some(stored));
    assert_eq!(read_all(store, &coordinates).await, original);
}

async fn conflicting_reput_with_expected_digest_rejected<S: ArtifactStore>(store: &S) {
    let coordinates = version(&fresh_application(), "3.1");
    let original = content("original");
    let other = content("other");
    store
        .put(&coordinates, original.as_slice(), None, &jar_metadata())
        .await
        .unwrap();

    let error = store
        .put(
            &coordinates,
            other.as_slice(),
            Some(&Digest::of(&other)),
            &jar_metadata(),
        )
        .await
        .expect_err("different bytes for an existing version must be rejected");

    assert!(matches!(error, StoreError::Conflict { .. }), "{error}");
    assert_eq!(read_all(store, &coordinates).await, original);
}

async fn missing_version_not_found<S: ArtifactStore>(store: &S) {
    let application = fresh_application();
    let coordinates = version(&application, "9.9.9");

    assert_eq!(store.stat(&coordinates).await.unwrap(), None);
    let error = store
        .open(&coordinates)
        .await
        .expect_err("opening a missing version must fail");
    assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
    assert_eq!(error.metric_label(), "not_found");
    assert!(!store.delete(&coordinates).await.unwrap());
    assert!(store.list_versions(&application).await.unwrap().is_empty());
}

async fn missing_version_of_existing_application_not_found<S: ArtifactStore>(store: &S) {
    let application = fresh_application();
    store
        .put(
            &version(&application, "1"),
            content("present").as_slice(),
            None,
            &jar_metadata(),
        )
        .await
        .unwrap();
    let missing = version(&application, "2");

    assert_eq!(store.stat(&missing).await.unwrap(), None);
    let error = store.open(&missing).await.expect_err("must be missing");
    assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
}

async fn invalid_coordinates_rejected<S: ArtifactStore>(store: &S) {
    let max_version = "1".repeat(127);
    let tag_of_129 = "1".repeat(128);
    let cases = [
        ("", "app", "1", "tenant id"),
        ("acme", "", "1", "application id"),
        ("acme", "app", "", "version"),
        ("Acme", "app", "1", "tenant id"),
        ("acme", "App", "1", "application id"),
        ("..", "app", "1", "tenant id"),
        ("acme", "..", "1", "application id"),
        ("acme", "app", "..", "version"),
        ("acme/evil", "app", "1", "tenant id"),
        ("acme", "app/evil", "1", "application id"),
        ("acme", "app", "1/../../x", "version"),
        ("acme", "app", tag_of_129.as_str(), "version"),
    ];
    for (tenant, app, version, field) in cases {
        let error = ArtifactCoordinates::new(tenant, app, version)
            .expect_err(&format!("{tenant:?}/{app:?}/{version:?} must be rejected"));
        assert_eq!(error.field, field, "{tenant:?}/{app:?}/{version:?}");
        assert!(
            error.to_string().starts_with(&format!("invalid {field} ")),
            "{error}"
        );
        assert_eq!(
            StoreError::from(error).metric_label(),
            "invalid_coordinates"
        );
    }

    // A version of the maximum length gives a tag of exactly 128 characters, which the store
    // accepts.
    let coordinates = ArtifactCoordinates::new(unique_name("tenant"), "app", &max_version).unwrap();
    assert_eq!(coordinates.reference().tag.len(), 128);
    store
        .put(&coordinates, &b"max"[..], None, &jar_metadata())
        .await
        .unwrap();
    assert_eq!(read_all(store, &coordinates).await, b"max");
}

async fn expected_digest_mismatch_rejected<S: ArtifactStore>(store: &S) {
    let application = fresh_application();
    let coordinates = version(&application, "4.0");
    let expected = content("expected");
    let actual = content("actual");

    let error = store
        .put(
            &coordinates,
            actual.as_slice(),
            Some(&Digest::of(&expected)),
            &jar_metadata(),
        )
        .await
        .expect_err("content with another digest must be rejected");

    let StoreError::DigestMismatch {
        expected: reported_expected,
        actual: reported_actual,
        ..
    } = &error
    else {
        panic!("expected a digest mismatch, got {error}");
    };
    assert_eq!(*reported_expected, Digest::of(&expected));
    assert_eq!(*reported_actual, Digest::of(&actual));
    assert_eq!(store.stat(&coordinates).await.unwrap(), None);
    assert!(store.list_versions(&application).await.unwrap().is_empty());
}

/// The expected digest names content that is already stored (under another version), so a
/// backend that skips uploads of known content must still check the caller's bytes.
async fn expected_digest_of_stored_content_mismatch_rejected<S: ArtifactStore>(store: &S) {
    let application = fresh_application();
    let stored = content("stored");
    store
        .put(
            &version(&application, "1"),
            stored.as_slice(),
            None,
            &jar_metadata(),
        )
        .await
        .unwrap();
    let coordinates = version(&application, "2");

    let error = store
        .put(
            &coordinates,
            content("different").as_slice(),
            Some(&Digest::of(&stored)),
            &jar_metadata(),
        )
        .await
        .expect_err("content with another digest must be rejected");

    assert!(
        matches!(error, StoreError::DigestMismatch { .. }),
        "{error}"
    );
    assert_eq!(store.stat(&coordinates).await.unwrap(), None);
    assert_eq!(store.list_versions(&application).await.unwrap(), ["1"]);
}

async fn same_content_under_two_versions<S: ArtifactStore>(store: &S) {
    let application = fresh_application();
    let bytes = content("shared");
    let digest = Digest::of(&bytes);
    for v in ["1", "2"] {
        let stored = store
            .put(
                &version(&application, v),
                bytes.as_slice(),
                Some(&digest),
                &jar_metadata(),
            )
            .await
            .unwrap();
        assert_eq!(stored.digest, digest, "version {v}");
    }

    assert!(store.delete(&version(&application, "1")).await.unwrap());
    assert_eq!(read_all(store, &version(&application, "2")).await, bytes);
    assert_eq!(store.list_versions(&application).await.unwrap(), ["2"]);
}

async fn large_artifact_streamed<S: ArtifactStore>(store: &S) {
    let coordinates = version(&fresh_application(), "5.0");
    let seed = 0x5eed;
    let expected_hex = GeneratedContent::sha256_hex(seed, LARGE_ARTIFACT_SIZE);

    let stored = store
        .put(
            &coordinates,
            GeneratedContent::new(seed, LARGE_ARTIFACT_SIZE),
            None,
            &jar_metadata(),
        )
        .await
        .unwrap();

    assert_eq!(stored.digest.hex(), expected_hex);
    assert_eq!(stored.size, LARGE_ARTIFACT_SIZE);
    let (read_hex, read_size) = hash_stored(store, &coordinates).await;
    assert_eq!(read_hex, expected_hex);
    assert_eq!(read_size, LARGE_ARTIFACT_SIZE);
}

async fn concurrent_puts<S: ArtifactStore>(store: &S) {
    let application = fresh_application();
    let versions: Vec<String> = (1..=8).map(|i| format!("1.{i}")).collect();
    let contents: Vec<Vec<u8>> = versions.iter().map(|v| content(v)).collect();

    let puts = versions.iter().zip(&contents).map(|(v, bytes)| {
        let coordinates = version(&application, v);
        async move {
            store
                .put(&coordinates, bytes.as_slice(), None, &jar_metadata())
                .await
        }
    });
    let results = futures::future::join_all(puts).await;

    for (result, bytes) in results.into_iter().zip(&contents) {
        let stored = result.unwrap();
        assert_eq!(stored.digest, Digest::of(bytes), "{}", stored.coordinates);
    }
    assert_eq!(store.list_versions(&application).await.unwrap(), versions);
    for (v, bytes) in versions.iter().zip(&contents) {
        assert_eq!(
            &read_all(store, &version(&application, v)).await,
            bytes,
            "{v}"
        );
    }
}

/// Puts of one version with different content race: exactly one wins and the others conflict.
async fn concurrent_puts_of_one_version<S: ArtifactStore + 'static>(store: Arc<S>) {
    let coordinates = version(&fresh_application(), "1.0");
    let contents: Vec<Vec<u8>> = (0..4).map(|i| content(&format!("racer {i}"))).collect();

    let mut tasks = tokio::task::JoinSet::new();
    for bytes in contents.clone() {
        let store = Arc::clone(&store);
        let coordinates = coordinates.clone();
        tasks.spawn(async move {
            store
                .put(&coordinates, bytes.as_slice(), None, &jar_metadata())
                .await
        });
    }
    let results = tasks.join_all().await;

    let winners: Vec<_> = results
        .iter()
        .filter_map(|result| result.as_ref().ok())
        .collect();
    let stored = store
        .stat(&coordinates)
        .await
        .unwrap()
        .expect("one put must win");
    assert!(!winners.is_empty(), "no put succeeded: {results:?}");
    for winner in &winners {
        assert_eq!(winner.digest, stored.digest);
    }
    for result in &results {
        if let Err(error) = result {
            assert!(matches!(error, StoreError::Conflict { .. }), "{error}");
        }
    }
    let bytes = read_all(store.as_ref(), &coordinates).await;
    assert_eq!(Digest::of(&bytes), stored.digest);
}

async fn delete_then_not_found<S: ArtifactStore>(store: &S) {
    let application = fresh_application();
    let coordinates = version(&application, "6.0");
    let kept = version(&application, "6.1");
    store
        .put(
            &coordinates,
            content("deleted").as_slice(),
            None,
            &jar_metadata(),
        )
        .await
        .unwrap();
    store
        .put(&kept, content("kept").as_slice(), None, &jar_metadata())
        .await
        .unwrap();

    assert!(store.delete(&coordinates).await.unwrap());

    assert_eq!(store.stat(&coordinates).await.unwrap(), None);
    let error = store.open(&coordinates).await.expect_err("deleted");
    assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
    assert!(!store.delete(&coordinates).await.unwrap());
    assert_eq!(store.list_versions(&application).await.unwrap(), ["6.1"]);
    assert!(store.stat(&kept).await.unwrap().is_some());
}

async fn delete_then_put_other_content<S: ArtifactStore>(store: &S) {
    let coordinates = version(&fresh_application(), "7.0");
    store
        .put(
            &coordinates,
            content("first").as_slice(),
            None,
            &jar_metadata(),
        )
        .await
        .unwrap();
    assert!(store.delete(&coordinates).await.unwrap());

    let second = content("second");
    let stored = store
        .put(&coordinates, second.as_slice(), None, &jar_metadata())
        .await
        .unwrap();

    assert_eq!(stored.digest, Digest::of(&second));
    assert_eq!(read_all(store, &coordinates).await, second);
}

async fn empty_artifact_round_trip<S: ArtifactStore>(store: &S) {
    let coordinates = version(&fresh_application(), "0.0.1");

    let stored = store
        .put(&coordinates, &b""[..], None, &jar_metadata())
        .await
        .unwrap();

    assert_eq!(stored.size, 0);
    assert_eq!(stored.digest, Digest::of(b""));
    assert!(read_all(store, &coordinates).await.is_empty());
}

async fn failing_reader_stores_nothing<S: ArtifactStore>(store: &S) {
    let application = fresh_application();
    let coordinates = version(&application, "8.0");
    let reader = tokio::io::AsyncReadExt::chain(&b"partial content"[..], FailingReader);

    let error = store
        .put(&coordinates, reader, None, &jar_metadata())
        .await
        .expect_err("a failing reader must fail the put");

    let message = error.to_string();
    assert!(message.contains("injected read failure"), "{message}");
    assert_eq!(store.stat(&coordinates).await.unwrap(), None);
    assert!(store.list_versions(&application).await.unwrap().is_empty());
}

/// A reader that fails on its first read.
struct FailingReader;

impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::Error::other("injected read failure")))
    }
}

macro_rules! conformance_suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn round_trip() {
                super::round_trip(&super::$backend().store).await;
            }

            #[tokio::test]
            async fn round_trip_without_expected_digest() {
                super::round_trip_without_expected_digest(&super::$backend().store).await;
            }

            #[tokio::test]
            async fn idempotent_reput() {
                super::idempotent_reput(&super::$backend().store).await;
            }

            #[tokio::test]
            async fn conflicting_reput_rejected() {
                super::conflicting_reput_rejected(&super::$backend().store).await;
            }

            #[tokio::test]
            async fn conflicting_reput_with_expected_digest_rejected() {
                super::conflicting_reput_with_expected_digest_rejected(&super::$backend().store)
                    .await;
            }

            #[tokio::test]
            async fn missing_version_not_found() {
                super::missing_version_not_found(&super::$backend().store).await;
            }

            #[tokio::test]
            async fn missing_version_of_existing_application_not_found() {
                super::missing_version_of_existing_application_not_found(&super::$backend().store)
                    .await;
            }

            #[tokio::test]
            async fn invalid_coordinates_rejected() {
                super::invalid_coordinates_rejected(&super::$backend().store).await;
            }

            #[tokio::test]
            async fn expected_digest_mismatch_rejected() {
                super::expected_digest_mismatch_rejected(&super::$backend().store).await;
            }

            #[tokio::test]
            async fn expected_digest_of_stored_content_mismatch_rejected() {
                super::expected_digest_of_stored_content_mismatch_rejected(
                    &super::$backend().store,
                )
                .await;
            }

            #[tokio::test]
            async fn same_content_under_two_versions() {
                super::same_content_under_two_versions(&super::$backend().store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_artifact_streamed() {
                super::large_artifact_streamed(&super::$backend().store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_puts() {
                super::concurrent_puts(&super::$backend().store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_puts_of_one_version() {
                let backend = super::$backend();
                super::concurrent_puts_of_one_version(Arc::new(backend.store)).await;
            }

            #[tokio::test]
            async fn delete_then_not_found() {
                super::delete_then_not_found(&super::$backend().store).await;
            }

            #[tokio::test]
            async fn delete_then_put_other_content() {
                super::delete_then_put_other_content(&super::$backend().store).await;
            }

            #[tokio::test]
            async fn empty_artifact_round_trip() {
                super::empty_artifact_round_trip(&super::$backend().store).await;
            }

            #[tokio::test]
            async fn failing_reader_stores_nothing() {
                super::failing_reader_stores_nothing(&super::$backend().store).await;
            }
        }
    };
}

conformance_suite!(filesystem);
conformance_suite!(distribution);
conformance_suite!(crane);

// === Interoperability with the oras CLI ===

/// How the oras CLI reaches one registry of the test environment.
struct OrasTarget {
    host: String,
    flags: Vec<String>,
    client: RegistryClient,
}

impl OrasTarget {
    fn distribution(env: &TestEnv) -> Self {
        Self {
            host: env.var("TESTENV_DISTRIBUTION_HOST").to_owned(),
            flags: vec![
                "--ca-file".to_owned(),
                env.var("TESTENV_CA_FILE").to_owned(),
                "--username".to_owned(),
                env.var("TESTENV_DISTRIBUTION_USERNAME").to_owned(),
                "--password".to_owned(),
                password(env),
            ],
            client: distribution_client(env, &password(env)),
        }
    }

    fn crane(env: &TestEnv) -> Self {
        Self {
            host: env.var("TESTENV_CRANE_HOST").to_owned(),
            flags: vec!["--plain-http".to_owned()],
            client: crane_client(env),
        }
    }

    fn run(&self, env: &TestEnv, dir: &Path, args: &[&str]) {
        let output = Command::new(env.var("TESTENV_ORAS"))
            .current_dir(dir)
            .args(args)
            .arg("--no-tty")
            .args(&self.flags)
            .output()
            .expect("oras must start");
        assert!(
            output.status.success(),
            "oras {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Checks that `oras pull` writes what the store pushed byte for byte under the title file name,
/// and that the manifest has the artifact type, the empty config and the annotations.
async fn oras_pulls_what_store_pushes(target: OrasTarget) {
    let env = TestEnv::load();
    let store = OciArtifactStore::new(target.client.clone());
    let coordinates = version(&fresh_application(), "1.4.0");
    let bytes = content("for oras pull");
    let metadata = JarMetadata::new("billing-1.4.0.jar")
        .unwrap()
        .with_source_url("https://ci:secret-token@git.example.com/acme/billing.git?ref=main")
        .unwrap();
    store
        .put(&coordinates, bytes.as_slice(), None, &metadata)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let reference = format!("{}/{}", target.host, coordinates.reference());
    target.run(&env, dir.path(), &["pull", &reference, "--output", "out"]);

    let pulled = std::fs::read(dir.path().join("out/billing-1.4.0.jar"))
        .expect("oras must write the file under its title");
    assert_eq!(pulled, bytes);

    let reference = coordinates.reference();
    let fetched = target
        .client
        .fetch_manifest(&reference.repository, &reference.tag)
        .await
        .unwrap();
    let manifest = fetched.manifest;
    assert_eq!(manifest.artifact_type.as_deref(), Some(JAR_ARTIFACT_TYPE));
    assert_eq!(
        manifest.config.media_type,
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(manifest.config.digest, Digest::of(b"{}"));
    assert_eq!(manifest.layers.len(), 1);
    assert_eq!(manifest.layers[0].media_type, JAR_MEDIA_TYPE);
    assert_eq!(
        manifest
            .annotations
            .get(annotation::SOURCE)
            .map(String::as_str),
        Some("https://git.example.com/acme/billing.git")
    );
    assert_eq!(
        manifest
            .annotations
            .get(annotation::VERSION)
            .map(String::as_str),
        Some("1.4.0")
    );
    let created = manifest
        .annotations
        .get(annotation::CREATED)
        .expect("the created annotation must be set");
    assert!(
        created.parse::<jiff::Timestamp>().is_ok(),
        "created {created:?} must be RFC 3339"
    );
    assert!(
        target
            .client
            .blob_size(&reference.repository, &Digest::of(b"{}"))
            .await
            .unwrap()
            .is_some(),
        "the empty config blob must be uploaded"
    );
}

/// Checks that the store reads a JAR artifact that `oras push` pushed.
async fn store_reads_what_oras_pushes(target: OrasTarget) {
    let env = TestEnv::load();
    let store = OciArtifactStore::new(target.client.clone());
    let coordinates = version(&fresh_application(), "2.0.0");
    let bytes = content("from oras push");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.jar"), &bytes).unwrap();

    let reference = format!("{}/{}", target.host, coordinates.reference());
    target.run(
        &env,
        dir.path(),
        &[
            "push",
            &reference,
            "--artifact-type",
            JAR_ARTIFACT_TYPE,
            &format!("app.jar:{JAR_MEDIA_TYPE}"),
        ],
    );

    let stat = store
        .stat(&coordinates)
        .await
        .unwrap()
        .expect("pushed by oras");
    assert_eq!(stat.digest, Digest::of(&bytes));
    assert_eq!(stat.size, bytes.len() as u64);
    assert_eq!(read_all(&store, &coordinates).await, bytes);
    let artifact = target.client.fetch_jar(&coordinates).await.unwrap();
    assert_eq!(artifact.file_name(), Some("app.jar"));
    assert_eq!(
        store
            .list_versions(coordinates.application())
            .await
            .unwrap(),
        ["2.0.0"]
    );
}

#[tokio::test]
async fn oras_pulls_what_store_pushes_distribution() {
    oras_pulls_what_store_pushes(OrasTarget::distribution(&TestEnv::load())).await;
}

#[tokio::test]
async fn oras_pulls_what_store_pushes_crane() {
    oras_pulls_what_store_pushes(OrasTarget::crane(&TestEnv::load())).await;
}

#[tokio::test]
async fn store_reads_what_oras_pushes_distribution() {
    store_reads_what_oras_pushes(OrasTarget::distribution(&TestEnv::load())).await;
}

#[tokio::test]
async fn store_reads_what_oras_pushes_crane() {
    store_reads_what_oras_pushes(OrasTarget::crane(&TestEnv::load())).await;
}

// === Registry client behaviour against the real registries ===

#[tokio::test]
async fn wrong_password_names_user_not_password() {
    let env = TestEnv::load();
    let client = distribution_client(&env, "wrong-password-value");
    let coordinates = version(&fresh_application(), "1");

    let error = client
        .fetch_jar(&coordinates)
        .await
        .expect_err("a wrong password must be rejected");

    assert!(matches!(error, OciError::Unauthorized { .. }), "{error}");
    let message = error.to_string();
    let user = env.var("TESTENV_DISTRIBUTION_USERNAME");
    assert!(
        message.contains(&format!("basic credentials for user '{user}'")),
        "{message}"
    );
    assert!(!message.contains("wrong-password-value"), "{message}");
    assert!(!error.is_transient());
    assert_eq!(error.metric_label(), "unauthorized");
}

#[tokio::test]
async fn api_check_accepts_valid_credentials() {
    let env = TestEnv::load();

    distribution_client(&env, &password(&env))
        .check_api()
        .await
        .unwrap();
    crane_client(&env).check_api().await.unwrap();
    let error = distribution_client(&env, "wrong-password-value")
        .check_api()
        .await
        .expect_err("a wrong password must be rejected");
    assert!(matches!(error, OciError::Unauthorized { .. }), "{error}");
}

#[tokio::test]
async fn api_check_gets_token_without_scope() {
    let registry = FakeRegistry::start(|request, addr| {
        if request.path() == "/token" {
            return FakeResponse::new(200).body(r#"{"token":"token-1"}"#);
        }
        if request.header("authorization") == Some("Bearer token-1") {
            return FakeResponse::new(200).body("{}");
        }
        let challenge = format!(r#"Bearer realm="http://{addr}/token",service="fake-registry""#);
        FakeResponse::new(401).header("WWW-Authenticate", &challenge)
    })
    .await;
    let client = fake_client(&registry, Credentials::Anonymous);

    client.check_api().await.unwrap();

    let token_request = registry
        .requests()
        .into_iter()
        .find(|request| request.path() == "/token")
        .expect("a token must be requested");
    assert_eq!(token_request.target, "/token?service=fake-registry");
    assert_eq!(token_request.header("authorization"), None);
}

#[tokio::test]
async fn insecure_tls_accepts_unknown_ca() {
    let env = TestEnv::load();
    let url = format!("https://{}", env.var("TESTENV_DISTRIBUTION_HOST"));
    let config = RegistryConfig::new(&url)
        .unwrap()
        .with_credentials(Credentials::Basic {
            username: env.var("TESTENV_DISTRIBUTION_USERNAME").to_owned(),
            password: password(&env),
        })
        .with_tls_roots(TlsRoots::AcceptInvalid);

    RegistryClient::new(config)
        .unwrap()
        .check_api()
        .await
        .unwrap();
}

#[tokio::test]
async fn anonymous_access_to_distribution_rejected() {
    let env = TestEnv::load();
    let url = format!("https://{}", env.var("TESTENV_DISTRIBUTION_HOST"));
    let config = RegistryConfig::new(&url)
        .unwrap()
        .with_tls_roots(TlsRoots::only_from_pem_file(&env.ca_file()).unwrap());
    let client = RegistryClient::new(config).unwrap();

    let error = client
        .fetch_jar(&version(&fresh_application(), "1"))
        .await
        .expect_err("anonymous access must be rejected");

    assert!(matches!(error, OciError::Unauthorized { .. }), "{error}");
    assert!(error.to_string().contains("anonymous access"), "{error}");
}

#[tokio::test]
async fn untrusted_certificate_rejected() {
    let env = TestEnv::load();
    let url = format!("https://{}", env.var("TESTENV_DISTRIBUTION_HOST"));
    // The platform trust store does not contain the test environment's CA.
    let client = RegistryClient::new(RegistryConfig::new(&url).unwrap()).unwrap();

    let error = client
        .fetch_jar(&version(&fresh_application(), "1"))
        .await
        .expect_err("a certificate from an unknown CA must be rejected");

    assert!(matches!(error, OciError::Transport { .. }), "{error}");
    assert!(
        !error.is_transient(),
        "a TLS error repeats on every attempt"
    );
}

#[tokio::test]
async fn resolve_delete_and_list_tags() {
    let env = TestEnv::load();
    for client in [
        distribution_client(&env, &password(&env)),
        crane_client(&env),
    ] {
        let store = OciArtifactStore::new(client.clone());
        let application = fresh_application();
        let coordinates = version(&application, "1.0");
        store
            .put(
                &coordinates,
                content("tags").as_slice(),
                None,
                &jar_metadata(),
            )
            .await
            .unwrap();
        let reference = coordinates.reference();

        let digest = client
            .resolve_digest(&reference.repository, &reference.tag)
            .await
            .unwrap();
        let fetched = client
            .fetch_manifest(&reference.repository, &digest.to_string())
            .await
            .unwrap();
        assert_eq!(fetched.digest, digest, "{}", client.registry());
        assert!(
            client
                .manifest_exists(&reference.repository, &reference.tag)
                .await
                .unwrap()
        );
        assert_eq!(
            client.list_tags(&reference.repository).await.unwrap(),
            ["v1.0"]
        );

        assert_eq!(
            client
                .delete_tag(&reference.repository, &reference.tag)
                .await
                .unwrap(),
            digest
        );
        assert!(
            !client
                .manifest_exists(&reference.repository, &reference.tag)
                .await
                .unwrap()
        );
    }
}

#[tokio::test]
async fn tag_list_follows_pagination() {
    let env = TestEnv::load();
    let url = format!("https://{}", env.var("TESTENV_DISTRIBUTION_HOST"));
    let mut config = RegistryConfig::new(&url)
        .unwrap()
        .with_credentials(Credentials::Basic {
            username: env.var("TESTENV_DISTRIBUTION_USERNAME").to_owned(),
            password: password(&env),
        })
        .with_tls_roots(TlsRoots::only_from_pem_file(&env.ca_file()).unwrap());
    config.tag_page_size = 2;
    let client = RegistryClient::new(config).unwrap();
    let store = OciArtifactStore::new(client);
    let application = fresh_application();
    let versions = ["1", "2", "3", "4", "5"];
    for v in versions {
        store
            .put(
                &version(&application, v),
                content(v).as_slice(),
                None,
                &jar_metadata(),
            )
            .await
            .unwrap();
    }

    assert_eq!(store.list_versions(&application).await.unwrap(), versions);
}

// === Client behaviour against an injected fake registry ===
//
// The registries of the test environment use htpasswd or no authentication and never fail on
// purpose. A scripted server on 127.0.0.1 simulates a registry with bearer-token
// authentication and one that returns errors.

#[path = "support/fake_registry.rs"]
mod fake_registry;

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use artifact_operator::oci::RetryPolicy;
use fake_registry::{FakeRegistry, FakeResponse, RecordedRequest};

/// `Basic` authorization for user `user` with password `pass`.
const USER_PASS_BASIC: &str = "Basic dXNlcjpwYXNz";

fn fake_client(registry: &FakeRegistry, credentials: Credentials) -> RegistryClient {
    let retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    let config = RegistryConfig::new(&registry.url())
        .unwrap()
        .with_credentials(credentials)
        .with_retry(retry);
    RegistryClient::new(config).unwrap()
}

fn user_pass(password: &str) -> Credentials {
    Credentials::Basic {
        username: "user".to_owned(),
        password: password.to_owned(),
    }
}

fn manifest_found() -> FakeResponse {
    FakeResponse::new(200).header("Docker-Content-Digest", &Digest::of(b"{}").to_string())
}

/// Responds as a registry that requires a bearer token from its `/token` realm, which in turn
/// requires `user:pass`.
fn bearer_registry(request: &RecordedRequest, addr: std::net::SocketAddr) -> FakeResponse {
    if request.path() == "/token" {
        if request.header("authorization") != Some(USER_PASS_BASIC) {
            return FakeResponse::new(401).body(r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#);
        }
        return FakeResponse::new(200).body(r#"{"token":"token-1","expires_in":300}"#);
    }
    if request.header("authorization") == Some("Bearer token-1") {
        return manifest_found();
    }
    let repository = request
        .path()
        .trim_start_matches("/v2/")
        .split("/manifests/")
        .next()
        .unwrap_or_default()
        .to_owned();
    let challenge = format!(
        r#"Bearer realm="http://{addr}/token",service="fake-registry",scope="repository:{repository}:pull""#
    );
    FakeResponse::new(401).header("WWW-Authenticate", &challenge)
}

#[tokio::test]
async fn bearer_token_fetched_once_per_scope() {
    let registry = FakeRegistry::start(bearer_registry).await;
    let client = fake_client(&registry, user_pass("pass"));

    for repository in ["acme/app", "acme/app", "acme/other"] {
        let digest = client.resolve_digest(repository, "v1").await.unwrap();
        assert_eq!(digest, Digest::of(b"{}"), "{repository}");
    }

    let token_requests: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|request| request.path() == "/token")
        .collect();
    assert_eq!(token_requests.len(), 2, "one token per scope");
    assert_eq!(
        token_requests[0].target,
        "/token?service=fake-registry&scope=repository%3Aacme%2Fapp%3Apull"
    );
    assert_eq!(
        token_requests[1].target,
        "/token?service=fake-registry&scope=repository%3Aacme%2Fother%3Apull"
    );
    assert_eq!(
        registry.count("HEAD", "/v2/"),
        4,
        "one challenge, three authorized"
    );
}

#[tokio::test]
async fn bearer_token_request_rejected() {
    let registry = FakeRegistry::start(bearer_registry).await;
    let client = fake_client(&registry, user_pass("wrong-secret"));

    let error = client
        .resolve_digest("acme/app", "v1")
        .await
        .expect_err("the realm must reject the wrong password");

    assert!(matches!(error, OciError::TokenRequest { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("basic credentials for user 'user'"),
        "{message}"
    );
    assert!(message.contains("401"), "{message}");
    assert!(!message.contains("wrong-secret"), "{message}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn service_unavailable_retried_until_success() {
    let failures = AtomicUsize::new(2);
    let registry = FakeRegistry::start(move |_, _| {
        let remaining = failures.load(Ordering::SeqCst);
        if remaining > 0 {
            failures.store(remaining - 1, Ordering::SeqCst);
            return FakeResponse::new(503);
        }
        manifest_found()
    })
    .await;
    let client = fake_client(&registry, Credentials::Anonymous);

    let digest = client.resolve_digest("acme/app", "v1").await.unwrap();

    assert_eq!(digest, Digest::of(b"{}"));
    assert_eq!(registry.count("HEAD", "/v2/acme/app/manifests/v1"), 3);
}

#[tokio::test]
async fn retries_exhausted_error_is_transient() {
    let registry = FakeRegistry::start(|_, _| FakeResponse::new(503)).await;
    let client = fake_client(&registry, Credentials::Anonymous);

    let error = client.resolve_digest("acme/app", "v1").await.unwrap_err();

    assert!(
        matches!(error, OciError::UnexpectedStatus { status, .. } if status == 503),
        "{error}"
    );
    assert!(error.is_transient());
    assert_eq!(registry.count("HEAD", "/v2/"), 3, "max_attempts requests");
}

#[tokio::test]
async fn client_error_not_retried() {
    let registry = FakeRegistry::start(|_, _| {
        FakeResponse::new(400).body(r#"{"errors":[{"code":"TAG_INVALID","message":"bad tag"}]}"#)
    })
    .await;
    let client = fake_client(&registry, Credentials::Anonymous);

    let error = client.fetch_manifest("acme/app", "v1").await.unwrap_err();

    assert!(!error.is_transient());
    assert!(
        error.to_string().contains("TAG_INVALID: bad tag"),
        "{error}"
    );
    assert_eq!(registry.count("GET", "/v2/"), 1);
}

#[tokio::test]
async fn streamed_upload_not_retried() {
    let registry = FakeRegistry::start(|request, _| match request.method.as_str() {
        "POST" => FakeResponse::new(202).header("Location", "/v2/acme/app/blobs/uploads/1"),
        _ => FakeResponse::new(503),
    })
    .await;
    let client = fake_client(&registry, Credentials::Anonymous);

    let error = client
        .push_blob("acme/app", GeneratedContent::new(1, 4 * MIB))
        .await
        .expect_err("the upload must fail");

    assert!(error.is_transient(), "{error}");
    assert_eq!(registry.count("PATCH", "/v2/acme/app/blobs/uploads/1"), 1);
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = RegistryConfig::new(&format!("http://{addr}"))
        .unwrap()
        .with_retry(RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
        });
    let client = RegistryClient::new(config).unwrap();

    let error = client.resolve_digest("acme/app", "v1").await.unwrap_err();

    assert!(matches!(error, OciError::Transport { .. }), "{error}");
    assert!(error.is_transient());
    assert_eq!(error.metric_label(), "transport");
}

#[tokio::test]
async fn invalid_names_rejected_before_request() {
    let registry = FakeRegistry::start(|_, _| manifest_found()).await;
    let client = fake_client(&registry, Credentials::Anonymous);

    for (repository, reference) in [
        ("acme/../x", "v1"),
        ("acme/app", "../../v1"),
        ("Acme", "v1"),
    ] {
        let error = client
            .fetch_manifest(repository, reference)
            .await
            .expect_err("an invalid name must be rejected");
        assert!(matches!(error, OciError::InvalidName { .. }), "{error}");
    }

    assert!(registry.requests().is_empty());
}

#[tokio::test]
async fn pulled_blob_with_wrong_content_fails_at_end() {
    let registry = FakeRegistry::start(|_, _| FakeResponse::new(200).body("wrong")).await;
    let client = fake_client(&registry, Credentials::Anonymous);
    let expected = artifact_operator::oci::ContentSummary {
        digest: Digest::of(b"right"),
        size: 5,
    };

    let mut stream = client.pull_blob("acme/app", expected).await.unwrap();
    let first = stream.next().await.expect("the content arrives first");
    let last = stream.next().await.expect("a mismatch must be reported");

    assert_eq!(first.unwrap(), "wrong".as_bytes());
    let error = last.expect_err("the stream must not end normally");
    assert!(matches!(error, OciError::ContentMismatch { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains(&Digest::of(b"wrong").to_string()),
        "{error}"
    );
    assert!(stream.next().await.is_none());
}
