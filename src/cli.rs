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
    leader::{self, LeaseSettings},
    registry::controller,
    telemetry::{
        LogFormat, Metrics,
        endpoints::{self, OperationsState, Readiness},
    },
    webhook::{
        admission::{self, InjectionSettings, WebhookState},
        certs::{
            self, CertSettings,
            external::{self, ExternalSettings},
        },
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
    Run(Box<RunArgs>),
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
    Loader(Box<crate::loader::LoaderArgs>),
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

    /// Issuer of the webhook's serving certificate. `self-managed`: the operator keeps its
    /// own CA and the certificate in --webhook-tls-secret, renews them, and writes the CA
    /// bundle into the caBundle of --webhook-configuration. `external`: another component,
    /// such as cert-manager, writes tls.crt, tls.key and optionally ca.crt into
    /// --webhook-tls-secret and sets the caBundle; the operator only reads the Secret and
    /// reloads it when it changes.
    #[arg(long, value_enum, value_name = "MODE", default_value_t)]
    pub webhook_certificates: WebhookCertificates,

    /// Secret in the operator's namespace with the webhook's serving certificate. With
    /// self-managed certificates it also keeps the CA and is created when missing.
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

    /// MutatingWebhookConfiguration whose caBundle the operator keeps current (self-managed
    /// certificates only).
    #[arg(long, value_name = "NAME", default_value = configuration::DEFAULT_NAME)]
    pub webhook_configuration: String,

    /// Register the webhook by this HTTPS URL, such as https://127.0.0.1:8443: the operator
    /// then creates the MutatingWebhookConfiguration itself. For an operator outside the
    /// cluster; in a cluster the Helm chart registers the webhook's Service. Needs
    /// self-managed certificates.
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,

    /// Image of the loader init container the webhook adds to pods that ask for one. Its
    /// entrypoint must be the artifact-operator binary.
    #[arg(long, value_name = "IMAGE", env = "LOADER_IMAGE", default_value = DEFAULT_LOADER_IMAGE)]
    pub loader_image: String,

    /// Directory of the JARs in pods with an added loader, mounted read-only in app containers.
    #[arg(long, value_name = "PATH", default_value = "/artifacts")]
    pub loader_mount_path: String,

    /// Address of the operations listener: /metrics, /healthz and /readyz.
    #[arg(
        long,
        value_name = "ADDRESS",
        env = "METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: std::net::SocketAddr,

    /// Run the controllers only while holding a Lease in the operator's namespace, so that one
    /// of several replicas reconciles. Turn it off only for a single replica.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader election Lease.
    #[arg(long, value_name = "NAME", default_value = "artifact-operator")]
    pub leader_election_lease: String,

    /// Name of this replica in the Lease; a random suffix is added. Default: the host name.
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub pod_name: Option<String>,
}

