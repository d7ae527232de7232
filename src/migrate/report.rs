//! Results of a run: one entry per artifact, rejected path and resource, the counts, the text
//! summary printed at the end and the JSON report written with `--report`.

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use indicatif::BinaryBytes;
use serde::Serialize;

use super::{ArtifactError, scan::RejectedPath, verify::RepositoryFailure};
use crate::oci::{ArtifactCoordinates, ContentSummary, Digest};

// === Entries ===

/// Outcome of one version in `artifact-operator migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "outcome",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum CopyOutcome {
    /// Uploaded, tagged and read back with the source's digest.
    Copied,
    /// Already in the registry with the source's digest, so nothing was written.
    Skipped,
    /// Not in the registry: a run without `--dry-run` copies it.
    WouldCopy,
    /// The registry's tag has other content. Both sides were left as they are.
    Conflict {
        registry_digest: Digest,
        registry_size: u64,
    },
    Failed {
        kind: &'static str,
        error: String,
    },
}

/// Outcome of one version in `artifact-operator migrate verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "outcome",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum VerifyOutcome {
    /// The registry has the version with the store's digest, and its blob reads back with it.
    Identical,
    /// The store has the version and the registry does not.
    Missing,
    /// Both have the version with different content.
    Different {
        registry_digest: Digest,
        registry_size: u64,
    },
    /// The registry has a version of one of the store's applications that the store does not.
    OnlyInRegistry,
    Failed {
        kind: &'static str,
        error: String,
    },
}

/// The result of one version.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactResult<O> {
    #[serde(skip)]
    pub coordinates: ArtifactCoordinates,
    /// `{tenantId}/{appId}:v{version}`.
    pub reference: String,
    /// The source file, absent for a version only the registry has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Digest of the source file, when it was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// Size of the source file in bytes, when it was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(flatten)]
    pub outcome: O,
}

impl<O> ArtifactResult<O> {
    pub fn new(
        coordinates: &ArtifactCoordinates,
        path: Option<PathBuf>,
        content: Option<ContentSummary>,
        outcome: O,
    ) -> Self {
        Self {
            coordinates: coordinates.clone(),
            reference: coordinates.to_string(),
            path,
            digest: content.map(|content| content.digest),
            size: content.map(|content| content.size),
            outcome,
        }
    }
}

/// Returns the kind and message of a failed outcome.
pub fn failure_fields(error: &ArtifactError) -> (&'static str, String) {
    (error.label(), error.to_string())
}

/// A path of the store that was not migrated.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedReport {
    pub path: PathBuf,
    pub kind: &'static str,
    pub reason: String,
    /// Whether the path counts as a failure (see [`super::layout::Rejection::is_failure`]).
    pub failure: bool,
}

impl From<&RejectedPath> for RejectedReport {
    fn from(rejected: &RejectedPath) -> Self {
        Self {
            path: rejected.path.clone(),
            kind: rejected.rejection.label(),
            reason: rejected.rejection.to_string(),
            failure: rejected.rejection.is_failure(),
        }
    }
}

/// Outcome of the AppArtifact of one migrated version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "outcome",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ResourceOutcome {
    /// Created or updated with server-side apply.
    Applied,
    /// A run without `--dry-run` applies it.
    WouldApply,
    /// Another AppArtifact in the namespace already declares the version, so it was left
    /// alone and none was added.
    AlreadyDeclared {
        by: String,
    },
    Failed {
        kind: &'static str,
        error: String,
    },
}

/// The AppArtifact of one version.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceResult {
    /// `{tenantId}/{appId}:v{version}`.
    pub reference: String,
    /// Namespace from `--namespace-template`, absent when the template could not be applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub outcome: ResourceOutcome,
}

// === Migration ===

