//! Errors of the artifact sources.
//!
//! Every message names its source without secrets: a URL without user information, query or
//! fragment ([`redact_url`]), or the namespace, name and key of a ConfigMap or Secret.

use std::io;

use reqwest::StatusCode;

use super::address_policy::Denial;
use crate::oci::{
    Digest,
    retry::{is_retryable_status, is_retryable_transport},
};

/// A failed check on the bytes of a JAR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// The first bytes differ from the ZIP local file header signature.
    #[error(
        "content is not a JAR: expected the ZIP signature 50 4b 03 04 (\"PK\\x03\\x04\"), found {}",
        format_prefix(actual)
    )]
    NotZip { actual: Vec<u8> },
    /// The content grew past the size limit while it was read.
    #[error(
        "content is larger than the limit of {max_size} bytes; raise spec.sources.maxArtifactSize \
         of the ArtifactRegistry or use a smaller JAR"
    )]
    TooLarge { max_size: u64 },
    /// The server declared a length above the size limit.
    #[error(
        "declared Content-Length {declared} is larger than the limit of {max_size} bytes; raise \
         spec.sources.maxArtifactSize of the ArtifactRegistry or use a smaller JAR"
    )]
    DeclaredTooLarge { max_size: u64, declared: u64 },
    /// The digest of the complete content differs from the pinned SHA-256.
    #[error("sha256 mismatch: expected {}, got {}", expected.hex(), actual.hex())]
    DigestMismatch { expected: Digest, actual: Digest },
}

fn format_prefix(prefix: &[u8]) -> String {
    let hex: Vec<String> = prefix.iter().map(|byte| format!("{byte:02x}")).collect();
    match prefix.len() {
        0 => "empty content".to_owned(),
        length if length < 4 => format!("only {length} bytes: {}", hex.join(" ")),
        _ => hex.join(" "),
    }
}

/// Formats a reqwest error followed by its causes. Its own message is often only "error
/// decoding response body", while a cause describes what happened, such as a body that ended
/// before its Content-Length.
fn with_causes(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(current) = cause {
        let cause_text = current.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        cause = current.source();
    }
    text
}

/// Failure to read a JAR from a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The URL does not parse or has no host.
    #[error("invalid source URL: {reason}")]
    InvalidUrl { reason: String },
    /// The URL, or a redirect, uses a scheme other than http and https.
    #[error("unsupported scheme {scheme:?} in {url}: use an http or https URL")]
    UnsupportedScheme { url: String, scheme: String },
    /// DNS resolution of the host failed.
    #[error("failed to resolve host {host} of {url}: {source}")]
    Resolve {
        url: String,
        host: String,
        #[source]
        source: io::Error,
    },
    /// DNS resolution returned no address.
    #[error("host {host} of {url} resolved to no address")]
    NoAddress { url: String, host: String },
    /// The address policy rejected an address of the host, before any connection to it.
    #[error("rejected {url} before connecting: host {host} resolved to {denial}")]
    DeniedAddress {
        url: String,
        host: String,
        denial: Denial,
    },
    /// The server redirected more times than allowed.
    #[error("too many redirects: {url} was reached after {max} redirects and redirects again")]
    TooManyRedirects { url: String, max: usize },
    /// A redirect response has a missing or invalid `Location` header.
    #[error("redirect from {url} with status {status} has a missing or invalid Location header")]
    InvalidRedirect { url: String, status: StatusCode },
    /// The CA bundle is not a PEM bundle of certificates.
    #[error("invalid caBundle: {reason}. Set it to one or more PEM certificates")]
    InvalidCaBundle { reason: String },
    /// A credential value cannot be sent as an HTTP header. The value itself is never shown.
    #[error("invalid credentials: {reason}")]
    InvalidCredentials { reason: &'static str },
    /// The HTTP client could not be built.
    #[error("failed to set up the HTTP client for {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The final response has a status other than 200.
    #[error("GET {url} returned status {status}, expected 200 OK")]
    Status { url: String, status: StatusCode },
    /// Connecting, or waiting for the response or the next body chunk, timed out.
    #[error("GET {url} timed out")]
    Timeout { url: String },
    /// The request failed in transport (connection refused or reset, TLS handshake).
    #[error("GET {url} failed: {}", with_causes(.source))]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Reading the response body failed after the status arrived.
    #[error("reading the response body of {url} failed: {}", with_causes(.source))]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Reading the body of an upload request failed, for example because the client closed the
    /// connection.
    #[error("reading the body of the {origin} failed: {source}")]
    UploadBody {
        origin: String,
        #[source]
        source: io::Error,
    },
    /// The content failed a check.
    #[error("{origin}: {source}")]
    Content {
        origin: String,
        #[source]
        source: ContentError,
    },
    /// The key is in a ConfigMap's `data`, which contains UTF-8 text and cannot contain a JAR.
    #[error(
        "ConfigMap {namespace}/{name} has key {key:?} in data (text) instead of binaryData. \
         Recreate it with `kubectl create configmap {name} --from-file={key}=FILE.jar`, \
         which stores binary files in binaryData"
    )]
    KeyInTextData {
        namespace: String,
        name: String,
        key: String,
    },
    /// The ConfigMap or Secret has no such key.
    #[error(
        "{kind} {namespace}/{name} has no key {key:?} (keys present: {}). \
         Set the key to one of them or add the JAR under {key:?}",
        format_keys(present)
    )]
    KeyNotFound {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
        present: Vec<String>,
    },
}

