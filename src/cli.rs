//! Command-line interface of the `artifact-operator` binary.

use std::path::Path;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::{Result, cluster, crd, telemetry::LogFormat};

/// Stores application JARs in an OCI registry and injects pre-signed fetch URLs into pods.
#[derive(Debug, Parser)]
#[command(name = "artifact-operator", version, about)]
pub struct Cli {
    /// Format of log lines on standard error. The level is set with RUST_LOG.
    #[arg(long, value_enum, default_value_t, global = true, env = "LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the operator's version and the supported Kubernetes versions.
    Version,
    /// Connect to the cluster and run the operator until SIGTERM or SIGINT.
    Run,
    /// Print the CustomResourceDefinitions as YAML, ready for `kubectl apply -f -`.
    Crds {
        /// Write one file per definition into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<std::path::PathBuf>,
    },
}

/// Text printed by `artifact-operator version`.
pub fn version_text() -> String {
    format!(
        "artifact-operator {}\nsupported Kubernetes versions: 1.{} to 1.{}\n",
        env!("CARGO_PKG_VERSION"),
        cluster::MIN_MINOR,
        cluster::MAX_MINOR,
    )
}

/// Prints the CustomResourceDefinitions, or writes one file per definition into `output_dir`.
pub fn crds(output_dir: Option<&Path>) -> std::io::Result<()> {
    let Some(dir) = output_dir else {
        print!("{}", crd::render_yaml());
        return Ok(());
    };
    std::fs::create_dir_all(dir)?;
    for definition in crd::definitions() {
        let path = dir.join(crd::file_name(&definition));
        std::fs::write(&path, crd::render_definition(&definition))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Connects to the cluster, logs the API server version and waits for a shutdown signal.
pub async fn run() -> Result<()> {
    let cluster = cluster::connect().await?;
    cluster::log_server_version(&cluster).await?;
    info!("Operator started");
    shutdown_signal().await;
    info!("Operator stopped");
    Ok(())
}

/// Completes on the first SIGTERM (sent by the kubelet) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let mut terminate =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler must succeed on Unix");
    tokio::select! {
        _ = terminate.recv() => info!(signal = "SIGTERM", "Shutting down"),
        _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "Shutting down"),
    }
}
