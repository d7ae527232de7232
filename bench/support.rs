//! Set-up shared by the benchmark servers in `examples/bench_*.rs`: a tenant namespace with an
//! external ArtifactRegistry, a JAR pushed from a file, the file that tells `bench/run.sh` where
//! the servers listen, and the wait for the script's SIGTERM.

#![allow(dead_code)] // Each benchmark binary uses a different subset.

use std::path::Path;

use artifact_operator::{
    crd::TENANT_LABEL,
    oci::{ArtifactCoordinates, JarArtifact, JarMetadata},
};
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, api::DeleteParams};

use crate::{
    stored_artifact,
    support::{TestEnv, create_labeled_namespace, unique_name},
};

/// A namespace that belongs to a tenant of its own and has the ArtifactRegistry
/// [`stored_artifact::REGISTRY`], which adopts the test environment's distribution registry.
pub struct TenantNamespace {
    pub tenant: String,
    pub namespace: String,
}

impl TenantNamespace {
    pub async fn create(env: &TestEnv, client: &Client, prefix: &str) -> Self {
        let tenant = unique_name("bench");
        let namespace = create_labeled_namespace(client, prefix, &[(TENANT_LABEL, &tenant)]).await;
        stored_artifact::create_external_registry(env, client, &namespace).await;
        Self { tenant, namespace }
    }

    /// Deletes the namespace, and with it every object the benchmark created there.
    pub async fn delete(self, client: &Client) {
        let api: Api<Namespace> = Api::all(client.clone());
        if let Err(error) = api.delete(&self.namespace, &DeleteParams::default()).await {
            eprintln!("deleting namespace {} failed: {error}", self.namespace);
        }
    }
}

/// Pushes the file at `path` as `{tenant}/{app}:v{version}` into the distribution registry,
/// streaming it from disk.
pub async fn push_file(
    env: &TestEnv,
    tenant: &str,
    app: &str,
    version: &str,
    path: &Path,
) -> anyhow::Result<JarArtifact> {
    let coordinates = ArtifactCoordinates::new(tenant, app, version)?;
    let metadata = JarMetadata::new(format!("{app}-{version}.jar"))?;
    let file = tokio::fs::File::open(path).await?;
    let pushed = env
        .distribution_client()
        .push_jar(&coordinates, file, None, &metadata)
        .await?;
    Ok(pushed)
}

/// Writes `KEY='value'` lines for `bench/run.sh` to source. The file appears only when complete:
/// it is written under a temporary name and renamed.
pub fn write_env_file(path: &Path, pairs: &[(&str, String)]) -> std::io::Result<()> {
    let text: String = pairs
        .iter()
        .map(|(key, value)| format!("{key}='{value}'\n"))
        .collect();
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

/// Waits for SIGTERM, which `bench/run.sh` sends when it is done, or for Ctrl-C.
pub async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};

    let mut terminate = signal(SignalKind::terminate()).expect("a SIGTERM handler must install");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
