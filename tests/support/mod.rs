//! Helpers shared by the integration tests: the test environment written by `tests/env/up.sh`.

#![allow(dead_code)] // Each test crate uses a different subset.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// The running test environment, read from the env file that `tests/env/up.sh` writes.
#[derive(Debug, Clone)]
pub struct TestEnv {
    vars: HashMap<String, String>,
}

impl TestEnv {
    /// Loads the environment, or panics with the command that starts it.
    ///
    /// Integration tests never skip: without the environment they fail, so a CI run that forgot
    /// to start it cannot pass.
    pub fn load() -> Self {
        artifact_operator::tls::install_crypto_provider();
        let path = env_file_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
            panic!(
                "test environment file {} is not readable ({error}); start the environment \
                 with `make testenv` or run the tests with `make test`",
                path.display()
            )
        });
        Self {
            vars: parse_env_file(&text),
        }
    }

    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("{key} is missing from the test environment file"))
    }

    pub fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.var(key))
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.path("TESTENV_KUBECONFIG")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.path("TESTENV_CA_FILE")
    }

    /// Builds a kube client authenticated as cluster admin.
    pub async fn kube_client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig())
            .expect("the test environment's kubeconfig must parse");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("the test environment's kubeconfig must be usable");
        kube::Client::try_from(config).expect("a client must build from the kubeconfig")
    }

    /// Builds a client of the shared distribution registry with the environment's account.
    pub fn distribution_client(&self) -> artifact_operator::oci::RegistryClient {
        use artifact_operator::oci::{Credentials, RegistryClient, RegistryConfig, TlsRoots};

        let url = format!("https://{}", self.var("TESTENV_DISTRIBUTION_HOST"));
        let config = RegistryConfig::new(&url)
            .expect("the distribution registry's URL must be valid")
            .with_credentials(Credentials::Basic {
                username: self.var("TESTENV_DISTRIBUTION_USERNAME").to_owned(),
                password: self.var("TESTENV_DISTRIBUTION_PASSWORD").to_owned(),
            })
            .with_tls_roots(TlsRoots::Only(
                std::fs::read(self.ca_file()).expect("the CA file must be readable"),
            ));
        RegistryClient::new(config).expect("the registry client must build")
    }

    /// Pulls a reference from the distribution registry with the real oras CLI, and returns
    /// the one file it wrote.
    pub fn oras_pull(&self, reference: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(self.var("TESTENV_ORAS"))
            .args(["pull", "--ca-file"])
            .arg(self.ca_file())
            .args(["-u", self.var("TESTENV_DISTRIBUTION_USERNAME")])
            .args(["-p", self.var("TESTENV_DISTRIBUTION_PASSWORD")])
            .arg("-o")
            .arg(dir.path())
            .arg(reference)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "oras pull {reference} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "oras pull wrote {files:?}");
        std::fs::read(&files[0]).unwrap()
    }

    /// Builds a reqwest client that trusts the test environment's CA.
    pub fn http_client(&self) -> reqwest::Client {
        let pem = std::fs::read(self.ca_file()).expect("the CA file must be readable");
        let ca =
            reqwest::Certificate::from_pem(&pem).expect("the CA file must hold a PEM certificate");
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .no_proxy()
            .build()
            .expect("the HTTP client must build")
    }
}

fn env_file_path() -> PathBuf {
    if let Ok(path) = std::env::var("TESTENV_FILE") {
        return PathBuf::from(path);
    }
    let cache = std::env::var("ARTIFACT_OPERATOR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let base = std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    Path::new(&std::env::var("HOME").expect("HOME must be set")).join(".cache")
                });
            base.join("artifact-operator")
        });
    cache.join("run").join("testenv.env")
}

/// Parses the `export KEY='value'` lines of the env file.
fn parse_env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.trim_matches('\'').to_owned()))
        .collect()
}

