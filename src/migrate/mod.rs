//! `artifact-operator migrate`: copies a filesystem store laid out as
//! `{root}/{tenantId}/{appId}/{version}.jar` into an OCI registry under
//! `{tenantId}/{appId}:v{version}`, and `migrate verify` compares the two.
//!
//! A run checks the registry (and, with `--create-resources`, the cluster), scans the store
//! ([`scan`], following the rules of [`layout`]), then handles `--concurrency` versions at a
//! time ([`copy`] or [`verify`]), declares the AppArtifacts ([`resources`]) and prints a
//! summary ([`report`]).
//!
//! The guarantees:
//!
//! - The source is only opened for reading.
//! - A version is never overwritten. A tag with other content is a conflict, reported with both
//!   digests and left alone, as is the source file.
//! - Every copied version is read back from the registry and compared by SHA-256 and size.
//! - A run stopped at any point, even by SIGKILL, can be started again: versions already in the
//!   registry with the source's digest are skipped, and nothing is ever half-tagged (see
//!   [`copy`]).
//! - Paths that do not fit the layout are reported with the reason and skipped. Only unreadable
//!   paths count as failures.
//! - The exit code is non-zero when any version conflicted or failed, or a resource could not be
//!   applied.

mod args;
mod connection;
mod content;
mod copy;
mod error;
pub mod layout;
pub mod plan;
mod progress;
pub mod report;
pub mod resource_plan;
mod resources;
pub mod scan;
mod streak;
mod verify;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Instant,
};

use futures::{StreamExt as _, stream};
use serde::Serialize;
use tracing::{error, info};

pub use self::{
    args::{CopyArgs, MigrateArgs, MigrateCommand, StoreArgs, VerifyArgs},
    connection::parse_credentials,
    error::{ArtifactError, MigrateError},
};
use self::{
    copy::{CopyJob, copy_artifact},
    progress::Progress,
    report::{CopyOutcome, MigrationReport, VerificationReport},
    resources::ResourceSettings,
    scan::{Scan, SourceArtifact},
    streak::FailureStreak,
    verify::{VerifyJob, find_registry_only_versions, verify_artifact},
};
use crate::{cluster, store::OciArtifactStore, telemetry};

