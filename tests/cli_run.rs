//! The `artifact-operator` binary against the real API server.

mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
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

#[test]
fn run_logs_server_version_and_stops_on_sigterm() {
    let env = TestEnv::load();
    // The operator's namespace keeps its signing key Secret; it must exist.
    let operator_namespace = support::unique_name("cli-operator");
    let created = Command::new(env.var("TESTENV_KUBECTL"))
        .args(["create", "namespace", &operator_namespace])
        .env("KUBECONFIG", env.kubeconfig())
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let mut child = Command::new(BINARY)
        .arg("run")
        // A namespace of its own keeps this operator away from other tests' objects.
        .args(["--watch-namespace", &support::unique_name("cli")])
        .args(["--operator-namespace", &operator_namespace])
        .args(["--gateway-listen", "127.0.0.1:0"])
        .env("KUBECONFIG", env.kubeconfig())
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let (lines_tx, lines_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    let connected = wait_for_line(&lines_rx, "Connected to API server");
    let record: serde_json::Value = serde_json::from_str(&connected).unwrap();
    assert_eq!(record["level"], "INFO");
    assert!(
        record["version"].as_str().unwrap().starts_with("v1.37."),
        "{connected}"
    );

    wait_for_line(&lines_rx, "Gateway listening");
    wait_for_line(&lines_rx, "Operator started");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_with_deadline(&mut child, Duration::from_secs(30), &lines_rx);
    assert!(
        exit.success(),
        "the operator must exit 0 on SIGTERM, got {exit}"
    );
    wait_for_line(&lines_rx, "Operator stopped");
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