/// Returns a name unique to this test process and call, valid as a Kubernetes name and an OCI
/// repository component.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}-{nanos:x}-{n}", std::process::id())
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago, for a server whose address
/// must be known before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Merges `extra` into `target`: objects key by key, any other value replaces the target.
pub fn merge_json(target: &mut serde_json::Value, extra: serde_json::Value) {
    use serde_json::Value;

    match (target, extra) {
        (Value::Object(target), Value::Object(extra)) => {
            for (key, value) in extra {
                merge_json(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, extra) => *target = extra,
    }
}

/// Hex-encoded sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// Creates a namespace named `{prefix}-...`, unique to this call, and returns its name.
pub async fn create_namespace(client: &kube::Client, prefix: &str) -> String {
    use k8s_openapi::api::core::v1::Namespace;

    let name = unique_name(prefix);
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).unwrap();
    kube::Api::<Namespace>::all(client.clone())
        .create(&Default::default(), &namespace)
        .await
        .expect("creating a namespace must succeed");
    name
}

/// Installs the operator's CRDs with server-side apply and waits until they are established.
pub async fn install_crds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::{
        Api,
        api::{Patch, PatchParams},
        runtime::{conditions, wait::await_condition},
    };

    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("artifact-operator-tests").force();
    for definition in artifact_operator::crd::definitions() {
        let name = definition.metadata.name.clone().unwrap();
        api.patch(&name, &params, &Patch::Apply(&definition))
            .await
            .unwrap();
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(std::time::Duration::from_secs(30), established)
            .await
            .unwrap_or_else(|_| panic!("CRD {name} was not established within 30 s"))
            .unwrap();
    }
}

/// Creates a namespace named `{prefix}-...` with `labels`, unique to this call, and returns its
/// name.
pub async fn create_labeled_namespace(
    client: &kube::Client,
    prefix: &str,
    labels: &[(&str, &str)],
) -> String {
    use k8s_openapi::api::core::v1::Namespace;

    let name = unique_name(prefix);
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), serde_json::Value::from(*value)))
        .collect();
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": labels }
    }))
    .unwrap();
    kube::Api::<Namespace>::all(client.clone())
        .create(&Default::default(), &namespace)
        .await
        .expect("creating a namespace must succeed");
    name
}

/// The cache directory of `tests/env/lib.sh`: `$ARTIFACT_OPERATOR_CACHE`, else
/// `$XDG_CACHE_HOME/artifact-operator`, else `~/.cache/artifact-operator`.
fn cache_dir() -> PathBuf {
    std::env::var_os("ARTIFACT_OPERATOR_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(|dir| PathBuf::from(dir).join("artifact-operator"))
        })
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            PathBuf::from(home).join(".cache/artifact-operator")
        })
}

/// Returns the value of `key` in `tests/env/versions.env`.
fn pinned_version(key: &str) -> &'static str {
    include_str!("../env/versions.env")
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("tests/env/versions.env has no {key}"))
        .trim()
}

/// Path of the cached Apache Camel JAR that `tests/env/fetch-jars.sh` downloads, with the cache
/// rules of `tests/env/lib.sh`. Its sha256 as `sha256sum` printed it is in the same path plus
/// `.sha256`.
pub fn camel_jar_path() -> PathBuf {
    cache_dir().join(format!("jars/camel-core-engine-{}.jar", camel_version()))
}

/// Path of cert-manager's CRDs that `tests/env/build.sh cert-manager-crds` caches. The path
/// follows from the pinned version, so an environment started before they were added finds
/// them too.
pub fn cert_manager_crds_path() -> PathBuf {
    let path = cache_dir().join(format!(
        "bin/cert-manager-crds-{}/cert-manager-crds.yaml",
        pinned_version("CERT_MANAGER_VERSION")
    ));
    assert!(
        path.is_file(),
        "{} is missing; run `tests/env/build.sh cert-manager-crds`",
        path.display()
    );
    path
}

/// Camel version pinned in `tests/env/versions.env`.
pub fn camel_version() -> &'static str {
    pinned_version("CAMEL_VERSION")
}

/// Reads the cached Camel JAR, or panics with the command that downloads it.
pub fn camel_jar() -> Vec<u8> {
    let path = camel_jar_path();
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read {}: {error}. Run `bash tests/env/fetch-jars.sh` to download it",
            path.display()
        )
    })
}
