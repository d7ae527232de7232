//! Pushes one file as a JAR into the test environment's distribution registry with
//! `RegistryClient::push_jar`, the path the AppArtifact controller takes: the digest is computed
//! while the file streams in one chunked `PATCH`, then a `PUT` closes the upload, and the empty
//! config and the manifest follow.
//!
//! `bench/run.sh` times it against `oras push` and a `curl -T` upload. The registry's address
//! and login come from the environment file that `tests/env/up.sh` writes.
//!
//! ```text
//! target/release/examples/bench_push --file app.jar --tenant bench --app push-1
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::{path::PathBuf, time::Instant};

use clap::Parser;
use support::TestEnv;

#[path = "../tests/support/stored_artifact.rs"]
mod stored_artifact;

#[path = "../bench/support.rs"]
mod bench_support;

/// Pushes a file as `{tenant}/{app}:v{version}`.
#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    file: PathBuf,
    #[arg(long, default_value = "bench")]
    tenant: String,
    /// Application id; a new one per run keeps the registry from finding the blob already in the
    /// repository.
    #[arg(long)]
    app: String,
    #[arg(long, default_value = "1")]
    version: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let env = TestEnv::load();
    let started = Instant::now();
    let pushed =
        bench_support::push_file(&env, &args.tenant, &args.app, &args.version, &args.file).await?;
    eprintln!(
        "pushed {}/{}:v{} ({} bytes, {}) in {:.2} s",
        args.tenant,
        args.app,
        args.version,
        pushed.layer.size,
        pushed.layer.digest,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
