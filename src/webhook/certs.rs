//! TLS for the admission webhook. By default the operator manages it: a self-managed CA and a
//! serving certificate kept in one Secret the operator owns, shared by every replica. With
//! `--webhook-certificates=external`, [`external`] only reads a Secret that another component
//! such as cert-manager writes; [`CertHandle`] and the TLS server are the same in both modes.
//!
//! The Secret (type `kubernetes.io/tls`, default name [`DEFAULT_SECRET_NAME`]) has the keys
//! `ca.crt` and `ca.key` (the CA that signs new certificates), `tls.crt` and `tls.key` (the
//! serving certificate), and `ca-previous.crt` while a CA rollover is in progress. Each
//! replica reads it at start-up, then on every change reported by a watch and at every check
//! interval. A check creates the Secret when it is missing, re-issues the serving certificate
//! before it expires or when the configured names change, and rolls the CA over before it
//! expires (see [`renewal::plan`] for the two-step rollover). Writes carry the Secret's
//! resourceVersion, so when several replicas renew at once exactly one write wins and the
//! others adopt its certificates. A Secret that cannot be parsed is never overwritten.
//!
//! When [`CertSettings::webhook_configuration`] names a `MutatingWebhookConfiguration`, every
//! check also makes the `caBundle` of its webhooks equal to the bundle of trusted CAs (see
//! [`ca_bundle`]). A watch on the configuration re-patches it when someone replaces it, for
//! example with an empty `caBundle`. Each publication follows a fresh read of the Secret, so a
//! replica that missed a rollover cannot put an outdated bundle back.
//!
//! Required RBAC: `get`, `list`, `watch`, `create` and `update` on Secrets in the operator's
//! namespace; `get`, `list`, `watch` and `patch` on `mutatingwebhookconfigurations`.

pub mod ca_bundle;
pub mod external;
pub mod material;
pub mod renewal;

use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::{StreamExt, stream::BoxStream};
use jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::{admissionregistration::v1::MutatingWebhookConfiguration, core::v1::Secret},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tracing::{info, warn};

use self::{
    material::{ServingPair, StoredCerts, StoredPem, SubjectAltNames},
    renewal::Renewal,
};

/// Name of the Secret with the webhook's CA and serving certificate.
pub const DEFAULT_SECRET_NAME: &str = "artifact-operator-webhook-tls";
/// Name of the Service in front of the webhook, used for the default DNS names.
pub const DEFAULT_SERVICE_NAME: &str = "artifact-operator-webhook";

/// Secret key of the current CA certificate (PEM).
pub const CA_CERT_KEY: &str = "ca.crt";
/// Secret key of the current CA's private key (PKCS#8 PEM).
pub const CA_KEY_KEY: &str = "ca.key";
/// Secret key of the CA being replaced, present only during a rollover (PEM).
pub const PREVIOUS_CA_CERT_KEY: &str = "ca-previous.crt";
/// Secret key of the serving certificate (PEM).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Secret key of the serving certificate's private key (PKCS#8 PEM).
pub const TLS_KEY_KEY: &str = "tls.key";

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Location, names and lifetimes of the webhook certificates.
#[derive(Debug, Clone)]
pub struct CertSettings {
    pub namespace: String,
    pub secret_name: String,
    /// DNS names of the serving certificate.
    pub dns_names: Vec<String>,
    /// IP addresses of the serving certificate, for a webhook registered by URL such as
    /// `https://127.0.0.1:8443/mutate`.
    pub ip_addresses: Vec<IpAddr>,
    /// Lifetime of a new serving certificate.
    pub serving_validity: Duration,
    /// Remaining lifetime at which the serving certificate is re-issued.
    pub serving_renew_before: Duration,
    /// Lifetime of a new CA.
    pub ca_validity: Duration,
    /// Remaining lifetime at which a CA rollover starts.
    pub ca_renew_before: Duration,
    /// Time between adding a new CA to the bundle and re-issuing the serving certificate with
    /// it. It should exceed the time every replica needs to read the Secret and publish the
    /// bundle. A watch event usually brings a change within seconds, and `check_interval`
    /// bounds the delay when the watch fails; [`CertSettings::validate`] does not check this.
    pub bundle_propagation: Duration,
    /// Interval between reads of the Secret when no watch event arrives.
    pub check_interval: Duration,
    /// `MutatingWebhookConfiguration` whose webhooks get the CA bundle, if any.
    pub webhook_configuration: Option<String>,
}

