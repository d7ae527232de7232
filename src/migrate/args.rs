//! Command-line options of `artifact-operator migrate` and `migrate verify`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{
    connection::RegistryOptions,
    resource_plan::{NamespaceTemplate, RegistryRefArg},
};

/// Options of `artifact-operator migrate`. Without a subcommand it copies the store.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub command: Option<MigrateCommand>,

    /// Source and registry of the copy; `None` only with a subcommand.
    #[command(flatten)]
    pub store: Option<StoreArgs>,

    #[command(flatten)]
    pub copy: CopyArgs,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Compare a filesystem store with the registry, reading every version back, and list every
    /// difference. Exits non-zero when there is one.
    Verify(VerifyArgs),
}

/// Options that name the source store and the target registry.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Root of the filesystem store, laid out as {tenantId}/{appId}/{version}.jar. It is only
    /// read.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,

    /// Target registry: https://HOST[:PORT], or http://HOST[:PORT] for a registry without TLS.
    #[arg(long, value_name = "URL")]
    pub registry: String,

    /// File with one line USERNAME:PASSWORD for the registry. Without it access is anonymous.
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,

    /// PEM file of the certificate authorities that the registry's certificate must chain to,
    /// used instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Number of artifacts transferred at once.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    pub concurrency: u16,

    /// Also write every result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

impl StoreArgs {
    pub fn registry_options(&self) -> RegistryOptions {
        RegistryOptions {
            url: self.registry.clone(),
            credentials_file: self.credentials_file.clone(),
            ca_file: self.ca.clone(),
        }
    }
}

/// Options of the copy besides source and registry.
///
/// clap leaves an optional flattened group empty when it contains another flattened group, so
/// these options sit beside [`StoreArgs`] instead of containing it.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// List what would be copied, and change nothing in the registry or the cluster.
    #[arg(long)]
    pub dry_run: bool,

    /// Also declare every version that is in the registry with its source digest as an
    /// AppArtifact with an `existing` source, using server-side apply. The namespaces must exist
    /// and carry the tenant label artifacts.cameleer.io/tenant. Connects to the cluster of
    /// KUBECONFIG.
    #[arg(long, requires_all = ["namespace_template", "registry_ref"])]
    pub create_resources: bool,

    /// Namespace of each AppArtifact, with the placeholders {tenantId} and {appId}, such as
    /// tenant-{tenantId}.
    #[arg(long, value_name = "TEMPLATE", requires = "create_resources")]
    pub namespace_template: Option<NamespaceTemplate>,

    /// ArtifactRegistry that the AppArtifacts name in spec.registryRef, as NAMESPACE/NAME.
    #[arg(long, value_name = "NAMESPACE/NAME", requires = "create_resources")]
    pub registry_ref: Option<RegistryRefArg>,
}

/// Options of `migrate verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Command {
        Migrate(MigrateArgs),
    }

    fn parse(args: &[&str]) -> Result<MigrateArgs, clap::Error> {
        let argv = ["artifact-operator", "migrate"].iter().chain(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Migrate(args) => args,
        })
    }

    #[test]
    fn copy_options_parsed() {
        let args = parse(&[
            "--from",
            "/store",
            "--registry",
            "https://127.0.0.1:5000",
            "--concurrency",
            "8",
            "--dry-run",
        ])
        .unwrap();
        assert!(args.command.is_none());
        let store = args.store.unwrap();
        assert_eq!(store.from, PathBuf::from("/store"));
        assert_eq!(store.registry, "https://127.0.0.1:5000");
        assert_eq!(store.concurrency, 8);
        assert!(args.copy.dry_run);
        assert!(!args.copy.create_resources);
    }

    #[test]
    fn verify_subcommand_parsed() {
        let args = parse(&[
            "verify",
            "--from",
            "/store",
            "--registry",
            "http://127.0.0.1:5000",
        ])
        .unwrap();
        let Some(MigrateCommand::Verify(verify)) = args.command else {
            panic!("expected verify, got {args:?}");
        };
        assert_eq!(verify.store.from, PathBuf::from("/store"));
        assert_eq!(verify.store.concurrency, 4);
    }

    #[test]
    fn copy_options_conflict_with_verify() {
        let error = parse(&[
            "--dry-run",
            "verify",
            "--from",
            "/store",
            "--registry",
            "http://127.0.0.1:5000",
        ])
        .unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn copy_requires_source_and_registry() {
        let error = parse(&["--from", "/store"]).unwrap_err();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn create_resources_requires_template_and_registry_ref() {
        let base = ["--from", "/s", "--registry", "http://127.0.0.1:1"];
        let error = parse(&[&base[..], &["--create-resources"]].concat()).unwrap_err();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        let args = parse(
            &[
                &base[..],
                &[
                    "--create-resources",
                    "--namespace-template",
                    "tenant-{tenantId}",
                    "--registry-ref",
                    "artifacts/main",
                ],
            ]
            .concat(),
        )
        .unwrap();
        assert!(args.copy.create_resources);
        assert_eq!(
            args.copy.registry_ref.unwrap().to_string(),
            "artifacts/main"
        );
    }

    #[test]
    fn invalid_template_rejected_at_parse() {
        let error = parse(&[
            "--from",
            "/s",
            "--registry",
            "http://127.0.0.1:1",
            "--create-resources",
            "--namespace-template",
            "tenant-{tenant}",
            "--registry-ref",
            "artifacts/main",
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown placeholder {tenant}"),
            "{error}"
        );
    }

    #[test]
    fn concurrency_out_of_range_rejected() {
        let error = parse(&[
            "--from",
            "/s",
            "--registry",
            "http://127.0.0.1:1",
            "--concurrency",
            "0",
        ])
        .unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
