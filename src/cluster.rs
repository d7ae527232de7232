//! Connection to the Kubernetes API server and the check of its version.

use k8s_openapi::apimachinery::pkg::version::Info;
use kube::{Client, Config};
use tracing::{info, warn};

use crate::{Error, Result};

/// Oldest Kubernetes minor version the operator supports (matches the k8s-openapi feature).
pub const MIN_MINOR: u32 = 33;
/// Newest Kubernetes minor version the operator is tested against.
pub const MAX_MINOR: u32 = 37;

/// Position of a server version relative to the supported range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSupport {
    Supported,
    TooOld,
    Untested,
    Unparsable,
}

/// Classifies an API server's reported major and minor version.
///
/// Providers append suffixes to the minor version (for example `"33+"` on EKS), so only the
/// leading digits count.
pub fn classify_version(major: &str, minor: &str) -> VersionSupport {
    let digits: String = minor.chars().take_while(char::is_ascii_digit).collect();
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), digits.parse::<u32>()) else {
        return VersionSupport::Unparsable;
    };
    match (major, minor) {
        (1, m) if m < MIN_MINOR => VersionSupport::TooOld,
        (1, m) if m <= MAX_MINOR => VersionSupport::Supported,
        _ => VersionSupport::Untested,
    }
}

/// A client together with the API server URL it talks to, kept for error messages.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub url: String,
}

/// Builds a client from `KUBECONFIG`, `~/.kube/config` or the in-cluster service account, in
/// that order.
pub async fn connect() -> Result<Cluster> {
    let config = Config::infer().await.map_err(Error::ClientConfig)?;
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|source| Error::Client {
        url: url.clone(),
        source,
    })?;
    Ok(Cluster { client, url })
}

/// Reads the API server's version and logs it, warning when it is outside the supported range.
pub async fn log_server_version(cluster: &Cluster) -> Result<Info> {
    let info = cluster
        .client
        .apiserver_version()
        .await
        .map_err(|source| Error::ServerVersion {
            url: cluster.url.clone(),
            source,
        })?;

    let support = classify_version(&info.major, &info.minor);
    match support {
        VersionSupport::Supported => {
            info!(version = %info.git_version, platform = %info.platform, "Connected to API server");
        }
        _ => warn!(
            version = %info.git_version,
            supported = %format!("1.{MIN_MINOR} to 1.{MAX_MINOR}"),
            ?support,
            "Connected to API server outside the supported version range",
        ),
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_supported_range() {
        assert_eq!(classify_version("1", "33"), VersionSupport::Supported);
        assert_eq!(classify_version("1", "37"), VersionSupport::Supported);
    }

    #[test]
    fn classify_provider_suffix() {
        assert_eq!(classify_version("1", "35+"), VersionSupport::Supported);
    }

    #[test]
    fn classify_outside_range() {
        assert_eq!(classify_version("1", "32"), VersionSupport::TooOld);
        assert_eq!(classify_version("1", "38"), VersionSupport::Untested);
        assert_eq!(classify_version("2", "0"), VersionSupport::Untested);
    }

    #[test]
    fn classify_garbage() {
        assert_eq!(classify_version("", "x"), VersionSupport::Unparsable);
    }
}