impl CertSettings {
    /// Returns settings for the Service [`DEFAULT_SERVICE_NAME`] in `namespace`: serving
    /// certificates for 90 days renewed 30 days before expiry, a CA for 5 years rolled over
    /// 1 year before expiry, 10 minutes of bundle propagation and a check every minute.
    pub fn new(namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        Self {
            dns_names: vec![
                format!("{DEFAULT_SERVICE_NAME}.{namespace}.svc"),
                format!("{DEFAULT_SERVICE_NAME}.{namespace}.svc.cluster.local"),
            ],
            ip_addresses: Vec::new(),
            namespace,
            secret_name: DEFAULT_SECRET_NAME.to_owned(),
            serving_validity: 90 * DAY,
            serving_renew_before: 30 * DAY,
            ca_validity: 5 * 365 * DAY,
            ca_renew_before: 365 * DAY,
            bundle_propagation: Duration::from_secs(10 * 60),
            check_interval: Duration::from_secs(60),
            webhook_configuration: None,
        }
    }

    /// The names the serving certificate must have.
    pub fn subject_alt_names(&self) -> SubjectAltNames {
        SubjectAltNames::new(
            self.dns_names.iter().cloned(),
            self.ip_addresses.iter().copied(),
        )
    }

    /// Checks that the settings describe a certificate that can be issued and kept valid.
    pub fn validate(&self) -> Result<(), CertError> {
        let invalid = |reason: &str| Err(CertError::Settings(reason.to_owned()));
        if self.dns_names.is_empty() && self.ip_addresses.is_empty() {
            return invalid("the serving certificate needs at least one DNS name or IP address");
        }
        if self.serving_renew_before >= self.serving_validity {
            return invalid("serving_renew_before must be shorter than serving_validity");
        }
        if self.ca_renew_before >= self.ca_validity {
            return invalid("ca_renew_before must be shorter than ca_validity");
        }
        if self.bundle_propagation >= self.ca_renew_before {
            return invalid("bundle_propagation must be shorter than ca_renew_before");
        }
        if self.check_interval.is_zero() {
            return invalid("check_interval must be positive");
        }
        Ok(())
    }
}

/// Failure to read, write or publish the webhook certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("invalid webhook certificate settings: {0}")]
    Settings(String),
    #[error("failed to {action} Secret {namespace}/{name}: {source}")]
    Kube {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The Secret exists but its certificates cannot be used. The operator never overwrites
    /// it, because its CA may be trusted by a webhook configuration; an administrator fixes or
    /// deletes it.
    #[error(
        "Secret {namespace}/{name} has unusable webhook certificates: {reason}. Fix it, or \
         delete the Secret so that a new CA and serving certificate are generated"
    )]
    Invalid {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("failed to generate a webhook certificate for Secret {namespace}/{name}: {source}")]
    Generate {
        namespace: String,
        name: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("failed to {action} MutatingWebhookConfiguration {name}: {source}")]
    Configuration {
        action: &'static str,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
}

// === impl CertHandle ===

/// The certificate in use, shared by the TLS server, the readiness probe and the background
/// check. Clones share the same state.
#[derive(Clone)]
pub struct CertHandle {
    current: Arc<RwLock<Arc<Loaded>>>,
    resolver: Arc<ServingCertResolver>,
    /// Source of the certificate, such as `Secret ops/webhook-tls`, named in readiness
    /// reasons.
    source: Arc<str>,
}

/// Certificate state of a handle: the certificate it serves, or the reason why it has none.
#[derive(PartialEq, Eq)]
enum Loaded {
    Serving {
        pair: ServingPair,
        bundle_pem: String,
    },
    Missing {
        reason: String,
    },
}

impl fmt::Debug for CertHandle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = formatter.debug_struct("CertHandle");
        debug.field("source", &self.source);
        match &*self.loaded() {
            Loaded::Serving { pair, .. } => debug.field("serving_not_after", &pair.leaf.not_after),
            Loaded::Missing { reason } => debug.field("missing", reason),
        };
        debug.finish()
    }
}

