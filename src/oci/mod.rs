//! OCI registry client for application JARs.
//!
//! A JAR is stored as an OCI artifact (image-spec v1.1): an image manifest with artifact type
//! `application/vnd.cameleer.app.jar.v1`, the empty config `{}`, and one
//! `application/java-archive` layer whose title annotation is the file name. The repository is
//! `{tenantId}/{appId}` and the tag `v{version}` ([`ArtifactCoordinates::reference`]).
//!
//! # Why reqwest and not the `oci-client` crate
//!
//! The client calls the distribution-spec endpoints with reqwest directly. `oci-client` 0.18
//! also streams blobs and caches bearer tokens per repository for push and pull. But it does not
//! retry, has no token scope for deletion, and its `OciDistributionError` neither names the
//! registry object nor separates transient failures from permanent ones. Each call would need a
//! wrapper to add these, and the crate would also bring `chrono`, `oci-spec` and their
//! dependencies. The endpoints this crate needs are few: blob `HEAD`/`GET`, the upload
//! `POST`/`PATCH`/`PUT`, manifest `HEAD`/`GET`/`PUT`/`DELETE` and the tag list.
//!
//! # Streaming
//!
//! Uploads read the caller's [`tokio::io::AsyncRead`] once, hashing each chunk as it goes into
//! the request body. Downloads hash each chunk as it comes out, and the stream ends with an
//! error instead of ending normally when the digest or size differs. The client buffers a few
//! chunks of 256 KiB whatever the content size (`examples/oci_transfer.rs` measures it).
//!
//! # Retries
//!
//! Transport errors (except TLS errors such as an untrusted certificate) and 408, 429 and 5xx
//! responses (except 501 and 505) are retried with exponential backoff ([`RetryPolicy`]), other
//! 4xx responses never. Only requests whose body can be sent again are
//! retried. A streamed upload fails at once, and [`OciError::is_transient`] reports whether
//! the caller should start it again with a new reader.
//!
//! # Authentication
//!
//! Anonymous, HTTP basic, and bearer tokens from the realm of a `WWW-Authenticate: Bearer`
//! challenge, cached per scope until shortly before they expire ([`auth`]).

pub mod auth;
mod blobs;
mod client;
mod config;
pub mod coordinates;
pub mod digest;
mod error;
mod jar;
pub mod manifest;
mod manifests;
pub mod pagination;
pub mod retry;
pub mod streaming;

pub use auth::Credentials;
pub use blobs::{BlobPush, BlobRangeStream, BlobStream};
pub use client::RegistryClient;
pub use config::{RegistryConfig, TlsRoots};
pub use coordinates::{ApplicationRef, ArtifactCoordinates, InvalidCoordinates, OciReference};
pub use digest::{ContentSummary, Digest};
pub use error::{OciError, RegistryObject};
pub use jar::{JarArtifact, JarMetadata};
pub use manifests::FetchedManifest;
pub use retry::RetryPolicy;
