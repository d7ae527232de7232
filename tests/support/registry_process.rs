//! A CNCF distribution registry that one test owns, so the test can stop and start it without
//! disturbing the shared registry of the test environment. It serves plain HTTP without
//! authentication on a fixed 127.0.0.1 port and keeps its data across restarts.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

pub struct RegistryProcess {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RegistryProcess {
    /// Writes the configuration and starts the registry, waiting until `/v2/` responds.
    pub async fn start() -> Self {
        let port = crate::support::free_port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  \
             filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: \
             127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut registry = Self {
            port,
            dir,
            child: None,
        };
        registry.resume().await;
        registry
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the registry process; its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same port and data.
    pub async fn resume(&mut self) {
        let config: PathBuf = self.dir.path().join("config.yml");
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry must start; run tests/env/install-packages.sh");
        self.child = Some(child);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        for _ in 0..150 {
            let probe = client.get(format!("{}/v2/", self.url())).send().await;
            if probe.is_ok_and(|response| response.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry on port {} did not start: {log}", self.port);
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
