//! Pushes or pulls a generated JAR of a given size through the OCI artifact store, so the peak
//! memory of a transfer can be measured, for example with `/usr/bin/time -v`.
//!
//! The content is generated on the fly from a seed and never held in memory. A pull reads the
//! artifact to its end, which includes the digest check.
//!
//! Measured with the release build on a 2-core machine against the test environment's
//! distribution registry over TLS, the maximum resident set size was 10,180 KiB for a 1 GiB push
//! and 10,932 KiB for pulling it back. A 16 MiB push took 9,912 KiB.
//!
//! ```text
//! REGISTRY_USERNAME=testenv REGISTRY_PASSWORD=... /usr/bin/time -v \
//!   target/release/examples/oci_transfer push --registry https://127.0.0.1:5000 \
//!   --ca-file ca.crt --size-mib 1024 --version 1
//! ```

#[path = "../tests/support/generated.rs"]
mod generated;

use std::{path::PathBuf, time::Instant};

use anyhow::{Context as _, bail};
use artifact_operator::{
    oci::{
        ArtifactCoordinates, Credentials, JarMetadata, RegistryClient, RegistryConfig, TlsRoots,
    },
    store::{ArtifactStore, OciArtifactStore},
};
use clap::{Parser, ValueEnum};
use futures::StreamExt as _;
use generated::GeneratedContent;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Direction {
    Push,
    Pull,
}

/// Transfers one generated artifact to or from an OCI registry.
#[derive(Debug, Parser)]
struct Args {
    direction: Direction,
    /// Registry URL: https://host:port, or http://host:port for a registry without TLS.
    #[arg(long)]
    registry: String,
    /// PEM file with the only CAs to trust for an https registry.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// User name for basic authentication; the password is read from REGISTRY_PASSWORD.
    #[arg(long, env = "REGISTRY_USERNAME")]
    username: Option<String>,
    /// Size of the generated artifact in MiB (push only).
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Seed of the generated content (push only).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "transfer")]
    tenant: String,
    #[arg(long, default_value = "measurement")]
    app: String,
    /// Version to push or pull. Versions are immutable, so each push needs a new one.
    #[arg(long)]
    version: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let coordinates = ArtifactCoordinates::new(&args.tenant, &args.app, &args.version)?;
    let store = OciArtifactStore::new(client(&args)?);
    let started = Instant::now();

    let (digest, size) = match args.direction {
        Direction::Push => {
            let size = args.size_mib * 1024 * 1024;
            let content = GeneratedContent::new(args.seed, size);
            let metadata = JarMetadata::new(format!("{}.jar", args.app))?;
            let stored = store.put(&coordinates, content, None, &metadata).await?;
            (stored.digest, stored.size)
        }
        Direction::Pull => {
            let mut opened = store.open(&coordinates).await?;
            let mut received = 0u64;
            while let Some(chunk) = opened.stream.next().await {
                received += chunk?.len() as u64;
            }
            if received != opened.artifact.size {
                bail!(
                    "received {received} bytes, expected {}",
                    opened.artifact.size
                );
            }
            (opened.artifact.digest, received)
        }
    };

    let seconds = started.elapsed().as_secs_f64();
    let mib = size as f64 / (1024.0 * 1024.0);
    println!(
        "{:?} {coordinates}: {mib:.0} MiB, {digest}, {seconds:.1} s, {:.0} MiB/s",
        args.direction,
        mib / seconds
    );
    Ok(())
}

fn client(args: &Args) -> anyhow::Result<RegistryClient> {
    let mut config = RegistryConfig::new(&args.registry)?;
    if let Some(ca_file) = &args.ca_file {
        config = config.with_tls_roots(TlsRoots::only_from_pem_file(ca_file)?);
    }
    if let Some(username) = &args.username {
        let password =
            std::env::var("REGISTRY_PASSWORD").context("REGISTRY_PASSWORD must be set")?;
        config = config.with_credentials(Credentials::Basic {
            username: username.clone(),
            password,
        });
    }
    Ok(RegistryClient::new(config)?)
}
