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

/// Discovers the cluster's own address ranges, which URL sources must not reach: the Service
/// ranges from the `networking.k8s.io/v1` ServiceCIDR objects (GA since Kubernetes 1.33) and
/// the pod ranges from `spec.podCIDRs` of the nodes.
///
/// A range that cannot be listed (for example without RBAC permission) is logged and skipped;
/// the administrator then lists it with `--source-deny-cidr`.
pub async fn discover_address_ranges(client: &Client) -> Vec<ipnet::IpNet> {
    use k8s_openapi::api::{core::v1::Node, networking::v1::ServiceCIDR};
    use kube::{Api, api::ListParams};

    let mut texts: Vec<String> = Vec::new();
    match Api::<ServiceCIDR>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => texts.extend(
            list.items
                .into_iter()
                .flat_map(|cidr| cidr.spec.and_then(|spec| spec.cidrs).unwrap_or_default()),
        ),
        Err(error) => {
            warn!(%error, "Failed to list ServiceCIDRs; pass the Service range with --source-deny-cidr")
        }
    }
    match Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => texts.extend(list.items.into_iter().flat_map(|node| {
            node.spec
                .and_then(|spec| spec.pod_cidrs)
                .unwrap_or_default()
        })),
        Err(error) => {
            warn!(%error, "Failed to list Nodes; pass the pod ranges with --source-deny-cidr")
        }
    }
    let mut ranges: Vec<ipnet::IpNet> = texts
        .iter()
        .filter_map(|text| match text.parse() {
            Ok(range) => Some(range),
            Err(_) => {
                warn!(range = %text, "Ignoring an address range that does not parse");
                None
            }
        })
        .collect();
    ranges.sort();
    ranges.dedup();
    info!(ranges = ?ranges, "Discovered the cluster's address ranges");
    ranges
}

/// Starts a reflector over `events` and waits until its first list is complete, so that no
/// reader sees an empty cache. `kind` names the objects in log lines.
pub async fn start_cache<K, S>(
    kind: &'static str,
    events: S,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    S: futures::Stream<
            Item = Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>,
        > + Send
        + 'static,
{
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, reflector};

    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, events)
        .default_backoff()
        .touched_objects()
        .take_until(shutdown)
        .for_each(move |event| async move {
            if let Err(error) = event {
                warn!(%error, kind, "Watch failed; retrying");
            }
        });
    tokio::spawn(stream);
    if reader.wait_until_ready().await.is_err() {
        warn!(kind, "The cache stopped before it was ready");
    }
    reader
}

/// Checks that the API server serves both custom resources, so that a missing CRD stops the
/// operator with the command that installs it instead of a stream of watch errors.
///
/// # Errors
///
/// [`Error::CrdMissing`] naming the CRD, or [`Error::CrdCheck`] when the API server fails.
pub async fn check_crds(client: &Client, namespace: Option<&str>) -> Result<()> {
    check_crd::<crate::crd::ArtifactRegistry>(client, namespace).await?;
    check_crd::<crate::crd::AppArtifact>(client, namespace).await
}

/// Checks that the API server serves the custom resource `K`.
///
/// # Errors
///
/// As [`check_crds`].
pub async fn check_crd<K>(client: &Client, namespace: Option<&str>) -> Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: kube::Api<K> = match namespace {
        Some(namespace) => kube::Api::namespaced(client.clone(), namespace),
        None => kube::Api::all(client.clone()),
    };
    let crd = format!("{}.{}", K::plural(&()), K::group(&()));
    match api
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(Error::CrdMissing { crd }),
        Err(source) => Err(Error::CrdCheck { crd, source }),
    }
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
