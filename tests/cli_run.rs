//! The `artifact-operator` binary against the real API server.

mod support;

#[path = "support/stored_artifact.rs"]
mod stored_artifact;
#[path = "support/tcp_proxy.rs"]
mod tcp_proxy;

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use artifact_operator::{
    crd::{AppArtifact, TENANT_LABEL},
    leader::LeaseSettings,
    webhook::{ARTIFACTS_ANNOTATION, INJECT_LABEL, admission::MUTATE_PODS_PATH},
};
use k8s_openapi::api::{
    coordination::v1::{Lease, LeaseSpec},
    core::v1::Secret,
};
use kube::Api;
use serde_json::{Value, json};
use stored_artifact::StoredArtifact;
use support::{TestEnv, create_labeled_namespace, install_crds, unique_name};
use tcp_proxy::TcpProxy;
use tokio::sync::watch;

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
        Self::start_with_kubeconfig(
            &env.kubeconfig(),
            operator_namespace,
            watch_namespace,
            extra,
        )
    }

    /// Starts the operator like [`Operator::start`], with another kubeconfig.
    fn start_with_kubeconfig(
        kubeconfig: &Path,
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
            .env("KUBECONFIG", kubeconfig)
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
        let exit = wait_with_deadline(
            &mut self.child,
            Duration::from_secs(30),
            "SIGTERM",
            &self.lines,
        );
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

/// A replica of the real binary with the addresses of its listeners.
struct Replica {
    operator: Operator,
    operations: String,
    webhook: String,
}

impl Replica {
    /// Starts a replica and waits until its listeners are bound and it has started.
    fn start(env: &TestEnv, operator_namespace: &str, watched: &str, extra: &[&str]) -> Self {
        let operator = Operator::start(env, operator_namespace, watched, extra);
        // The listeners bind in this order, and each wait consumes the log up to its line.
        let operations = address(&operator.wait_for_line(r#""listener":"operations""#));
        let webhook = address(&operator.wait_for_line(r#""listener":"webhook""#));
        operator.wait_for_line("Operator started");
        Self {
            operator,
            operations,
            webhook,
        }
    }

    /// Waits for the replica to take the Lease, at most until `deadline`, and returns its
    /// identity.
    fn wait_for_leadership(&self, deadline: Instant, context: &str) -> String {
        let line = wait_for_line_until(&self.operator.lines, "Became the leader", deadline)
            .unwrap_or_else(|| panic!("{context}: the replica did not become the leader in time"));
        field(&line, "identity")
    }
}

/// One admission review sent to a replica's webhook and what became of it.
#[derive(Debug)]
struct ReviewOutcome {
    started: Instant,
    finished: Instant,
    result: Result<(), String>,
}

/// A stream of admission reviews to one replica: the task that sends them, a count of the
/// successful ones, and the switch that stops it.
struct ReviewStream {
    task: tokio::task::JoinHandle<Vec<ReviewOutcome>>,
    succeeded: Arc<AtomicUsize>,
    last_failure: Arc<Mutex<Option<String>>>,
    stop: watch::Sender<bool>,
}

impl ReviewStream {
    fn start(
        runtime: &tokio::runtime::Runtime,
        http: reqwest::Client,
        url: String,
        pod: Value,
    ) -> Self {
        let succeeded = Arc::new(AtomicUsize::new(0));
        let last_failure = Arc::new(Mutex::new(None));
        let (stop, stopped) = watch::channel(false);
        let tally = Tally {
            succeeded: succeeded.clone(),
            last_failure: last_failure.clone(),
        };
        let task = runtime.spawn(send_reviews(http, url, pod, tally, stopped));
        Self {
            task,
            succeeded,
            last_failure,
            stop,
        }
    }

    /// Stops sending and returns every outcome.
    fn finish(self, runtime: &tokio::runtime::Runtime) -> Vec<ReviewOutcome> {
        self.stop.send(true).unwrap();
        runtime.block_on(self.task).unwrap()
    }

    /// Waits until `count` reviews have succeeded.
    fn wait_for_successes(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.succeeded.load(Ordering::Relaxed) < count {
            if Instant::now() >= deadline {
                let last_failure = self.last_failure.lock().unwrap().clone();
                panic!(
                    "fewer than {count} admission reviews succeeded within 30 s. The last \
                     failure: {last_failure:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What a stream of reviews shares with the test while it runs.
struct Tally {
    succeeded: Arc<AtomicUsize>,
    last_failure: Arc<Mutex<Option<String>>>,
}

/// Sends an admission review of `pod` to `url` every 50 ms, one at a time, until `stop` turns
/// true, and returns every outcome.
async fn send_reviews(
    http: reqwest::Client,
    url: String,
    pod: Value,
    tally: Tally,
    mut stop: watch::Receiver<bool>,
) -> Vec<ReviewOutcome> {
    let mut outcomes = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for sequence in 0u64.. {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        let result = review_injects(&http, &url, &pod, sequence).await;
        match &result {
            Ok(()) => _ = tally.succeeded.fetch_add(1, Ordering::Relaxed),
            Err(failure) => *tally.last_failure.lock().unwrap() = Some(failure.clone()),
        }
        outcomes.push(ReviewOutcome {
            started,
            finished: Instant::now(),
            result,
        });
    }
    outcomes
}

/// Sends one admission review for a pod CREATE and checks that the webhook allowed the pod
/// with a patch.
async fn review_injects(
    http: &reqwest::Client,
    url: &str,
    pod: &Value,
    sequence: u64,
) -> Result<(), String> {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("review-{sequence}"),
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": { "username": "ha-test" },
            "object": pod,
        },
    });
    let response = http
        .post(url)
        .json(&review)
        .send()
        .await
        .map_err(|error| format!("request failed: {}", error_chain(&error)))?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|error| {
        format!(
            "HTTP {status} with an unreadable body: {}",
            error_chain(&error)
        )
    })?;
    let answer = &body["response"];
    // kube-core writes the patch as an array of bytes, which the API server also accepts.
    let patched = answer["patchType"] == "JSONPatch" && !answer["patch"].is_null();
    if status.is_success() && answer["allowed"] == true && patched {
        Ok(())
    } else {
        Err(format!("HTTP {status}: {body}"))
    }
}

/// Returns an error with its sources, separated by colons.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Sums the samples of `artifact_operator_reconciles_total` on a replica's `/metrics`. The
/// family is absent until the first reconcile, which counts as zero.
async fn reconcile_count(http: &reqwest::Client, operations: &str) -> u64 {
    let text = http
        .get(format!("http://{operations}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with("artifact_operator_reconciles_total{"))
        .map(|line| {
            let value = line.rsplit(' ').next().unwrap();
            value.parse::<f64>().unwrap() as u64
        })
        .sum()
}

/// Polls both replicas' reconcile counters until the leader's reaches `at_least`, and checks
/// at every poll that the other replica has reconciled nothing.
async fn leader_alone_reconciles(
    http: &reqwest::Client,
    leader: &str,
    follower: Option<&str>,
    at_least: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let led = reconcile_count(http, leader).await;
        if let Some(follower) = follower {
            assert_eq!(
                reconcile_count(http, follower).await,
                0,
                "the replica without the Lease reconciled"
            );
        }
        if led >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the leader reconciled {led} times within 60 s, expected at least {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the controller has reconciled the AppArtifact `name` and found it Ready.
async fn wait_until_reconciled_ready(client: &kube::Client, namespace: &str, name: &str) {
    let api: Api<AppArtifact> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let artifact = api.get(name).await.unwrap();
        let status = artifact.status.unwrap_or_default();
        let reconciled = status.observed_generation == artifact.metadata.generation;
        let ready = status
            .conditions
            .iter()
            .any(|condition| condition.type_ == "Ready" && condition.status == "True");
        if reconciled && ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "AppArtifact {namespace}/{name} was not reconciled Ready within 60 s: {:?}",
            status.conditions
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn lease_spec(client: &kube::Client, namespace: &str) -> LeaseSpec {
    Api::<Lease>::namespaced(client.clone(), namespace)
        .get("artifact-operator")
        .await
        .unwrap()
        .spec
        .unwrap()
}

/// Builds an HTTP client that trusts only the webhook CA in the operator's TLS Secret.
async fn webhook_client(client: &kube::Client, operator_namespace: &str) -> reqwest::Client {
    let secret = Api::<Secret>::namespaced(client.clone(), operator_namespace)
        .get(artifact_operator::webhook::certs::DEFAULT_SECRET_NAME)
        .await
        .unwrap();
    let ca = &secret.data.unwrap()[artifact_operator::webhook::certs::CA_CERT_KEY].0;
    reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca).unwrap())
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap()
}

/// Two replicas share one Lease. Only the holder reconciles; after a SIGKILL of the holder the
/// other replica takes the Lease once it has expired and starts reconciling. Both replicas
/// respond to admission reviews all along. Only the killed one fails, and only from its death
/// on.
#[test]
fn replicas_survive_leader_kill() {
    let env = TestEnv::load();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(env.kube_client());
    let (operator_namespace, namespace, pod) = runtime.block_on(async {
        install_crds(&client).await;
        let operator_namespace = support::create_namespace(&client, "ha-operator").await;
        let tenant = unique_name("t");
        let namespace = create_labeled_namespace(&client, "ha", &[(TENANT_LABEL, &tenant)]).await;
        stored_artifact::create_external_registry(&env, &client, &namespace).await;
        let jar = [b"PK\x03\x04".as_slice(), &[7; 4096]].concat();
        let pushed = stored_artifact::push(&env, &tenant, "billing", "1.0", &jar).await;
        StoredArtifact {
            name: "billing",
            tenant: &tenant,
            app: "billing",
            version: "1.0",
            pushed: Some(&pushed),
            ready: Some(("True", "ArtifactPushed")),
        }
        .create(&client, &namespace)
        .await;
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "shop",
                "namespace": namespace,
                "labels": { INJECT_LABEL: "true" },
                "annotations": { ARTIFACTS_ANNOTATION: "billing" },
            },
            "spec": {
                "initContainers": [{ "name": "loader", "image": "registry.test/curl:1" }],
                "containers": [{ "name": "app", "image": "registry.test/app:1" }],
            },
        });
        (operator_namespace, namespace, pod)
    });

    // A configuration name that nothing registers keeps the replicas off other tests'
    // configurations, and a 1 s verification interval makes the leader reconcile continuously.
    // Injected URLs are only checked for presence, so their gateway address is unused.
    let configuration = unique_name("ha-unregistered");
    let args = [
        "--webhook-listen",
        "127.0.0.1:0",
        "--webhook-ip",
        "127.0.0.1",
        "--webhook-configuration",
        &configuration,
        "--artifact-verify-interval",
        "1s",
        "--gateway-url",
        "http://127.0.0.1:9",
    ];
    let timing = LeaseSettings::new(&operator_namespace, "artifact-operator", String::new());
    let mut first = Replica::start(&env, &operator_namespace, &namespace, &args);
    let first_identity =
        first.wait_for_leadership(Instant::now() + Duration::from_secs(60), "first replica");
    let second = Replica::start(&env, &operator_namespace, &namespace, &args);
    second.operator.wait_for_line("Waiting for leadership");
    // The leader's first reconciles may find the registry not ready yet and turn the artifact
    // unready for a moment, so the reviews start once the leader has found it Ready.
    runtime.block_on(wait_until_reconciled_ready(&client, &namespace, "billing"));

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let webhook_http = runtime.block_on(webhook_client(&client, &operator_namespace));
    let first_reviews = ReviewStream::start(
        &runtime,
        webhook_http.clone(),
        format!("https://{}{MUTATE_PODS_PATH}", first.webhook),
        pod.clone(),
    );
    let second_reviews = ReviewStream::start(
        &runtime,
        webhook_http,
        format!("https://{}{MUTATE_PODS_PATH}", second.webhook),
        pod,
    );
    first_reviews.wait_for_successes(20);
    second_reviews.wait_for_successes(20);

    // While both replicas admit pods, the leader's reconcile count grows and the other's
    // stays zero.
    let led = runtime.block_on(reconcile_count(&http, &first.operations));
    runtime.block_on(leader_alone_reconciles(
        &http,
        &first.operations,
        Some(&second.operations),
        led + 3,
    ));

    let killed_at = Instant::now();
    first.operator.child.kill().unwrap();
    first.operator.child.wait().unwrap();
    let first_outcomes = first_reviews.finish(&runtime);
    // The dead leader's last renewal. The other replica may take over only after it expires.
    let last_renewal = runtime
        .block_on(lease_spec(&client, &operator_namespace))
        .renew_time
        .unwrap()
        .0;
    // The follower reads the Lease every retry period, so it takes over at most one retry
    // period after the Lease expired. 10 s more allow for a slow API server.
    let hand_over_limit = timing.lease_duration + timing.retry_period + Duration::from_secs(10);
    let second_identity = second.wait_for_leadership(
        killed_at + hand_over_limit,
        &format!("within {hand_over_limit:?} of the leader's SIGKILL"),
    );
    let took_over_at = Instant::now();
    assert_ne!(second_identity, first_identity);

    let lease_after = runtime.block_on(lease_spec(&client, &operator_namespace));
    assert_eq!(
        lease_after.holder_identity.as_deref(),
        Some(second_identity.as_str())
    );
    let acquired = lease_after.acquire_time.unwrap().0;
    assert!(
        acquired >= last_renewal + timing.lease_duration,
        "the Lease was taken at {acquired}, before the last renewal at {last_renewal} expired"
    );
    runtime.block_on(leader_alone_reconciles(&http, &second.operations, None, 3));

    let second_outcomes = second_reviews.finish(&runtime);
    // Reviews that the first replica had not responded to when it was killed may fail.
    let before_death = first_outcomes
        .iter()
        .filter(|outcome| outcome.finished < killed_at);
    for outcome in before_death.chain(&second_outcomes) {
        assert!(outcome.result.is_ok(), "{outcome:?}");
    }
    let during_hand_over = second_outcomes
        .iter()
        .filter(|outcome| outcome.started >= killed_at && outcome.finished <= took_over_at)
        .count();
    assert!(
        during_hand_over >= 10,
        "only {during_hand_over} reviews reached the surviving replica during the hand-over"
    );

    second.operator.stop();
    assert_eq!(lease_holder(&env, &operator_namespace), "");
}

/// A leader cut off from the API server stops leading before the other replica may take the
/// Lease over, so the two never lead at the same time.
#[test]
fn partitioned_leader_steps_down_first() {
    let env = TestEnv::load();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(env.kube_client());
    let operator_namespace =
        runtime.block_on(support::create_namespace(&client, "partition-operator"));
    let watched = unique_name("partition");

    // The first replica reaches the API server through a proxy that the test can partition.
    let apiserver_url = env.var("TESTENV_APISERVER_URL");
    let upstream = apiserver_url
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let proxy = runtime.block_on(TcpProxy::start(upstream));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let text = std::fs::read_to_string(env.kubeconfig()).unwrap();
    let proxied = text.replace(apiserver_url, &format!("https://{}", proxy.address));
    assert_ne!(
        proxied, text,
        "the kubeconfig does not name {apiserver_url}"
    );
    std::fs::write(&kubeconfig, proxied).unwrap();

    let configuration = unique_name("partition-unregistered");
    let args = [
        "--webhook-listen",
        "127.0.0.1:0",
        "--webhook-configuration",
        &configuration,
    ];
    let timing = LeaseSettings::new(&operator_namespace, "artifact-operator", String::new());
    let mut first =
        Operator::start_with_kubeconfig(&kubeconfig, &operator_namespace, &watched, &args);
    first.wait_for_line("Became the leader");
    let second = Operator::start(&env, &operator_namespace, &watched, &args);
    second.wait_for_line("Waiting for leadership");

    proxy.partition();
    let partitioned_at = Instant::now();
    let stepped_down = wait_for_line_until(
        &first.lines,
        "Stopped leading",
        partitioned_at + timing.renew_deadline + Duration::from_secs(10),
    )
    .unwrap_or_else(|| {
        panic!(
            "the cut-off leader did not stop leading within {:?} plus 10 s",
            timing.renew_deadline
        )
    });
    let hand_over_limit = timing.lease_duration + timing.retry_period + Duration::from_secs(10);
    wait_for_line_until(
        &second.lines,
        "Became the leader",
        partitioned_at + hand_over_limit,
    )
    .unwrap_or_else(|| panic!("the other replica did not take over within {hand_over_limit:?}"));

    // Both replicas run on this machine, so the log timestamps and the acquireTime that the
    // second replica wrote come from one clock.
    let stepped_down_at: jiff::Timestamp = field(&stepped_down, "timestamp").parse().unwrap();
    let acquired = runtime
        .block_on(lease_spec(&client, &operator_namespace))
        .acquire_time
        .unwrap()
        .0;
    assert!(
        stepped_down_at < acquired,
        "the cut-off leader stopped at {stepped_down_at}, after the other replica took the \
         Lease at {acquired}"
    );
    let exit = wait_with_deadline(
        &mut first.child,
        Duration::from_secs(30),
        "losing the Lease",
        &first.lines,
    );
    assert!(
        !exit.success(),
        "a replica that lost the Lease must exit non-zero, got {exit}"
    );

    second.stop();
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
    cause: &str,
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
                "the operator did not exit within {limit:?} after {cause}; log:\n{}",
                log.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for the next log line that contains `needle`, or returns `None` at `deadline`.
fn wait_for_line_until(
    lines: &mpsc::Receiver<String>,
    needle: &str,
    deadline: Instant,
) -> Option<String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Some(line),
            Ok(_) => continue,
            Err(_) => return None,
        }
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