/// Issuer of the webhook's serving certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WebhookCertificates {
    /// The operator's own CA, kept and rotated in the webhook TLS Secret.
    #[default]
    SelfManaged,
    /// Another component (cert-manager) writes the Secret and the caBundle.
    External,
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
    /// Returns the Lease settings, or `None` when leader election is off.
    pub fn lease_settings(&self) -> Option<LeaseSettings> {
        let base = self
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "artifact-operator".to_owned());
        self.leader_election.then(|| {
            LeaseSettings::new(
                self.operator_namespace.clone(),
                self.leader_election_lease.clone(),
                leader::identity(&base),
            )
        })
    }

    /// Returns the settings of the URL signing key ring.
    pub fn key_settings(&self) -> KeySettings {
        let mut settings = KeySettings::new(self.operator_namespace.clone());
        settings.secret_name = self.signing_key_secret.clone();
        settings.rotation_interval = self.signing_key_rotation;
        settings
    }

    /// Returns the settings of the ArtifactRegistry controller.
    pub fn registry_settings(&self) -> controller::Settings {
        controller::Settings {
            operator_namespace: self.operator_namespace.clone(),
            traefik_namespace: self.traefik_namespace.clone(),
            watch_namespace: self.watch_namespace.clone(),
        }
    }

    /// Returns the settings of the AppArtifact controller, given the cluster's address ranges.
    pub fn artifact_settings(&self, cluster_ranges: Vec<IpNet>) -> artifact_controller::Settings {
        let mut settings = artifact_controller::Settings::new(
            self.watch_namespace.clone(),
            self.address_policy(cluster_ranges),
        );
        settings.verify_interval = self.artifact_verify_interval;
        settings.gateway_url = Some(self.gateway_url());
        settings
    }

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

    /// Returns where the webhook's externally issued certificate is.
    pub fn external_cert_settings(&self) -> ExternalSettings {
        let self_managed = self.cert_settings();
        ExternalSettings {
            namespace: self_managed.namespace,
            secret_name: self_managed.secret_name,
            dns_names: self_managed.dns_names,
            ip_addresses: self_managed.ip_addresses,
        }
    }

    /// Rejects combinations of flags that cannot work together.
    pub fn validate(&self) -> Result<()> {
        if self.webhook_url.is_some() && self.webhook_certificates == WebhookCertificates::External
        {
            return Err(Error::WebhookUrlNeedsSelfManagedCertificates);
        }
        Ok(())
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

/// Connects to the cluster and runs the operator until a shutdown signal arrives: the
/// operations listener, the gateway and the webhook on every replica, and the controllers on
/// the replica that holds the leader Lease.
pub async fn run(args: RunArgs) -> Result<()> {
    args.validate()?;
    let cluster = cluster::connect().await?;
    cluster::log_server_version(&cluster).await?;
    let client = cluster.client.clone();
    cluster::check_crds(&client, args.watch_namespace.as_deref()).await?;

    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop_signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };

    let operations = start_operations(&args, &metrics, &readiness, stop_signal()).await?;
    let listeners = start_listeners(&client, &args, &metrics, &readiness, &stop_signal).await?;
    readiness.set_caches_synced();

    let lease = args.lease_settings();
    let (lost, lease_lost) = tokio::sync::oneshot::channel();
    info!("Operator started");
    let leading = tokio::spawn(lead(
        client.clone(),
        args,
        metrics,
        lease.clone(),
        lost,
        stop_signal.clone(),
    ));

    let lost = tokio::select! {
        () = shutdown_signal() => false,
        Ok(()) = lease_lost => true,
    };
    let _ = stop.send(true);
    stop_all(leading, listeners, operations).await;
    if let Some(lease) = &lease {
        leader::release(&client, lease).await;
    }
    if lost {
        return Err(Error::LeadershipLost {
            lease: lease.map(|lease| lease.name).unwrap_or_default(),
        });
    }
    info!("Operator stopped");
    Ok(())
}

type Task = tokio::task::JoinHandle<std::io::Result<()>>;

/// Serves `/metrics`, `/healthz` and `/readyz`.
async fn start_operations(
    args: &RunArgs,
    metrics: &Arc<Metrics>,
    readiness: &Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Task> {
    let listener = bind("operations", "--metrics-listen", args.metrics_listen).await?;
    let state = Arc::new(OperationsState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    });
    Ok(tokio::spawn(server::serve(
        listener,
        endpoints::router(state),
        shutdown,
    )))
}

/// The gateway and the webhook listeners.
struct Listeners {
    gateway: Task,
    webhook: Task,
}

