//! The `artifact-operator` binary against the real API server.

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use support::TestEnv;

const BINARY: &str = env!("CARGO_BIN_EXE_artifact-operator");

#[test]
fn version_prints_crate_version() {
    let output = Command::new(BINARY).arg("version").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.starts_with(&format!(
            "artifact-operator {}\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("1.33 to 1.37"), "{text}");
}

/// A running `artifact-operator run` whose log lines arrive on `lines`.
struct Operator {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Operator {
    /// Kills an operator that a failed test left running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Operator {
    /// Starts the operator on its own namespaces, with JSON logs.
    fn start(
        env: &TestEnv,
        operator_namespace: &str,
        watch_namespace: &str,
        extra: &[&str],
    ) -> Self {
        let mut child = Command::new(BINARY)
            .arg("run")
            // A namespace of its own keeps this operator away from other tests' objects.
            .args(["--watch-namespace", watch_namespace])
            .args(["--operator-namespace", operator_namespace])
            .args(["--gateway-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(extra)
            .env("KUBECONFIG", env.kubeconfig())
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "json")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines_tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// Waits for the first log line after the previous match that contains `needle`.
    fn wait_for_line(&self, needle: &str) -> String {
        wait_for_line(&self.lines, needle)
    }

    /// Sends SIGTERM and checks that the operator exits 0 after a graceful stop.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = wait_with_deadline(&mut self.child, Duration::from_secs(30), &self.lines);
        assert!(
            exit.success(),
            "the operator must exit 0 on SIGTERM, got {exit}"
        );
        self.wait_for_line("Operator stopped");
    }
}

fn kubectl(env: &TestEnv, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(env.var("TESTENV_KUBECTL"))
        .args(args)
        .env("KUBECONFIG", env.kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn create_namespace(env: &TestEnv, name: &str, labels: &[&str]) {
    let created = kubectl(env, &["create", "namespace", name], None);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    for label in labels {
        let labeled = kubectl(env, &["label", "namespace", name, label], None);
        assert!(
            labeled.status.success(),
            "{}",
            String::from_utf8_lossy(&labeled.stderr)
        );
    }
}

#[test]
fn run_logs_server_version_and_stops_on_sigterm() {
    let env = TestEnv::load();
    // The operator's namespace keeps its signing key Secret; it must exist.
    let operator_namespace = support::unique_name("cli-operator");
    create_namespace(&env, &operator_namespace, &[]);
    let operator = Operator::start(
        &env,
        &operator_namespace,
        &support::unique_name("cli"),
        &["--webhook-listen", "127.0.0.1:0"],
    );

    let connected = operator.wait_for_line("Connected to API server");
    let record: serde_json::Value = serde_json::from_str(&connected).unwrap();
    assert_eq!(record["level"], "INFO");
    assert!(
        record["version"].as_str().unwrap().starts_with("v1.37."),
        "{connected}"
    );

    let operations = address(&operator.wait_for_line(r#""listener":"operations""#));
    operator.wait_for_line(r#""listener":"gateway""#);
    operator.wait_for_line(r#""listener":"webhook""#);
    operator.wait_for_line("Operator started");

    assert_eq!(
        get(&format!("http://{operations}/healthz")),
        (200, "ok\n".to_owned())
    );
    let (status, body) = get(&format!("http://{operations}/readyz"));
    assert_eq!((status, body.as_str()), (200, r#"{"ready":true}"#));
    let (status, metrics) = get(&format!("http://{operations}/metrics"));
    assert_eq!(status, 200);
    // Families without samples are left out until their first event, so these two are the
    // unlabelled ones that exist from the start.
    assert!(
        metrics.contains("# TYPE artifact_operator_admission_duration_seconds histogram"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE artifact_operator_gateway_sent_bytes counter"),
        "{metrics}"
    );
    operator.stop();
}

/// Two replicas share one Lease: the second waits while the first leads, takes over when the
/// first is killed, and releases the Lease when it stops.
#[test]
fn replicas_hand_over_the_lease() {
    let env = TestEnv::load();
    let operator_namespace = support::unique_name("cli-operator");
    create_namespace(&env, &operator_namespace, &[]);
    let watched = support::unique_name("cli");
    let listen = ["--webhook-listen", "127.0.0.1:0"];

    let first = Operator::start(&env, &operator_namespace, &watched, &listen);
    let led = first.wait_for_line("Became the leader");
    let first_identity = field(&led, "identity");
    let second = Operator::start(&env, &operator_namespace, &watched, &listen);
    second.wait_for_line("Operator started");
    second.wait_for_line("Waiting for leadership");
    assert_eq!(lease_holder(&env, &operator_namespace), first_identity);

    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let took_over = second.wait_for_line("Became the leader");
    let second_identity = field(&took_over, "identity");
    assert_ne!(second_identity, first_identity);
    assert_eq!(lease_holder(&env, &operator_namespace), second_identity);

    second.stop();
    assert_eq!(lease_holder(&env, &operator_namespace), "");
}

/// A custom resource that no test installs.
#[derive(
    kube::CustomResource, serde::Serialize, serde::Deserialize, Clone, Debug, schemars::JsonSchema,
)]
#[kube(
    group = "never.artifacts.cameleer.io",
    version = "v1",
    kind = "NeverInstalled",
    namespaced
)]
struct NeverInstalledSpec {}

#[tokio::test]
async fn missing_crd_names_the_install_command() {
    let env = TestEnv::load();
    let client = env.kube_client().await;

    let error = artifact_operator::cluster::check_crd::<NeverInstalled>(&client, None)
        .await
        .unwrap_err();

    let message = error.to_string();
    assert!(
        message.contains("neverinstalleds.never.artifacts.cameleer.io is not installed"),
        "{message}"
    );
    assert!(
        message.contains("artifact-operator crds | kubectl apply -f -"),
        "{message}"
    );
    artifact_operator::cluster::check_crds(&client, None)
        .await
        .unwrap();
}

fn field(line: &str, name: &str) -> String {
    let record: serde_json::Value = serde_json::from_str(line).unwrap();
    record[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        .to_owned()
}

fn address(line: &str) -> String {
    field(line, "address")
}

fn lease_holder(env: &TestEnv, namespace: &str) -> String {
    let output = kubectl(
        env,
        &[
            "get",
            "lease",
            "artifact-operator",
            "-n",
            namespace,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Returns the status code and body of a GET.
fn get(url: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// With `--webhook-url` the operator registers its webhook, and the API server sends it the
/// pods of the watched namespace.
#[test]
fn run_registers_webhook_by_url() {
    let env = TestEnv::load();
    let operator_namespace = support::unique_name("cli-operator");
    create_namespace(&env, &operator_namespace, &[]);
    let namespace = support::unique_name("cli-shop");
    create_namespace(&env, &namespace, &["artifacts.cameleer.io/tenant=acme"]);
    let configuration = support::unique_name("cli-webhook");
    // The URL must be known before the listener exists, so the test picks a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("https://127.0.0.1:{port}");
    let operator = Operator::start(
        &env,
        &operator_namespace,
        &namespace,
        &[
            "--webhook-listen",
            &listen,
            "--webhook-ip",
            "127.0.0.1",
            "--webhook-url",
            &url,
            "--webhook-configuration",
            &configuration,
        ],
    );
    operator.wait_for_line("Registered the webhook");
    operator.wait_for_line("Operator started");

    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "shop",
            "namespace": namespace,
            "labels": { "artifacts.cameleer.io/inject": "true" },
            "annotations": { "artifacts.cameleer.io/artifacts": "missing" },
        },
        "spec": {
            "initContainers": [{ "name": "loader", "image": "registry.test/curl:1" }],
            "containers": [{ "name": "app", "image": "registry.test/app:1" }],
        },
    })
    .to_string();
    let expected = format!("AppArtifact {namespace}/missing does not exist");
    // The API server picks up the new configuration, and the namespace's default
    // ServiceAccount appears, a moment after they are created.
    let mut last = String::new();
    for _ in 0..300 {
        let output = kubectl(&env, &["create", "--dry-run=server", "-f", "-"], Some(&pod));
        last = String::from_utf8_lossy(&output.stderr).into_owned();
        if last.contains(&expected) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(last.contains(&expected), "{last}");

    operator.stop();
    let deleted = kubectl(
        &env,
        &["delete", "mutatingwebhookconfiguration", &configuration],
        None,
    );
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
}

#[test]
fn run_without_cluster_fails_with_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .arg("run")
        .env("KUBECONFIG", dir.path().join("missing-kubeconfig"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failed to load Kubernetes client configuration"),
        "{stderr}"
    );
}

/// Waits for the child to exit. A child still running at the deadline is killed and the test
/// fails, so a shutdown that hangs cannot hang the test run.
fn wait_with_deadline(
    child: &mut std::process::Child,
    limit: Duration,
    lines: &mpsc::Receiver<String>,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let log: Vec<String> = lines.try_iter().collect();
            panic!(
                "the operator did not exit within {limit:?} after SIGTERM; log:\n{}",
                log.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => continue,
            Err(error) => panic!("no log line containing {needle:?} ({error})"),
        }
    }
}
