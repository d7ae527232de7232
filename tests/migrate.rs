//! `artifact-operator migrate` end to end: the real binary copies filesystem stores into the
//! distribution registry of the test environment (htpasswd over TLS), into a registry each
//! outage test starts and kills itself, and declares AppArtifacts through the real API server.
//!
//! The stores mix generated JARs, the Apache Camel JARs that `tests/env/fetch-jars.sh` fetches
//! and files that do not fit the layout. Every tenant name is unique to the test run, so tests
//! share the registry without seeing each other's versions.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader},
    net::TcpListener,
    os::unix::{fs::symlink, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use artifact_operator::{
    crd::{AppArtifact, ArtifactRegistry, TENANT_LABEL},
    oci::{
        ApplicationRef, ArtifactCoordinates, Credentials, Digest, JarMetadata, RegistryClient,
        RegistryConfig, TlsRoots,
        manifest::{JAR_MEDIA_TYPE, annotation},
    },
    store::{ArtifactStore, OciArtifactStore},
};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use serde_json::{Value, json};
use support::{TestEnv, unique_name};

const BINARY: &str = env!("CARGO_BIN_EXE_artifact-operator");

/// Upper bound for one run of the binary, far above what any run here needs, so a hung run
/// fails the test instead of blocking the suite.
const RUN_DEADLINE: Duration = Duration::from_secs(600);

// === Stores ===

/// A filesystem store in a temporary directory, with the expected content of every version.
struct Store {
    dir: tempfile::TempDir,
    versions: BTreeMap<ArtifactCoordinates, Vec<u8>>,
}

impl Store {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory must be creatable");
        std::fs::create_dir(dir.path().join("store")).unwrap();
        Self {
            dir,
            versions: BTreeMap::new(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Writes `{tenant}/{app}/{version}.jar`.
    fn add(&mut self, tenant: &str, app: &str, version: &str, content: Vec<u8>) -> PathBuf {
        let path = self
            .root()
            .join(tenant)
            .join(app)
            .join(format!("{version}.jar"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &content).unwrap();
        let coordinates = ArtifactCoordinates::new(tenant, app, version).unwrap();
        self.versions.insert(coordinates, content);
        path
    }

    /// Adds `count` generated JARs spread over `tenants`, five applications each, with sizes
    /// from 4 KiB to about 260 KiB.
    fn add_generated(&mut self, tenants: &[String], count: usize, seed: u64) {
        for index in 0..count {
            let tenant = &tenants[index % tenants.len()];
            let app = format!("app-{}", (index / tenants.len()) % 5);
            let version = format!("1.{index}.0");
            let size = 4096 + (index * 7919) % (256 * 1024);
            self.add(tenant, &app, &version, jar_bytes(seed + index as u64, size));
        }
    }

    /// Adds the Camel JARs as versions `CAMEL_VERSION` of applications named by artifact id.
    fn add_camel_jars(&mut self, tenant: &str) {
        for (artifact_id, path) in camel_jars() {
            let content = std::fs::read(&path).unwrap_or_else(|error| {
                panic!(
                    "cannot read {}: {error}; run `bash tests/env/fetch-jars.sh`",
                    path.display()
                )
            });
            assert!(
                content.starts_with(b"PK\x03\x04"),
                "{} is no JAR",
                path.display()
            );
            self.add(tenant, &artifact_id, camel_version(), content);
        }
    }

    /// SHA-256 of every file under the root, to show that a run changed nothing in the source.
    fn fingerprint(&self) -> BTreeMap<PathBuf, Digest> {
        let mut files = BTreeMap::new();
        let mut pending = vec![self.root()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let kind = entry.file_type().unwrap();
                if kind.is_dir() {
                    pending.push(entry.path());
                } else if kind.is_file() {
                    files.insert(
                        entry.path(),
                        Digest::of(&std::fs::read(entry.path()).unwrap()),
                    );
                }
            }
        }
        files
    }
}

/// `size` bytes that start with the ZIP signature, the rest determined by `seed`.
fn jar_bytes(seed: u64, size: usize) -> Vec<u8> {
    let mut bytes = b"PK\x03\x04".to_vec();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

fn camel_version() -> &'static str {
    versions_env_value("CAMEL_VERSION")
}

/// Returns the artifact id and path of each Camel JAR that `tests/env/fetch-jars.sh` caches.
fn camel_jars() -> Vec<(String, PathBuf)> {
    let cache = std::env::var_os("ARTIFACT_OPERATOR_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(|dir| PathBuf::from(dir).join("artifact-operator"))
        })
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            PathBuf::from(home).join(".cache/artifact-operator")
        });
    versions_env_value("CAMEL_ARTIFACT_IDS")
        .split_whitespace()
        .map(|id| {
            let path = cache.join(format!("jars/{id}-{}.jar", camel_version()));
            (id.to_owned(), path)
        })
        .collect()
}

