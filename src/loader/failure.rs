//! Loader errors, their exit codes and the one-line termination message.
//!
//! Every message names the URL without its query ([`SignedUrl`] prints it that way), because
//! the query carries the signature.

use std::{fmt, io, path::PathBuf};

use reqwest::StatusCode;

use super::settings::SignedUrl;
use crate::{
    artifact::error::ContentError,
    oci::{Digest, digest::InvalidDigest},
};

/// Maximum length of a termination message. Kubernetes keeps at most 4 KiB of one container's
/// message, and less when the messages of all the pod's containers exceed 12 KiB together.
pub const MAX_TERMINATION_MESSAGE: usize = 4096;

/// Class of a failure. It fixes the exit code and the label that starts the termination
/// message. Pod specs and alerts match on both, so a code must keep its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// A flag or environment variable is missing or invalid. clap's usage errors exit with 2
    /// as well.
    InvalidInput,
    /// Reading or writing a local file failed.
    LocalFile,
    /// The content's sha256 differs from the expected digest, or the content is not a JAR.
    DigestMismatch,
    /// The content's length differs from the expected size.
    SizeMismatch,
    /// The content, its declared length or its expected size is larger than `--max-size`.
    TooLarge,
    /// The gateway rejected the URL as expired: 410, or 403 with reason `expired`.
    Expired,
    /// The gateway rejected the URL with 403 for another reason, such as a bad signature.
    Forbidden,
    /// The gateway returned 404.
    NotFound,
    /// The server returned another status that retrying cannot fix, such as 400 or 501.
    HttpStatus,
    /// Every attempt failed to connect, timed out or lost the connection, or the first one hit
    /// a failure that no retry fixes: a TLS error or too many redirects. Also used when the
    /// HTTP client cannot be built.
    Network,
    /// Every attempt failed and the last one got 408, 429 or a retryable 5xx.
    ServerError,
}

impl FailureKind {
    /// Every kind, in exit code order.
    pub const ALL: [Self; 11] = [
        Self::InvalidInput,
        Self::LocalFile,
        Self::DigestMismatch,
        Self::SizeMismatch,
        Self::TooLarge,
        Self::Expired,
        Self::Forbidden,
        Self::NotFound,
        Self::HttpStatus,
        Self::Network,
        Self::ServerError,
    ];

    /// Returns the process exit code. 0 is success and 1 is left to unexpected failures.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::InvalidInput => 2,
            Self::LocalFile => 3,
            Self::DigestMismatch => 10,
            Self::SizeMismatch => 11,
            Self::TooLarge => 12,
            Self::Expired => 20,
            Self::Forbidden => 21,
            Self::NotFound => 22,
            Self::HttpStatus => 23,
            Self::Network => 30,
            Self::ServerError => 31,
        }
    }

    /// Returns the stable name that starts the termination message.
    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::LocalFile => "local_file",
            Self::DigestMismatch => "digest_mismatch",
            Self::SizeMismatch => "size_mismatch",
            Self::TooLarge => "too_large",
            Self::Expired => "expired",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::HttpStatus => "http_status",
            Self::Network => "network",
            Self::ServerError => "server_error",
        }
    }
}

/// A failed check on the response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// A check shared with the AppArtifact sources failed: ZIP signature, size limit or digest.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// `Content-Length` differs from the expected size.
    #[error(
        "declared Content-Length {declared} differs from the expected size of {expected} bytes"
    )]
    DeclaredSizeMismatch { expected: u64, declared: u64 },
    /// The body grew past the expected size. Reading stopped there.
    #[error("the body is longer than the expected size of {expected} bytes")]
    LongerThanExpected { expected: u64 },
    /// The body ended normally before the expected size.
    #[error("the body ended after {received} bytes, expected {expected} bytes")]
    ShorterThanExpected { expected: u64, received: u64 },
}

impl BodyError {
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Content(ContentError::NotZip { .. } | ContentError::DigestMismatch { .. }) => {
                FailureKind::DigestMismatch
            }
            Self::Content(
                ContentError::TooLarge { .. } | ContentError::DeclaredTooLarge { .. },
            ) => FailureKind::TooLarge,
            Self::DeclaredSizeMismatch { .. }
            | Self::LongerThanExpected { .. }
            | Self::ShorterThanExpected { .. } => FailureKind::SizeMismatch,
        }
    }

    /// Returns what to check next.
    fn advice(&self) -> &'static str {
        match self.kind() {
            FailureKind::TooLarge => {
                "Raise --max-size (ARTIFACT_MAX_SIZE) if the JAR is legitimately this large"
            }
            _ => {
                "The server sent other content than the AppArtifact's status.artifact; check \
                 that the AppArtifact still has this digest and size, then recreate the pod"
            }
        }
    }
}

