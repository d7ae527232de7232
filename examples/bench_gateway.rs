//! Serves one pushed JAR through the gateway, in-process, for `bench/run.sh` to download with
//! `curl`, next to the same blob fetched straight from the registry.
//!
//! The set-up matches `artifact-operator run`: a Ready AppArtifact in a tenant namespace, an
//! external ArtifactRegistry with the distribution registry's login in a Secret, a signing key
//! ring in a Secret, and a reflector cache of AppArtifacts in all namespaces. Once the gateway
//! listens, the signed URL, the registry's blob URL and the oras reference are written to
//! `--output` as shell assignments. The process serves until SIGTERM, then deletes its namespace.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/support/stored_artifact.rs"]
mod stored_artifact;

#[path = "../bench/support.rs"]
mod bench_support;

use std::{path::PathBuf, sync::Arc};

use artifact_operator::{
    gateway::{
        keys::{self, KeySettings},
        server::{self, GatewayState},
        signing::{self, UrlTarget},
    },
    telemetry::{self, LogFormat, Metrics},
};
use bench_support::TenantNamespace;
use clap::Parser;
use jiff::Timestamp;
use stored_artifact::StoredArtifact;
use support::{TestEnv, install_crds};

const APP: &str = "download";
const VERSION: &str = "1";

/// Serves `--file` through the gateway.
#[derive(Debug, Parser)]
struct Args {
    /// The JAR to push and serve.
    #[arg(long)]
    file: PathBuf,
    /// File to write the URLs into, as `KEY='value'` lines.
    #[arg(long)]
    output: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(LogFormat::Json);
    let env = TestEnv::load();
    let client = env.kube_client().await;
    install_crds(&client).await;
    let tenant = TenantNamespace::create(&env, &client, "bench-gw").await;
    let pushed = bench_support::push_file(&env, &tenant.tenant, APP, VERSION, &args.file).await?;
    StoredArtifact {
        name: APP,
        tenant: &tenant.tenant,
        app: APP,
        version: VERSION,
        pushed: Some(&pushed),
        ready: Some(("True", "ArtifactPushed")),
    }
    .create(&client, &tenant.namespace)
    .await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop_signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let mut key_settings = KeySettings::new(tenant.namespace.clone());
    key_settings.secret_name = "signing-keys".to_owned();
    let keys = keys::start(client.clone(), key_settings, stop_signal()).await?;
    let artifacts = server::artifact_cache(client.clone(), None, stop_signal()).await;
    let state = Arc::new(GatewayState {
        client: client.clone(),
        artifacts,
        keys: keys.clone(),
        metrics: Arc::new(Metrics::default()),
        registry_clients: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let gateway = tokio::spawn(server::serve(
        listener,
        server::router(state),
        stop_signal(),
    ));

    let digest = pushed.layer.digest.to_string();
    let target = UrlTarget {
        namespace: &tenant.namespace,
        name: APP,
        digest: &digest,
    };
    let signature = signing::sign(&keys.get(), &target, signing::DEFAULT_TTL, Timestamp::now());
    let host = env.var("TESTENV_DISTRIBUTION_HOST");
    let repository = format!("{}/{APP}", tenant.tenant);
    bench_support::write_env_file(
        &args.output,
        &[
            (
                "GATEWAY_URL",
                signing::signed_url(&base_url, &target, &signature),
            ),
            (
                "BLOB_URL",
                format!("https://{host}/v2/{repository}/blobs/{digest}"),
            ),
            ("ORAS_REF", format!("{host}/{repository}:v{VERSION}")),
            ("DIGEST", digest.clone()),
            ("SIZE", pushed.layer.size.to_string()),
        ],
    )?;

    bench_support::wait_for_shutdown().await;
    let _ = stop.send(true);
    let _ = gateway.await;
    tenant.delete(&client).await;
    Ok(())
}