impl CertHandle {
    /// Builds a handle that serves `certs`, which [`StoredCerts::from_pem`] or
    /// [`StoredCerts::generate`] produced.
    pub fn new(certs: StoredCerts) -> Self {
        let handle = Self::without_certificate(
            "the webhook serving certificate",
            "no certificate loaded yet".to_owned(),
        );
        handle.set(certs);
        handle
    }

    /// Builds a handle that has no certificate yet: every TLS handshake fails and
    /// [`CertHandle::readiness`] reports `reason`. `source` names where the certificate will
    /// come from.
    pub fn without_certificate(source: &str, reason: String) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(Loaded::Missing { reason }))),
            resolver: Arc::new(ServingCertResolver {
                current: RwLock::new(None),
            }),
            source: source.into(),
        }
    }

    /// Returns the PEM of every CA the webhook's clients must trust: the current CA, plus the
    /// previous one during a rollover. Empty while no certificate is loaded, and for an
    /// external certificate without `ca.crt`.
    pub fn ca_bundle_pem(&self) -> String {
        match &*self.loaded() {
            Loaded::Serving { bundle_pem, .. } => bundle_pem.clone(),
            Loaded::Missing { .. } => String::new(),
        }
    }

    /// Returns the serving certificate that new TLS handshakes get, in DER.
    pub fn serving_cert_der(&self) -> Option<Vec<u8>> {
        match &*self.loaded() {
            Loaded::Serving { pair, .. } => Some(pair.leaf.der().to_vec()),
            Loaded::Missing { .. } => None,
        }
    }

    /// Returns whether a certificate is loaded and within its validity period.
    pub fn is_loaded(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Returns why the webhook cannot serve, naming the certificate's source: no certificate
    /// loaded, or a certificate outside its validity period. A self-managed certificate
    /// expires only when checks fail for longer than `serving_renew_before`.
    pub fn readiness(&self) -> Result<(), String> {
        match &*self.loaded() {
            Loaded::Serving { pair, .. } => match pair.validity_problem(Timestamp::now()) {
                Some(problem) => Err(format!("{}: {problem}", self.source)),
                None => Ok(()),
            },
            Loaded::Missing { reason } => Err(format!("{}: {reason}", self.source)),
        }
    }

    /// Returns the certificate resolver of this handle, which always returns the latest
    /// serving certificate.
    pub fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        self.resolver.clone()
    }

    /// Builds a rustls server configuration that resolves certificates through this handle and
    /// offers HTTP/2 and HTTP/1.1 through ALPN.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(self.resolver());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current
            .read()
            .expect("the certificate lock is never poisoned")
            .clone()
    }

    /// Switches to `certs` when they differ from the current ones; returns whether they did.
    pub(crate) fn set(&self, certs: StoredCerts) -> bool {
        self.serve(certs.serving_pair(), certs.ca_bundle_pem())
    }

    /// Switches to `pair`, whose clients trust `bundle_pem`, when it differs from the current
    /// certificate; returns whether it did.
    pub(crate) fn serve(&self, pair: ServingPair, bundle_pem: String) -> bool {
        let next = Loaded::Serving { pair, bundle_pem };
        if *self.loaded() == next {
            return false;
        }
        let Loaded::Serving { pair, .. } = &next else {
            unreachable!("built as Serving above");
        };
        *self
            .resolver
            .current
            .write()
            .expect("the certificate lock is never poisoned") =
            Some(Arc::new(pair.certified_key()));
        *self
            .current
            .write()
            .expect("the certificate lock is never poisoned") = Arc::new(next);
        true
    }

    /// Records why no certificate can be loaded, while none is served yet. A handle that
    /// serves a certificate keeps it; the caller logs the reason.
    pub(crate) fn set_missing(&self, reason: String) {
        let mut current = self
            .current
            .write()
            .expect("the certificate lock is never poisoned");
        if matches!(**current, Loaded::Missing { .. }) {
            *current = Arc::new(Loaded::Missing { reason });
        }
    }

    /// Returns whether a certificate is loaded, valid or not.
    pub(crate) fn has_certificate(&self) -> bool {
        matches!(*self.loaded(), Loaded::Serving { .. })
    }
}

/// Serves the latest serving certificate to every new TLS handshake, and fails the handshake
/// while there is none. Connections keep the certificate they were opened with.
struct ServingCertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl fmt::Debug for ServingCertResolver {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ServingCertResolver")
    }
}

impl ResolvesServerCert for ServingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .expect("the certificate lock is never poisoned")
            .clone()
    }
}

