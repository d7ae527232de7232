//! Command-line interface of the `artifact-operator` binary.

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::{Result, cluster, telemetry::LogFormat};

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