fn format_keys(keys: &[String]) -> String {
    if keys.is_empty() {
        "none".to_owned()
    } else {
        keys.join(", ")
    }
}

impl SourceError {
    pub(crate) fn content(origin: &str, source: ContentError) -> Self {
        Self::Content {
            origin: origin.to_owned(),
            source,
        }
    }

    /// Returns whether trying again later may succeed: DNS failures, timeouts, transport errors
    /// other than TLS errors, interrupted upload bodies, and 408, 429 and 5xx responses except
    /// 501 and 505. Everything
    /// else, such as 404, a denied address or a digest mismatch, fails the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Resolve { .. }
            | Self::NoAddress { .. }
            | Self::Timeout { .. }
            | Self::UploadBody { .. } => true,
            Self::Status { status, .. } => is_retryable_status(*status),
            Self::Request { source, .. } | Self::Body { source, .. } => {
                is_retryable_transport(source)
            }
            _ => false,
        }
    }

    /// Returns a short, stable name of the failure for metric labels.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "invalid_url",
            Self::UnsupportedScheme { .. } => "unsupported_scheme",
            Self::Resolve { .. } | Self::NoAddress { .. } => "dns",
            Self::DeniedAddress { .. } => "denied_address",
            Self::TooManyRedirects { .. } => "too_many_redirects",
            Self::InvalidRedirect { .. } => "invalid_redirect",
            Self::InvalidCaBundle { .. } => "invalid_ca_bundle",
            Self::InvalidCredentials { .. } => "invalid_credentials",
            Self::Client { .. } => "client",
            Self::Status { status, .. } if status.is_client_error() => "http_4xx",
            Self::Status { status, .. } if status.is_server_error() => "http_5xx",
            Self::Status { .. } => "http_status",
            Self::Timeout { .. } => "timeout",
            Self::Request { .. } => "connection",
            Self::Body { .. } => "body",
            Self::UploadBody { .. } => "upload_body",
            Self::Content { source, .. } => match source {
                ContentError::NotZip { .. } => "not_a_jar",
                ContentError::TooLarge { .. } | ContentError::DeclaredTooLarge { .. } => {
                    "too_large"
                }
                ContentError::DigestMismatch { .. } => "digest_mismatch",
            },
            Self::KeyInTextData { .. } => "key_in_text_data",
            Self::KeyNotFound { .. } => "key_not_found",
        }
    }
}

/// Lets a content stream feed [`tokio_util::io::StreamReader`]. The [`SourceError`] stays
/// reachable through [`io::Error::get_ref`].
impl From<SourceError> for io::Error {
    fn from(error: SourceError) -> Self {
        io::Error::other(error)
    }
}

/// Formats a URL for messages and logs: without user information, query and fragment, which
/// may carry credentials or signed tokens.
pub fn redact_url(url: &url::Url) -> String {
    let mut redacted = url.clone();
    // Both setters fail only for URLs that cannot have user information, which then has none.
    let _ = redacted.set_username("");
    let _ = redacted.set_password(None);
    redacted.set_query(None);
    redacted.set_fragment(None);
    redacted.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_drops_credentials_and_query() {
        let url = url::Url::parse("https://user:secret@repo.example.com:8443/app.jar?token=abc#x")
            .unwrap();
        assert_eq!(redact_url(&url), "https://repo.example.com:8443/app.jar");
    }

    #[test]
    fn status_classification() {
        let status = |code: u16| SourceError::Status {
            url: "https://repo.example.com/app.jar".to_owned(),
            status: StatusCode::from_u16(code).unwrap(),
        };
        assert!(!status(404).is_transient());
        assert!(!status(403).is_transient());
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert_eq!(status(404).metric_label(), "http_4xx");
        assert_eq!(status(503).metric_label(), "http_5xx");
    }

    #[test]
    fn not_zip_message_shows_expected_and_found_bytes() {
        let error = ContentError::NotZip {
            actual: b"<htm".to_vec(),
        };
        assert_eq!(
            error.to_string(),
            "content is not a JAR: expected the ZIP signature 50 4b 03 04 (\"PK\\x03\\x04\"), \
             found 3c 68 74 6d"
        );
    }

    #[test]
    fn key_in_text_data_message_names_fix() {
        let error = SourceError::KeyInTextData {
            namespace: "team-a".to_owned(),
            name: "app".to_owned(),
            key: "app.jar".to_owned(),
        };
        let message = error.to_string();
        assert!(message.contains("team-a/app"), "{message}");
        assert!(
            message.contains("--from-file=app.jar=FILE.jar"),
            "{message}"
        );
    }
}
