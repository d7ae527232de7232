//! The registry client: one HTTP connection pool per registry, authentication and retries.
//!
//! The endpoint groups live in their own modules ([`super::blobs`], [`super::manifests`],
//! [`super::jar`]). This module sends their requests.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use reqwest::{
    Method, Response, StatusCode,
    header::{self, HeaderMap, HeaderValue},
};
use serde::Deserialize;
use tracing::{debug, instrument, warn};
use url::Url;

use super::{
    Digest, OciError, RegistryConfig, TlsRoots,
    auth::{self, Access, AuthState, Authorization, BearerChallenge, Credentials, Scheme, Token},
    coordinates::{is_repository, is_tag},
    error::RegistryObject,
    retry::{RetryPolicy, is_retryable_status, is_retryable_transport},
};

/// Maximum number of bytes of an error response kept for the error message.
const MAX_ERROR_BODY: usize = 4 * 1024;

/// A client for one OCI registry (distribution specification v1.1 endpoints).
///
/// Cloning is cheap and clones share the connection pool and the token cache.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    http: reqwest::Client,
    base_url: Url,
    registry: String,
    auth: AuthState,
    retry: RetryPolicy,
    tag_page_size: u32,
}

/// Body of a request the client sends.
pub(super) enum RequestBody {
    Empty,
    /// Content in memory, which can be sent again on a retry.
    Bytes(Bytes),
    /// A stream, which is sent once and never retried.
    Stream(reqwest::Body),
}

/// A request to one registry endpoint.
pub(super) struct RegistryRequest<'a> {
    pub method: Method,
    pub url: Url,
    pub object: &'a RegistryObject,
    pub access: Access,
    pub headers: HeaderMap,
    pub body: RequestBody,
}

impl RegistryClient {
    /// Builds a client. No request is sent until the first operation.
    ///
    /// # Errors
    ///
    /// [`OciError::HttpClient`] when the CA bundle contains no valid PEM certificate or the TLS
    /// configuration is rejected.
    pub fn new(config: RegistryConfig) -> Result<Self, OciError> {
        // reqwest panics when it builds a client without a rustls provider.
        crate::tls::install_crypto_provider();
        let registry = config.registry_name();
        let http_error = |source| OciError::HttpClient {
            registry: registry.clone(),
            source,
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("artifact-operator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            // An https registry must not redirect to plain http, for example for blob storage.
            .https_only(config.url.scheme() == "https")
            // Blobs move faster over HTTP/1.1: pulling 256 MiB from the CNCF distribution
            // registry (Go 1.19 net/http) over loopback TLS took about twice as long with HTTP/2
            // (BENCHMARKS.md, pull).
            .http1_only();
        builder = match &config.tls_roots {
            TlsRoots::Platform => builder,
            TlsRoots::Only(pem) => builder
                .tls_certs_only(reqwest::Certificate::from_pem_bundle(pem).map_err(http_error)?),
            TlsRoots::PlatformAnd(pem) => builder
                .tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem).map_err(http_error)?),
            TlsRoots::AcceptInvalid => builder.tls_danger_accept_invalid_certs(true),
        };
        let http = builder.build().map_err(http_error)?;
        Ok(Self {
            inner: Arc::new(ClientInner {
                http,
                base_url: config.url,
                registry,
                auth: AuthState::new(config.credentials),
                retry: config.retry,
                tag_page_size: config.tag_page_size,
            }),
        })
    }

    /// Checks that the registry serves the distribution API and accepts the credentials, with
    /// `GET /v2/`.
    ///
    /// # Errors
    ///
    /// [`OciError::Unauthorized`] when the registry rejects the credentials,
    /// [`OciError::Transport`] when it cannot be reached, and [`OciError::UnexpectedStatus`] for
    /// any status other than 200.
    #[instrument(skip(self), fields(registry = %self.registry()))]
    pub async fn check_api(&self) -> Result<(), OciError> {
        let object = self.object("", "");
        let response = self
            .send(RegistryRequest {
                method: Method::GET,
                url: self.v2_url(""),
                object: &object,
                access: Access::Pull,
                headers: HeaderMap::new(),
                body: RequestBody::Empty,
            })
            .await?;
        if response.status() != StatusCode::OK {
            return Err(self
                .error_for_response(response, &object, Method::GET, "API endpoint")
                .await);
        }
        Ok(())
    }