// === start and check ===

/// Reads the certificates once, creating the Secret when it does not exist, publishes the CA
/// bundle when a webhook configuration is set, and starts the background checks. They stop
/// when `shutdown` completes.
pub async fn start(
    client: Client,
    settings: CertSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<CertHandle, CertError> {
    let certs = check(&client, &settings, Timestamp::now()).await?;
    let handle = CertHandle::new(certs);
    info!(secret = %settings.secret_name, namespace = %settings.namespace, "Loaded the webhook certificates");
    publish_logged(&client, &settings, &handle).await;

    let background = handle.clone();
    tokio::spawn(async move {
        run_checks(client, settings, background, shutdown).await;
    });
    Ok(handle)
}

/// Validates the settings, reads the Secret, applies due renewals, writes it back when it
/// changed, and returns the certificates.
pub async fn check(
    client: &Client,
    settings: &CertSettings,
    now: Timestamp,
) -> Result<StoredCerts, CertError> {
    settings.validate()?;
    let api: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let kube_error = |action: &'static str| {
        move |source| CertError::Kube {
            action,
            namespace: settings.namespace.clone(),
            name: settings.secret_name.clone(),
            source: Box::new(source),
        }
    };

    let Some(mut secret) = api
        .get_opt(&settings.secret_name)
        .await
        .map_err(kube_error("read"))?
    else {
        return create(&api, settings, now).await;
    };
    let stored = read_certs(&secret, settings)?;
    let renewal = renewal::plan(&stored, settings, now);
    if renewal.is_empty() {
        return Ok(stored);
    }

    let renewed =
        renewal::apply(&stored, renewal, settings, now).map_err(|source| CertError::Generate {
            namespace: settings.namespace.clone(),
            name: settings.secret_name.clone(),
            source,
        })?;
    secret.data = Some(secret_data(&renewed));
    secret.string_data = None;
    match api
        .replace(&settings.secret_name, &PostParams::default(), &secret)
        .await
    {
        Ok(_) => {
            log_renewal(settings, renewal, &renewed);
            Ok(renewed)
        }
        // Another replica wrote first; adopt what it wrote.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            info!(secret = %settings.secret_name, "Another replica updated the webhook certificates first");
            let current = api
                .get(&settings.secret_name)
                .await
                .map_err(kube_error("read"))?;
            read_certs(&current, settings)
        }
        Err(error) => Err(kube_error("update")(error)),
    }
}

async fn create(
    api: &Api<Secret>,
    settings: &CertSettings,
    now: Timestamp,
) -> Result<StoredCerts, CertError> {
    let certs = StoredCerts::generate(
        &settings.subject_alt_names(),
        settings.ca_validity,
        settings.serving_validity,
        now,
    )
    .map_err(|source| CertError::Generate {
        namespace: settings.namespace.clone(),
        name: settings.secret_name.clone(),
        source,
    })?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(settings.secret_name.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "artifact-operator".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(secret_data(&certs)),
        ..Secret::default()
    };
    let kube_error = |action: &'static str, source| CertError::Kube {
        action,
        namespace: settings.namespace.clone(),
        name: settings.secret_name.clone(),
        source: Box::new(source),
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            info!(
                secret = %settings.secret_name,
                namespace = %settings.namespace,
                ca_not_after = %certs.ca.not_after,
                serving_not_after = %certs.serving.not_after,
                "Created the webhook CA and serving certificate"
            );
            Ok(certs)
        }
        // Another replica created it first; use its certificates.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = api
                .get(&settings.secret_name)
                .await
                .map_err(|source| kube_error("read", source))?;
            read_certs(&existing, settings)
        }
        Err(source) => Err(kube_error("create", source)),
    }
}

fn log_renewal(settings: &CertSettings, renewal: Renewal, renewed: &StoredCerts) {
    if let Some(reason) = renewal.serving {
        info!(
            secret = %settings.secret_name,
            ?reason,
            not_after = %renewed.serving.not_after,
            "Issued a new webhook serving certificate"
        );
    }
    if renewal.drop_previous_ca {
        info!(secret = %settings.secret_name, "Removed the expired previous CA from the webhook CA bundle");
    }
    if renewal.roll_over_ca {
        info!(
            secret = %settings.secret_name,
            ca_not_after = %renewed.ca.not_after,
            "Started a webhook CA rollover; both CAs are trusted until the serving certificate moves to the new one"
        );
    }
}