/// Counts of a migration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyCounts {
    pub copied: u64,
    pub skipped: u64,
    pub would_copy: u64,
    pub conflicts: u64,
    /// Failed artifacts and unreadable paths.
    pub failures: u64,
    pub rejected_paths: u64,
    /// Bytes uploaded (or, in a dry run, that would be uploaded).
    pub bytes_copied: u64,
    pub resources_applied: u64,
    pub resources_would_apply: u64,
    pub resources_already_declared: u64,
    pub resource_failures: u64,
}

/// Everything a migration did, printed as a summary and written as JSON with `--report`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationReport {
    pub source: PathBuf,
    pub registry: String,
    pub dry_run: bool,
    pub seconds: f64,
    pub counts: CopyCounts,
    pub artifacts: Vec<ArtifactResult<CopyOutcome>>,
    pub rejected_paths: Vec<RejectedReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceResult>,
}

impl MigrationReport {
    /// Builds the report and its counts. Artifacts are sorted by coordinates.
    pub fn new(
        source: PathBuf,
        registry: String,
        dry_run: bool,
        elapsed: Duration,
        mut artifacts: Vec<ArtifactResult<CopyOutcome>>,
        rejected: &[RejectedPath],
        resources: Vec<ResourceResult>,
    ) -> Self {
        artifacts.sort_by(|left, right| left.coordinates.cmp(&right.coordinates));
        let rejected_paths: Vec<RejectedReport> = rejected.iter().map(Into::into).collect();
        let mut counts = CopyCounts {
            rejected_paths: rejected_paths.len() as u64,
            failures: rejected_paths.iter().filter(|path| path.failure).count() as u64,
            ..CopyCounts::default()
        };
        for artifact in &artifacts {
            match artifact.outcome {
                CopyOutcome::Copied => {
                    counts.copied += 1;
                    counts.bytes_copied += artifact.size.unwrap_or(0);
                }
                CopyOutcome::WouldCopy => {
                    counts.would_copy += 1;
                    counts.bytes_copied += artifact.size.unwrap_or(0);
                }
                CopyOutcome::Skipped => counts.skipped += 1,
                CopyOutcome::Conflict { .. } => counts.conflicts += 1,
                CopyOutcome::Failed { .. } => counts.failures += 1,
            }
        }
        for resource in &resources {
            match resource.outcome {
                ResourceOutcome::Applied => counts.resources_applied += 1,
                ResourceOutcome::WouldApply => counts.resources_would_apply += 1,
                ResourceOutcome::AlreadyDeclared { .. } => counts.resources_already_declared += 1,
                ResourceOutcome::Failed { .. } => counts.resource_failures += 1,
            }
        }
        Self {
            source,
            registry,
            dry_run,
            seconds: elapsed.as_secs_f64(),
            counts,
            artifacts,
            rejected_paths,
            resources,
        }
    }

    /// Returns whether every version is in the registry with its source digest (or, in a dry
    /// run, could be copied) and every requested resource was applied or already declared.
    pub fn succeeded(&self) -> bool {
        self.counts.conflicts == 0
            && self.counts.failures == 0
            && self.counts.resource_failures == 0
    }

