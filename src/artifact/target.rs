//! The registry an AppArtifact is pushed to, and the put of a checked JAR stream into it.
//!
//! The controller and the gateway's upload API both push through these functions, so an upload
//! passes the same checks as a URL source. The namespace must belong to the AppArtifact's
//! tenant, and the ArtifactRegistry must exist, admit the namespace and be Ready. The content
//! must fit the registry's size limit, start with the ZIP signature and match an optional
//! SHA-256 pin.

use std::sync::Arc;

use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, ResourceExt};
use tokio_util::io::StreamReader;

use super::{
    checks::ContentChecks,
    controller::{Error, key},
    source::ContentStream,
    status::{self, Failure, reason, registry_failure, store_failure},
    sync::{check_tenant, max_artifact_size},
};
use crate::{
    conditions,
    crd::{AppArtifact, AppArtifactSpec, ArtifactRegistry},
    oci::{ArtifactCoordinates, Digest, JarArtifact, JarMetadata, RegistryClient},
    registry::access,
    store::{ArtifactStore as _, OciArtifactStore, locks::VersionLocks},
};

/// A registry that admitted the AppArtifact, with a store logged in as the operator.
pub struct Target {
    pub registry: ArtifactRegistry,
    pub store: OciArtifactStore,
}

impl Target {
    pub fn client(&self) -> &RegistryClient {
        self.store.client()
    }

    /// Returns the checks for content pushed to this registry: its size limit and `sha256`.
    pub fn content_checks(&self, sha256: Option<Digest>) -> Result<ContentChecks, Failure> {
        Ok(ContentChecks {
            max_size: max_artifact_size(&self.registry)?,
            sha256,
        })
    }
}

/// Checks tenancy and finds the AppArtifact's registry.
///
/// `locks` serialise puts of one version. Callers in one process pass the same set, so the
/// controller and the upload API never tag the same version at the same time.
///
/// # Errors
///
/// [`Error::Kube`] when the API server cannot be read. A check that fails returns `Ok(Err)`
/// with the failure for the status.
pub async fn resolve(
    client: &Client,
    artifact: &AppArtifact,
    locks: Arc<VersionLocks>,
) -> Result<Result<Target, Failure>, Error> {
    let namespace = artifact.namespace().unwrap_or_default();
    let kube_error = |action: &'static str| {
        move |source| Error::Kube {
            action,
            artifact: key(artifact),
            source,
        }
    };
    let namespace_object = Api::<Namespace>::all(client.clone())
        .get(&namespace)
        .await
        .map_err(kube_error("read the namespace"))?;
    let labels = namespace_object.labels();
    if let Err(failure) = check_tenant(&artifact.spec.tenant_id, &namespace, labels) {
        return Ok(Err(failure));
    }

    let reference = &artifact.spec.registry_ref;
    let registry_namespace = reference.namespace.as_deref().unwrap_or(&namespace);
    let registry = Api::<ArtifactRegistry>::namespaced(client.clone(), registry_namespace)
        .get_opt(&reference.name)
        .await
        .map_err(kube_error("read the ArtifactRegistry"))?;
    let Some(registry) = registry else {
        return Ok(Err(Failure::permanent(
            reason::REGISTRY_NOT_FOUND,
            format!(
                "ArtifactRegistry {registry_namespace}/{} not found; create it or fix \
                 spec.registryRef",
                reference.name
            ),
        )));
    };
    if !access::admits_namespace(&registry, &namespace, labels) {
        return Ok(Err(Failure::permanent(
            reason::NAMESPACE_NOT_ADMITTED,
            format!(
                "ArtifactRegistry {} does not admit namespace {}: its \
                 spec.tenancy.namespaceSelector does not match the namespace's labels (without \
                 a selector only the registry's own namespace is admitted). Ask the registry's \
                 owner to admit the namespace",
                registry_key(&registry),
                namespace
            ),
        )));
    }
    let registry_status = registry.status.clone().unwrap_or_default();
    if !conditions::is_true(&registry_status.conditions, conditions::READY) {
        let detail = conditions::find(&registry_status.conditions, conditions::READY)
            .map_or("it has no Ready condition yet".to_owned(), |ready| {
                format!("{}: {}", ready.reason, ready.message)
            });
        return Ok(Err(Failure::transient(
            reason::REGISTRY_NOT_READY,
            format!(
                "ArtifactRegistry {} is not ready ({detail})",
                registry_key(&registry)
            ),
        )));
    }

    let registry_client = match access::operator_client(client, &registry).await {
        Ok(registry_client) => registry_client,
        Err(error) => return Ok(Err(status::access_failure(&error))),
    };
    let store = OciArtifactStore::with_locks(registry_client, locks);
    Ok(Ok(Target { registry, store }))
}

/// Puts a checked content stream into the registry, and reads back the artifact it stored.
///
/// The store pushes the JAR when the version is new. When the version exists, the store hashes
/// the stream without uploading it and returns the existing artifact for the same digest or a
/// `VersionConflict` failure for another one. `pin` is checked again by the store, which
/// rejects content that differs from it even when the stream's own checks were skipped.
pub async fn put(
    target: &Target,
    coordinates: &ArtifactCoordinates,
    spec: &AppArtifactSpec,
    stream: ContentStream,
    pin: Option<&Digest>,
    source_url: Option<&str>,
) -> Result<JarArtifact, Failure> {
    let file_name = spec.jar_file_name();
    let mut metadata = JarMetadata::new(&file_name).map_err(|error| {
        Failure::permanent(reason::INVALID_SOURCE, format!("spec.fileName: {error}"))
    })?;
    if let Some(url) = source_url
        && let Ok(with_url) = metadata.clone().with_source_url(url)
    {
        metadata = with_url;
    }

    let reader = StreamReader::new(stream.map_err(std::io::Error::from));
    target
        .store
        .put(coordinates, reader, pin, &metadata)
        .await
        .map_err(|error| store_failure(&error))?;
    target
        .client()
        .fetch_jar(coordinates)
        .await
        .map_err(|error| registry_failure(&error))
}

/// Returns `namespace/name` of an ArtifactRegistry for messages.
pub fn registry_key(registry: &ArtifactRegistry) -> String {
    format!(
        "{}/{}",
        registry.namespace().unwrap_or_default(),
        registry.name_any()
    )
}
