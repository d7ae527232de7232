//! Opens the source of an AppArtifact as one checked stream of bytes, whatever its kind: a URL
//! download, or a key of a ConfigMap or Secret in the AppArtifact's namespace.

use bytes::Bytes;
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
};
use kube::{Api, Client};

use super::{
    checks::ContentChecks,
    objects,
    source::{ContentStream, Credentials, UrlFetcher, UrlRequest},
    status::{Failure, reason, source_failure},
};
use crate::crd::{ArtifactSource, UrlSource};

/// Key of a URL credentials Secret whose value is sent as the whole `Authorization` header.
pub const AUTHORIZATION_KEY: &str = "Authorization";
/// Keys of a URL credentials Secret with basic credentials.
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";

/// A source opened for reading.
pub struct OpenedSource {
    /// The content, checked while it streams.
    pub stream: ContentStream,
    /// The download URL without credentials or query, recorded in the artifact's annotations.
    pub source_url: Option<String>,
}

/// Source of the JAR, once the spec is read.
#[derive(Debug, Clone, Copy)]
pub enum SourceKind<'a> {
    Url(&'a UrlSource),
    ConfigMap { name: &'a str, key: &'a str },
    Secret { name: &'a str, key: &'a str },
    Existing,
    Upload,
}

impl<'a> SourceKind<'a> {
    /// Picks the one source that the spec sets. The API server enforces that exactly one is
    /// set, so an empty source is reported as an upload-less spec error by the caller.
    pub fn of(source: &'a ArtifactSource) -> Option<Self> {
        if let Some(url) = &source.url {
            Some(Self::Url(url))
        } else if let Some(selector) = &source.config_map_key_ref {
            Some(Self::ConfigMap {
                name: &selector.name,
                key: &selector.key,
            })
        } else if let Some(selector) = &source.secret_key_ref {
            Some(Self::Secret {
                name: &selector.name,
                key: &selector.key,
            })
        } else if source.existing.is_some() {
            Some(Self::Existing)
        } else if source.upload.is_some() {
            Some(Self::Upload)
        } else {
            None
        }
    }
}

/// Opens a URL, ConfigMap or Secret source. The checks apply to every kind.
///
/// # Errors
///
/// A [`Failure`] with `fetch` set: transient when the API server or the URL's host may respond
/// later, permanent when the referenced object or key is missing or the download is rejected.
pub async fn open(
    client: &Client,
    namespace: &str,
    kind: SourceKind<'_>,
    fetcher: &UrlFetcher,
    checks: ContentChecks,
) -> Result<OpenedSource, Failure> {
    match kind {
        SourceKind::Url(url) => open_url(client, namespace, url, fetcher, checks).await,
        SourceKind::ConfigMap { name, key } => {
            let config_map = read_object::<ConfigMap>(client, namespace, "ConfigMap", name).await?;
            let bytes = objects::config_map_key(&config_map, key)
                .map_err(|error| source_failure(&error))?;
            Ok(in_memory(
                format!("ConfigMap {namespace}/{name} key {key}"),
                bytes,
                &checks,
            ))
        }
        SourceKind::Secret { name, key } => {
            let secret = read_object::<Secret>(client, namespace, "Secret", name).await?;
            let bytes =
                objects::secret_key(&secret, key).map_err(|error| source_failure(&error))?;
            Ok(in_memory(
                format!("Secret {namespace}/{name} key {key}"),
                bytes,
                &checks,
            ))
        }
        SourceKind::Existing | SourceKind::Upload => {
            unreachable!("existing and upload sources are not read by the operator")
        }
    }
}