fn versions_env_value(key: &str) -> &'static str {
    include_str!("env/versions.env")
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("tests/env/versions.env has no {key}"))
        .trim()
        .trim_matches('"')
}

fn unique_tenants(count: usize) -> Vec<String> {
    (0..count).map(|_| unique_name("mig")).collect()
}

// === Registries ===

/// How the binary and the assertions reach one registry.
struct Target {
    url: String,
    /// Options for the binary: credentials file and CA.
    options: Vec<String>,
    store: OciArtifactStore,
    /// Cluster for `--create-resources`.
    kubeconfig: Option<PathBuf>,
    _files: Option<tempfile::TempDir>,
}

impl Target {
    /// Returns the target for the test environment's distribution registry, with a credentials
    /// file.
    fn distribution(env: &TestEnv) -> Self {
        let files = tempfile::tempdir().unwrap();
        let credentials = files.path().join("registry.credentials");
        let username = env.var("TESTENV_DISTRIBUTION_USERNAME");
        let password = env.var("TESTENV_DISTRIBUTION_PASSWORD");
        std::fs::write(&credentials, format!("{username}:{password}\n")).unwrap();
        let url = format!("https://{}", env.var("TESTENV_DISTRIBUTION_HOST"));
        let config = RegistryConfig::new(&url)
            .unwrap()
            .with_credentials(Credentials::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            })
            .with_tls_roots(TlsRoots::only_from_pem_file(&env.ca_file()).unwrap());
        Self {
            options: vec![
                "--credentials-file".to_owned(),
                credentials.display().to_string(),
                "--ca".to_owned(),
                env.ca_file().display().to_string(),
            ],
            url,
            store: OciArtifactStore::new(RegistryClient::new(config).unwrap()),
            kubeconfig: Some(env.kubeconfig()),
            _files: Some(files),
        }
    }

    /// Returns the target for a plain-HTTP registry without authentication.
    fn plain(address: &str) -> Self {
        let url = format!("http://{address}");
        let config = RegistryConfig::new(&url).unwrap();
        Self {
            url,
            options: Vec::new(),
            store: OciArtifactStore::new(RegistryClient::new(config).unwrap()),
            kubeconfig: None,
            _files: None,
        }
    }

    /// Asserts that every version of `store` is tagged with its content, and that each of the
    /// store's applications has no other tag.
    async fn assert_holds(&self, store: &Store) {
        let mut by_application: BTreeMap<ApplicationRef, BTreeSet<String>> = BTreeMap::new();
        for (coordinates, content) in &store.versions {
            let stored = self
                .store
                .stat(coordinates)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{coordinates} is not in the registry"));
            assert_eq!(stored.digest, Digest::of(content), "{coordinates}");
            assert_eq!(stored.size, content.len() as u64, "{coordinates}");
            by_application
                .entry(coordinates.application().clone())
                .or_default()
                .insert(coordinates.version().to_owned());
        }
        for (application, versions) in by_application {
            let listed: BTreeSet<String> = self
                .store
                .list_versions(&application)
                .await
                .unwrap()
                .into_iter()
                .collect();
            assert_eq!(listed, versions, "tags of {application}");
        }
    }
}

/// A CNCF distribution registry process that the test starts and stops, on a port of its own.
struct OwnRegistry {
    dir: tempfile::TempDir,
    address: String,
    child: Option<Child>,
}

