//! Errors of the OCI registry client.

use std::fmt;

use reqwest::StatusCode;

use super::{
    auth::InvalidChallenge,
    digest::{Digest, InvalidDigest},
    manifest::NotAJarArtifact,
};

/// The registry, repository and reference (tag or digest) an operation acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryObject {
    /// `host:port` of the registry.
    pub registry: String,
    /// Empty for registry-level endpoints such as `/v2/`.
    pub repository: String,
    /// A tag, a digest, or empty for operations on the whole repository.
    pub reference: String,
}

impl fmt::Display for RegistryObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.repository.is_empty() {
            return f.write_str(&self.registry);
        }
        write!(f, "{}/{}", self.registry, self.repository)?;
        match self.reference.as_str() {
            "" => Ok(()),
            reference if reference.contains(':') => write!(f, "@{reference}"),
            tag => write!(f, ":{tag}"),
        }
    }
}

/// A failed registry operation, naming the registry, repository and reference involved.
///
/// The [`RegistryObject`] is boxed so the error stays small in `Result`s.
///
/// Messages never contain passwords or tokens. Authentication failures name the kind of
/// credentials tried and the user.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("invalid registry URL {url:?}: {reason}")]
    InvalidRegistryUrl { url: String, reason: String },

    #[error("failed to read the CA bundle {path}: {source}")]
    ReadCaBundle {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to build the HTTP client for registry {registry}: {source}")]
    HttpClient {
        registry: String,
        #[source]
        source: reqwest::Error,
    },

    #[error(
        "registry rejected {credentials} for {object} ({method} returned 401 Unauthorized); \
         check the registry credentials"
    )]
    Unauthorized {
        object: Box<RegistryObject>,
        method: reqwest::Method,
        credentials: String,
    },

    #[error(
        "registry denied {credentials} access to {object} ({method} returned 403 Forbidden); \
         grant the user access to the repository"
    )]
    Denied {
        object: Box<RegistryObject>,
        method: reqwest::Method,
        credentials: String,
    },

    #[error("{kind} {object} not found")]
    NotFound {
        object: Box<RegistryObject>,
        /// "manifest", "blob" or "repository".
        kind: &'static str,
    },

    #[error(
        "content of {object} has digest {actual} and size {actual_size}, expected {expected} and \
         size {expected_size}"
    )]
    ContentMismatch {
        object: Box<RegistryObject>,
        expected: Digest,
        expected_size: u64,
        actual: Digest,
        actual_size: u64,
    },

    #[error("uploaded content for {object} has digest {actual}, expected {expected}")]
    UploadDigestMismatch {
        object: Box<RegistryObject>,
        expected: Digest,
        actual: Digest,
    },

    #[error("{method} {object} failed with status {status}: {detail}")]
    UnexpectedStatus {
        object: Box<RegistryObject>,
        method: reqwest::Method,
        status: StatusCode,
        /// The OCI error codes and messages of the response body, or its start.
        detail: String,
    },

    #[error(
        "invalid repository or reference {object}: repository components must match \
         [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)* and the reference must be a tag or a sha256 digest"
    )]
    InvalidName { object: Box<RegistryObject> },

    /// Built with [`OciError::transport`], which drops the request URL from `source`.
    #[error("{method} {object} failed: {}", Causes(source))]
    Transport {
        object: Box<RegistryObject>,
        method: reqwest::Method,
        #[source]
        source: reqwest::Error,
    },

    #[error("failed to read the upload content for {object}: {source}")]
    ReadInput {
        object: Box<RegistryObject>,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid response to {method} {object}: {reason}")]
    InvalidResponse {
        object: Box<RegistryObject>,
        method: reqwest::Method,
        reason: String,
    },

    #[error("manifest {object} is not a JAR artifact: {source}")]
    NotAJarArtifact {
        object: Box<RegistryObject>,
        #[source]
        source: NotAJarArtifact,
    },

    #[error("registry {registry} sent a challenge this client cannot use: {source}")]
    InvalidChallenge {
        registry: String,
        #[source]
        source: InvalidChallenge,
    },

    #[error("token request to {realm} for registry {registry} with {credentials} failed: {reason}")]
    TokenRequest {
        registry: String,
        realm: String,
        credentials: String,
        reason: String,
        transient: bool,
    },

    #[error("invalid digest from registry {registry}: {source}")]
    InvalidDigest {
        registry: String,
        #[source]
        source: InvalidDigest,
    },
}

impl OciError {
    /// Builds the error of a request that got no complete response, because the connection
    /// failed, was cut or timed out.
    ///
    /// The request URL is dropped from the message. `object` already names the registry and
    /// repository, and the URL may carry what the module promises never to show: an upload
    /// session's state token, or the signature of a pre-signed storage URL that the registry
    /// redirected to.
    pub fn transport(
        object: RegistryObject,
        method: reqwest::Method,
        source: reqwest::Error,
    ) -> Self {
        OciError::Transport {
            object: Box::new(object),
            method,
            source: source.without_url(),
        }
    }

