//! The upload API: `PUT /v1/uploads/{namespace}/{name}` streams a JAR into the registry of an
//! AppArtifact whose `spec.source` is `upload`.
//!
//! A request passes, in this order:
//!
//! 1. Authentication: the `Authorization: Bearer` token must pass a TokenReview (else 401).
//! 2. Authorization: a SubjectAccessReview for the token's user must allow `update` on this
//!    AppArtifact (else 403).
//! 3. The AppArtifact must exist (else 404) and have an upload source (else 409).
//! 4. The checks of the controller: the namespace's tenant label, the registry's admission of
//!    the namespace (both 409) and its readiness (503).
//! 5. The body streams through the content checks into the registry and is never held whole in
//!    memory. The checks are the registry's size limit (413), the ZIP signature (422), the
//!    sha256 pin of the spec or of the request headers (422), and version immutability (409).
//! 6. The status is written as after a push by the controller: 201 for a new version, 200 when
//!    the registry already stores the same bytes.
//!
//! The AppArtifact is read from the API server and not from the gateway's cache, because the
//! cache may lag behind an object created just before the upload. The token serves only the
//! two reviews: it never reaches a log line, an Event or a response.

use std::{collections::BTreeMap, io};

use axum::{
    Json,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use futures::TryStreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, UserInfo},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, Resource as _, api::PostParams, runtime::events::EventType};
use serde::Serialize;
use tracing::{info, instrument};

use super::server::{GatewayState, Refusal, refusal_response};
use crate::{
    artifact::{
        content::SourceKind,
        controller::{self, Error as ControllerError},
        error::SourceError,
        source::ContentStream,
        status::{self, Failure, Observation, reason, registry_failure, source_failure},
        sync::{coordinates, pinned_digest},
        target::{self, Target},
    },
    conditions,
    crd::{AppArtifact, GROUP, UploadSource},
    oci::{Digest, JarArtifact},
    reconcile::{Events, StatusWrite},
    store::locks::VersionLocks,
};

/// Path of the upload API in the gateway's router.
pub const ROUTE: &str = "/v1/uploads/{namespace}/{name}";

/// Header with the hex sha256 of the body, optionally prefixed with `sha256:`.
pub const CONTENT_SHA256_HEADER: &str = "x-content-sha256";

/// Name of the gateway in the Events it publishes.
const EVENT_REPORTER: &str = "artifact-operator-gateway";

/// Returns the URL of the upload API for one AppArtifact.
pub fn upload_url(gateway_url: &str, namespace: &str, name: &str) -> String {
    format!(
        "{}/v1/uploads/{namespace}/{name}",
        gateway_url.trim_end_matches('/')
    )
}

/// Returns a shell command that uploads `app.jar` to an AppArtifact. Without a gateway URL the
/// command has a `https://<gateway>` placeholder; the service account is always a placeholder.
pub fn upload_command(gateway_url: Option<&str>, namespace: &str, name: &str) -> String {
    let url = upload_url(gateway_url.unwrap_or("https://<gateway>"), namespace, name);
    format!(
        "curl --fail-with-body -T app.jar -H \"Authorization: Bearer $(kubectl create token \
         <service-account> -n {namespace})\" {url}"
    )
}

/// Body of a successful upload.
#[derive(Debug, Serialize)]
struct UploadedBody {
    /// Digest of the JAR, `sha256:` and 64 hex digits.
    digest: String,
    /// Size of the JAR in bytes.
    size: u64,
    /// Full OCI reference, `{registry}/{tenantId}/{appId}:v{version}`.
    reference: String,
}

