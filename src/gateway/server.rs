//! The gateway's HTTP listener: `GET|HEAD /v1/artifacts/{namespace}/{name}/{digest}` with a
//! pre-signed query.
//!
//! A request passes, in this order: the signature check ([`signing::verify`], 403 with a
//! reason code), the revocation check (the AppArtifact still exists and its
//! `status.artifact.digest` is the URL's digest, else 410), and the registry lookup with the
//! registry's read-only account (404 when the blob is gone, 502 when the registry fails). The
//! blob then streams to the client, verified against its digest; a transfer whose bytes do not
//! match is cut off, so the client sees a short body and never a complete wrong file.
//!
//! AppArtifacts come from a reflector cache, so a request costs no API server read for them.
//!
//! The same listener serves the upload API, `PUT /v1/uploads/{namespace}/{name}` (see
//! [`upload`]).

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use futures::StreamExt as _;
use jiff::Timestamp;
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt as _,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde::Serialize;
use tracing::{info, instrument, warn};

use super::{
    keys::KeyRingHandle,
    range::{self, ByteRange},
    registry_clients::RegistryClients,
    signing::{self, Rejection, UrlSignature, UrlTarget},
    upload,
};
use crate::{
    crd::{AppArtifact, ArtifactRegistry, StoredArtifact},
    oci::{ArtifactCoordinates, ContentSummary, Digest, RegistryClient},
    registry::access::{self, Account},
    telemetry::Metrics,
};

/// State shared by the gateway's requests.
pub struct GatewayState {
    pub client: Client,
    pub artifacts: Store<AppArtifact>,
    pub keys: KeyRingHandle,
    pub metrics: Arc<Metrics>,
    /// Registry clients kept between downloads; `RegistryClients::default()` starts empty.
    pub registry_clients: RegistryClients,
}

/// Builds the gateway's routes.
pub fn router(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route(
            "/v1/artifacts/{namespace}/{name}/{digest}",
            get(serve_artifact),
        )
        .route(upload::ROUTE, put(upload::receive_upload))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Rejects a request for a path without a route with the JSON body of every other refusal,
/// instead of axum's empty 404.
async fn route_not_found(
    State(state): State<Arc<GatewayState>>,
    method: Method,
    uri: Uri,
) -> Response {
    unknown_request(&state, StatusCode::NOT_FOUND, "not_found", &method, &uri)
}

/// Rejects a request with a method its route does not serve, instead of axum's empty 405.
async fn method_not_allowed(
    State(state): State<Arc<GatewayState>>,
    method: Method,
    uri: Uri,
) -> Response {
    let status = StatusCode::METHOD_NOT_ALLOWED;
    unknown_request(&state, status, "method_not_allowed", &method, &uri)
}

fn unknown_request(
    state: &GatewayState,
    status: StatusCode,
    reason: &'static str,
    method: &Method,
    uri: &Uri,
) -> Response {
    let message = format!(
        "the gateway serves no {method} {}; it serves GET and HEAD \
         /v1/artifacts/{{namespace}}/{{name}}/{{digest}} with a signed query, and PUT \
         /v1/uploads/{{namespace}}/{{name}}",
        uri.path()
    );
    refusal_response(&state.metrics, Refusal::new(status, reason, message))
}

/// Starts a reflector of AppArtifacts (in `namespace`, or all namespaces) and waits until its
/// first list is complete, so that the gateway never reads an empty cache.
pub async fn artifact_cache(
    client: Client,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Store<AppArtifact> {
    let api: Api<AppArtifact> = match namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    };
    // The gateway and the webhook read only spec and status. Dropping managedFields keeps the
    // cache smaller: with 5,000 AppArtifacts watched the operator's RSS was 145 MiB before
    // (BENCHMARKS.md, controllers).
    let events = watcher(api, watcher::Config::default())
        .modify(|artifact| artifact.metadata.managed_fields = None);
    crate::cluster::start_cache("AppArtifact", events, shutdown).await
}

/// Serves the router on `listener` until `shutdown` completes; requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Fix offered to a client whose URL fails the signature check.
const NEW_URL_HINT: &str = "use the URL exactly as the webhook injected it, or recreate the pod \
                            to have a new one signed";

/// Reads `kid`, `exp` and `sig` from a signed URL's query.
///
/// The query is parsed by hand instead of with axum's `Query`, whose rejection of a repeated
/// parameter is a plain-text 400 that names no fix. Every problem here is a 403
/// `malformed_signature` whose message names the parameter. A repeated parameter is refused
/// rather than resolved, because two values leave it open which one the signer meant.
fn parse_signature(query: Option<&str>) -> Result<UrlSignature, Refusal> {
    let malformed = |problem: String| {
        Refusal::new(
            StatusCode::FORBIDDEN,
            Rejection::Malformed.code(),
            format!("{problem}; {NEW_URL_HINT}"),
        )
    };
    let mut values: [(&str, Option<String>); 3] = [("kid", None), ("exp", None), ("sig", None)];
    let pairs = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes());
    for (name, value) in pairs {
        let Some((_, slot)) = values.iter_mut().find(|(known, _)| *known == name) else {
            continue;
        };
        if slot.is_some() {
            return Err(malformed(format!(
                "the URL has the {name} parameter more than once"
            )));
        }
        *slot = Some(value.into_owned());
    }
    let [(_, kid), (_, exp), (_, sig)] = values;
    let missing = |name: &str| malformed(format!("the URL's {name} parameter is missing"));
    let exp = exp.ok_or_else(|| missing("exp"))?;
    Ok(UrlSignature {
        kid: kid.ok_or_else(|| missing("kid"))?,
        exp: signing::parse_expiry(&exp).ok_or_else(|| {
            malformed(format!(
                "the URL's exp parameter {exp:?} is not an expiry in Unix seconds (digits only, \
                 no sign or leading zero)"
            ))
        })?,
        sig: sig.ok_or_else(|| missing("sig"))?,
    })
}

