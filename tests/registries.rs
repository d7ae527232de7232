//! Proves that the test environment runs real OCI registries: the real `oras` CLI pushes to each
//! of them, and the manifest reads back over HTTP.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{TestEnv, sha256_hex, unique_name};

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// How to reach one registry of the test environment.
struct Registry {
    host: String,
    scheme: &'static str,
    credentials: Option<(String, String)>,
}

impl Registry {
    fn distribution(env: &TestEnv) -> Self {
        Self {
            host: env.var("TESTENV_DISTRIBUTION_HOST").to_owned(),
            scheme: "https",
            credentials: Some((
                env.var("TESTENV_DISTRIBUTION_USERNAME").to_owned(),
                env.var("TESTENV_DISTRIBUTION_PASSWORD").to_owned(),
            )),
        }
    }

    fn crane(env: &TestEnv) -> Self {
        Self {
            host: env.var("TESTENV_CRANE_HOST").to_owned(),
            scheme: "http",
            credentials: None,
        }
    }

    /// Connection flags for the oras CLI.
    fn oras_flags(&self, env: &TestEnv) -> Vec<String> {
        let mut flags = Vec::new();
        if self.scheme == "http" {
            flags.push("--plain-http".to_owned());
        } else {
            flags.push("--ca-file".to_owned());
            flags.push(env.var("TESTENV_CA_FILE").to_owned());
        }
        if let Some((username, password)) = &self.credentials {
            flags.extend(["--username".to_owned(), username.clone()]);
            flags.extend(["--password".to_owned(), password.clone()]);
        }
        flags
    }
}

/// Pushes a file with `oras push`, reads the manifest back over HTTP and checks its layer.
async fn push_with_oras_and_read_manifest(env: &TestEnv, registry: Registry) {
    let dir = tempfile::tempdir().unwrap();
    let content = format!("payload for {}", unique_name("oras")).into_bytes();
    std::fs::write(dir.path().join("app.jar"), &content).unwrap();
    let repository = format!("{}/app", unique_name("tenant"));
    let reference = format!("{}/{repository}:v1", registry.host);

    let output = Command::new(env.var("TESTENV_ORAS"))
        .current_dir(dir.path())
        .args(["push", "--no-tty", &reference])
        .args(registry.oras_flags(env))
        .args(["--artifact-type", "application/vnd.cameleer.app.jar.v1"])
        .arg("app.jar:application/java-archive")
        .output()
        .expect("oras must start");
    assert!(
        output.status.success(),
        "oras push to {reference} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let url = format!(
        "{}://{}/v2/{repository}/manifests/v1",
        registry.scheme, registry.host
    );
    let mut request = env
        .http_client()
        .get(&url)
        .header("Accept", MANIFEST_MEDIA_TYPE);
    if let Some((username, password)) = &registry.credentials {
        request = request.basic_auth(username, Some(password));
    }
    let response = request.send().await.expect("the registry must answer");
    assert_eq!(response.status(), 200, "GET {url}");
    let manifest: Value = response.json().await.unwrap();

    let layer = &manifest["layers"][0];
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.cameleer.app.jar.v1"
    );
    assert_eq!(layer["mediaType"], "application/java-archive");
    assert_eq!(layer["digest"], format!("sha256:{}", sha256_hex(&content)));
    assert_eq!(layer["size"], content.len());
    assert_eq!(
        layer["annotations"]["org.opencontainers.image.title"],
        "app.jar"
    );
}

#[tokio::test]
async fn oras_push_to_distribution_over_tls() {
    let env = TestEnv::load();
    push_with_oras_and_read_manifest(&env, Registry::distribution(&env)).await;
}

#[tokio::test]
async fn oras_push_to_crane_registry() {
    let env = TestEnv::load();
    push_with_oras_and_read_manifest(&env, Registry::crane(&env)).await;
}

#[tokio::test]
async fn distribution_rejects_wrong_password() {
    let env = TestEnv::load();
    let registry = Registry::distribution(&env);
    let url = format!("https://{}/v2/", registry.host);
    let response = env
        .http_client()
        .get(&url)
        .basic_auth(
            env.var("TESTENV_DISTRIBUTION_USERNAME"),
            Some("wrong-password"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "GET {url} with a wrong password");
}