/// Handles `PUT /v1/uploads/{namespace}/{name}`.
#[instrument(skip_all, fields(%namespace, %name))]
pub(super) async fn receive_upload(
    State(state): State<std::sync::Arc<GatewayState>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = Upload {
        state: &state,
        namespace: &namespace,
        name: &name,
    };
    match request.run(&headers, body).await {
        Ok((status, uploaded)) => {
            let label = if status == StatusCode::CREATED {
                "uploaded"
            } else {
                "unchanged"
            };
            state.metrics.record_gateway(status.as_u16(), label);
            let mut response = (status, Json(uploaded)).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(refusal) => {
            let unauthorized = refusal.status == StatusCode::UNAUTHORIZED;
            let mut response = refusal_response(&state.metrics, refusal);
            if unauthorized {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

/// One upload request.
struct Upload<'a> {
    state: &'a GatewayState,
    namespace: &'a str,
    name: &'a str,
}

impl Upload<'_> {
    async fn run(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(StatusCode, UploadedBody), Refusal> {
        let token = bearer_token(headers)?;
        let user = authenticate(&self.state.client, token).await?;
        self.authorize(&user).await?;

        let artifact = self.read_artifact().await?;
        let source = upload_source(&artifact, self.namespace, self.name)?;
        let pin = expected_digest(source, headers)?;
        let coordinates = coordinates(&artifact).map_err(|failure| failure_refusal(&failure))?;
        let target = target::resolve(&self.state.client, &artifact, VersionLocks::process())
            .await
            .map_err(|error| kube_refusal(&error))?
            .map_err(|failure| failure_refusal(&failure))?;

        let username = user.username.clone().unwrap_or_default();
        let (jar, created) = match self
            .push(&target, &artifact, &coordinates, pin, headers, body)
            .await
        {
            Ok(pushed) => pushed,
            Err(failure) => {
                self.reject(&artifact, &username, &failure).await;
                return Err(failure_refusal(&failure));
            }
        };

        let reference = coordinates.reference().to_string();
        let host = target.client().registry().to_owned();
        self.record(&reference, &host, &jar, created, &username)
            .await?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((
            status,
            UploadedBody {
                digest: jar.layer.digest.to_string(),
                size: jar.layer.size,
                reference: format!("{host}/{reference}"),
            },
        ))
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Asks the API server whether `user` may update this AppArtifact.
    async fn authorize(&self, user: &UserInfo) -> Result<(), Refusal> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups.clone(),
                uid: user.uid.clone(),
                extra: user.extra.clone().map(BTreeMap::from_iter),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(self.namespace.to_owned()),
                    verb: Some("update".to_owned()),
                    group: Some(GROUP.to_owned()),
                    resource: Some("appartifacts".to_owned()),
                    name: Some(self.name.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviewed = Api::<SubjectAccessReview>::all(self.state.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "authorization_unavailable",
                    format!("the gateway could not review the permissions of the token: {error}"),
                )
            })?;
        if reviewed.status.is_some_and(|status| status.allowed) {
            return Ok(());
        }
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "user {:?} may not update appartifacts.{GROUP} {:?} in namespace {}; grant the \
                 verb update on resource appartifacts with a Role and RoleBinding",
                user.username.as_deref().unwrap_or_default(),
                self.name,
                self.namespace
            ),
        ))
    }

    async fn read_artifact(&self) -> Result<AppArtifact, Refusal> {
        Api::<AppArtifact>::namespaced(self.state.client.clone(), self.namespace)
            .get_opt(self.name)
            .await
            .map_err(|error| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "kubernetes_unavailable",
                    format!("failed to read AppArtifact {}: {error}", self.key()),
                )
            })?
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::NOT_FOUND,
                    "artifact_not_found",
                    format!(
                        "AppArtifact {} not found; create it with spec.source.upload first",
                        self.key()
                    ),
                )
            })
    }

    /// Streams the body through the content checks into the registry. Returns the stored JAR
    /// and whether the upload created the version.
    async fn push(
        &self,
        target: &Target,
        artifact: &AppArtifact,
        coordinates: &crate::oci::ArtifactCoordinates,
        pin: Option<Digest>,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(JarArtifact, bool), Failure> {
        let origin = format!("upload to AppArtifact {}", self.key());
        let checks = target.content_checks(pin)?;
        checks
            .check_declared_size(content_length(headers))
            .map_err(|error| source_failure(&SourceError::content(&origin, error)))?;
        let existing = match target.client().fetch_jar(coordinates).await {
            Ok(jar) => Some(jar),
            Err(error) if error.is_not_found() => None,
            Err(error) => return Err(registry_failure(&error)),
        };

        let body_origin = origin.clone();
        let body = body
            .into_data_stream()
            .map_err(move |error| SourceError::UploadBody {
                origin: body_origin.clone(),
                source: io::Error::other(error),
            });
        let stream: ContentStream = Box::pin(checks.wrap(origin, body));
        let jar = target::put(
            target,
            coordinates,
            &artifact.spec,
            stream,
            pin.as_ref(),
            None,
        )
        .await?;
        Ok((jar, existing.is_none()))
    }

    /// Writes the status of a stored JAR, and publishes the upload as an Event.
    ///
    /// The AppArtifact is read again, because the controller may have written its status during
    /// the upload.
    async fn record(
        &self,
        reference: &str,
        host: &str,
        jar: &JarArtifact,
        created: bool,
        username: &str,
    ) -> Result<(), Refusal> {
        let digest = jar.layer.digest;
        let size = jar.layer.size;
        let artifact = self.read_artifact().await?;
        let previous = artifact.status.as_ref().and_then(|s| s.artifact.as_ref());
        let ready = artifact
            .status
            .as_ref()
            .is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY));
        let now = Timestamp::now();
        let message = if created {
            format!("uploaded {reference} with digest {digest} and size {size} bytes")
        } else {
            format!("{reference} already stores the uploaded JAR with digest {digest}")
        };
        let observation = match previous {
            Some(previous) if !created && ready && previous.digest == digest.to_string() => {
                status::verified(&artifact, host, reference, jar, previous, now)
            }
            _ => Observation::ready(
                reason::UPLOADED,
                message.clone(),
                reference,
                status::stored_artifact(host, reference, jar, now),
            ),
        };
        // The upload wins over a reconcile that started before it: the reconcile's write is
        // conditional on the resourceVersion that this write changes.
        let mode = StatusWrite::Unconditional;
        controller::write_observation(&self.state.client, &artifact, &observation, mode)
            .await
            .map_err(|error| {
                let mut refusal = kube_refusal(&error);
                refusal.message = format!(
                    "{reference} is stored with digest {digest}, but the status was not \
                     written: {}. Upload the same JAR again to retry",
                    refusal.message
                );
                refusal
            })?;

        let (result, bytes) = if created {
            ("pushed", size)
        } else {
            ("adopted", 0)
        };
        self.state.metrics.record_push(result, bytes);
        info!(%reference, %digest, size, created, user = %username, "Artifact uploaded");
        Events::new(self.state.client.clone(), EVENT_REPORTER)
            .publish(
                &artifact.object_ref(&()),
                EventType::Normal,
                "Uploaded",
                "Upload",
                format!("{message}; uploaded by {username}"),
            )
            .await;
        Ok(())
    }

    /// Counts an upload that passed authorization but was rejected, and publishes it as a
    /// Warning Event on the AppArtifact.
    async fn reject(&self, artifact: &AppArtifact, username: &str, failure: &Failure) {
        let result = if failure.reason == reason::VERSION_CONFLICT {
            "conflict"
        } else {
            "failed"
        };
        self.state.metrics.record_push(result, 0);
        Events::new(self.state.client.clone(), EVENT_REPORTER)
            .publish(
                &artifact.object_ref(&()),
                EventType::Warning,
                "UploadRejected",
                "Upload",
                format!("upload by {username} rejected: {}", failure.message),
            )
            .await;
    }
}