/// Body of every error response: a stable reason code and a sentence for humans.
#[derive(Debug, Serialize)]
struct ErrorBody {
    reason: &'static str,
    message: String,
}

/// A request that ended without content.
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) reason: &'static str,
    pub(super) message: String,
}

impl Refusal {
    pub(super) fn new(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            reason: self.reason,
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

#[instrument(skip_all, fields(artifact = %format!("{namespace}/{name}"), %method))]
async fn serve_artifact(
    State(state): State<Arc<GatewayState>>,
    method: Method,
    Path((namespace, name, digest)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let target = UrlTarget {
        namespace: &namespace,
        name: &name,
        digest: &digest,
    };
    let result = respond(&state, &method, &target, query, &headers).await;
    result.unwrap_or_else(|refusal| refusal_response(&state.metrics, refusal))
}

/// Logs and counts a refusal, and turns it into its response.
pub(super) fn refusal_response(metrics: &Metrics, refusal: Refusal) -> Response {
    if refusal.status.is_server_error() {
        warn!(status = %refusal.status, reason = refusal.reason, message = %refusal.message, "Gateway request failed");
    } else {
        info!(status = %refusal.status, reason = refusal.reason, "Gateway request refused");
    }
    metrics.record_gateway(refusal.status.as_u16(), refusal.reason);
    refusal.into_response()
}

async fn respond(
    state: &GatewayState,
    method: &Method,
    target: &UrlTarget<'_>,
    query: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, Refusal> {
    let signature = parse_signature(query.as_deref())?;
    signing::verify(&state.keys.get(), target, &signature, Timestamp::now())
        .map_err(|error| rejection(error, &signature))?;

    let artifact = current_artifact(&state.artifacts, target)?;
    let content = ContentSummary {
        digest: target.digest.parse::<Digest>().map_err(|_| {
            Refusal::new(
                StatusCode::FORBIDDEN,
                Rejection::Malformed.code(),
                format!(
                    "the URL's digest {:?} is not sha256: and 64 hex digits; {NEW_URL_HINT}",
                    target.digest
                ),
            )
        })?,
        size: u64::try_from(artifact.size).unwrap_or(0),
    };
    let range = range::parse(
        headers
            .get(header::RANGE)
            .and_then(|value| value.to_str().ok()),
        content.size,
    );
    let base = base_headers(&artifact, &content, &file_name(state, target));

    if range == ByteRange::Unsatisfiable {
        let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
        response.headers_mut().extend(base);
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes */{}", content.size)),
        );
        state.metrics.record_gateway(416, "range_not_satisfiable");
        return Ok(response);
    }
    let (status, length, content_range) = match range {
        ByteRange::Partial { start, end } => (
            StatusCode::PARTIAL_CONTENT,
            end - start + 1,
            Some(format!("bytes {start}-{end}/{}", content.size)),
        ),
        _ => (StatusCode::OK, content.size, None),
    };

    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let (registry_key, coordinates) = registry_of(state, target)?;
        let repository = coordinates.reference().repository;
        let registry = registry_client(state, &registry_key).await?;
        let stream = match range {
            ByteRange::Partial { start, end } => registry
                .pull_blob_range(&repository, content, start, end)
                .await
                .map(|stream| stream.boxed()),
            _ => registry
                .pull_blob(&repository, content)
                .await
                .map(|stream| stream.boxed()),
        }
        .map_err(|error| {
            state.registry_clients.invalidate(&registry_key.to_string());
            if error.is_not_found() {
                Refusal::new(
                    StatusCode::NOT_FOUND,
                    "blob_not_found",
                    format!(
                        "the registry has no blob {} for {coordinates}",
                        target.digest
                    ),
                )
            } else {
                Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    "registry_unavailable",
                    error.to_string(),
                )
            }
        })?;
        let metrics = state.metrics.clone();
        let counted = stream.inspect(move |chunk| match chunk {
            Ok(bytes) => metrics.record_gateway_bytes(bytes.len() as u64),
            Err(error) => warn!(%error, "Gateway transfer aborted"),
        });
        Body::from_stream(HoldLast::new(counted))
    };

    let mut response = Response::new(body);
    *response.status_mut() = status;
    let response_headers = response.headers_mut();
    response_headers.extend(base);
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(content_range) = content_range {
        response_headers.insert(header::CONTENT_RANGE, header_value(&content_range));
    }
    state.metrics.record_gateway(
        status.as_u16(),
        if method == Method::HEAD {
            "head"
        } else {
            "sent"
        },
    );
    Ok(response)
}

/// Turns a failed verification into its refusal. The message may repeat the URL's `exp`, and
/// never a key id: a key id that the client sent may embed one of the ring's.
fn rejection(rejection: Rejection, signature: &UrlSignature) -> Refusal {
    let message = match rejection {
        Rejection::Malformed => {
            format!("the URL's sig parameter is not unpadded base64url; {NEW_URL_HINT}")
        }
        Rejection::UnknownKey => format!(
            "the URL's kid names no key the gateway knows, for example a key retired more than \
             {} days ago; {NEW_URL_HINT}",
            signing::MAX_TTL.as_secs() / 86_400
        ),
        Rejection::Expired => format!(
            "the URL expired at exp={}; recreate the pod to have a new one signed",
            signature.exp
        ),
        Rejection::ExpiryTooFar => format!(
            "the URL's expiry exp={} lies further ahead than the maximum lifetime of {} days; \
             {NEW_URL_HINT}",
            signature.exp,
            signing::MAX_TTL.as_secs() / 86_400
        ),
        Rejection::InvalidSignature => format!(
            "the URL's signature does not match its namespace, name, digest and expiry; \
             {NEW_URL_HINT}"
        ),
    };
    Refusal::new(StatusCode::FORBIDDEN, rejection.code(), message)
}

/// Returns the artifact that the URL names, or 410 when the URL is revoked: the AppArtifact is
/// gone or stores another digest now.
fn current_artifact(
    artifacts: &Store<AppArtifact>,
    target: &UrlTarget<'_>,
) -> Result<StoredArtifact, Refusal> {
    let reference = ObjectRef::<AppArtifact>::new(target.name).within(target.namespace);
    let revoked = |message: String| Refusal::new(StatusCode::GONE, "revoked", message);
    let Some(object) = artifacts.get(&reference) else {
        return Err(revoked(format!(
            "AppArtifact {}/{} no longer exists",
            target.namespace, target.name
        )));
    };
    match object
        .status
        .as_ref()
        .and_then(|status| status.artifact.clone())
    {
        Some(artifact) if artifact.digest == target.digest => Ok(artifact),
        _ => Err(revoked(format!(
            "AppArtifact {}/{} no longer stores digest {}",
            target.namespace, target.name, target.digest
        ))),
    }
}

/// Reads the AppArtifact's registry. The registry and its credentials are read on each request,
/// so that a rotated password applies at once.
/// Returns the key of the ArtifactRegistry that stores the URL's AppArtifact, and the
/// artifact's coordinates.
fn registry_of(
    state: &GatewayState,
    target: &UrlTarget<'_>,
) -> Result<(ObjectRef<ArtifactRegistry>, ArtifactCoordinates), Refusal> {
    let reference = ObjectRef::<AppArtifact>::new(target.name).within(target.namespace);
    let object = state.artifacts.get(&reference).ok_or_else(|| {
        Refusal::new(
            StatusCode::GONE,
            "revoked",
            "the AppArtifact no longer exists",
        )
    })?;
    let spec = &object.spec;
    let coordinates = ArtifactCoordinates::new(&spec.tenant_id, &spec.app_id, &spec.version)
        .map_err(|error| {
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                "invalid_artifact",
                error.to_string(),
            )
        })?;
    let registry_namespace = spec
        .registry_ref
        .namespace
        .as_deref()
        .unwrap_or(target.namespace);
    let registry = ObjectRef::new(&spec.registry_ref.name).within(registry_namespace);
    Ok((registry, coordinates))
}

