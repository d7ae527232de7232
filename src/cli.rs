//! Command-line interface of the `artifact-operator` binary.

use std::{path::Path, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use ipnet::IpNet;

use crate::{
    Error, Result,
    artifact::{address_policy::AddressPolicy, controller as artifact_controller},
    cluster, crd,
    gateway::{
        keys::{self, KeySettings},
        server,
    },
    registry::controller,
    telemetry::{LogFormat, Metrics},
    webhook::{
        admission::{self, InjectionSettings, WebhookState},
        certs::{self, CertSettings},
        configuration::{self, Endpoint, WebhookConfig},
        patch::LoaderTemplate,
        tls_server,
    },
};

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
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML, ready for `kubectl apply -f -`.
    Crds {
        /// Write one file per definition into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<std::path::PathBuf>,
    },
    /// Copy a filesystem store of JARs ({tenantId}/{appId}/{version}.jar) into an OCI registry.
    /// It is idempotent, resumable and never destructive, and exits non-zero when anything failed.
    Migrate(Box<crate::migrate::MigrateArgs>),
    /// Download one JAR through a pre-signed URL and verify its digest, as a pod's init
    /// container does.
    Loader(crate::loader::LoaderArgs),
}

/// Time that in-flight reconciles get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Options of `artifact-operator run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Namespace the operator runs in. Registries accept traffic from its pods.
    #[arg(long, env = "POD_NAMESPACE", default_value = "artifact-operator")]
    pub operator_namespace: String,

    /// Namespace of Traefik. Registries with an ingress accept traffic from its pods.
    #[arg(long, env = "TRAEFIK_NAMESPACE", default_value = "traefik")]
    pub traefik_namespace: String,

    /// Watch only this namespace instead of the whole cluster.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Address range (CIDR) that URL sources must not reach, in addition to loopback,
    /// link-local and the cluster's discovered Service and pod ranges. Repeatable.
    #[arg(
        long = "source-deny-cidr",
        value_name = "CIDR",
        env = "SOURCE_DENY_CIDRS",
        value_delimiter = ','
    )]
    pub source_deny_cidrs: Vec<IpNet>,

    /// Address range (CIDR) that URL sources may reach even when a denied range contains it,
    /// for example an artifact server inside the cluster. Repeatable.
    #[arg(
        long = "source-exempt-cidr",
        value_name = "CIDR",
        env = "SOURCE_EXEMPT_CIDRS",
        value_delimiter = ','
    )]
    pub source_exempt_cidrs: Vec<IpNet>,

    /// Address of the gateway's HTTP listener, which serves pre-signed artifact URLs.
    #[arg(
        long,
        value_name = "ADDRESS",
        env = "GATEWAY_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub gateway_listen: std::net::SocketAddr,

    /// Secret in the operator's namespace that keeps the URL signing keys. It is created when
    /// missing.
    #[arg(long, value_name = "NAME", default_value = crate::gateway::keys::DEFAULT_SECRET_NAME)]
    pub signing_key_secret: String,

    /// Age at which the active URL signing key is replaced, for example `30d` or `720h`.
    #[arg(long, value_name = "DURATION", default_value = "720h", value_parser = parse_duration)]
    pub signing_key_rotation: Duration,

    /// Interval between checks that a Ready AppArtifact is still in its registry, for example
    /// `10m` or `1h`.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub artifact_verify_interval: Duration,

    /// Base URL of the gateway as pods reach it. Default:
    /// http://artifact-operator-gateway.{operator namespace}.svc:8080.
    #[arg(long, value_name = "URL", env = "GATEWAY_URL")]
    pub gateway_url: Option<String>,

    /// Lifetime of the URLs injected into pods, at most 7 days.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub artifact_url_ttl: Duration,

    /// Address of the webhook's HTTPS listener.
    #[arg(
        long,
        value_name = "ADDRESS",
        env = "WEBHOOK_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub webhook_listen: std::net::SocketAddr,

    /// Secret in the operator's namespace that keeps the webhook's CA and serving certificate.
    /// It is created when missing.
    #[arg(long, value_name = "NAME", default_value = certs::DEFAULT_SECRET_NAME)]
    pub webhook_tls_secret: String,

    /// Service through which the API server calls the webhook; the serving certificate names
    /// it.
    #[arg(long, value_name = "NAME", default_value = certs::DEFAULT_SERVICE_NAME)]
    pub webhook_service: String,

    /// IP address the serving certificate also names, for a webhook registered by URL.
    /// Repeatable.
    #[arg(long = "webhook-ip", value_name = "IP", value_delimiter = ',')]
    pub webhook_ips: Vec<std::net::IpAddr>,

    /// MutatingWebhookConfiguration whose caBundle the operator keeps current.
    #[arg(long, value_name = "NAME", default_value = configuration::DEFAULT_NAME)]
    pub webhook_configuration: String,

    /// Register the webhook by this HTTPS URL, such as https://127.0.0.1:8443: the operator
    /// then creates the MutatingWebhookConfiguration itself. For an operator outside the
    /// cluster; in a cluster the Helm chart registers the webhook's Service.
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,

    /// Image of the loader init container the webhook adds to pods that ask for one. Its
    /// entrypoint must be the artifact-operator binary.
    #[arg(long, value_name = "IMAGE", env = "LOADER_IMAGE", default_value = DEFAULT_LOADER_IMAGE)]
    pub loader_image: String,

    /// Where an added loader puts the JARs; app containers see them there, read-only.
    #[arg(long, value_name = "PATH", default_value = "/artifacts")]
    pub loader_mount_path: String,
}