    /// `host:port` of the registry.
    pub fn registry(&self) -> &str {
        &self.inner.registry
    }

    pub(super) fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    pub(super) fn tag_page_size(&self) -> u32 {
        self.inner.tag_page_size
    }

    pub(super) fn object(&self, repository: &str, reference: &str) -> RegistryObject {
        RegistryObject {
            registry: self.inner.registry.clone(),
            repository: repository.to_owned(),
            reference: reference.to_owned(),
        }
    }

    /// Builds `{registry}/v2/{path}`. [`Self::send`] rejects a repository or reference that
    /// could change the path before any request goes out.
    pub(super) fn v2_url(&self, path: &str) -> Url {
        self.inner
            .base_url
            .join(&format!("v2/{path}"))
            .expect("a relative path always joins to an http(s) base URL")
    }

    /// Sends a request, responding to authentication challenges and retrying transient failures.
    ///
    /// Returns the response whatever its status, except 401: the caller maps the other statuses
    /// to errors with [`Self::error_for_response`]. A request with a
    /// [`RequestBody::Stream`] is sent exactly once.
    pub(super) async fn send(&self, request: RegistryRequest<'_>) -> Result<Response, OciError> {
        let RegistryRequest {
            method,
            url,
            object,
            access,
            headers,
            body,
        } = request;
        validate_names(object)?;
        // Registry-level endpoints such as `/v2/` have no repository, and their tokens no scope.
        let scope = if object.repository.is_empty() {
            String::new()
        } else {
            auth::scope(&object.repository, access)
        };
        let (replayable, mut stream_body) = match body {
            RequestBody::Empty => (Some(Bytes::new()), None),
            RequestBody::Bytes(bytes) => (Some(bytes), None),
            RequestBody::Stream(stream) => (None, Some(stream)),
        };
        let mut attempt = 1;
        let mut challenged = false;
        // The scope a bearer challenge asked for, which the next token request includes.
        let mut challenge_scope = None;
        loop {
            let authorization = self
                .authorize(&scope, challenge_scope.as_deref(), object)
                .await?;
            let body = match &replayable {
                Some(bytes) => replayable_body(&method, bytes),
                None => Some(
                    stream_body
                        .take()
                        .expect("a streamed request is never sent twice"),
                ),
            };
            let mut builder = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(authorization) = authorization {
                builder = builder.header(header::AUTHORIZATION, authorization);
            }
            if let Some(body) = body {
                builder = builder.body(body);
            }
            let can_retry = replayable.is_some() && attempt < self.inner.retry.max_attempts;

            let response = match builder.send().await {
                Ok(response) => response,
                Err(source) if can_retry && is_retryable_transport(&source) => {
                    let delay = self.inner.retry.backoff(attempt);
                    // The error names the method and object, and leaves out the URL.
                    let error = OciError::transport(object.clone(), method.clone(), source);
                    warn!(attempt, ?delay, %error, "request failed, retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                    continue;
                }
                Err(source) => {
                    return Err(OciError::transport(object.clone(), method, source));
                }
            };

            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                let first_challenge = !challenged;
                challenged = true;
                challenge_scope = self.learn_scheme(&response, &scope, object, &method)?;
                if first_challenge && replayable.is_some() {
                    debug!(%method, %object, "registry requested authentication, sending the request again");
                    continue;
                }
                return Err(self.unauthorized(object, method));
            }
            if is_retryable_status(status) && can_retry {
                let delay = self
                    .inner
                    .retry
                    .delay_for_response(attempt, response.headers());
                warn!(%method, %object, attempt, ?delay, %status, "registry returned a retryable status, retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
                continue;
            }
            return Ok(response);
        }
    }

    /// Maps an unsuccessful response to an error. `kind` names what a 404 did not find.
    pub(super) async fn error_for_response(
        &self,
        response: Response,
        object: &RegistryObject,
        method: Method,
        kind: &'static str,
    ) -> OciError {
        let credentials = self.describe_credentials();
        match response.status() {
            StatusCode::NOT_FOUND => OciError::NotFound {
                object: Box::new(object.clone()),
                kind,
            },
            StatusCode::UNAUTHORIZED => self.unauthorized(object, method),
            StatusCode::FORBIDDEN => OciError::Denied {
                object: Box::new(object.clone()),
                method,
                credentials,
            },
            status => OciError::UnexpectedStatus {
                object: Box::new(object.clone()),
                method,
                status,
                detail: error_detail(response).await,
            },
        }
    }

    fn unauthorized(&self, object: &RegistryObject, method: Method) -> OciError {
        OciError::Unauthorized {
            object: Box::new(object.clone()),
            method,
            credentials: self.describe_credentials(),
        }
    }

    /// Describes the credentials for messages, including whether a bearer token was involved.
    fn describe_credentials(&self) -> String {
        let credentials = self.inner.auth.credentials().describe();
        match self.inner.auth.scheme() {
            Some(Scheme::Bearer(_)) => format!("a bearer token obtained with {credentials}"),
            _ => credentials,
        }
    }

    /// Returns the `Authorization` header for `scope`, fetching a bearer token if needed.
    async fn authorize(
        &self,
        scope: &str,
        challenge_scope: Option<&str>,
        object: &RegistryObject,
    ) -> Result<Option<HeaderValue>, OciError> {
        match self.inner.auth.authorization(scope) {
            Authorization::Ready(header) => Ok(header),
            Authorization::FetchToken(challenge) => {
                let (token, lifetime) = self
                    .fetch_token(&challenge, scope, challenge_scope, object)
                    .await?;
                self.inner.auth.store_token(scope, token, lifetime);
                match self.inner.auth.authorization(scope) {
                    Authorization::Ready(header) => Ok(header),
                    Authorization::FetchToken(_) => Err(OciError::TokenRequest {
                        registry: self.inner.registry.clone(),
                        realm: challenge.realm,
                        credentials: self.inner.auth.credentials().describe(),
                        reason: "the token expired as soon as it was issued".to_owned(),
                        transient: false,
                    }),
                }
            }
        }
    }

    /// Records the scheme of a 401's challenges and returns the scope a bearer challenge asked
    /// for, if any.
    fn learn_scheme(
        &self,
        response: &Response,
        scope: &str,
        object: &RegistryObject,
        method: &Method,
    ) -> Result<Option<String>, OciError> {
        let mut challenges = Vec::new();
        for value in response.headers().get_all(header::WWW_AUTHENTICATE) {
            let text = String::from_utf8_lossy(value.as_bytes());
            let parsed =
                auth::parse_challenges(&text).map_err(|source| OciError::InvalidChallenge {
                    registry: self.inner.registry.clone(),
                    source,
                })?;
            challenges.extend(parsed);
        }
        match Scheme::from_challenges(&challenges) {
            Some(scheme) => {
                let challenge_scope = match &scheme {
                    Scheme::Bearer(challenge) => challenge.scope.clone(),
                    Scheme::Basic => None,
                };
                self.inner.auth.learn(scheme, scope);
                Ok(challenge_scope)
            }
            None => Err(OciError::InvalidResponse {
                object: Box::new(object.clone()),
                method: method.clone(),
                reason: "401 without a Basic or Bearer challenge in WWW-Authenticate".to_owned(),
            }),
        }
    }

    /// Fetches a bearer token for `scope` from the challenge's realm (distribution token
    /// authentication specification).
    async fn fetch_token(
        &self,
        challenge: &BearerChallenge,
        scope: &str,
        challenge_scope: Option<&str>,
        object: &RegistryObject,
    ) -> Result<(Token, Duration), OciError> {
        let credentials = self.inner.auth.credentials();
        let failure = |reason: String, transient: bool| OciError::TokenRequest {
            registry: self.inner.registry.clone(),
            realm: challenge.realm.clone(),
            credentials: credentials.describe(),
            reason,
            transient,
        };
        let mut realm = Url::parse(&challenge.realm)
            .map_err(|error| failure(format!("invalid realm URL: {error}"), false))?;
        // Basic credentials go to a plain-http realm only when the registry itself is plain
        // http, which the configuration then chose explicitly.
        let sends_password = matches!(credentials, Credentials::Basic { .. });
        if sends_password && realm.scheme() != "https" && self.inner.base_url.scheme() == "https" {
            return Err(failure(
                "the realm is not https, so the password is not sent to it".to_owned(),
                false,
            ));
        }
        {
            let mut query = realm.query_pairs_mut();
            if let Some(service) = &challenge.service {
                query.append_pair("service", service);
            }
            if !scope.is_empty() {
                query.append_pair("scope", scope);
            }
            if let Some(challenge_scope) = challenge_scope
                && challenge_scope != scope
            {
                query.append_pair("scope", challenge_scope);
            }
        }

        let mut request = self.inner.http.get(realm);
        if let Credentials::Basic { username, password } = credentials {
            request = request.header(
                header::AUTHORIZATION,
                auth::basic_authorization(username, password),
            );
        }
        debug!(object = %object, scope, "fetching bearer token");
        let response = request
            .send()
            .await
            .map_err(|error| failure(error.to_string(), true))?;
        let status = response.status();
        if !status.is_success() {
            let transient = is_retryable_status(status);
            let detail = error_detail(response).await;
            return Err(failure(format!("status {status}: {detail}"), transient));
        }
        let body: auth::TokenResponse = response
            .json()
            .await
            .map_err(|error| failure(format!("invalid token response: {error}"), false))?;
        body.into_token()
            .ok_or_else(|| failure("the response contains no token".to_owned(), false))
    }
}

/// Rejects a repository or reference that could change the request path, before any request.
fn validate_names(object: &RegistryObject) -> Result<(), OciError> {
    let reference = object.reference.as_str();
    let valid_reference =
        reference.is_empty() || is_tag(reference) || reference.parse::<Digest>().is_ok();
    let registry_level = object.repository.is_empty() && reference.is_empty();
    if registry_level || (is_repository(&object.repository) && valid_reference) {
        Ok(())
    } else {
        Err(OciError::InvalidName {
            object: Box::new(object.clone()),
        })
    }
}

/// Returns the body of one attempt of a request whose content is in memory. GET, HEAD and
/// DELETE without content get no body. POST and PUT get one even when it is empty, so they send
/// `Content-Length: 0`, which some registries require.
fn replayable_body(method: &Method, bytes: &Bytes) -> Option<reqwest::Body> {
    let bodiless = matches!(*method, Method::GET | Method::HEAD | Method::DELETE);
    (!bytes.is_empty() || !bodiless).then(|| reqwest::Body::from(bytes.clone()))
}

/// Reads up to [`MAX_ERROR_BODY`] bytes of an error response and summarizes the OCI error list
/// (`{"errors":[{"code":…,"message":…}]}`), or returns the text as it is.
pub(super) async fn error_detail(response: Response) -> String {
    #[derive(Deserialize)]
    struct ErrorList {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        code: String,
        #[serde(default)]
        message: String,
    }

    let body = match read_limited(response, MAX_ERROR_BODY).await {
        Ok(body) => body,
        Err(error) => return format!("(body unreadable: {error})"),
    };
    if let Ok(list) = serde_json::from_slice::<ErrorList>(&body) {
        return list
            .errors
            .iter()
            .map(|entry| format!("{}: {}", entry.code, entry.message))
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        text
    }
}

/// Reads at most `limit` bytes of a response body, dropping the rest.
pub(super) async fn read_limited(
    mut response: Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == limit {
            break;
        }
    }
    Ok(body)
}