/// Failure of `artifact-operator loader`.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("missing value: set {flag} or the environment variable {env}")]
    MissingValue { flag: &'static str, env: String },

    #[error(
        "invalid --env-prefix {prefix:?}: use letters, digits and `_`, starting with a letter \
         or `_`, for example ARTIFACT_1_"
    )]
    InvalidEnvPrefix { prefix: String },

    /// The reason shows the URL only without its query.
    #[error("invalid URL in --url or {env}: {reason}. Set the pre-signed http or https URL")]
    InvalidUrl { env: String, reason: String },

    #[error("invalid digest in --digest or {env}: {source}")]
    InvalidDigest {
        env: String,
        #[source]
        source: InvalidDigest,
    },

    #[error("invalid size {value:?} in --size or {env}: expected a positive number of bytes")]
    InvalidSize { env: String, value: String },

    #[error(
        "invalid file name {value:?} in --filename or {env}: expected one path component \
         without `/`, such as app.jar"
    )]
    InvalidFilename { env: String, value: String },

    #[error(
        "output {} is a directory and no file name is set: set --filename or {env}, or set \
         --output to the path of the file",
        directory.display()
    )]
    MissingFilename { directory: PathBuf, env: String },

    #[error(
        "invalid output {}: it does not end in a UTF-8 file name. Set --output to a directory \
         or to the path of the JAR",
        path.display()
    )]
    InvalidOutput { path: PathBuf },

    #[error(
        "the expected size of {expected} bytes is larger than the limit of {max_size} bytes: \
         raise --max-size (ARTIFACT_MAX_SIZE) if the JAR is legitimately this large"
    )]
    ExpectedTooLarge { expected: u64, max_size: u64 },

    #[error(
        "failed to {action} {}: {source}. Check that the output volume is mounted, writable \
         and has free space",
        path.display()
    )]
    LocalFile {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "the pre-signed URL {url} has expired (status {status}{}). Recreate the pod so that \
         the webhook injects a fresh URL",
        format_reason(reason.as_deref())
    )]
    Expired {
        url: SignedUrl,
        status: StatusCode,
        reason: Option<String>,
    },

    #[error(
        "GET {url} returned {}{}: the gateway rejected the URL. Recreate the pod so that the \
         webhook signs a fresh URL",
        StatusCode::FORBIDDEN,
        format_reason(reason.as_deref())
    )]
    Forbidden {
        url: SignedUrl,
        reason: Option<String>,
    },

    #[error(
        "GET {url} returned {}{}: check that the AppArtifact exists and is Ready with this \
         digest",
        StatusCode::NOT_FOUND,
        format_reason(reason.as_deref())
    )]
    NotFound {
        url: SignedUrl,
        reason: Option<String>,
    },

    #[error(
        "GET {url} returned {status}{}, expected 200 OK. This status is not retried",
        format_reason(reason.as_deref())
    )]
    Status {
        url: SignedUrl,
        status: StatusCode,
        reason: Option<String>,
    },

    /// Building the HTTP client failed, for example because the TLS backend did not start. No
    /// request was sent.
    #[error("failed to set up the HTTP client: {reason}")]
    HttpClient { reason: String },

    #[error(
        "GET {url} failed after {}, the last one with: {last_error}. Check that the pod can \
         reach the gateway",
        count_attempts(*attempts)
    )]
    Network {
        url: SignedUrl,
        attempts: u32,
        last_error: String,
    },

    #[error(
        "GET {url} failed after {}, the last one with status {status}. The gateway or its \
         registry is overloaded or failing; check their logs",
        count_attempts(*attempts)
    )]
    ServerError {
        url: SignedUrl,
        attempts: u32,
        status: StatusCode,
    },

    #[error(
        "content of {url} rejected: {source}. {} was left unchanged. {}",
        path.display(),
        source.advice()
    )]
    Body {
        url: SignedUrl,
        path: PathBuf,
        #[source]
        source: BodyError,
    },
}

fn count_attempts(attempts: u32) -> String {
    match attempts {
        1 => "1 attempt".to_owned(),
        attempts => format!("{attempts} attempts"),
    }
}

fn format_reason(reason: Option<&str>) -> String {
    reason.map_or_else(String::new, |reason| format!(", reason {reason:?}"))
}