/// Loads the signing keys and the webhook certificates, fills the caches, and starts the
/// gateway and the webhook. With `--webhook-url` it also registers the webhook.
async fn start_listeners<F, S>(
    client: &kube::Client,
    args: &RunArgs,
    metrics: &Arc<Metrics>,
    readiness: &Arc<Readiness>,
    stop_signal: &S,
) -> Result<Listeners>
where
    S: Fn() -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let keys = keys::start(client.clone(), args.key_settings(), stop_signal()).await?;
    let artifacts = server::artifact_cache(
        client.clone(),
        args.watch_namespace.as_deref(),
        stop_signal(),
    )
    .await;

    let listener = bind("gateway", "--gateway-listen", args.gateway_listen).await?;
    let gateway_state = Arc::new(server::GatewayState {
        client: client.clone(),
        artifacts: artifacts.clone(),
        keys: keys.clone(),
        metrics: metrics.clone(),
        registry_clients: Default::default(),
    });
    let gateway = tokio::spawn(server::serve(
        listener,
        server::router(gateway_state),
        stop_signal(),
    ));

    let certs = match args.webhook_certificates {
        WebhookCertificates::SelfManaged => {
            certs::start(client.clone(), args.cert_settings(), stop_signal()).await?
        }
        WebhookCertificates::External => {
            external::start(client.clone(), args.external_cert_settings(), stop_signal()).await?
        }
    };
    let check = certs.clone();
    readiness.set_certificate_check(move || check.readiness());
    let webhook_state = Arc::new(WebhookState {
        client: client.clone(),
        artifacts,
        namespaces: admission::namespace_cache(client.clone(), stop_signal()).await,
        keys,
        settings: args.injection_settings(),
        metrics: metrics.clone(),
    });
    let listener = bind("webhook", "--webhook-listen", args.webhook_listen).await?;
    let webhook_stop = stop_signal();
    let ca_bundle = certs.ca_bundle_pem();
    let webhook = tokio::spawn(async move {
        let router = admission::router(webhook_state);
        tls_server::serve_tls(listener, router, &certs, webhook_stop).await
    });
    if let Some(url) = &args.webhook_url {
        register_webhook(client, args, url, ca_bundle).await?;
    }
    Ok(Listeners { gateway, webhook })
}

/// Waits for the leader Lease (when leader election is on), runs both controllers until
/// shutdown, and reports a lost Lease on `lost`.
async fn lead<F, S>(
    client: kube::Client,
    args: RunArgs,
    metrics: Arc<Metrics>,
    lease: Option<LeaseSettings>,
    lost: tokio::sync::oneshot::Sender<()>,
    stop_signal: S,
) -> Vec<tokio::task::JoinHandle<()>>
where
    S: Fn() -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send + Sync + 'static,
{
    let acquired = match &lease {
        Some(lease) => match leader::acquire(&client, lease, stop_signal()).await {
            Some(acquired) => Some(acquired),
            None => return Vec::new(),
        },
        None => None,
    };

    let cluster_ranges = cluster::discover_address_ranges(&client).await;
    let registry_context = controller::Context::new(client.clone(), args.registry_settings())
        .with_metrics(metrics.clone());
    let artifact_context = artifact_controller::Context::new(
        client.clone(),
        args.artifact_settings(cluster_ranges),
        metrics,
    );
    let controllers = vec![
        tokio::spawn(controller::run(Arc::new(registry_context), stop_signal())),
        tokio::spawn(artifact_controller::run(
            Arc::new(artifact_context),
            stop_signal(),
        )),
    ];

    if let (Some(lease), Some(acquired)) = (&lease, acquired)
        && !leader::hold(&client, lease, acquired, stop_signal()).await
    {
        let _ = lost.send(());
    }
    controllers
}

/// Waits, at most [`SHUTDOWN_GRACE`], for the controllers and listeners to finish.
async fn stop_all(
    leading: tokio::task::JoinHandle<Vec<tokio::task::JoinHandle<()>>>,
    listeners: Listeners,
    operations: Task,
) {
    // NOTE: in kube-runtime 5.0.0 the controller keeps its reconcile runner waiting until the
    // reflector store is ready. A shutdown that arrives before the first list completes stops
    // the watch, so the store never becomes ready and the graceful shutdown never ends. The
    // wait is therefore bounded; the cli_run test shuts down that early on purpose.
    let all = async {
        let controllers = leading.await.unwrap_or_default();
        for (index, result) in futures::future::join_all(controllers)
            .await
            .into_iter()
            .enumerate()
        {
            if let Err(error) = result {
                warn!(%error, controller = index, "A controller task failed");
            }
        }
        let tasks = [
            ("gateway", listeners.gateway),
            ("webhook", listeners.webhook),
            ("operations", operations),
        ];
        for (name, task) in tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => warn!(%error, listener = name, "A listener failed"),
                Err(error) => warn!(%error, listener = name, "A listener task failed"),
            }
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
        warn!(grace = ?SHUTDOWN_GRACE, "The operator did not stop in time");
    }
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
