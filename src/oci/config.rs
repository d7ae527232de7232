//! Registry connection settings: URL, credentials, trusted CAs, timeouts and retries.

use std::{path::Path, time::Duration};

use url::Url;

use super::{OciError, auth::Credentials, retry::RetryPolicy};

/// Certificate authorities the client trusts for `https` registries.
#[derive(Clone, Default)]
pub enum TlsRoots {
    /// The platform's trust store.
    #[default]
    Platform,
    /// Only the certificates of this PEM bundle.
    Only(Vec<u8>),
    /// The platform's trust store plus the certificates of this PEM bundle.
    PlatformAnd(Vec<u8>),
    /// Any certificate, without verification. Traffic stays encrypted but anyone on the path can
    /// impersonate the registry, so this is only for registries whose certificate cannot be
    /// trusted otherwise.
    AcceptInvalid,
}

impl std::fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, pem) = match self {
            TlsRoots::Platform => return f.write_str("Platform"),
            TlsRoots::AcceptInvalid => return f.write_str("AcceptInvalid"),
            TlsRoots::Only(pem) => ("Only", pem),
            TlsRoots::PlatformAnd(pem) => ("PlatformAnd", pem),
        };
        write!(f, "{name}(<{} bytes of PEM>)", pem.len())
    }
}

impl TlsRoots {
    /// Reads a PEM bundle whose certificates become the only trusted CAs.
    ///
    /// # Errors
    ///
    /// [`OciError::ReadCaBundle`] naming the file.
    pub fn only_from_pem_file(path: &Path) -> Result<Self, OciError> {
        std::fs::read(path)
            .map(TlsRoots::Only)
            .map_err(|source| OciError::ReadCaBundle {
                path: path.display().to_string(),
                source,
            })
    }
}

/// How to reach and authenticate to one registry.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `https://host[:port]` or, for a registry without TLS, an explicit `http://host[:port]`.
    pub url: Url,
    pub credentials: Credentials,
    pub tls_roots: TlsRoots,
    pub retry: RetryPolicy,
    /// Maximum time to establish a connection.
    pub connect_timeout: Duration,
    /// Maximum time between two reads of a response, so a stalled transfer fails while a long
    /// but moving one does not.
    pub read_timeout: Duration,
    /// Number of tags to request per page of the tag list.
    pub tag_page_size: u32,
}

impl RegistryConfig {
    /// Parses the registry URL and applies defaults: anonymous access, the platform's CAs,
    /// [`RetryPolicy::default`], 10 s to connect, 60 s between reads and 1000 tags per page.
    ///
    /// # Errors
    ///
    /// [`OciError::InvalidRegistryUrl`] unless `url` is an `http` or `https` URL with a host and
    /// without user info, path, query or fragment. Credentials go in
    /// [`RegistryConfig::credentials`], never in the URL, so they do not appear in messages.
    pub fn new(url: &str) -> Result<Self, OciError> {
        Ok(Self {
            url: parse_registry_url(url)?,
            credentials: Credentials::Anonymous,
            tls_roots: TlsRoots::Platform,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            tag_page_size: 1000,
        })
    }

    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    pub fn with_tls_roots(mut self, tls_roots: TlsRoots) -> Self {
        self.tls_roots = tls_roots;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// `host:port` (or `host` for the scheme's default port), the registry's name in messages
    /// and spans.
    pub fn registry_name(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }
}

fn parse_registry_url(raw: &str) -> Result<Url, OciError> {
    let invalid = |reason: &str| OciError::InvalidRegistryUrl {
        // The user info is removed from the echoed value in case it contains a password.
        url: redact_user_info(raw),
        reason: reason.to_owned(),
    };
    let url = Url::parse(raw).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            "the scheme must be https, or http for a registry without TLS",
        ));
    }
    if url.host_str().is_none() {
        return Err(invalid("a host is required"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials must be configured separately, not in the URL",
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "only scheme, host and port are allowed, because the registry API is at /v2/",
        ));
    }
    Ok(url)
}

fn redact_user_info(raw: &str) -> String {
    match raw.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://<redacted>@{host}"),
            None => raw.to_owned(),
        },
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_url_validation_table() {
        let cases = [
            ("https://registry.example.com", true),
            ("https://127.0.0.1:5000/", true),
            ("http://127.0.0.1:5000", true),
            ("ftp://127.0.0.1", false),
            ("127.0.0.1:5000", false),
            ("https://user:pw@registry.example.com", false),
            ("https://registry.example.com/v2/", false),
            ("https://registry.example.com?x=1", false),
        ];
        for (url, valid) in cases {
            assert_eq!(RegistryConfig::new(url).is_ok(), valid, "{url}");
        }
    }

    #[test]
    fn registry_url_error_hides_password() {
        let error = RegistryConfig::new("https://user:hunter2@registry.example.com").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn registry_name_includes_port() {
        let config = RegistryConfig::new("http://127.0.0.1:5000").unwrap();
        assert_eq!(config.registry_name(), "127.0.0.1:5000");
        let config = RegistryConfig::new("https://registry.example.com").unwrap();
        assert_eq!(config.registry_name(), "registry.example.com");
    }
}