impl LoaderError {
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::MissingValue { .. }
            | Self::InvalidEnvPrefix { .. }
            | Self::InvalidUrl { .. }
            | Self::InvalidDigest { .. }
            | Self::InvalidSize { .. }
            | Self::InvalidFilename { .. }
            | Self::MissingFilename { .. }
            | Self::InvalidOutput { .. } => FailureKind::InvalidInput,
            Self::ExpectedTooLarge { .. } => FailureKind::TooLarge,
            Self::LocalFile { .. } => FailureKind::LocalFile,
            Self::Expired { .. } => FailureKind::Expired,
            Self::Forbidden { .. } => FailureKind::Forbidden,
            Self::NotFound { .. } => FailureKind::NotFound,
            Self::Status { .. } => FailureKind::HttpStatus,
            Self::HttpClient { .. } | Self::Network { .. } => FailureKind::Network,
            Self::ServerError { .. } => FailureKind::ServerError,
            Self::Body { source, .. } => source.kind(),
        }
    }

    pub(crate) fn local(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::LocalFile {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Result of a successful run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Success {
    /// The JAR was downloaded, verified and renamed into place.
    Downloaded {
        path: PathBuf,
        digest: Digest,
        size: u64,
        attempts: u32,
    },
    /// The file was already in place with the expected digest, so nothing was downloaded.
    AlreadyPresent { path: PathBuf, digest: Digest },
}

impl fmt::Display for Success {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Downloaded {
                path,
                digest,
                size,
                attempts,
            } => write!(
                f,
                "downloaded: {} has {digest} ({size} bytes, {})",
                path.display(),
                count_attempts(*attempts)
            ),
            Self::AlreadyPresent { path, digest } => write!(
                f,
                "present: {} already has {digest}, nothing was downloaded",
                path.display()
            ),
        }
    }
}

