//! The crate's error type.

/// Every failure the operator reports, named by the object or value involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "failed to load Kubernetes client configuration from KUBECONFIG, ~/.kube/config or the \
         in-cluster service account: {0}"
    )]
    ClientConfig(#[source] kube::config::InferConfigError),

    #[error("failed to create the Kubernetes client for {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: kube::Error,
    },

    #[error("failed to read the version of the Kubernetes API server at {url}: {source}")]
    ServerVersion {
        url: String,
        #[source]
        source: kube::Error,
    },

    #[error(
        "CustomResourceDefinition {crd} is not installed; install the CRDs with \
         `artifact-operator crds | kubectl apply -f -` (or the Helm chart) and start again"
    )]
    CrdMissing { crd: String },

    #[error("failed to check that CustomResourceDefinition {crd} is installed: {source}")]
    CrdCheck {
        crd: String,
        #[source]
        source: kube::Error,
    },

    #[error(
        "lost the leader Lease {lease} to another replica or to the API server being \
         unreachable; stopping so that the restart campaigns again"
    )]
    LeadershipLost { lease: String },

    #[error("failed to load the URL signing keys: {0}")]
    SigningKeys(#[from] crate::gateway::keys::KeyError),

    #[error("failed to listen on {address} for the {listener}: {source}; choose another {flag}")]
    Listen {
        /// `gateway` or `webhook`.
        listener: &'static str,
        flag: &'static str,
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to load the webhook certificates: {0}")]
    WebhookCerts(#[from] crate::webhook::certs::CertError),

    #[error(
        "--webhook-url registers the webhook with the operator's own CA bundle, which \
         --webhook-certificates=external does not have; register the webhook with the \
         certificate issuer's CA bundle instead"
    )]
    WebhookUrlNeedsSelfManagedCertificates,

    #[error(
        "failed to register the webhook in MutatingWebhookConfiguration {name}: {source}; check \
         that the operator may patch mutatingwebhookconfigurations"
    )]
    WebhookRegistration {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Short, stable label for the kind of failure, used as a metric label value.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ClientConfig(_) => "client_config",
            Error::Client { .. } => "client",
            Error::ServerVersion { .. } => "server_version",
            Error::CrdMissing { .. } => "crd_missing",
            Error::CrdCheck { .. } => "crd_check",
            Error::LeadershipLost { .. } => "leadership_lost",
            Error::SigningKeys(_) => "signing_keys",
            Error::Listen { .. } => "listen",
            Error::WebhookCerts(_) => "webhook_certs",
            Error::WebhookUrlNeedsSelfManagedCertificates => "usage",
            Error::WebhookRegistration { .. } => "webhook_registration",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