// === Authentication ===

/// Returns the token of an `Authorization: Bearer` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let missing = || {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "send a Kubernetes token as `Authorization: Bearer TOKEN`, for example from \
             `kubectl create token SERVICE_ACCOUNT`",
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

/// Asks the API server who the token belongs to.
async fn authenticate(client: &Client, token: &str) -> Result<UserInfo, Refusal> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            ..TokenReviewSpec::default()
        },
        ..TokenReview::default()
    };
    // kube's error for a failed create carries the API server's status message and no part of
    // the request body, so the message below cannot contain the token.
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|error| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "authentication_unavailable",
                format!("the gateway could not review the token: {error}"),
            )
        })?;
    match reviewed.status {
        Some(status) if status.authenticated == Some(true) => status.user.ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the API server accepted the token but named no user",
            )
        }),
        _ => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the Kubernetes API server did not accept the bearer token; it may be expired, \
             revoked or meant for another cluster",
        )),
    }
}

// === Request checks ===

/// Returns the upload source of the AppArtifact, or 409 naming the source it has instead.
fn upload_source<'a>(
    artifact: &'a AppArtifact,
    namespace: &str,
    name: &str,
) -> Result<&'a UploadSource, Refusal> {
    let conflict =
        |message: String| Refusal::new(StatusCode::CONFLICT, "not_an_upload_source", message);
    if artifact.metadata.deletion_timestamp.is_some() {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            "artifact_deleting",
            format!("AppArtifact {namespace}/{name} is being deleted"),
        ));
    }
    if let Some(upload) = &artifact.spec.source.upload {
        return Ok(upload);
    }
    let field = match SourceKind::of(&artifact.spec.source) {
        Some(SourceKind::Url(_)) => "spec.source.url",
        Some(SourceKind::ConfigMap { .. }) => "spec.source.configMapKeyRef",
        Some(SourceKind::Secret { .. }) => "spec.source.secretKeyRef",
        Some(SourceKind::Existing) => "spec.source.existing",
        Some(SourceKind::Upload) | None => "no source",
    };
    Err(conflict(format!(
        "AppArtifact {namespace}/{name} takes its JAR from {field}, so the operator fetches it; \
         set spec.source to `upload: {{}}` to upload the JAR through this API"
    )))
}