/// Builds the one-line termination message: the failure label and the error, or the success
/// summary. Line breaks become spaces, and the text is cut to [`MAX_TERMINATION_MESSAGE`]
/// bytes on a character boundary.
pub fn termination_message(result: &Result<Success, LoaderError>) -> String {
    let text = match result {
        Ok(success) => success.to_string(),
        Err(error) => format!("{}: {error}", error.kind().label()),
    };
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() > MAX_TERMINATION_MESSAGE {
        let mut end = MAX_TERMINATION_MESSAGE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

/// Returns the exit code of a run.
pub fn exit_code(result: &Result<Success, LoaderError>) -> u8 {
    match result {
        Ok(_) => 0,
        Err(error) => error.kind().exit_code(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn signed_url() -> SignedUrl {
        let url = url::Url::parse(
            "https://gateway.example/v1/artifacts/ns/app/sha256:ab?kid=k1&exp=1&sig=SECRET",
        )
        .unwrap();
        SignedUrl::from_url(url)
    }

    #[test]
    fn exit_codes_are_distinct_and_not_one() {
        let codes: HashSet<u8> = FailureKind::ALL
            .iter()
            .map(|kind| kind.exit_code())
            .collect();
        assert_eq!(codes.len(), FailureKind::ALL.len());
        assert!(!codes.contains(&0));
        assert!(!codes.contains(&1));
    }

    #[test]
    fn exit_code_table() {
        let expected = [
            (FailureKind::InvalidInput, 2, "invalid_input"),
            (FailureKind::LocalFile, 3, "local_file"),
            (FailureKind::DigestMismatch, 10, "digest_mismatch"),
            (FailureKind::SizeMismatch, 11, "size_mismatch"),
            (FailureKind::TooLarge, 12, "too_large"),
            (FailureKind::Expired, 20, "expired"),
            (FailureKind::Forbidden, 21, "forbidden"),
            (FailureKind::NotFound, 22, "not_found"),
            (FailureKind::HttpStatus, 23, "http_status"),
            (FailureKind::Network, 30, "network"),
            (FailureKind::ServerError, 31, "server_error"),
        ];
        for (kind, code, label) in expected {
            assert_eq!(kind.exit_code(), code, "{kind:?}");
            assert_eq!(kind.label(), label, "{kind:?}");
        }
    }

    #[test]
    fn error_kind_mapping() {
        let url = signed_url;
        let path = || PathBuf::from("/app/app.jar");
        let body = |source: BodyError| LoaderError::Body {
            url: url(),
            path: path(),
            source,
        };
        let digest = Digest::of(b"a");
        let cases = [
            (
                LoaderError::MissingValue {
                    flag: "--url",
                    env: "ARTIFACT_URL".to_owned(),
                },
                FailureKind::InvalidInput,
            ),
            (
                LoaderError::ExpectedTooLarge {
                    expected: 2,
                    max_size: 1,
                },
                FailureKind::TooLarge,
            ),
            (
                LoaderError::local("write", path(), io::Error::other("disk full")),
                FailureKind::LocalFile,
            ),
            (
                LoaderError::Expired {
                    url: url(),
                    status: StatusCode::GONE,
                    reason: None,
                },
                FailureKind::Expired,
            ),
            (
                LoaderError::Forbidden {
                    url: url(),
                    reason: Some("bad_signature".to_owned()),
                },
                FailureKind::Forbidden,
            ),
            (
                LoaderError::NotFound {
                    url: url(),
                    reason: None,
                },
                FailureKind::NotFound,
            ),
            (
                LoaderError::Status {
                    url: url(),
                    status: StatusCode::BAD_REQUEST,
                    reason: None,
                },
                FailureKind::HttpStatus,
            ),
            (
                LoaderError::Network {
                    url: url(),
                    attempts: 3,
                    last_error: "connection refused".to_owned(),
                },
                FailureKind::Network,
            ),
            (
                LoaderError::HttpClient {
                    reason: "no TLS provider".to_owned(),
                },
                FailureKind::Network,
            ),
            (
                LoaderError::ServerError {
                    url: url(),
                    attempts: 3,
                    status: StatusCode::SERVICE_UNAVAILABLE,
                },
                FailureKind::ServerError,
            ),
            (
                body(BodyError::Content(ContentError::DigestMismatch {
                    expected: digest,
                    actual: Digest::of(b"b"),
                })),
                FailureKind::DigestMismatch,
            ),
            (
                body(BodyError::Content(ContentError::NotZip {
                    actual: b"<htm".to_vec(),
                })),
                FailureKind::DigestMismatch,
            ),
            (
                body(BodyError::Content(ContentError::TooLarge { max_size: 1 })),
                FailureKind::TooLarge,
            ),
            (
                body(BodyError::Content(ContentError::DeclaredTooLarge {
                    max_size: 1,
                    declared: 2,
                })),
                FailureKind::TooLarge,
            ),
            (
                body(BodyError::DeclaredSizeMismatch {
                    expected: 1,
                    declared: 2,
                }),
                FailureKind::SizeMismatch,
            ),
            (
                body(BodyError::LongerThanExpected { expected: 1 }),
                FailureKind::SizeMismatch,
            ),
            (
                body(BodyError::ShorterThanExpected {
                    expected: 2,
                    received: 1,
                }),
                FailureKind::SizeMismatch,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
            assert!(!error.to_string().contains("SECRET"), "{error}");
        }
    }

    #[test]
    fn body_error_names_url_path_and_digests() {
        let expected = Digest::of(b"expected");
        let actual = Digest::of(b"actual");
        let error = LoaderError::Body {
            url: signed_url(),
            path: PathBuf::from("/app/app.jar"),
            source: BodyError::Content(ContentError::DigestMismatch { expected, actual }),
        };
        let message = error.to_string();
        assert!(
            message.contains("https://gateway.example/v1/artifacts/ns/app/sha256:ab "),
            "{message}"
        );
        assert!(message.contains("/app/app.jar"), "{message}");
        assert!(message.contains(&expected.hex()), "{message}");
        assert!(message.contains(&actual.hex()), "{message}");
    }

    #[test]
    fn termination_message_starts_with_label() {
        let error = LoaderError::Expired {
            url: signed_url(),
            status: StatusCode::GONE,
            reason: None,
        };
        let message = termination_message(&Err(error));
        assert!(message.starts_with("expired: "), "{message}");
        assert!(!message.contains("SECRET"), "{message}");
    }

    #[test]
    fn termination_message_is_one_bounded_line() {
        let error = LoaderError::InvalidSize {
            env: "ARTIFACT_SIZE".to_owned(),
            value: format!("1\n2{}", "é".repeat(3000)),
        };
        let message = termination_message(&Err(error));
        assert!(!message.contains('\n'), "{message}");
        assert!(message.len() <= MAX_TERMINATION_MESSAGE);
        assert!(message.len() > MAX_TERMINATION_MESSAGE - 2);
    }

    #[test]
    fn success_message_names_path_and_digest() {
        let digest = Digest::of(b"jar");
        let result = Ok(Success::AlreadyPresent {
            path: PathBuf::from("/app/app.jar"),
            digest,
        });
        assert_eq!(exit_code(&result), 0);
        assert_eq!(
            termination_message(&result),
            format!("present: /app/app.jar already has {digest}, nothing was downloaded")
        );
    }
}