impl OwnRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {address}\n  secret: {}\n",
            dir.path().join("data").display(),
            unique_name("secret"),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut registry = Self {
            dir,
            address,
            child: None,
        };
        registry.restart();
        registry
    }

    /// Starts the process on the same port and storage, and waits until `/v2/` responds.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "the registry is already running");
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry must start; install the Debian package docker-registry");
        self.child = Some(child);

        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://{}/v2/", self.address);
        loop {
            let ready = std::net::TcpStream::connect(&self.address).is_ok()
                && Command::new("curl")
                    .args(["-fsS", "--noproxy", "*", "-o", "/dev/null", &url])
                    .status()
                    .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry on {} did not respond within 30 s; log: {}",
                self.address,
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the process with SIGKILL, as an outage would end it.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("the registry is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// === Running the binary ===

/// The exit status, output and report of one run of `artifact-operator migrate`.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    report: Value,
}

impl Run {
    fn count(&self, name: &str) -> u64 {
        self.report["counts"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no count {name} in {}", self.report["counts"]))
    }

    fn artifact(&self, reference: &str) -> &Value {
        self.report["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|artifact| artifact["reference"] == reference)
            .unwrap_or_else(|| panic!("{reference} not in the report: {}", self.stdout))
    }

    fn describe(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr (last 4000 bytes)\n{}",
            self.status,
            self.stdout,
            tail(&self.stderr, 4000)
        )
    }
}

fn tail(text: &str, bytes: usize) -> &str {
    let start = text.len().saturating_sub(bytes);
    let start = (start..text.len())
        .find(|&index| text.is_char_boundary(index))
        .unwrap_or(text.len());
    &text[start..]
}

/// Builds `migrate [verify] --from ROOT --registry URL ... --report FILE`.
fn migrate_command(
    subcommand: Option<&str>,
    store: &Store,
    target: &Target,
    extra: &[&str],
    report: &Path,
) -> Command {
    let mut command = Command::new(BINARY);
    command.arg("migrate");
    if let Some(subcommand) = subcommand {
        command.arg(subcommand);
    }
    command
        .arg("--from")
        .arg(store.root())
        .args(["--registry", &target.url])
        .args(&target.options)
        .args(extra)
        .arg("--report")
        .arg(report)
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .env_remove("KUBECONFIG");
    if let Some(kubeconfig) = &target.kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    command
}

/// Runs the binary to its end and reads its report.
fn run(subcommand: Option<&str>, store: &Store, target: &Target, extra: &[&str]) -> Run {
    let report = store
        .dir
        .path()
        .join(format!("{}.json", unique_name("report")));
    let output = migrate_command(subcommand, store, target, extra, &report)
        .output()
        .expect("the binary must start");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = std::fs::read(&report)
        .map(|bytes| serde_json::from_slice(&bytes).expect("the report must be JSON"))
        .unwrap_or_else(|error| {
            panic!(
                "no report ({error}); exit {}\n{stdout}\n{stderr}",
                output.status
            )
        });
    Run {
        status: output.status,
        stdout,
        stderr,
        report,
    }
}

fn migrate(store: &Store, target: &Target, extra: &[&str]) -> Run {
    run(None, store, target, extra)
}

fn verify(store: &Store, target: &Target) -> Run {
    run(Some("verify"), store, target, &[])
}

/// Starts a migration whose JSON log lines arrive on the returned channel.
fn spawn_migrate(store: &Store, target: &Target, extra: &[&str]) -> (Child, mpsc::Receiver<Value>) {
    let report = store
        .dir
        .path()
        .join(format!("{}.json", unique_name("report")));
    let mut child = migrate_command(None, store, target, extra, &report)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary must start");
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(record) = serde_json::from_str::<Value>(&line) {
                let _ = lines.send(record);
            }
        }
    });
    (child, received)
}

/// Waits until `count` log records with `message` have arrived.
fn wait_for_messages(lines: &mpsc::Receiver<Value>, message: &str, count: usize) {
    let deadline = Instant::now() + RUN_DEADLINE;
    let mut seen = 0;
    while seen < count {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let record = lines
            .recv_timeout(remaining)
            .unwrap_or_else(|error| panic!("only {seen} of {count} {message:?} lines: {error}"));
        if record["message"] == message {
            seen += 1;
        }
    }
}

fn wait_with_deadline(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + RUN_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the migration did not end within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rejected_kinds(run: &Run, root: &Path) -> BTreeMap<String, String> {
    run.report["rejectedPaths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rejected| {
            let path = PathBuf::from(rejected["path"].as_str().unwrap());
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            (relative, rejected["kind"].as_str().unwrap().to_owned())
        })
        .collect()
}

// === Tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrates_then_reruns_copy_nothing() {
    let env = TestEnv::load();
    let target = Target::distribution(&env);
    let mut store = Store::new();
    let tenants = unique_tenants(4);
    store.add_generated(&tenants, 200, 1);
    store.add_camel_jars(&tenants[0]);
    let root = store.root();
    let (t0, app) = (&tenants[0], "app-0");

    // Paths that do not fit the layout, with the kind of rejection each must get.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("outside.jar"), jar_bytes(9, 64)).unwrap();
    std::fs::write(root.join("README.md"), "store notes").unwrap();
    std::fs::write(root.join(t0).join("notes.txt"), "").unwrap();
    std::fs::write(root.join(t0).join(app).join("notes.txt"), "").unwrap();
    std::fs::write(root.join(t0).join(app).join("1..2.jar"), jar_bytes(7, 64)).unwrap();
    std::fs::create_dir_all(root.join("Upper/app")).unwrap();
    std::fs::write(root.join("Upper/app/1.0.jar"), jar_bytes(8, 64)).unwrap();
    std::fs::create_dir_all(root.join(t0).join(app).join("deeper")).unwrap();
    std::fs::write(
        root.join(t0).join(app).join("deeper/2.0.jar"),
        b"PK\x03\x04",
    )
    .unwrap();
    symlink(
        outside.path().join("outside.jar"),
        root.join(t0).join(app).join("9.9.9.jar"),
    )
    .unwrap();
    symlink("loop.jar", root.join(t0).join(app).join("loop.jar")).unwrap();
    symlink("missing.jar", root.join(t0).join(app).join("dangling.jar")).unwrap();
    let fifo = root.join(t0).join(app).join("fifo.jar");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(root.join(t0).join(app).join("7.7.jar.sha256"), "x").unwrap();
    // A checksum file beside its JAR belongs to the layout of the operator's filesystem store.
    std::fs::write(root.join(t0).join(app).join("1.0.0.jar.sha256"), "x").unwrap();
    let expected_rejected: BTreeMap<String, String> = [
        ("README.md".to_owned(), "file_above_version_depth"),
        (format!("{t0}/notes.txt"), "file_above_version_depth"),
        (format!("{t0}/{app}/notes.txt"), "not_jar"),
        (format!("{t0}/{app}/1..2.jar"), "invalid_coordinates"),
        ("Upper/app/1.0.jar".to_owned(), "invalid_coordinates"),
        (format!("{t0}/{app}/deeper"), "directory_at_version_depth"),
        (format!("{t0}/{app}/9.9.9.jar"), "symlink_outside_root"),
        (format!("{t0}/{app}/loop.jar"), "unreadable"),
        (format!("{t0}/{app}/dangling.jar"), "unreadable"),
        (format!("{t0}/{app}/fifo.jar"), "special_file"),
        (format!("{t0}/{app}/7.7.jar.sha256"), "orphan_checksum"),
    ]
    .into_iter()
    .map(|(path, kind)| (path, kind.to_owned()))
    .collect();
    let source_before = store.fingerprint();
    let total = store.versions.len() as u64;
    assert_eq!(total, 203);

    // The two unreadable links count as failures, and everything else is copied.
    let first = migrate(&store, &target, &["--concurrency", "4"]);
    println!("first run:\n{}", first.stdout);
    assert_eq!(first.status.code(), Some(1), "{}", first.describe());
    assert_eq!(first.count("copied"), total, "{}", first.describe());
    assert_eq!(first.count("skipped"), 0);
    assert_eq!(first.count("conflicts"), 0);
    assert_eq!(first.count("failures"), 2, "{}", first.describe());
    assert_eq!(rejected_kinds(&first, &root), expected_rejected);
    let expected_bytes: u64 = store
        .versions
        .values()
        .map(|bytes| bytes.len() as u64)
        .sum();
    assert_eq!(first.count("bytesCopied"), expected_bytes);
    assert!(
        first.stdout.contains("Rejected paths:\n"),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains(&format!(
            "{}: symbolic link to {}, which is outside the store root",
            root.join(t0).join(app).join("9.9.9.jar").display(),
            outside
                .path()
                .join("outside.jar")
                .canonicalize()
                .unwrap()
                .display()
        )),
        "{}",
        first.stdout
    );
    target.assert_holds(&store).await;
    assert_eq!(store.fingerprint(), source_before, "the source changed");

    // The manifest names the file and the source it came from.
    let camel = ArtifactCoordinates::new(t0.as_str(), "camel-api", camel_version()).unwrap();
    let jar = target.store.client().fetch_jar(&camel).await.unwrap();
    assert_eq!(jar.layer.media_type, JAR_MEDIA_TYPE);
    assert_eq!(
        jar.file_name(),
        Some(format!("camel-api-{}.jar", camel_version()).as_str())
    );
    let manifest = target
        .store
        .client()
        .fetch_manifest(&camel.reference().repository, &camel.reference().tag)
        .await
        .unwrap()
        .manifest;
    let source_annotation = manifest.annotations.get(annotation::SOURCE).cloned();
    assert_eq!(
        source_annotation,
        Some(format!(
            "file://{}",
            root.join(t0)
                .join("camel-api")
                .join(format!("{}.jar", camel_version()))
                .display()
        ))
    );

    let check = verify(&store, &target);
    println!("verify:\n{}", check.stdout);
    assert_eq!(check.count("identical"), total, "{}", check.describe());
    assert_eq!(check.count("missing"), 0);
    assert_eq!(check.count("different"), 0);
    assert_eq!(check.count("onlyInRegistry"), 0);
    assert!(
        check.stdout.contains(": 0 differences\n"),
        "{}",
        check.stdout
    );
    // The unreadable links still fail the verification until they are fixed.
    assert_eq!(check.count("failures"), 2);
    assert_eq!(check.status.code(), Some(1));

    std::fs::remove_file(root.join(t0).join(app).join("loop.jar")).unwrap();
    std::fs::remove_file(root.join(t0).join(app).join("dangling.jar")).unwrap();

    let second = migrate(&store, &target, &["--concurrency", "4"]);
    assert!(second.status.success(), "{}", second.describe());
    assert_eq!(second.count("copied"), 0, "{}", second.describe());
    assert_eq!(second.count("skipped"), total);
    assert_eq!(second.count("failures"), 0);
    assert_eq!(second.count("bytesCopied"), 0);

    let clean = verify(&store, &target);
    assert!(clean.status.success(), "{}", clean.describe());
    assert_eq!(clean.count("identical"), total);
    assert_eq!(clean.count("failures"), 0);
    target.assert_holds(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_killed_halfway_resumes() {
    let env = TestEnv::load();
    let target = Target::distribution(&env);
    let mut store = Store::new();
    store.add_generated(&unique_tenants(3), 200, 1000);
    let total = store.versions.len();

    let (mut child, lines) = spawn_migrate(&store, &target, &["--concurrency", "2"]);
    wait_for_messages(&lines, "Copied", 60);
    child.kill().unwrap();
    let status = wait_with_deadline(&mut child);
    assert_eq!(
        status.signal(),
        Some(9),
        "the migration must die by SIGKILL, not finish first: {status}"
    );

    let resumed = migrate(&store, &target, &["--concurrency", "2"]);
    assert!(resumed.status.success(), "{}", resumed.describe());
    let copied = resumed.count("copied");
    let skipped = resumed.count("skipped");
    assert_eq!(copied + skipped, total as u64, "{}", resumed.describe());
    assert!(skipped >= 60, "only {skipped} versions survived the kill");
    assert!(copied >= 1, "the killed run had copied everything");
    assert_eq!(resumed.count("conflicts"), 0);

    let check = verify(&store, &target);
    assert!(check.status.success(), "{}", check.describe());
    assert_eq!(check.count("identical"), total as u64);
    target.assert_holds(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_reported_and_left_alone() {
    let env = TestEnv::load();
    let target = Target::distribution(&env);
    let mut store = Store::new();
    let tenant = unique_name("mig");
    let source = jar_bytes(1, 5000);
    let conflicting_path = store.add(&tenant, "billing", "1.0", source.clone());
    store.add(&tenant, "billing", "2.0", jar_bytes(2, 5000));

    let registry_content = jar_bytes(3, 6000);
    let conflicting = ArtifactCoordinates::new(tenant.as_str(), "billing", "1.0").unwrap();
    target
        .store
        .put(
            &conflicting,
            registry_content.as_slice(),
            None,
            &JarMetadata::new("billing.jar").unwrap(),
        )
        .await
        .unwrap();

    let first = migrate(&store, &target, &[]);
    assert_eq!(first.status.code(), Some(1), "{}", first.describe());
    assert_eq!(first.count("conflicts"), 1, "{}", first.describe());
    assert_eq!(first.count("copied"), 1);
    assert_eq!(first.count("failures"), 0);
    let reported = first.artifact(&conflicting.to_string());
    assert_eq!(reported["outcome"], "conflict");
    assert_eq!(reported["digest"], Digest::of(&source).to_string());
    assert_eq!(
        reported["registryDigest"],
        Digest::of(&registry_content).to_string()
    );
    let conflict_line = first
        .stdout
        .lines()
        .find(|line| line.contains(&conflicting.to_string()))
        .unwrap_or_else(|| panic!("no conflict line:\n{}", first.stdout));
    assert!(
        conflict_line.contains(&Digest::of(&registry_content).to_string()),
        "{conflict_line}"
    );
    assert!(
        first.stdout.contains("Conflicts (left unchanged"),
        "{}",
        first.stdout
    );

    let stored = target.store.stat(&conflicting).await.unwrap().unwrap();
    assert_eq!(stored.digest, Digest::of(&registry_content));
    assert_eq!(std::fs::read(&conflicting_path).unwrap(), source);

    let check = verify(&store, &target);
    assert_eq!(check.status.code(), Some(1), "{}", check.describe());
    assert_eq!(check.count("different"), 1);
    assert_eq!(check.count("identical"), 1);

    let again = migrate(&store, &target, &[]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(again.count("conflicts"), 1);
    assert_eq!(again.count("skipped"), 1);
    let stored = target.store.stat(&conflicting).await.unwrap().unwrap();
    assert_eq!(stored.digest, Digest::of(&registry_content));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_outage_fails_then_rerun_completes() {
    let mut registry = OwnRegistry::start();
    let target = Target::plain(&registry.address);
    let mut store = Store::new();
    let tenants = unique_tenants(2);
    for index in 0..80 {
        let size = 128 * 1024 + index * 4096;
        store.add(
            &tenants[index % 2],
            "app",
            &format!("{index}.0"),
            jar_bytes(5000 + index as u64, size),
        );
    }
    let total = store.versions.len() as u64;

    let (mut child, lines) = spawn_migrate(&store, &target, &["--concurrency", "2"]);
    wait_for_messages(&lines, "Copied", 10);
    registry.kill();
    let status = wait_with_deadline(&mut child);
    assert_eq!(status.code(), Some(1), "the run must fail: {status}");

    let report_after_outage = migrate_report_of_last_run(&store);
    let copied = report_after_outage["counts"]["copied"].as_u64().unwrap();
    let failures = report_after_outage["counts"]["failures"].as_u64().unwrap();
    assert!(copied >= 10, "{report_after_outage}");
    assert!(failures >= 1, "{report_after_outage}");
    assert_eq!(
        copied + failures,
        total,
        "{}",
        report_after_outage["counts"]
    );
    let not_attempted = report_after_outage["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|artifact| artifact["kind"] == "not_attempted")
        .count();
    assert!(
        not_attempted >= 1,
        "the run kept trying after the registry died: {}",
        report_after_outage["counts"]
    );

    registry.restart();
    let rerun = migrate(&store, &target, &["--concurrency", "2"]);
    assert!(rerun.status.success(), "{}", rerun.describe());
    // A manifest the registry stored just before it died counts as failed in the first run and
    // as skipped here, so the rerun may skip more than the first run reported as copied.
    assert!(rerun.count("skipped") >= copied, "{}", rerun.describe());
    assert_eq!(rerun.count("skipped") + rerun.count("copied"), total);

    let check = verify(&store, &target);
    assert!(check.status.success(), "{}", check.describe());
    assert_eq!(check.count("identical"), total);
    target.assert_holds(&store).await;
}

/// Reads the report of the only report file in the store's directory, which a spawned run
/// writes.
fn migrate_report_of_last_run(store: &Store) -> Value {
    let reports: Vec<PathBuf> = std::fs::read_dir(store.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    serde_json::from_slice(&std::fs::read(&reports[0]).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_lists_every_difference() {
    let registry = OwnRegistry::start();
    let target = Target::plain(&registry.address);
    let mut store = Store::new();
    let tenant = unique_name("mig");
    // Distinct content per version, so corrupting one blob touches one version only.
    for (index, version) in ["1.0", "2.0", "3.0", "4.0"].iter().enumerate() {
        store.add(
            &tenant,
            "billing",
            version,
            jar_bytes(12_000 + index as u64, 9000),
        );
    }
    let migrated = migrate(&store, &target, &[]);
    assert!(migrated.status.success(), "{}", migrated.describe());

    let version = |name: &str| ArtifactCoordinates::new(tenant.as_str(), "billing", name).unwrap();
    // Missing: the tag is deleted from the registry.
    assert!(target.store.delete(&version("1.0")).await.unwrap());
    // Different: the store gets new bytes for a version the registry has.
    let changed = jar_bytes(13_000, 9000);
    std::fs::write(store.root().join(&tenant).join("billing/2.0.jar"), &changed).unwrap();
    // Only in the registry: a version the store never had.
    let extra = version("9.0");
    target
        .store
        .put(
            &extra,
            &b"PK\x03\x04extra"[..],
            None,
            &JarMetadata::new("b.jar").unwrap(),
        )
        .await
        .unwrap();
    // Corrupted: the registry's stored blob gets other bytes of the same size.
    let corrupted = Digest::of(&store.versions[&version("3.0")]).hex();
    let blob = registry
        .dir
        .path()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&corrupted[..2])
        .join(&corrupted)
        .join("data");
    std::fs::write(&blob, jar_bytes(14_000, 9000)).unwrap();

    let check = verify(&store, &target);
    println!("{}", check.stdout);
    assert_eq!(check.status.code(), Some(1), "{}", check.describe());
    assert_eq!(check.count("identical"), 1, "{}", check.describe());
    assert_eq!(check.count("missing"), 1);
    assert_eq!(check.count("different"), 1);
    assert_eq!(check.count("onlyInRegistry"), 1);
    assert_eq!(check.count("failures"), 1);
    assert_eq!(
        check.artifact(&version("1.0").to_string())["outcome"],
        "missing"
    );
    let different = check.artifact(&version("2.0").to_string());
    assert_eq!(different["outcome"], "different");
    assert_eq!(different["digest"], Digest::of(&changed).to_string());
    let broken = check.artifact(&version("3.0").to_string());
    assert_eq!(broken["outcome"], "failed");
    assert_eq!(broken["kind"], "content_mismatch", "{broken}");
    assert_eq!(
        check.artifact(&extra.to_string())["outcome"],
        "onlyInRegistry"
    );
    assert_eq!(
        check.artifact(&version("4.0").to_string())["outcome"],
        "identical"
    );
    assert!(
        check.stdout.contains(": 3 differences\n"),
        "{}",
        check.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_lists_and_writes_nothing() {
    let env = TestEnv::load();
    let target = Target::distribution(&env);
    let mut store = Store::new();
    store.add_generated(&unique_tenants(1), 3, 7000);

    let dry = migrate(&store, &target, &["--dry-run"]);
    assert!(dry.status.success(), "{}", dry.describe());
    assert_eq!(dry.count("wouldCopy"), 3);
    assert_eq!(dry.count("copied"), 0);
    assert!(dry.stdout.contains("Would copy:\n"), "{}", dry.stdout);
    for coordinates in store.versions.keys() {
        assert!(
            dry.stdout.contains(&format!("  {coordinates}  ")),
            "{coordinates} not listed:\n{}",
            dry.stdout
        );
        assert_eq!(target.store.stat(coordinates).await.unwrap(), None);
    }
}

#[test]
fn wrong_password_fails_before_copying() {
    let env = TestEnv::load();
    let mut target = Target::distribution(&env);
    let files = tempfile::tempdir().unwrap();
    let credentials = files.path().join("wrong.credentials");
    std::fs::write(&credentials, "testenv:wrong-password\n").unwrap();
    target.options[1] = credentials.display().to_string();
    let mut store = Store::new();
    store.add_generated(&unique_tenants(1), 1, 8000);

    let output = Command::new(BINARY)
        .arg("migrate")
        .arg("--from")
        .arg(store.root())
        .args(["--registry", &target.url])
        .args(&target.options)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty(), "a summary was printed");
    assert!(
        stderr.contains("error: registry ")
            && stderr.contains("check --registry, --credentials-file"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-password"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_resources_declares_app_artifacts() {
    let env = TestEnv::load();
    let kube = env.kube_client().await;
    support::install_crds(&kube).await;
    let target = Target::distribution(&env);

    let registry_namespace = support::create_namespace(&kube, "mig-registry").await;
    let registry: ArtifactRegistry = serde_json::from_value(json!({
        "apiVersion": "artifacts.cameleer.io/v1alpha1",
        "kind": "ArtifactRegistry",
        "metadata": { "name": "main", "namespace": registry_namespace },
        "spec": { "external": { "url": target.url } },
    }))
    .unwrap();
    Api::<ArtifactRegistry>::namespaced(kube.clone(), &registry_namespace)
        .create(&Default::default(), &registry)
        .await
        .unwrap();

    let tenants = unique_tenants(3);
    let mut store = Store::new();
    for (index, tenant) in tenants.iter().enumerate() {
        store.add(
            tenant,
            "billing",
            "1.0",
            jar_bytes(9000 + index as u64, 3000),
        );
        store.add(
            tenant,
            "billing",
            "2.0-RC1",
            jar_bytes(9100 + index as u64, 3000),
        );
    }
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    let create_tenant_namespace = |tenant: &String| {
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": { "name": format!("ns-{tenant}"), "labels": { TENANT_LABEL: tenant } }
        }))
        .unwrap();
        let namespaces = namespaces.clone();
        async move {
            namespaces
                .create(&Default::default(), &namespace)
                .await
                .unwrap();
        }
    };
    create_tenant_namespace(&tenants[0]).await;
    create_tenant_namespace(&tenants[1]).await;
    let registry_ref = format!("{registry_namespace}/main");
    let options = [
        "--create-resources",
        "--namespace-template",
        "ns-{tenantId}",
        "--registry-ref",
        registry_ref.as_str(),
    ];

    // The third tenant's namespace does not exist yet.
    let first = migrate(&store, &target, &options);
    assert_eq!(first.status.code(), Some(1), "{}", first.describe());
    assert_eq!(first.count("copied"), 6);
    assert_eq!(first.count("resourcesApplied"), 4, "{}", first.describe());
    assert_eq!(first.count("resourceFailures"), 2);
    let missing = format!(
        "namespace ns-{} not found; create it with the label {TENANT_LABEL}={} and run the \
         migration again",
        tenants[2], tenants[2]
    );
    assert!(first.stdout.contains(&missing), "{}", first.stdout);

    let mut versions = BTreeMap::new();
    let with_namespace = store.versions.iter().filter(|(coordinates, _)| {
        tenants[..2]
            .iter()
            .any(|tenant| tenant == coordinates.tenant_id())
    });
    for (coordinates, content) in with_namespace {
        let namespace = format!("ns-{}", coordinates.tenant_id());
        let name = if coordinates.version() == "1.0" {
            "billing-1.0".to_owned()
        } else {
            let resource = first.report["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|resource| resource["reference"] == coordinates.to_string())
                .unwrap();
            resource["name"].as_str().unwrap().to_owned()
        };
        let object = Api::<AppArtifact>::namespaced(kube.clone(), &namespace)
            .get(&name)
            .await
            .unwrap_or_else(|error| panic!("AppArtifact {namespace}/{name}: {error}"));
        assert_eq!(object.spec.tenant_id, coordinates.tenant_id());
        assert_eq!(object.spec.app_id, "billing");
        assert_eq!(object.spec.version, coordinates.version());
        assert_eq!(object.spec.registry_ref.name, "main");
        assert_eq!(
            object.spec.registry_ref.namespace.as_deref(),
            Some(registry_namespace.as_str())
        );
        let pinned = object
            .spec
            .source
            .existing
            .as_ref()
            .and_then(|existing| existing.sha256.clone());
        assert_eq!(pinned, Some(Digest::of(content).hex()));
        assert!(object.spec.source.url.is_none());
        let managers: Vec<_> = object
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .map(|entry| (entry.manager.clone(), entry.operation.clone()))
            .collect();
        assert!(
            managers.contains(&(
                Some("artifact-operator".to_owned()),
                Some("Apply".to_owned())
            )),
            "{managers:?}"
        );
        versions.insert((namespace, name), object.metadata.resource_version.unwrap());
    }
    assert_eq!(versions.len(), 4);

    create_tenant_namespace(&tenants[2]).await;
    let second = migrate(&store, &target, &options);
    assert!(second.status.success(), "{}", second.describe());
    assert_eq!(second.count("skipped"), 6);
    assert_eq!(second.count("resourcesApplied"), 6);
    for ((namespace, name), resource_version) in versions {
        let object = Api::<AppArtifact>::namespaced(kube.clone(), &namespace)
            .get(&name)
            .await
            .unwrap();
        assert_eq!(
            object.metadata.resource_version.unwrap(),
            resource_version,
            "the rerun changed {namespace}/{name}"
        );
    }
    let third_tenant = Api::<AppArtifact>::namespaced(kube.clone(), &format!("ns-{}", tenants[2]))
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(third_tenant.items.len(), 2);
}

/// The AppArtifacts that `--create-resources` declares become Ready by adoption once the
/// operator's controllers see them, without pushing anything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_resources_become_ready_by_adoption() {
    use artifact_operator::{
        artifact::{address_policy::AddressPolicy, controller as artifact_controller},
        registry::controller as registry_controller,
        telemetry::Metrics,
    };
    use k8s_openapi::api::core::v1::Secret;

    let env = TestEnv::load();
    let kube = env.kube_client().await;
    support::install_crds(&kube).await;
    let target = Target::distribution(&env);

    // A registry that admits tenant namespaces, with the credentials and CA it needs.
    let registry_namespace = support::create_namespace(&kube, "mig-adopt").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "registry-login" },
        "stringData": {
            "username": env.var("TESTENV_DISTRIBUTION_USERNAME"),
            "password": env.var("TESTENV_DISTRIBUTION_PASSWORD"),
        },
    }))
    .unwrap();
    Api::<Secret>::namespaced(kube.clone(), &registry_namespace)
        .create(&Default::default(), &secret)
        .await
        .unwrap();
    let registry: ArtifactRegistry = serde_json::from_value(json!({
        "apiVersion": "artifacts.cameleer.io/v1alpha1",
        "kind": "ArtifactRegistry",
        "metadata": { "name": "main" },
        "spec": {
            "external": {
                "url": target.url,
                "credentialsSecretRef": { "name": "registry-login" },
                "caBundle": std::fs::read_to_string(env.ca_file()).unwrap(),
            },
            "tenancy": { "namespaceSelector": {
                "matchExpressions": [{ "key": TENANT_LABEL, "operator": "Exists" }]
            } },
        },
    }))
    .unwrap();
    Api::<ArtifactRegistry>::namespaced(kube.clone(), &registry_namespace)
        .create(&Default::default(), &registry)
        .await
        .unwrap();

    let tenant = unique_tenants(1).remove(0);
    let tenant_namespace =
        support::create_labeled_namespace(&kube, "mig-tenant", &[(TENANT_LABEL, &tenant)]).await;
    let mut store = Store::new();
    store.add(&tenant, "billing", "1.0", jar_bytes(9300, 3000));
    store.add(&tenant, "billing", "1.1", jar_bytes(9301, 3000));
    let registry_ref = format!("{registry_namespace}/main");
    let run = migrate(
        &store,
        &target,
        &[
            "--create-resources",
            "--namespace-template",
            &tenant_namespace,
            "--registry-ref",
            &registry_ref,
        ],
    );
    assert!(run.status.success(), "{}", run.describe());
    assert_eq!(run.count("resourcesApplied"), 2);

    let registries = Arc::new(registry_controller::Context::new(
        kube.clone(),
        registry_controller::Settings {
            operator_namespace: "artifact-operator".into(),
            traefik_namespace: "traefik".into(),
            watch_namespace: Some(registry_namespace.clone()),
        },
    ));
    let artifacts = Arc::new(artifact_controller::Context::new(
        kube.clone(),
        artifact_controller::Settings::new(
            Some(tenant_namespace.clone()),
            AddressPolicy::default(),
        ),
        Arc::new(Metrics::default()),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    tokio::spawn(registry_controller::run(registries, signal()));
    tokio::spawn(artifact_controller::run(artifacts.clone(), signal()));

    let api: Api<AppArtifact> = Api::namespaced(kube.clone(), &tenant_namespace);
    for (version, seed) in [("1.0", 9300), ("1.1", 9301)] {
        let name = format!("billing-{version}");
        let deadline = Instant::now() + Duration::from_secs(90);
        let ready = loop {
            let object = api.get(&name).await.unwrap();
            let ready = object.status.as_ref().and_then(|status| {
                status
                    .conditions
                    .iter()
                    .find(|condition| condition.type_ == "Ready" && condition.status == "True")
                    .cloned()
            });
            if let Some(ready) = ready {
                break (object, ready);
            }
            assert!(
                Instant::now() < deadline,
                "AppArtifact {name} never became Ready: {:#?}",
                object.status
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(ready.1.reason, "ArtifactAdopted");
        let digest = ready.0.status.unwrap().artifact.unwrap().digest;
        assert_eq!(digest, Digest::of(&jar_bytes(seed, 3000)).to_string());
    }
    assert!(
        !artifacts.metrics.encode().contains("result=\"pushed\""),
        "adoption pushes nothing"
    );
    let _ = stop.send(true);
}