/// Returns the digest the upload must have: the spec's `sha256`, the request's declared digest,
/// or both when they agree.
fn expected_digest(source: &UploadSource, headers: &HeaderMap) -> Result<Option<Digest>, Refusal> {
    let pinned =
        pinned_digest(source.sha256.as_ref()).map_err(|failure| failure_refusal(&failure))?;
    let declared = declared_digest(headers)?;
    match (pinned, declared) {
        (Some(pinned), Some(declared)) if pinned != declared => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "digest_mismatch",
            format!(
                "the request declares digest {declared}, but spec.source.upload.sha256 expects \
                 {pinned}; nothing was stored"
            ),
        )),
        (pinned, declared) => Ok(pinned.or(declared)),
    }
}

/// Reads the digest the client declared for the body: the hex sha256 of `X-Content-SHA256`, or
/// the base64 `sha-256` entry of an RFC 3230 `Digest` header. Both must agree when both are set.
fn declared_digest(headers: &HeaderMap) -> Result<Option<Digest>, Refusal> {
    let invalid =
        |message: &str| Refusal::new(StatusCode::BAD_REQUEST, "invalid_digest_header", message);
    let from_hex = match headers.get(CONTENT_SHA256_HEADER) {
        None => None,
        Some(value) => {
            let text = value
                .to_str()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            let text = text.strip_prefix("sha256:").unwrap_or(&text);
            let digest = format!("sha256:{text}").parse::<Digest>().map_err(|_| {
                invalid("X-Content-SHA256 must be 64 hex digits, optionally prefixed with sha256:")
            })?;
            Some(digest)
        }
    };
    let from_digest = match headers.get("digest") {
        None => None,
        Some(value) => parse_digest_header(value.to_str().unwrap_or_default()).map_err(|()| {
            invalid("the Digest header has no valid sha-256 entry; send `Digest: sha-256=BASE64`")
        })?,
    };
    match (from_hex, from_digest) {
        (Some(hex), Some(digest)) if hex != digest => Err(invalid(
            "the X-Content-SHA256 and Digest headers name different digests",
        )),
        (hex, digest) => Ok(hex.or(digest)),
    }
}

