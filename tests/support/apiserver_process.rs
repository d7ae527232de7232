//! A kube-apiserver that one test owns. It stores in the shared environment's etcd with the
//! shared PKI, so it serves the same objects as the shared API server. The test can kill it
//! and start it again on the same port without disturbing other tests.
//!
//! The flags follow `start_apiserver` in `tests/env/up.sh`. The env file does not record etcd's
//! port, so it is read from the shared API server's command line.

#![allow(dead_code)] // Not every test crate uses every part.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::support::{TestEnv, free_port};

/// Time a kube-apiserver gets to report ready on `/readyz` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct ApiserverProcess {
    port: u16,
    binary: PathBuf,
    pki: PathBuf,
    etcd_servers: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ApiserverProcess {
    /// Starts the API server on a free port and waits until it is ready.
    pub async fn start(env: &TestEnv) -> Self {
        let binary = env.path("TESTENV_KUBECTL").with_file_name("kube-apiserver");
        let pki = env.ca_file().parent().unwrap().to_owned();
        let mut apiserver = Self {
            port: free_port(),
            binary,
            pki,
            etcd_servers: shared_etcd_servers(env),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        apiserver.resume().await;
        apiserver
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Writes a copy of the shared admin kubeconfig that points at this API server and returns
    /// its path.
    pub fn kubeconfig(&self, env: &TestEnv) -> PathBuf {
        let shared = std::fs::read_to_string(env.kubeconfig()).unwrap();
        let own = shared.replace(env.var("TESTENV_APISERVER_URL"), &self.url());
        assert_ne!(
            own, shared,
            "the kubeconfig does not name the shared API server"
        );
        let path = self.dir.path().join("admin.kubeconfig");
        std::fs::write(&path, own).unwrap();
        path
    }

    /// Kills the API server with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the API server again on the same port and waits until it is ready.
    pub async fn resume(&mut self) {
        let pki = |file: &str| self.pki.join(file);
        let log = std::fs::File::create(self.dir.path().join("kube-apiserver.log")).unwrap();
        let child = Command::new(&self.binary)
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--secure-port", &self.port.to_string()])
            .args(["--etcd-servers", &self.etcd_servers])
            .arg("--etcd-cafile")
            .arg(pki("ca.crt"))
            .arg("--etcd-certfile")
            .arg(pki("apiserver-etcd-client.crt"))
            .arg("--etcd-keyfile")
            .arg(pki("apiserver-etcd-client.key"))
            .arg("--tls-cert-file")
            .arg(pki("apiserver.crt"))
            .arg("--tls-private-key-file")
            .arg(pki("apiserver.key"))
            .arg("--client-ca-file")
            .arg(pki("ca.crt"))
            .args([
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
            ])
            .args([
                "--api-audiences",
                "https://kubernetes.default.svc.cluster.local",
            ])
            .arg("--service-account-key-file")
            .arg(pki("sa.pub"))
            .arg("--service-account-signing-key-file")
            .arg(pki("sa.key"))
            .args(["--service-cluster-ip-range", "10.96.0.0/16"])
            .args(["--authorization-mode", "Node,RBAC"])
            .args([
                "--enable-admission-plugins",
                "NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,\
                 ResourceQuota,NodeRestriction,PodSecurity,MutatingAdmissionWebhook,\
                 ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
            ])
            .args(["--endpoint-reconciler-type", "none"])
            .arg("--cert-dir")
            .arg(self.dir.path().join("certs"))
            .args(["--profiling=false", "--v", "1"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kube-apiserver must start; run tests/env/build.sh");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let identity = std::fs::read(self.pki.join("admin.crt"))
            .into_iter()
            .chain(std::fs::read(self.pki.join("admin.key")))
            .flatten()
            .collect::<Vec<u8>>();
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(
                &std::fs::read(self.pki.join("ca.crt")).unwrap(),
            )
            .unwrap()])
            .identity(reqwest::Identity::from_pem(&identity).unwrap())
            .no_proxy()
            .build()
            .unwrap();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            let probe = client.get(format!("{}/readyz", self.url())).send().await;
            if probe.is_ok_and(|response| response.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "kube-apiserver on port {} was not ready within {START_TIMEOUT:?}: {}",
            self.port,
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("kube-apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn log_path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ApiserverProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Returns the `--etcd-servers` value of the shared API server.
fn shared_etcd_servers(env: &TestEnv) -> String {
    let pid = env.var("TESTENV_APISERVER_PID");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_else(|error| panic!("cannot read the shared API server's flags: {error}"));
    let args: Vec<String> = cmdline
        .split(|byte| *byte == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    args.iter()
        .position(|arg| arg == "--etcd-servers")
        .and_then(|index| args.get(index + 1))
        .cloned()
        .expect("the shared API server has no --etcd-servers flag")
}