    /// Short, stable label for the kind of failure, used as a metric label value.
    pub fn metric_label(&self) -> &'static str {
        match self {
            OciError::InvalidRegistryUrl { .. } => "invalid_registry_url",
            OciError::ReadCaBundle { .. } => "read_ca_bundle",
            OciError::HttpClient { .. } => "http_client",
            OciError::Unauthorized { .. } => "unauthorized",
            OciError::Denied { .. } => "denied",
            OciError::NotFound { .. } => "not_found",
            OciError::ContentMismatch { .. } => "content_mismatch",
            OciError::UploadDigestMismatch { .. } => "upload_digest_mismatch",
            OciError::UnexpectedStatus { .. } => "unexpected_status",
            OciError::InvalidName { .. } => "invalid_name",
            OciError::Transport { .. } => "transport",
            OciError::ReadInput { .. } => "read_input",
            OciError::InvalidResponse { .. } => "invalid_response",
            OciError::NotAJarArtifact { .. } => "not_a_jar_artifact",
            OciError::InvalidChallenge { .. } => "invalid_challenge",
            OciError::TokenRequest { .. } => "token_request",
            OciError::InvalidDigest { .. } => "invalid_digest",
        }
    }

    /// Returns whether the same operation may succeed later without a change of configuration or
    /// input. Transient are transport errors other than TLS errors, 408, 429 and 5xx responses
    /// except 501 and 505 (after the client's own retries), and token requests that failed for
    /// the same reasons. A controller requeues these and reports the others as a stalled
    /// condition.
    pub fn is_transient(&self) -> bool {
        match self {
            OciError::Transport { source, .. } => super::retry::is_retryable_transport(source),
            OciError::UnexpectedStatus { status, .. } => super::retry::is_retryable_status(*status),
            OciError::TokenRequest { transient, .. } => *transient,
            _ => false,
        }
    }

    /// Returns whether the registry refused a manifest because it does not know a blob the
    /// manifest references (OCI error code `MANIFEST_BLOB_UNKNOWN`).
    pub fn is_manifest_blob_unknown(&self) -> bool {
        matches!(
            self,
            OciError::UnexpectedStatus { status, detail, .. }
                if *status == StatusCode::BAD_REQUEST && detail.contains("MANIFEST_BLOB_UNKNOWN")
        )
    }

    /// Returns whether the error means the tag, manifest, blob or repository does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, OciError::NotFound { .. })
    }
}

/// Displays an error followed by its causes, `error: cause: cause`. The outermost error of
/// reqwest reads only "error sending request", while the reason a status message needs, such
/// as "Connection refused" or "connection closed before message completed", is in a cause.
struct Causes<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(reference: &str) -> RegistryObject {
        RegistryObject {
            registry: "127.0.0.1:5000".to_owned(),
            repository: "acme/app".to_owned(),
            reference: reference.to_owned(),
        }
    }

    #[test]
    fn object_display_forms() {
        assert_eq!(object("v1").to_string(), "127.0.0.1:5000/acme/app:v1");
        assert_eq!(
            object(&Digest::of(b"{}").to_string()).to_string(),
            format!("127.0.0.1:5000/acme/app@{}", Digest::of(b"{}"))
        );
        assert_eq!(object("").to_string(), "127.0.0.1:5000/acme/app");
        let registry_level = RegistryObject {
            repository: String::new(),
            ..object("")
        };
        assert_eq!(registry_level.to_string(), "127.0.0.1:5000");
    }

    #[test]
    fn unauthorized_names_credentials_kind() {
        let error = OciError::Unauthorized {
            object: Box::new(object("v1")),
            method: reqwest::Method::GET,
            credentials: "basic credentials for user 'x'".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "registry rejected basic credentials for user 'x' for 127.0.0.1:5000/acme/app:v1 \
             (GET returned 401 Unauthorized); check the registry credentials"
        );
        assert_eq!(error.metric_label(), "unauthorized");
        assert!(!error.is_transient());
    }

    #[test]
    fn status_errors_are_transient_only_for_retryable_codes() {
        let error = |code| OciError::UnexpectedStatus {
            object: Box::new(object("v1")),
            method: reqwest::Method::PUT,
            status: StatusCode::from_u16(code).unwrap(),
            detail: String::new(),
        };
        assert!(error(503).is_transient());
        assert!(error(429).is_transient());
        assert!(!error(400).is_transient());
        assert!(!error(501).is_transient());
    }

    #[test]
    fn manifest_blob_unknown_recognized_by_code() {
        let error = |code, detail: &str| OciError::UnexpectedStatus {
            object: Box::new(object("v1")),
            method: reqwest::Method::PUT,
            status: StatusCode::from_u16(code).unwrap(),
            detail: detail.to_owned(),
        };
        assert!(
            error(
                400,
                "DIGEST_INVALID: x; MANIFEST_BLOB_UNKNOWN: blob unknown"
            )
            .is_manifest_blob_unknown()
        );
        assert!(!error(400, "MANIFEST_INVALID: bad").is_manifest_blob_unknown());
        assert!(!error(500, "MANIFEST_BLOB_UNKNOWN: y").is_manifest_blob_unknown());
    }

    /// A refused connection is reported with its cause and without the request URL, whose
    /// query may hold a token.
    #[tokio::test]
    async fn transport_error_names_cause_without_url() {
        crate::tls::install_crypto_provider();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = format!("http://127.0.0.1:{port}/v2/acme/app/blobs/uploads/1?_state=secret");
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let source = client.patch(&url).send().await.unwrap_err();

        let message = OciError::transport(object(""), reqwest::Method::PATCH, source).to_string();

        assert!(
            message.starts_with("PATCH 127.0.0.1:5000/acme/app failed: error sending request"),
            "{message}"
        );
        assert!(message.contains("onnection refused"), "{message}");
        assert!(!message.contains("_state"), "{message}");
    }
}