async fn open_url(
    client: &Client,
    namespace: &str,
    url: &UrlSource,
    fetcher: &UrlFetcher,
    checks: ContentChecks,
) -> Result<OpenedSource, Failure> {
    let credentials = match &url.secret_ref {
        None => None,
        Some(reference) => {
            let secret =
                read_object::<Secret>(client, namespace, "Secret", &reference.name).await?;
            Some(url_credentials(&secret, namespace, &reference.name)?)
        }
    };
    let request = UrlRequest {
        url: url.url.clone(),
        credentials,
        ca_bundle: url.ca_bundle.clone(),
        checks,
    };
    let fetched = fetcher
        .fetch(&request)
        .await
        .map_err(|error| source_failure(&error))?;
    Ok(OpenedSource {
        stream: fetched.stream,
        source_url: Some(fetched.url),
    })
}

fn in_memory(origin: String, bytes: Bytes, checks: &ContentChecks) -> OpenedSource {
    let stream = futures::stream::iter([Ok(bytes)]);
    OpenedSource {
        stream: Box::pin(checks.wrap(origin, stream)),
        source_url: None,
    }
}

async fn read_object<K>(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<K, Failure>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(object)) => Ok(object),
        Ok(None) => Err(fetch_failure(Failure::permanent(
            reason::INVALID_SOURCE,
            format!("{kind} {namespace}/{name} not found; create it or change spec.source"),
        ))),
        Err(error) => Err(fetch_failure(Failure::transient(
            reason::SOURCE_UNAVAILABLE,
            format!("failed to read {kind} {namespace}/{name}: {error}"),
        ))),
    }
}

fn fetch_failure(failure: Failure) -> Failure {
    failure.of_fetch()
}

/// Reads the credentials of a URL source from its Secret: an `Authorization` key, or
/// `username` and `password`. Messages name the keys, never their values.
pub fn url_credentials(
    secret: &Secret,
    namespace: &str,
    name: &str,
) -> Result<Credentials, Failure> {
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| -> Result<Option<String>, Failure> {
        data.get(key)
            .map(|ByteString(bytes)| {
                String::from_utf8(bytes.clone()).map_err(|_| {
                    fetch_failure(Failure::permanent(
                        reason::INVALID_SOURCE,
                        format!("key {key} of Secret {namespace}/{name} is not valid UTF-8"),
                    ))
                })
            })
            .transpose()
    };
    if let Some(value) = text(AUTHORIZATION_KEY)? {
        return Ok(Credentials::Authorization(value.trim_end().to_owned()));
    }
    match (text(USERNAME_KEY)?, text(PASSWORD_KEY)?) {
        (Some(username), Some(password)) => Ok(Credentials::Basic { username, password }),
        _ => Err(fetch_failure(Failure::permanent(
            reason::INVALID_SOURCE,
            format!(
                "Secret {namespace}/{name} has neither an {AUTHORIZATION_KEY} key nor both \
                 {USERNAME_KEY} and {PASSWORD_KEY}; add one of them"
            ),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn secret(pairs: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), ByteString(value.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn authorization_key_wins_over_basic() {
        let secret = secret(&[
            ("Authorization", b"Bearer abc\n"),
            ("username", b"u"),
            ("password", b"p"),
        ]);
        assert_eq!(
            url_credentials(&secret, "ns", "auth").unwrap(),
            Credentials::Authorization("Bearer abc".to_owned())
        );
    }

    #[test]
    fn basic_credentials_need_both_keys() {
        let both = secret(&[("username", b"u"), ("password", b"p")]);
        assert_eq!(
            url_credentials(&both, "ns", "auth").unwrap(),
            Credentials::Basic {
                username: "u".to_owned(),
                password: "p".to_owned()
            }
        );
        let failure = url_credentials(&secret(&[("username", b"u")]), "ns", "auth").unwrap_err();
        assert_eq!(failure.reason, reason::INVALID_SOURCE);
        assert!(failure.message.contains("ns/auth"), "{}", failure.message);
        assert!(!failure.transient);
    }

    #[test]
    fn non_utf8_value_named_without_content() {
        let failure = url_credentials(&secret(&[("Authorization", &[0xff, 0xfe])]), "ns", "auth")
            .unwrap_err();
        assert!(
            failure.message.contains("Authorization"),
            "{}",
            failure.message
        );
    }
}