/// Runs `migrate` or `migrate verify`, prints the summary on standard output and returns the
/// exit code: success only when everything was migrated or matched.
pub async fn execute(args: MigrateArgs, log_format: telemetry::LogFormat) -> ExitCode {
    let progress = Arc::new(Progress::for_stderr());
    telemetry::init_with_writer(log_format, progress.log_writer());

    let finished = match (args.command, args.store) {
        (Some(MigrateCommand::Verify(verify)), _) => {
            let report_path = verify.store.report.clone();
            run_verify(verify, progress.clone()).await.map(|report| {
                (
                    report.render_text(),
                    report.succeeded(),
                    to_json(&report),
                    report_path,
                )
            })
        }
        (None, Some(store)) => {
            let report_path = store.report.clone();
            run_migrate(store, args.copy, progress.clone())
                .await
                .map(|report| {
                    (
                        report.render_text(),
                        report.succeeded(),
                        to_json(&report),
                        report_path,
                    )
                })
        }
        (None, None) => unreachable!("clap requires --from and --registry without a subcommand"),
    };
    progress.finish();

    let (text, succeeded, json, report_path) = match finished {
        Ok(finished) => finished,
        Err(error) => {
            error!(%error, kind = error.metric_label(), "Migration failed");
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    print!("{text}");
    if let Some(path) = report_path
        && let Err(error) = write_report(&path, &json)
    {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Copies every version of the store into the registry.
///
/// # Errors
///
/// A [`MigrateError`] when the source, the registry or the cluster cannot be used. Failures of
/// single versions are in the report instead.
async fn run_migrate(
    store_args: StoreArgs,
    args: CopyArgs,
    progress: Arc<Progress>,
) -> Result<MigrationReport, MigrateError> {
    let started = Instant::now();
    let root = absolute_root(&store_args.from)?;
    let client = connection::connect(&store_args.registry_options()).await?;
    let concurrency = usize::from(store_args.concurrency);

    let resources = match (
        args.create_resources,
        args.namespace_template,
        args.registry_ref,
    ) {
        (true, Some(namespace_template), Some(registry)) => {
            let cluster = cluster::connect().await?;
            resources::check_cluster(&cluster.client, &registry).await?;
            let settings = ResourceSettings {
                namespace_template,
                registry,
                dry_run: args.dry_run,
                concurrency,
            };
            Some((cluster.client, settings))
        }
        _ => None,
    };

    let scan = scan_store(&root).await?;
    info!(
        source = %root.display(),
        registry = %client.registry(),
        artifacts = scan.artifacts.len(),
        bytes = scan.total_bytes(),
        rejected = scan.rejected.len(),
        concurrency,
        dry_run = args.dry_run,
        "Migrating",
    );
    progress.start(scan.artifacts.len() as u64, scan.total_bytes());

    let job = Arc::new(CopyJob {
        store: OciArtifactStore::new(client.clone()),
        dry_run: args.dry_run,
        streak: FailureStreak::default(),
        progress: progress.clone(),
    });
    let artifacts = run_concurrently(scan.artifacts.clone(), concurrency, |artifact| {
        copy_artifact(job.clone(), artifact)
    })
    .await;

    let resource_results = match &resources {
        Some((kube, settings)) => {
            progress.set_step("applying AppArtifacts");
            let in_registry = artifacts
                .iter()
                .filter(|artifact| {
                    matches!(
                        artifact.outcome,
                        CopyOutcome::Copied | CopyOutcome::Skipped | CopyOutcome::WouldCopy
                    )
                })
                .filter_map(|artifact| Some((artifact.coordinates.clone(), artifact.digest?)))
                .collect();
            resources::declare_resources(kube, settings, in_registry).await
        }
        None => Vec::new(),
    };

    Ok(MigrationReport::new(
        root,
        client.registry().to_owned(),
        args.dry_run,
        started.elapsed(),
        artifacts,
        &scan.rejected,
        resource_results,
    ))
}

/// Compares every version of the store with the registry.
///
/// # Errors
///
/// A [`MigrateError`] when the source or the registry cannot be used. Failures of single
/// versions are in the report instead.
async fn run_verify(
    args: VerifyArgs,
    progress: Arc<Progress>,
) -> Result<VerificationReport, MigrateError> {
    let started = Instant::now();
    let root = absolute_root(&args.store.from)?;
    let client = connection::connect(&args.store.registry_options()).await?;
    let concurrency = usize::from(args.store.concurrency);

    let scan = scan_store(&root).await?;
    info!(
        source = %root.display(),
        registry = %client.registry(),
        artifacts = scan.artifacts.len(),
        bytes = scan.total_bytes(),
        rejected = scan.rejected.len(),
        concurrency,
        "Verifying",
    );
    progress.start(scan.artifacts.len() as u64, scan.total_bytes());

    let store = OciArtifactStore::new(client.clone());
    let job = Arc::new(VerifyJob {
        store: store.clone(),
        streak: FailureStreak::default(),
        progress: progress.clone(),
    });
    let mut artifacts = run_concurrently(scan.artifacts.clone(), concurrency, |artifact| {
        verify_artifact(job.clone(), artifact)
    })
    .await;

    progress.set_step("listing the registry's versions");
    let (only_in_registry, repository_failures) =
        find_registry_only_versions(&store, &scan.artifacts, concurrency).await;
    artifacts.extend(only_in_registry);

    Ok(VerificationReport::new(
        root,
        client.registry().to_owned(),
        started.elapsed(),
        artifacts,
        &scan.rejected,
        repository_failures,
    ))
}

/// Runs `task` for each artifact as its own Tokio task, so hashing uses every core, with at most
/// `concurrency` tasks at once.
async fn run_concurrently<T, F, Fut>(
    artifacts: Vec<SourceArtifact>,
    concurrency: usize,
    task: F,
) -> Vec<T>
where
    F: Fn(SourceArtifact) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    stream::iter(artifacts)
        .map(|artifact| tokio::spawn(task(artifact)))
        .buffer_unordered(concurrency)
        .map(|joined| joined.unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic())))
        .collect()
        .await
}

async fn scan_store(root: &Path) -> Result<Scan, MigrateError> {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || scan::scan(&root))
        .await
        .expect("the scan task does not panic")
}

/// Makes the source root absolute, so messages and the `file://` source annotation name it
/// fully. Symbolic links in it are kept, so paths read as the operator typed them.
fn absolute_root(from: &Path) -> Result<PathBuf, MigrateError> {
    std::path::absolute(from).map_err(|source| MigrateError::SourceRoot {
        path: from.to_path_buf(),
        source,
    })
}

fn to_json(report: &impl Serialize) -> Vec<u8> {
    let mut json = serde_json::to_vec_pretty(report).expect("a report always serializes to JSON");
    json.push(b'\n');
    json
}

fn write_report(path: &Path, json: &[u8]) -> Result<(), MigrateError> {
    std::fs::write(path, json).map_err(|source| MigrateError::WriteReport {
        path: path.to_path_buf(),
        source,
    })
}