    /// Renders the summary printed at the end of a run.
    pub fn render_text(&self) -> String {
        let counts = &self.counts;
        let mut text = String::new();
        let mode = if self.dry_run { "Dry run" } else { "Migration" };
        let _ = writeln!(
            text,
            "{mode} of {} into {} finished in {:.2} s",
            self.source.display(),
            self.registry,
            self.seconds
        );
        if self.dry_run {
            let _ = writeln!(
                text,
                "  would copy {:>6} artifacts, {}",
                counts.would_copy,
                BinaryBytes(counts.bytes_copied)
            );
        } else {
            let _ = writeln!(
                text,
                "  copied     {:>6} artifacts, {} ({})",
                counts.copied,
                BinaryBytes(counts.bytes_copied),
                rates(counts.copied, counts.bytes_copied, self.seconds)
            );
        }
        let _ = writeln!(
            text,
            "  skipped    {:>6} already in the registry with the same digest",
            counts.skipped
        );
        let _ = writeln!(text, "  conflicts  {:>6}", counts.conflicts);
        let _ = writeln!(text, "  failures   {:>6}", counts.failures);
        let _ = writeln!(
            text,
            "  rejected   {:>6} paths that do not fit {{tenantId}}/{{appId}}/{{version}}.jar",
            counts.rejected_paths
        );
        if !self.resources.is_empty() {
            let applied = if self.dry_run {
                format!("{} would be applied", counts.resources_would_apply)
            } else {
                format!("{} applied", counts.resources_applied)
            };
            let _ = writeln!(
                text,
                "  resources  {applied}, {} already declared, {} failed",
                counts.resources_already_declared, counts.resource_failures
            );
        }

        self.render_lists(&mut text);
        text
    }

    fn render_lists(&self, text: &mut String) {
        if self.dry_run {
            section(text, "Would copy:", self.artifacts.iter(), |artifact| {
                matches!(artifact.outcome, CopyOutcome::WouldCopy)
                    .then(|| format!("{}  ({})", located(artifact), size_of(artifact)))
            });
        }
        section(
            text,
            "Conflicts (left unchanged in the store and the registry):",
            self.artifacts.iter(),
            |artifact| match &artifact.outcome {
                CopyOutcome::Conflict {
                    registry_digest,
                    registry_size,
                } => Some(format!(
                    "{}  store {} ({} bytes), registry {registry_digest} ({registry_size} bytes)",
                    located(artifact),
                    digest_of(artifact),
                    artifact.size.unwrap_or(0)
                )),
                _ => None,
            },
        );
        section(
            text,
            "Failures:",
            self.artifacts.iter(),
            |artifact| match &artifact.outcome {
                CopyOutcome::Failed { error, .. } => {
                    Some(format!("{}: {error}", located(artifact)))
                }
                _ => None,
            },
        );
        section(
            text,
            "Rejected paths:",
            self.rejected_paths.iter(),
            |path| Some(format!("{}: {}", path.path.display(), path.reason)),
        );
        section(
            text,
            "Resources already declared (left alone):",
            self.resources.iter(),
            |resource| match &resource.outcome {
                ResourceOutcome::AlreadyDeclared { by } => Some(format!(
                    "{}  by AppArtifact {}/{by}",
                    resource.reference,
                    resource.namespace.as_deref().unwrap_or_default()
                )),
                _ => None,
            },
        );
        section(
            text,
            "Resource failures:",
            self.resources.iter(),
            |resource| match &resource.outcome {
                ResourceOutcome::Failed { error, .. } => {
                    Some(format!("{}: {error}", resource.reference))
                }
                _ => None,
            },
        );
    }
}

// === Verification ===

/// Counts of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyCounts {
    pub identical: u64,
    pub missing: u64,
    pub different: u64,
    pub only_in_registry: u64,
    /// Artifacts that could not be compared, repositories whose tags could not be listed, and
    /// unreadable paths.
    pub failures: u64,
    pub rejected_paths: u64,
    /// Bytes read back from the registry.
    pub bytes_compared: u64,
}

/// Everything a verification found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationReport {
    pub source: PathBuf,
    pub registry: String,
    pub seconds: f64,
    pub counts: VerifyCounts,
    pub artifacts: Vec<ArtifactResult<VerifyOutcome>>,
    pub rejected_paths: Vec<RejectedReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repository_failures: Vec<RepositoryFailure>,
}