/// Parses the `sha-256` entry of an RFC 3230 `Digest` header, such as
/// `SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=`. Entries of other algorithms are
/// skipped, and a header with only such entries declares no digest.
fn parse_digest_header(value: &str) -> Result<Option<Digest>, ()> {
    for entry in value.split(',') {
        let Some((algorithm, encoded)) = entry.trim().split_once('=') else {
            return Err(());
        };
        if !algorithm.eq_ignore_ascii_case("sha-256") {
            continue;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| ())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| ())?;
        return Ok(Some(Digest::from_bytes(bytes)));
    }
    Ok(None)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

// === Responses ===

/// Maps a failed check of the controller's vocabulary to a response.
fn failure_refusal(failure: &Failure) -> Refusal {
    let (status, code) = match failure.reason {
        reason::TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        reason::NOT_A_JAR => (StatusCode::UNPROCESSABLE_ENTITY, "not_a_jar"),
        reason::DIGEST_MISMATCH => (StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch"),
        reason::VERSION_CONFLICT => (StatusCode::CONFLICT, "version_conflict"),
        reason::TENANT_MISMATCH => (StatusCode::CONFLICT, "tenant_mismatch"),
        reason::NAMESPACE_NOT_ADMITTED => (StatusCode::CONFLICT, "namespace_not_admitted"),
        reason::REGISTRY_NOT_FOUND => (StatusCode::CONFLICT, "registry_not_found"),
        reason::INVALID_COORDINATES => (StatusCode::CONFLICT, "invalid_artifact"),
        reason::INVALID_SOURCE if !failure.fetch => (StatusCode::CONFLICT, "invalid_artifact"),
        reason::REGISTRY_NOT_READY => (StatusCode::SERVICE_UNAVAILABLE, "registry_not_ready"),
        reason::REGISTRY_UNAUTHORIZED => (StatusCode::BAD_GATEWAY, "registry_unauthorized"),
        _ if failure.fetch => (StatusCode::BAD_REQUEST, "upload_interrupted"),
        _ if failure.transient => (StatusCode::BAD_GATEWAY, "registry_unavailable"),
        _ => (StatusCode::BAD_GATEWAY, "registry_error"),
    };
    let message = if failure.reason == reason::VERSION_CONFLICT {
        format!(
            "{}. A pushed version is never replaced: upload the JAR under a new spec.version",
            failure.message
        )
    } else {
        failure.message.clone()
    };
    Refusal::new(status, code, message)
}

fn kube_refusal(error: &ControllerError) -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "kubernetes_unavailable",
        error.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    header::HeaderName::from_static(name),
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    fn refusal_reason<T: std::fmt::Debug>(result: Result<T, Refusal>) -> &'static str {
        match result {
            Ok(value) => panic!("expected a refusal, got {value:?}"),
            Err(refusal) => refusal.reason,
        }
    }

    #[test]
    fn bearer_token_read_from_header() {
        let bearer = headers(&[("authorization", "Bearer abc.def")]);
        assert_eq!(bearer_token(&bearer).ok(), Some("abc.def"));
        let lower_case = headers(&[("authorization", "bearer abc")]);
        assert_eq!(bearer_token(&lower_case).ok(), Some("abc"));
    }

    #[test]
    fn bearer_token_missing_or_other_scheme() {
        assert_eq!(
            refusal_reason(bearer_token(&HeaderMap::new())),
            "missing_token"
        );
        let basic = headers(&[("authorization", "Basic dXNlcjpwdw==")]);
        assert_eq!(refusal_reason(bearer_token(&basic)), "missing_token");
        let empty = headers(&[("authorization", "Bearer ")]);
        assert_eq!(refusal_reason(bearer_token(&empty)), "missing_token");
    }

    #[test]
    fn missing_token_message_hides_header() {
        let basic = headers(&[("authorization", "Basic dXNlcjpwdw==")]);
        let refusal = bearer_token(&basic).unwrap_err();
        assert!(
            !refusal.message.contains("dXNlcjpwdw"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn declared_digest_from_hex_header() {
        let digest = Digest::of(b"jar");
        let plain = headers(&[("x-content-sha256", &digest.hex())]);
        assert_eq!(declared_digest(&plain).ok(), Some(Some(digest)));
        let prefixed = headers(&[("x-content-sha256", &digest.to_string())]);
        assert_eq!(declared_digest(&prefixed).ok(), Some(Some(digest)));
        let invalid = headers(&[("x-content-sha256", "abc")]);
        assert_eq!(
            refusal_reason(declared_digest(&invalid)),
            "invalid_digest_header"
        );
    }

    #[test]
    fn declared_digest_from_digest_header() {
        let digest = Digest::of(b"jar");
        let encoded = base64::engine::general_purpose::STANDARD.encode(digest.as_bytes());
        let value = format!("md5=HUXZLQLMuI/KZ5KDcJPcOA==, SHA-256={encoded}");
        let found = declared_digest(&headers(&[("digest", &value)]));
        assert_eq!(found.ok(), Some(Some(digest)));
        let other_only = headers(&[("digest", "md5=HUXZLQLMuI/KZ5KDcJPcOA==")]);
        assert_eq!(declared_digest(&other_only).ok(), Some(None));
        let short = headers(&[("digest", "sha-256=AAAA")]);
        assert_eq!(
            refusal_reason(declared_digest(&short)),
            "invalid_digest_header"
        );
    }

    #[test]
    fn declared_digests_must_agree() {
        let first = Digest::of(b"one");
        let second = Digest::of(b"two");
        let encoded = base64::engine::general_purpose::STANDARD.encode(second.as_bytes());
        let both = headers(&[
            ("x-content-sha256", &first.hex()),
            ("digest", &format!("sha-256={encoded}")),
        ]);
        assert_eq!(
            refusal_reason(declared_digest(&both)),
            "invalid_digest_header"
        );
    }

    #[test]
    fn spec_pin_and_header_must_agree() {
        let pinned = Digest::of(b"one");
        let source = UploadSource {
            sha256: Some(pinned.hex()),
        };
        assert_eq!(
            expected_digest(&source, &HeaderMap::new()).ok(),
            Some(Some(pinned))
        );
        let other = headers(&[("x-content-sha256", &Digest::of(b"two").hex())]);
        assert_eq!(
            refusal_reason(expected_digest(&source, &other)),
            "digest_mismatch"
        );
    }

    #[test]
    fn content_failures_map_to_statuses() {
        let cases = [
            (
                reason::TOO_LARGE,
                true,
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
            ),
            (
                reason::NOT_A_JAR,
                true,
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_a_jar",
            ),
            (
                reason::DIGEST_MISMATCH,
                true,
                StatusCode::UNPROCESSABLE_ENTITY,
                "digest_mismatch",
            ),
            (
                reason::VERSION_CONFLICT,
                false,
                StatusCode::CONFLICT,
                "version_conflict",
            ),
            (
                reason::SOURCE_UNAVAILABLE,
                true,
                StatusCode::BAD_REQUEST,
                "upload_interrupted",
            ),
            (
                reason::TENANT_MISMATCH,
                false,
                StatusCode::CONFLICT,
                "tenant_mismatch",
            ),
        ];
        for (reason, fetch, status, code) in cases {
            let mut failure = Failure::permanent(reason, "failed");
            failure.fetch = fetch;
            let refusal = failure_refusal(&failure);
            assert_eq!(refusal.status, status, "{reason}");
            assert_eq!(refusal.reason, code, "{reason}");
        }
    }

    #[test]
    fn upload_command_names_url() {
        let command = upload_command(Some("https://gw.example.com/"), "team-a", "billing");
        assert!(
            command.contains("https://gw.example.com/v1/uploads/team-a/billing"),
            "{command}"
        );
        assert!(command.contains("-n team-a"), "{command}");
        let placeholder = upload_command(None, "team-a", "billing");
        assert!(
            placeholder.contains("https://<gateway>/v1/uploads/team-a/billing"),
            "{placeholder}"
        );
    }
}