/// Default loader image: the operator's own image of this version.
const DEFAULT_LOADER_IMAGE: &str = concat!(
    "ghcr.io/cameleer/artifact-operator:",
    env!("CARGO_PKG_VERSION")
);

/// Parses a duration such as `90s`, `10m` or `1h 30m`.
pub(crate) fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let duration: jiff::SignedDuration = text
        .parse()
        .map_err(|error| format!("invalid duration {text:?} ({error}); use a value such as 10m"))?;
    Duration::try_from(duration)
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| format!("invalid duration {text:?}: it must be positive"))
}

impl RunArgs {
    /// Returns the gateway URL injected into pods.
    pub fn gateway_url(&self) -> String {
        self.gateway_url.clone().unwrap_or_else(|| {
            format!(
                "http://artifact-operator-gateway.{}.svc:8080",
                self.operator_namespace
            )
        })
    }

    /// Returns the settings of the webhook's certificates.
    pub fn cert_settings(&self) -> CertSettings {
        let mut settings = CertSettings::new(self.operator_namespace.clone());
        settings.secret_name = self.webhook_tls_secret.clone();
        settings.dns_names = vec![
            format!("{}.{}.svc", self.webhook_service, self.operator_namespace),
            format!(
                "{}.{}.svc.cluster.local",
                self.webhook_service, self.operator_namespace
            ),
        ];
        settings.ip_addresses = self.webhook_ips.clone();
        settings.webhook_configuration = Some(self.webhook_configuration.clone());
        settings
    }

    /// Returns what the webhook puts into pods.
    pub fn injection_settings(&self) -> InjectionSettings {
        InjectionSettings {
            gateway_url: self.gateway_url(),
            url_ttl: self.artifact_url_ttl,
            loader: LoaderTemplate {
                image: self.loader_image.clone(),
                mount_path: self.loader_mount_path.clone(),
            },
        }
    }

    /// Builds the address policy of URL sources from the flags and the cluster's ranges.
    pub fn address_policy(&self, cluster_ranges: Vec<IpNet>) -> AddressPolicy {
        let policy = AddressPolicy::new(cluster_ranges);
        let policy = self
            .source_deny_cidrs
            .iter()
            .fold(policy, |policy, range| policy.deny_range(*range));
        self.source_exempt_cidrs
            .iter()
            .fold(policy, |policy, range| policy.exempt_range(*range))
    }
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

/// Connects to the cluster, logs the API server version and runs the controllers and the
/// gateway until a shutdown signal arrives.
pub async fn run(args: RunArgs) -> Result<()> {
    let cluster = cluster::connect().await?;
    cluster::log_server_version(&cluster).await?;
    let client = cluster.client.clone();

    let metrics = Arc::new(Metrics::default());
    let cluster_ranges = cluster::discover_address_ranges(&client).await;
    let mut artifact_settings = artifact_controller::Settings::new(
        args.watch_namespace.clone(),
        args.address_policy(cluster_ranges),
    );
    artifact_settings.verify_interval = args.artifact_verify_interval;
    artifact_settings.gateway_url = Some(args.gateway_url());
    let mut key_settings = KeySettings::new(args.operator_namespace.clone());
    key_settings.secret_name = args.signing_key_secret.clone();
    key_settings.rotation_interval = args.signing_key_rotation;
    let registry_settings = controller::Settings {
        operator_namespace: args.operator_namespace.clone(),
        traefik_namespace: args.traefik_namespace.clone(),
        watch_namespace: args.watch_namespace.clone(),
    };

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop_signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };

    let keys = keys::start(client.clone(), key_settings, stop_signal()).await?;
    let artifacts_cache = server::artifact_cache(
        client.clone(),
        args.watch_namespace.as_deref(),
        stop_signal(),
    )
    .await;

    let listener = bind("gateway", "--gateway-listen", args.gateway_listen).await?;
    let gateway_state = Arc::new(server::GatewayState {
        client: client.clone(),
        artifacts: artifacts_cache.clone(),
        keys: keys.clone(),
        metrics: metrics.clone(),
    });
    let gateway = tokio::spawn(server::serve(
        listener,
        server::router(gateway_state),
        stop_signal(),
    ));

    let certs = certs::start(client.clone(), args.cert_settings(), stop_signal()).await?;
    let webhook_state = Arc::new(WebhookState {
        client: client.clone(),
        artifacts: artifacts_cache,
        namespaces: admission::namespace_cache(client.clone(), stop_signal()).await,
        keys,
        settings: args.injection_settings(),
        metrics: metrics.clone(),
    });
    let listener = bind("webhook", "--webhook-listen", args.webhook_listen).await?;
    let webhook_certs = certs.clone();
    let webhook_stop = stop_signal();
    let webhook = tokio::spawn(async move {
        let router = admission::router(webhook_state);
        tls_server::serve_tls(listener, router, &webhook_certs, webhook_stop).await
    });
    if let Some(url) = &args.webhook_url {
        register_webhook(&client, &args, url, certs.ca_bundle_pem()).await?;
    }

    let registry_context = Arc::new(controller::Context::new(client.clone(), registry_settings));
    let artifact_context = Arc::new(artifact_controller::Context::new(
        client,
        artifact_settings,
        metrics,
    ));
    let registries = tokio::spawn(controller::run(registry_context, stop_signal()));
    let artifacts = tokio::spawn(artifact_controller::run(artifact_context, stop_signal()));
    info!("Operator started");

    shutdown_signal().await;
    let _ = stop.send(true);
    // NOTE: in kube-runtime 5.0.0 the controller keeps its reconcile runner waiting until the
    // reflector store is ready. A shutdown that arrives before the first list completes stops
    // the watch, so the store never becomes ready and the graceful shutdown never ends. The
    // wait is therefore bounded; the cli_run test shuts down that early on purpose.
    let all = async { tokio::join!(registries, artifacts, gateway, webhook) };
    match tokio::time::timeout(SHUTDOWN_GRACE, all).await {
        Ok((registries, artifacts, gateway, webhook)) => {
            for (name, result) in [("registry", registries), ("AppArtifact", artifacts)] {
                if let Err(error) = result {
                    warn!(%error, controller = name, "A controller task failed");
                }
            }
            for (name, result) in [("gateway", gateway), ("webhook", webhook)] {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => warn!(%error, listener = name, "A listener failed"),
                    Err(error) => warn!(%error, listener = name, "A listener task failed"),
                }
            }
        }
        Err(_) => warn!(grace = ?SHUTDOWN_GRACE, "The operator did not stop in time"),
    }
    info!("Operator stopped");
    Ok(())
}

async fn bind(
    listener: &'static str,
    flag: &'static str,
    address: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener> {
    let bound = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::Listen {
            listener,
            flag,
            address,
            source,
        })?;
    if let Ok(address) = bound.local_addr() {
        info!(%address, listener, "Listening");
    }
    Ok(bound)
}

/// Creates the MutatingWebhookConfiguration that sends pods to `url`.
async fn register_webhook(
    client: &kube::Client,
    args: &RunArgs,
    url: &str,
    ca_bundle: String,
) -> Result<()> {
    let mut config = WebhookConfig::new(
        Endpoint::Url(url.to_owned()),
        ca_bundle,
        &args.operator_namespace,
    );
    config.name = args.webhook_configuration.clone();
    config.only_namespaces = args.watch_namespace.iter().cloned().collect();
    configuration::apply(client, &config)
        .await
        .map_err(|source| Error::WebhookRegistration {
            name: config.name.clone(),
            source,
        })?;
    info!(configuration = %config.name, %url, "Registered the webhook");
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
