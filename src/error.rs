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

    #[error("failed to load the URL signing keys: {0}")]
    SigningKeys(#[from] crate::gateway::keys::KeyError),

    #[error(
        "failed to listen on {address} for the gateway: {source}; choose another --gateway-listen"
    )]
    GatewayListen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Short, stable label for the kind of failure, used as a metric label value.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ClientConfig(_) => "client_config",
            Error::Client { .. } => "client",
            Error::ServerVersion { .. } => "server_version",
            Error::SigningKeys(_) => "signing_keys",
            Error::GatewayListen { .. } => "gateway_listen",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
