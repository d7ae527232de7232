//! The real `artifact-operator run` binary as a child process of a test, which the test can kill
//! with SIGKILL and start again.

#![allow(dead_code)] // Not every test crate uses every part.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc;

const BINARY: &str = env!("CARGO_BIN_EXE_artifact-operator");

/// How long [`OperatorProcess::wait_for_line`] waits for one log line.
const LINE_TIMEOUT: Duration = Duration::from_secs(90);

/// A running operator whose JSON log lines the test reads.
pub struct OperatorProcess {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line so far, for failure messages.
    log: Arc<Mutex<Vec<String>>>,
}

impl OperatorProcess {
    /// Starts `artifact-operator run` against the API server of `kubeconfig`, watching only
    /// `watch_namespace`, with every listener on a free 127.0.0.1 port and `extra` flags.
    pub fn start(
        kubeconfig: &Path,
        operator_namespace: &str,
        watch_namespace: &str,
        extra: &[&str],
    ) -> Self {
        let mut child = Command::new(BINARY)
            .arg("run")
            .args(["--watch-namespace", watch_namespace])
            .args(["--operator-namespace", operator_namespace])
            .args(["--gateway-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--webhook-listen", "127.0.0.1:0"])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the operator binary must start");
        let (sender, lines) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stderr, kept) = (child.stderr.take().unwrap(), Arc::clone(&log));
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                kept.lock().unwrap().push(line.clone());
                let _ = sender.send(line);
            }
        });
        Self { child, lines, log }
    }

    /// Waits for the next log line, after the previous match, that contains `needle`.
    pub async fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + LINE_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if line.contains(needle) => return line,
                Ok(Some(_)) => continue,
                Ok(None) => panic!(
                    "the operator exited before logging {needle:?}; log:\n{}",
                    self.log()
                ),
                Err(_) => panic!(
                    "the operator logged no line containing {needle:?} within {LINE_TIMEOUT:?}; \
                     log:\n{}",
                    self.log()
                ),
            }
        }
    }

    /// Waits until the listener named `listener` (gateway, webhook, operations) is bound and
    /// returns its address.
    pub async fn listener_address(&mut self, listener: &str) -> String {
        let line = self
            .wait_for_line(&format!(r#""listener":"{listener}""#))
            .await;
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        record["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in {line}"))
            .to_owned()
    }

    /// Returns every log line so far, one per line.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Kills the process with SIGKILL, which it cannot catch, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