// === background checks ===

/// Runs a check and a publication at every interval, on every change of the Secret and on
/// every change of the webhook configuration, until `shutdown` completes.
async fn run_checks(
    client: Client,
    settings: CertSettings,
    handle: CertHandle,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut changes = watch_changes(&client, &settings);
    let mut interval = tokio::time::interval(settings.check_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;

    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = interval.tick() => {}
            change = changes.next() => match change {
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    warn!(%error, secret = %settings.secret_name, "Watching the webhook certificates failed; retrying with backoff");
                    continue;
                }
                // Watch streams retry forever, so this is not expected; fall back to the timer.
                None => {
                    changes = futures::stream::pending().boxed();
                    continue;
                }
            },
        }

        match check(&client, &settings, Timestamp::now()).await {
            Ok(certs) => {
                if handle.set(certs) {
                    info!(secret = %settings.secret_name, "Loaded new webhook certificates");
                }
            }
            Err(error) => {
                warn!(%error, "Webhook certificate check failed; the last certificates stay in use");
                continue;
            }
        }
        publish_logged(&client, &settings, &handle).await;
    }
}

/// Merges the watches of the Secret and of the webhook configuration into one stream with an
/// item per change.
fn watch_changes(
    client: &Client,
    settings: &CertSettings,
) -> BoxStream<'static, Result<(), watcher::Error>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let secret_changes = watcher::watch_object(secrets, &settings.secret_name)
        .default_backoff()
        .map(|change| change.map(drop));
    let Some(name) = &settings.webhook_configuration else {
        return secret_changes.boxed();
    };
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let configuration_changes = watcher::watch_object(configurations, name)
        .default_backoff()
        .map(|change| change.map(drop));
    futures::stream::select(secret_changes, configuration_changes).boxed()
}

async fn publish_logged(client: &Client, settings: &CertSettings, handle: &CertHandle) {
    let Some(name) = &settings.webhook_configuration else {
        return;
    };
    // `publish` logs what it changed; only failures are left to log here.
    if let Err(error) = ca_bundle::publish(client, name, &handle.ca_bundle_pem()).await {
        warn!(%error, "Publishing the webhook CA bundle failed; the next check retries");
    }
}

// === Secret data ===

fn secret_data(certs: &StoredCerts) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::from([
        (
            CA_CERT_KEY.to_owned(),
            ByteString(certs.ca.pem().as_bytes().to_vec()),
        ),
        (
            CA_KEY_KEY.to_owned(),
            ByteString(certs.ca_key.as_str().as_bytes().to_vec()),
        ),
        (
            TLS_CERT_KEY.to_owned(),
            ByteString(certs.serving.pem().as_bytes().to_vec()),
        ),
        (
            TLS_KEY_KEY.to_owned(),
            ByteString(certs.serving_key.as_str().as_bytes().to_vec()),
        ),
    ]);
    if let Some(previous) = &certs.previous_ca {
        data.insert(
            PREVIOUS_CA_CERT_KEY.to_owned(),
            ByteString(previous.pem().as_bytes().to_vec()),
        );
    }
    data
}

fn read_certs(secret: &Secret, settings: &CertSettings) -> Result<StoredCerts, CertError> {
    let invalid = |reason: String| CertError::Invalid {
        namespace: settings.namespace.clone(),
        name: settings.secret_name.clone(),
        reason,
    };
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let text = |key: &str| -> Result<Option<&str>, CertError> {
        data.get(key)
            .map(|bytes| {
                std::str::from_utf8(&bytes.0).map_err(|_| invalid(format!("{key}: not UTF-8 text")))
            })
            .transpose()
    };
    let required = |key: &str| -> Result<&str, CertError> {
        text(key)?.ok_or_else(|| invalid(format!("{key}: the key is missing")))
    };

    let pem = StoredPem {
        ca_cert: required(CA_CERT_KEY)?,
        ca_key: required(CA_KEY_KEY)?,
        previous_ca_cert: text(PREVIOUS_CA_CERT_KEY)?,
        serving_cert: required(TLS_CERT_KEY)?,
        serving_key: required(TLS_KEY_KEY)?,
    };
    StoredCerts::from_pem(pem).map_err(invalid)
}

#[cfg(test)]
mod tests;
