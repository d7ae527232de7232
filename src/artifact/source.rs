//! Download of a JAR from an HTTP or HTTPS URL, guarded against server-side request forgery.
//!
//! Each request, the first one and every redirect, goes through the same steps:
//!
//! 1. The URL must be http or https and have a host. User information in the spec's URL is
//!    rejected, and dropped from a redirect's `Location`.
//! 2. The host is resolved once with [`tokio::net::lookup_host`], and every address it resolves
//!    to must pass the [`AddressPolicy`]. One denied address rejects the request before any
//!    connection.
//! 3. The request goes out on a client built for this one request, whose
//!    [`reqwest::ClientBuilder::resolve_to_addrs`] override pins the host to the vetted
//!    addresses. The client never asks DNS again, so a second, different DNS answer (DNS
//!    rebinding) cannot reach an address that was not checked. Proxies are disabled for the
//!    same reason, because a proxy resolves the host on its own.
//!
//! Redirects are followed by hand, at most [`FetchOptions::max_redirects`] of them.
//! Credentials go only to the origin (scheme, host and port) of the URL in the spec, so a
//! redirect to another host does not receive them.

use std::{fmt, net::SocketAddr, pin::Pin, time::Duration};

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use reqwest::{
    Certificate, Client, Response, StatusCode,
    header::{AUTHORIZATION, HeaderValue, LOCATION},
    redirect,
};
use url::{Host, Url};

use super::{
    address_policy::AddressPolicy,
    checks::ContentChecks,
    error::{SourceError, redact_url},
};

/// Default number of redirects followed before a fetch fails.
pub const DEFAULT_MAX_REDIRECTS: usize = 5;

/// The bytes of a JAR as they arrive. The stream yields an error as its last item, instead of
/// ending normally, when the transfer or a content check fails.
pub type ContentStream = Pin<Box<dyn Stream<Item = Result<Bytes, SourceError>> + Send>>;

/// Timeouts and redirect limit of URL fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Maximum time to open a TCP connection, including the TLS handshake.
    pub connect_timeout: Duration,
    /// Maximum time to wait for the response headers and for each read of the body. There is
    /// no limit on the whole transfer, so a large JAR on a slow but steady link still arrives.
    pub read_timeout: Duration,
    /// Maximum number of redirects followed.
    pub max_redirects: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            max_redirects: DEFAULT_MAX_REDIRECTS,
        }
    }
}