impl VerificationReport {
    /// Builds the report and its counts. Artifacts are sorted by coordinates.
    pub fn new(
        source: PathBuf,
        registry: String,
        elapsed: Duration,
        mut artifacts: Vec<ArtifactResult<VerifyOutcome>>,
        rejected: &[RejectedPath],
        repository_failures: Vec<RepositoryFailure>,
    ) -> Self {
        artifacts.sort_by(|left, right| left.coordinates.cmp(&right.coordinates));
        let rejected_paths: Vec<RejectedReport> = rejected.iter().map(Into::into).collect();
        let unreadable = rejected_paths.iter().filter(|path| path.failure).count();
        let mut counts = VerifyCounts {
            rejected_paths: rejected_paths.len() as u64,
            failures: (unreadable + repository_failures.len()) as u64,
            ..VerifyCounts::default()
        };
        for artifact in &artifacts {
            match artifact.outcome {
                VerifyOutcome::Identical => {
                    counts.identical += 1;
                    counts.bytes_compared += artifact.size.unwrap_or(0);
                }
                VerifyOutcome::Missing => counts.missing += 1,
                VerifyOutcome::Different { .. } => counts.different += 1,
                VerifyOutcome::OnlyInRegistry => counts.only_in_registry += 1,
                VerifyOutcome::Failed { .. } => counts.failures += 1,
            }
        }
        Self {
            source,
            registry,
            seconds: elapsed.as_secs_f64(),
            counts,
            artifacts,
            rejected_paths,
            repository_failures,
        }
    }

    /// Number of differences between the store and the registry.
    pub fn differences(&self) -> u64 {
        self.counts.missing + self.counts.different + self.counts.only_in_registry
    }

    /// Returns whether the store and the registry hold the same versions with the same content.
    pub fn succeeded(&self) -> bool {
        self.differences() == 0 && self.counts.failures == 0
    }

    /// Renders the summary printed at the end of a run.
    pub fn render_text(&self) -> String {
        let counts = &self.counts;
        let mut text = String::new();
        let _ = writeln!(
            text,
            "Verification of {} against {} finished in {:.2} s: {} differences",
            self.source.display(),
            self.registry,
            self.seconds,
            self.differences()
        );
        let _ = writeln!(
            text,
            "  identical        {:>6} artifacts, {} read back ({})",
            counts.identical,
            BinaryBytes(counts.bytes_compared),
            rates(counts.identical, counts.bytes_compared, self.seconds)
        );
        let _ = writeln!(text, "  missing          {:>6}", counts.missing);
        let _ = writeln!(text, "  different        {:>6}", counts.different);
        let _ = writeln!(text, "  only in registry {:>6}", counts.only_in_registry);
        let _ = writeln!(text, "  failures         {:>6}", counts.failures);
        let _ = writeln!(
            text,
            "  rejected         {:>6} paths that do not fit {{tenantId}}/{{appId}}/{{version}}.jar",
            counts.rejected_paths
        );

        section(
            &mut text,
            "Differences:",
            self.artifacts.iter(),
            |artifact| match &artifact.outcome {
                VerifyOutcome::Missing => Some(format!(
                    "missing in registry  {}  store {}",
                    located(artifact),
                    digest_of(artifact)
                )),
                VerifyOutcome::Different {
                    registry_digest,
                    registry_size,
                } => Some(format!(
                    "different            {}  store {} ({} bytes), registry {registry_digest} \
                     ({registry_size} bytes)",
                    located(artifact),
                    digest_of(artifact),
                    artifact.size.unwrap_or(0)
                )),
                VerifyOutcome::OnlyInRegistry => {
                    Some(format!("only in registry     {}", artifact.reference))
                }
                _ => None,
            },
        );
        section(
            &mut text,
            "Failures:",
            self.artifacts.iter(),
            |artifact| match &artifact.outcome {
                VerifyOutcome::Failed { error, .. } => {
                    Some(format!("{}: {error}", located(artifact)))
                }
                _ => None,
            },
        );
        section(
            &mut text,
            "Repositories whose versions could not be listed:",
            self.repository_failures.iter(),
            |failure| Some(format!("{}: {}", failure.repository, failure.error)),
        );
        section(
            &mut text,
            "Rejected paths:",
            self.rejected_paths.iter(),
            |path| Some(format!("{}: {}", path.path.display(), path.reason)),
        );
        text
    }
}