/// Returns a client of the registry with the gateway's read-only account, kept from an earlier
/// download or built from the ArtifactRegistry and its Secret.
async fn registry_client(
    state: &GatewayState,
    key: &ObjectRef<ArtifactRegistry>,
) -> Result<RegistryClient, Refusal> {
    let cache_key = key.to_string();
    if let Some(client) = state.registry_clients.get(&cache_key, Instant::now()) {
        return Ok(client);
    }

    let namespace = key.namespace.as_deref().unwrap_or_default();
    let unavailable =
        |message: String| Refusal::new(StatusCode::BAD_GATEWAY, "registry_unavailable", message);
    let registry = Api::<ArtifactRegistry>::namespaced(state.client.clone(), namespace)
        .get_opt(&key.name)
        .await
        .map_err(|error| unavailable(error.to_string()))?
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "registry_not_found",
                format!("ArtifactRegistry {namespace}/{} not found", key.name),
            )
        })?;
    let client = access::registry_client(&state.client, &registry, Account::Gateway)
        .await
        .map_err(|error| unavailable(error.to_string()))?;
    state
        .registry_clients
        .insert(&cache_key, client.clone(), Instant::now());
    Ok(client)
}

fn file_name(state: &GatewayState, target: &UrlTarget<'_>) -> String {
    let reference = ObjectRef::<AppArtifact>::new(target.name).within(target.namespace);
    state
        .artifacts
        .get(&reference)
        .map(|object| {
            object
                .spec
                .file_name
                .clone()
                .unwrap_or_else(|| format!("{}-{}.jar", object.spec.app_id, object.spec.version))
        })
        .unwrap_or_else(|| format!("{}.jar", target.name))
}