/// Credentials for a URL, read by the caller from the Secret named in `secretRef`.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Sent as the whole value of the `Authorization` header, for example `Bearer abc`.
    Authorization(String),
    /// Sent as HTTP basic credentials.
    Basic { username: String, password: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Authorization(_) => f.write_str("Authorization(<redacted>)"),
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

impl Credentials {
    /// Builds the `Authorization` header value, marked sensitive so that it never appears in
    /// reqwest's or hyper's debug output.
    pub fn header_value(&self) -> Result<HeaderValue, SourceError> {
        let text = match self {
            Self::Authorization(value) => value.clone(),
            Self::Basic { username, password } => basic_authorization(username, password),
        };
        let mut value =
            HeaderValue::from_str(&text).map_err(|_| SourceError::InvalidCredentials {
                reason: "the Authorization value contains characters not allowed in an HTTP header",
            })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

fn basic_authorization(username: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

/// One download request: the `spec.source.url` of an AppArtifact with its secrets resolved.
#[derive(Debug, Clone)]
pub struct UrlRequest {
    /// The http or https URL of the JAR.
    pub url: String,
    /// Credentials sent to the origin of `url`.
    pub credentials: Option<Credentials>,
    /// PEM certificates that replace the system roots for every request of this download.
    pub ca_bundle: Option<String>,
    /// Checks applied to the content while it streams.
    pub checks: ContentChecks,
}

/// A response whose status and headers passed, with its body still to be read.
pub struct FetchedContent {
    /// The URL that returned the content, after redirects, without credentials or query.
    pub url: String,
    /// The length the server declared, already checked against the size limit.
    pub content_length: Option<u64>,
    /// The body, checked against [`UrlRequest::checks`] while it is read.
    pub stream: ContentStream,
}

impl fmt::Debug for FetchedContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchedContent")
            .field("url", &self.url)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

/// Downloads JARs from URLs under one [`AddressPolicy`].
#[derive(Debug, Clone)]
pub struct UrlFetcher {
    policy: AddressPolicy,
    options: FetchOptions,
}

/// Settings shared by every request of one download.
struct Download {
    tls_roots: Option<Vec<Certificate>>,
    authorization: Option<HeaderValue>,
    credential_origin: url::Origin,
}

impl UrlFetcher {
    /// Creates a fetcher. It installs the process's rustls crypto provider if none is set.
    pub fn new(policy: AddressPolicy, options: FetchOptions) -> Self {
        crate::tls::install_crypto_provider();
        Self { policy, options }
    }

    /// Sends the request, follows redirects and returns the body as a checked stream.
    ///
    /// Returns an error before reading the body when the URL, an address, a redirect, the
    /// status or the declared length fails a check. Errors found while reading arrive as the
    /// last item of [`FetchedContent::stream`].
    #[tracing::instrument(skip_all, fields(url = tracing::field::Empty))]
    pub async fn fetch(&self, request: &UrlRequest) -> Result<FetchedContent, SourceError> {
        let mut url = parse_source_url(&request.url)?;
        tracing::Span::current().record("url", redact_url(&url));
        let download = Download {
            tls_roots: parse_ca_bundle(request.ca_bundle.as_deref())?,
            authorization: request
                .credentials
                .as_ref()
                .map(Credentials::header_value)
                .transpose()?,
            credential_origin: url.origin(),
        };

        for redirects in 0..=self.options.max_redirects {
            let response = self.send(&url, &download).await?;
            match redirect_target(&url, response.status(), response.headers().get(LOCATION))? {
                Some(next) => {
                    tracing::debug!(
                        from = %redact_url(&url),
                        to = %redact_url(&next),
                        redirects = redirects + 1,
                        "following redirect"
                    );
                    url = next;
                }
                None => return into_content(&url, response, &request.checks),
            }
        }
        Err(SourceError::TooManyRedirects {
            url: redact_url(&url),
            max: self.options.max_redirects,
        })
    }

    async fn send(&self, url: &Url, download: &Download) -> Result<Response, SourceError> {
        let addresses = self.vetted_addresses(url).await?;
        let client = self.client_for(url, &addresses, download.tls_roots.as_deref())?;

        let mut request = client.get(url.clone());
        if let Some(authorization) = &download.authorization
            && url.origin() == download.credential_origin
        {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        request
            .send()
            .await
            .map_err(|error| transport_error(url, error))
    }

    /// Resolves the URL's host and checks every address against the policy.
    async fn vetted_addresses(&self, url: &Url) -> Result<Vec<SocketAddr>, SourceError> {
        let redacted = redact_url(url);
        let host = url.host().ok_or_else(|| SourceError::InvalidUrl {
            reason: format!("{redacted} has no host"),
        })?;
        // http and https always have a default port, so the 0 is never used.
        let port = url.port_or_known_default().unwrap_or(0);

        let addresses: Vec<SocketAddr> = match host {
            Host::Ipv4(ip) => vec![SocketAddr::new(ip.into(), port)],
            Host::Ipv6(ip) => vec![SocketAddr::new(ip.into(), port)],
            Host::Domain(name) => self.resolve(name, port, &redacted).await?,
        };
        let host = host.to_string();
        if addresses.is_empty() {
            return Err(SourceError::NoAddress {
                url: redacted,
                host,
            });
        }

        self.policy
            .check_all(&host, addresses.iter().map(SocketAddr::ip))
            .map_err(|denial| {
                tracing::warn!(url = %redacted, %host, %denial, "rejected source address");
                SourceError::DeniedAddress {
                    url: redacted.clone(),
                    host: host.clone(),
                    denial,
                }
            })?;
        Ok(addresses)
    }

    /// Resolves a host name with the system resolver, bounded by the connect timeout.
    async fn resolve(
        &self,
        name: &str,
        port: u16,
        redacted: &str,
    ) -> Result<Vec<SocketAddr>, SourceError> {
        let lookup = tokio::net::lookup_host((name, port));
        let resolved = tokio::time::timeout(self.options.connect_timeout, lookup)
            .await
            .map_err(|_| SourceError::Timeout {
                url: redacted.to_owned(),
            })?;
        let addresses = resolved.map_err(|source| SourceError::Resolve {
            url: redacted.to_owned(),
            host: name.to_owned(),
            source,
        })?;
        Ok(addresses.collect())
    }

    /// Builds a client for one request, pinned to the vetted addresses.
    fn client_for(
        &self,
        url: &Url,
        addresses: &[SocketAddr],
        tls_roots: Option<&[Certificate]>,
    ) -> Result<Client, SourceError> {
        let mut builder = Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.options.connect_timeout)
            .read_timeout(self.options.read_timeout);
        if let Some(Host::Domain(name)) = url.host() {
            builder = builder.resolve_to_addrs(name, addresses);
        }
        if let Some(roots) = tls_roots {
            builder = builder.tls_certs_only(roots.iter().cloned());
        }
        builder.build().map_err(|source| SourceError::Client {
            url: redact_url(url),
            source: source.without_url(),
        })
    }
}

/// Parses the URL from the spec and checks its scheme and host. The URL text never appears in
/// the error, because it may contain credentials.
///
/// A URL with user information is rejected, because anyone who can read the AppArtifact could
/// read the password. Credentials belong in the Secret named by `secretRef`.
pub fn parse_source_url(text: &str) -> Result<Url, SourceError> {
    let url = Url::parse(text).map_err(|error| SourceError::InvalidUrl {
        reason: error.to_string(),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SourceError::InvalidUrl {
            reason: format!(
                "{} contains user information. Move the credentials to the Secret named by \
                 secretRef",
                redact_url(&url)
            ),
        });
    }
    check_scheme_and_host(url)
}

fn check_scheme_and_host(url: Url) -> Result<Url, SourceError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SourceError::UnsupportedScheme {
            url: redact_url(&url),
            scheme: url.scheme().to_owned(),
        });
    }
    if url.host().is_none() {
        return Err(SourceError::InvalidUrl {
            reason: format!("{} has no host", redact_url(&url)),
        });
    }
    Ok(url)
}

/// Returns the target of a redirect response (301, 302, 303, 307 or 308), or `None` for any
/// other status. A redirect without a valid `Location`, or to a scheme other than http and
/// https, is an error.
pub fn redirect_target(
    current: &Url,
    status: StatusCode,
    location: Option<&HeaderValue>,
) -> Result<Option<Url>, SourceError> {
    let is_redirect = matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    if !is_redirect {
        return Ok(None);
    }

    let invalid = || SourceError::InvalidRedirect {
        url: redact_url(current),
        status,
    };
    let location = location
        .ok_or_else(invalid)?
        .to_str()
        .map_err(|_| invalid())?;
    let mut target = current.join(location).map_err(|_| invalid())?;
    // reqwest would send user information in a Location as basic credentials to a host that
    // the redirecting server chose, so it is dropped. The setters fail only for URLs without a
    // host, which `check_scheme_and_host` rejects next.
    let _ = target.set_username("");
    let _ = target.set_password(None);
    check_scheme_and_host(target).map(Some)
}

/// Turns the final response into checked content, or into an error for any status but 200.
fn into_content(
    url: &Url,
    response: Response,
    checks: &ContentChecks,
) -> Result<FetchedContent, SourceError> {
    let redacted = redact_url(url);
    if response.status() != StatusCode::OK {
        return Err(SourceError::Status {
            url: redacted,
            status: response.status(),
        });
    }

    let content_length = response.content_length();
    checks
        .check_declared_size(content_length)
        .map_err(|error| SourceError::content(&redacted, error))?;

    let body_url = redacted.clone();
    let body = response
        .bytes_stream()
        .map_err(move |error| body_error(&body_url, error));
    Ok(FetchedContent {
        stream: Box::pin(checks.wrap(redacted.clone(), Box::pin(body))),
        url: redacted,
        content_length,
    })
}

fn transport_error(url: &Url, error: reqwest::Error) -> SourceError {
    let url = redact_url(url);
    if error.is_timeout() {
        SourceError::Timeout { url }
    } else {
        SourceError::Request {
            url,
            source: error.without_url(),
        }
    }
}

fn body_error(url: &str, error: reqwest::Error) -> SourceError {
    let url = url.to_owned();
    if error.is_timeout() {
        SourceError::Timeout { url }
    } else {
        SourceError::Body {
            url,
            source: error.without_url(),
        }
    }
}

/// Parses the optional PEM bundle. An empty bundle is an error, because it would make every
/// HTTPS server untrusted.
fn parse_ca_bundle(pem: Option<&str>) -> Result<Option<Vec<Certificate>>, SourceError> {
    let Some(pem) = pem else {
        return Ok(None);
    };
    let certificates = Certificate::from_pem_bundle(pem.as_bytes()).map_err(|error| {
        SourceError::InvalidCaBundle {
            reason: error.without_url().to_string(),
        }
    })?;
    if certificates.is_empty() {
        return Err(SourceError::InvalidCaBundle {
            reason: "it contains no certificate".to_owned(),
        });
    }
    Ok(Some(certificates))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn source_url_requires_http_scheme() {
        let error = parse_source_url("ftp://repo.example.com/app.jar?token=abc").unwrap_err();
        assert!(
            matches!(&error, SourceError::UnsupportedScheme { url, scheme }
                if scheme == "ftp" && url == "ftp://repo.example.com/app.jar"),
            "{error:?}"
        );
        assert!(!error.is_transient());
    }

    #[test]
    fn source_url_error_hides_text() {
        let error = parse_source_url("https://user:secret@[::1").unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn redirect_target_resolves_relative_location() {
        let location = HeaderValue::from_static("/v2/app.jar");
        let target = redirect_target(
            &url("https://repo.example.com/v1/app.jar"),
            StatusCode::FOUND,
            Some(&location),
        )
        .unwrap();
        assert_eq!(target, Some(url("https://repo.example.com/v2/app.jar")));
    }

    #[test]
    fn source_url_with_userinfo_rejected() {
        let error = parse_source_url("https://user:secret@repo.example.com/app.jar").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("secretRef"), "{message}");
        assert!(!message.contains("secret@"), "{message}");
        assert_eq!(error.metric_label(), "invalid_url");
    }

    #[test]
    fn redirect_target_drops_userinfo() {
        let location = HeaderValue::from_static("https://user:pw@mirror.example.com/app.jar");
        let target = redirect_target(
            &url("https://repo.example.com/app.jar"),
            StatusCode::MOVED_PERMANENTLY,
            Some(&location),
        )
        .unwrap();
        assert_eq!(target, Some(url("https://mirror.example.com/app.jar")));
    }

    #[test]
    fn redirect_target_ignores_other_statuses() {
        let location = HeaderValue::from_static("/elsewhere");
        for status in [
            StatusCode::OK,
            StatusCode::NOT_MODIFIED,
            StatusCode::NOT_FOUND,
        ] {
            let target =
                redirect_target(&url("https://repo.example.com/"), status, Some(&location));
            assert_eq!(target.unwrap(), None, "{status}");
        }
    }

    #[test]
    fn redirect_target_rejects_file_scheme() {
        let location = HeaderValue::from_static("file:///etc/passwd");
        let error = redirect_target(
            &url("https://repo.example.com/"),
            StatusCode::FOUND,
            Some(&location),
        )
        .unwrap_err();
        assert_eq!(error.metric_label(), "unsupported_scheme");
    }

    #[test]
    fn redirect_without_location_rejected() {
        let error = redirect_target(&url("https://repo.example.com/"), StatusCode::FOUND, None)
            .unwrap_err();
        assert_eq!(error.metric_label(), "invalid_redirect");
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let basic = Credentials::Basic {
            username: "reader".to_owned(),
            password: "hunter2".to_owned(),
        };
        let bearer = Credentials::Authorization("Bearer token-123".to_owned());
        assert!(!format!("{basic:?}").contains("hunter2"));
        assert!(!format!("{bearer:?}").contains("token-123"));
    }

    #[test]
    fn basic_credentials_encoded() {
        let basic = Credentials::Basic {
            username: "Aladdin".to_owned(),
            password: "open sesame".to_owned(),
        };
        let value = basic.header_value().unwrap();
        assert_eq!(value, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(value.is_sensitive());
    }

    #[test]
    fn header_value_rejects_newline() {
        let error = Credentials::Authorization("Bearer a\nb".to_owned())
            .header_value()
            .unwrap_err();
        assert!(!error.to_string().contains("Bearer"), "{error}");
    }

    #[test]
    fn empty_ca_bundle_rejected() {
        let error = parse_ca_bundle(Some("not a certificate")).unwrap_err();
        assert_eq!(error.metric_label(), "invalid_ca_bundle");
    }
}