// === Text helpers ===

/// Appends a titled list of the lines `line` returns for `items`, unless it returns none.
fn section<'a, T: 'a>(
    text: &mut String,
    title: &str,
    items: impl Iterator<Item = &'a T>,
    line: impl Fn(&T) -> Option<String>,
) {
    let lines: Vec<String> = items.filter_map(line).collect();
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(text, "{title}");
    for item in lines {
        let _ = writeln!(text, "  {}", escape_control_characters(&item));
    }
}

/// Escapes control characters such as `\n` in a line of the summary, so that a file name in the
/// source store cannot break the line or forge another one.
fn escape_control_characters(line: &str) -> String {
    if !line.chars().any(char::is_control) {
        return line.to_owned();
    }
    line.chars()
        .map(|character| {
            if character.is_control() {
                character.escape_default().to_string()
            } else {
                character.to_string()
            }
        })
        .collect()
}

/// `reference  path`, or the reference alone for a version without a source file.
fn located<O>(artifact: &ArtifactResult<O>) -> String {
    match &artifact.path {
        Some(path) => format!("{}  {}", artifact.reference, path.display()),
        None => artifact.reference.clone(),
    }
}

fn digest_of<O>(artifact: &ArtifactResult<O>) -> String {
    artifact
        .digest
        .map_or_else(|| "(not read)".to_owned(), |digest| digest.to_string())
}

fn size_of<O>(artifact: &ArtifactResult<O>) -> String {
    artifact.size.map_or_else(
        || "size unknown".to_owned(),
        |size| BinaryBytes(size).to_string(),
    )
}