/// Headers of every successful response: the JAR's type, the digest as strong ETag, byte
/// ranges, and a file name for tools that save under the server's name.
fn base_headers(artifact: &StoredArtifact, content: &ContentSummary, file_name: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, header_value(&artifact.media_type));
    headers.insert(
        header::ETAG,
        header_value(&format!("\"{}\"", content.digest)),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-transform"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        header_value(&format!("attachment; filename=\"{file_name}\"")),
    );
    headers
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Holds back the last chunk of a stream until the stream ends without error.
///
/// The verified blob stream reports a digest mismatch only after its last byte. Without the
/// hold-back a client would by then have received `Content-Length` bytes and take the wrong
/// file as complete; with it, the client misses the end of the body and sees a failed transfer.
struct HoldLast<S> {
    inner: S,
    held: Option<bytes::Bytes>,
    done: bool,
}

impl<S> HoldLast<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            held: None,
            done: false,
        }
    }
}

impl<S, E> futures::Stream for HoldLast<S>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    type Item = Result<bytes::Bytes, E>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;

        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(chunk)) => {
                    if let Some(previous) = self.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Some(Err(error)) => {
                    self.done = true;
                    self.held = None;
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    self.done = true;
                    return Poll::Ready(self.held.take().map(Ok));
                }
            }
        }
    }
}