/// `N artifacts/s, N MiB/s` over `seconds`.
fn rates(artifacts: u64, bytes: u64, seconds: f64) -> String {
    let seconds = seconds.max(0.001);
    format!(
        "{:.1} artifacts/s, {}/s",
        artifacts as f64 / seconds,
        BinaryBytes((bytes as f64 / seconds) as u64)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::layout::Rejection;

    fn result<O>(version: &str, bytes: &[u8], outcome: O) -> ArtifactResult<O> {
        let coordinates = ArtifactCoordinates::new("acme", "billing", version).unwrap();
        ArtifactResult::new(
            &coordinates,
            Some(PathBuf::from(format!("/store/acme/billing/{version}.jar"))),
            Some(ContentSummary {
                digest: Digest::of(bytes),
                size: bytes.len() as u64,
            }),
            outcome,
        )
    }

    fn migration(
        artifacts: Vec<ArtifactResult<CopyOutcome>>,
        rejected: &[RejectedPath],
    ) -> MigrationReport {
        MigrationReport::new(
            PathBuf::from("/store"),
            "127.0.0.1:5000".to_owned(),
            false,
            Duration::from_secs(2),
            artifacts,
            rejected,
            Vec::new(),
        )
    }

    #[test]
    fn counts_follow_outcomes() {
        let report = migration(
            vec![
                result("1.0", b"abcd", CopyOutcome::Copied),
                result("2.0", b"ab", CopyOutcome::Copied),
                result("3.0", b"x", CopyOutcome::Skipped),
                result(
                    "4.0",
                    b"y",
                    CopyOutcome::Conflict {
                        registry_digest: Digest::of(b"z"),
                        registry_size: 1,
                    },
                ),
            ],
            &[
                RejectedPath {
                    path: PathBuf::from("/store/README.md"),
                    rejection: Rejection::FileAboveVersionDepth,
                },
                RejectedPath {
                    path: PathBuf::from("/store/acme/billing/5.0.jar"),
                    rejection: Rejection::Unreadable {
                        reason: "Permission denied".to_owned(),
                    },
                },
            ],
        );
        assert_eq!(
            report.counts,
            CopyCounts {
                copied: 2,
                skipped: 1,
                conflicts: 1,
                failures: 1,
                rejected_paths: 2,
                bytes_copied: 6,
                ..CopyCounts::default()
            }
        );
        assert!(!report.succeeded());
    }

    #[test]
    fn clean_migration_succeeds_despite_rejected_files() {
        let report = migration(
            vec![result("1.0", b"abcd", CopyOutcome::Copied)],
            &[RejectedPath {
                path: PathBuf::from("/store/README.md"),
                rejection: Rejection::FileAboveVersionDepth,
            }],
        );
        assert!(report.succeeded());
    }

    #[test]
    fn summary_lists_conflicts_with_both_digests() {
        let report = migration(
            vec![result(
                "4.0",
                b"y",
                CopyOutcome::Conflict {
                    registry_digest: Digest::of(b"z"),
                    registry_size: 1,
                },
            )],
            &[],
        );
        let text = report.render_text();
        assert!(text.contains("  conflicts       1\n"), "{text}");
        let line = text
            .lines()
            .find(|line| line.starts_with("  acme/billing:v4.0"))
            .unwrap_or_else(|| panic!("no conflict line in {text}"));
        assert!(line.contains(&Digest::of(b"y").to_string()), "{line}");
        assert!(line.contains(&Digest::of(b"z").to_string()), "{line}");
        assert!(line.contains("/store/acme/billing/4.0.jar"), "{line}");
    }

    #[test]
    fn summary_reports_rates() {
        let report = migration(vec![result("1.0", &[0; 2048], CopyOutcome::Copied)], &[]);
        let text = report.render_text();
        assert!(
            text.contains("copied          1 artifacts, 2.00 KiB (0.5 artifacts/s, 1.00 KiB/s)"),
            "{text}"
        );
    }

    #[test]
    fn json_report_uses_camel_case_outcomes() {
        let report = migration(
            vec![result(
                "4.0",
                b"y",
                CopyOutcome::Conflict {
                    registry_digest: Digest::of(b"z"),
                    registry_size: 1,
                },
            )],
            &[],
        );
        let json = serde_json::to_value(&report).unwrap();
        let artifact = &json["artifacts"][0];
        assert_eq!(artifact["outcome"], "conflict");
        assert_eq!(artifact["reference"], "acme/billing:v4.0");
        assert_eq!(artifact["registryDigest"], Digest::of(b"z").to_string());
        assert_eq!(artifact["digest"], Digest::of(b"y").to_string());
        assert_eq!(json["counts"]["conflicts"], 1);
        assert!(json.get("resources").is_none(), "{json}");
    }

    #[test]
    fn verification_counts_differences() {
        let only = ArtifactResult::new(
            &ArtifactCoordinates::new("acme", "billing", "9.0").unwrap(),
            None,
            None,
            VerifyOutcome::OnlyInRegistry,
        );
        let report = VerificationReport::new(
            PathBuf::from("/store"),
            "127.0.0.1:5000".to_owned(),
            Duration::from_secs(1),
            vec![
                result("1.0", b"a", VerifyOutcome::Identical),
                result("2.0", b"b", VerifyOutcome::Missing),
                result(
                    "3.0",
                    b"c",
                    VerifyOutcome::Different {
                        registry_digest: Digest::of(b"d"),
                        registry_size: 1,
                    },
                ),
                only,
            ],
            &[],
            Vec::new(),
        );
        assert_eq!(report.differences(), 3);
        assert!(!report.succeeded());
        let text = report.render_text();
        assert!(text.contains(": 3 differences\n"), "{text}");
        assert!(
            text.contains("  only in registry     acme/billing:v9.0\n"),
            "{text}"
        );
        assert!(
            text.contains("  missing in registry  acme/billing:v2.0  /store/acme/billing/2.0.jar"),
            "{text}"
        );
    }
}
