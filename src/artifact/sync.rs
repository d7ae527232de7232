//! One reconcile of an AppArtifact that is not being deleted: check tenancy, find the
//! registry, compare what the registry stores with what the AppArtifact reported, and fetch and
//! push the JAR when the registry lacks it.
//!
//! A version is never overwritten. When the tag exists, the source is hashed (not uploaded) and
//! either adopted (same digest) or reported as a `VersionConflict`.

use futures::TryStreamExt as _;
use k8s_openapi::{api::core::v1::Namespace, jiff::Timestamp};
use kube::{Api, Resource, ResourceExt, runtime::events::EventType};
use tokio_util::io::StreamReader;
use tracing::{debug, info};

use super::{
    address_policy::AddressPolicy,
    checks::{ContentChecks, DEFAULT_MAX_SIZE},
    content::{self, SourceKind},
    controller::{Context, Error, Note},
    source::UrlFetcher,
    status::{
        self, Failure, Observation, absent, present, reason, registry_failure, store_failure,
        stored_artifact,
    },
};
use crate::{
    conditions::{self, Outcome},
    crd::{AppArtifact, ArtifactRegistry, StoredArtifact, TENANT_LABEL},
    oci::{ArtifactCoordinates, Digest, JarArtifact, JarMetadata, RegistryClient},
    registry::{access, resources::quantity_bytes},
    store::{ArtifactStore as _, OciArtifactStore},
};

/// The result of one reconcile: the observation for the status and the Events to publish.
pub struct Report {
    pub observation: Observation,
    pub notes: Vec<Note>,
}

/// A registry that admitted the AppArtifact, with a client logged in as the operator.
struct Target {
    registry: ArtifactRegistry,
    store: OciArtifactStore,
}

impl Target {
    fn client(&self) -> &RegistryClient {
        self.store.client()
    }
}

/// State of one reconcile.
struct Sync<'a> {
    artifact: &'a AppArtifact,
    context: &'a Context,
    namespace: String,
    previous: Option<StoredArtifact>,
    notes: Vec<Note>,
}

/// Reconciles an AppArtifact that is not being deleted.
///
/// # Errors
///
/// [`Error::Kube`] when the API server cannot be read; every other failure becomes part of the
/// observation.
pub async fn reconcile(artifact: &AppArtifact, context: &Context) -> Result<Report, Error> {
    let mut sync = Sync {
        artifact,
        context,
        namespace: artifact.namespace().unwrap_or_default(),
        previous: artifact.status.as_ref().and_then(|s| s.artifact.clone()),
        notes: Vec::new(),
    };
    let observation = match sync.run().await? {
        Ok(observation) => observation,
        Err(failure) => Observation::failed(&failure, sync.previous.clone()),
    };
    Ok(Report {
        observation,
        notes: sync.notes,
    })
}

/// Returns the coordinates of the AppArtifact.
pub fn coordinates(artifact: &AppArtifact) -> Result<ArtifactCoordinates, Failure> {
    let spec = &artifact.spec;
    ArtifactCoordinates::new(&spec.tenant_id, &spec.app_id, &spec.version)
        .map_err(|error| Failure::permanent(reason::INVALID_COORDINATES, error.to_string()))
}

/// Checks that the namespace belongs to the AppArtifact's tenant.
pub fn check_tenant(
    tenant_id: &str,
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<(), Failure> {
    match labels.get(TENANT_LABEL) {
        Some(label) if label == tenant_id => Ok(()),
        Some(label) => Err(Failure::permanent(
            reason::TENANT_MISMATCH,
            format!(
                "spec.tenantId is {tenant_id:?}, but namespace {namespace} belongs to tenant \
                 {label:?} (label {TENANT_LABEL}); nothing was pushed. Create the AppArtifact in \
                 a namespace of tenant {tenant_id:?}"
            ),
        )),
        None => Err(Failure::permanent(
            reason::TENANT_MISMATCH,
            format!(
                "namespace {namespace} has no label {TENANT_LABEL}, so it belongs to no tenant; \
                 nothing was pushed. Label it with {TENANT_LABEL}={tenant_id} if it belongs to \
                 that tenant"
            ),
        )),
    }
}

/// Returns the size limit of JARs for a registry.
pub fn max_artifact_size(registry: &ArtifactRegistry) -> Result<u64, Failure> {
    let Some(quantity) = registry
        .spec
        .sources
        .as_ref()
        .and_then(|sources| sources.max_artifact_size.as_ref())
    else {
        return Ok(DEFAULT_MAX_SIZE);
    };
    quantity_bytes(quantity)
        .and_then(|bytes| u64::try_from(bytes).ok())
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| {
            Failure::permanent(
                reason::REGISTRY_ERROR,
                format!(
                    "spec.sources.maxArtifactSize {:?} of ArtifactRegistry {} is not a positive \
                     size; set it to a quantity such as 512Mi",
                    quantity.0,
                    registry_key(registry)
                ),
            )
        })
}

/// Builds the address policy of URL sources for a registry: the operator's policy restricted
/// to the registry's allowed hosts.
pub fn registry_address_policy(base: &AddressPolicy, registry: &ArtifactRegistry) -> AddressPolicy {
    let allowed = registry
        .spec
        .sources
        .iter()
        .flat_map(|sources| sources.allowed_hosts.iter());
    allowed.fold(base.clone(), |policy, entry| policy.allow(entry))
}

fn registry_key(registry: &ArtifactRegistry) -> String {
    format!(
        "{}/{}",
        registry.namespace().unwrap_or_default(),
        registry.name_any()
    )
}

/// Parses a pinned sha256 from the spec, which the CRD schema restricts to 64 hex digits.
fn pinned_digest(pin: Option<&String>) -> Result<Option<Digest>, Failure> {
    pin.map(|hex| {
        format!("sha256:{hex}").parse::<Digest>().map_err(|error| {
            Failure::permanent(
                reason::INVALID_SOURCE,
                format!("invalid sha256 pin: {error}"),
            )
        })
    })
    .transpose()
}

impl Sync<'_> {
    fn kube_error(&self, action: &'static str) -> impl FnOnce(kube::Error) -> Error + '_ {
        move |source| Error::Kube {
            action,
            artifact: format!("{}/{}", self.namespace, self.artifact.name_any()),
            source,
        }
    }

    fn note(&mut self, type_: EventType, reason: &str, message: String) {
        self.notes.push(Note {
            type_,
            reason: reason.to_owned(),
            message,
        });
    }

    async fn run(&mut self) -> Result<Result<Observation, Failure>, Error> {
        let coordinates = match coordinates(self.artifact) {
            Ok(coordinates) => coordinates,
            Err(failure) => return Ok(Err(failure)),
        };
        let target = match self.target().await? {
            Ok(target) => target,
            Err(failure) => return Ok(Err(failure)),
        };
        Ok(self.sync(&target, &coordinates).await)
    }

    /// Checks tenancy and finds the registry.
    async fn target(&mut self) -> Result<Result<Target, Failure>, Error> {
        let client = &self.context.client;
        let namespace = Api::<Namespace>::all(client.clone())
            .get(&self.namespace)
            .await
            .map_err(self.kube_error("read the namespace"))?;
        let labels = namespace.labels();
        if let Err(failure) = check_tenant(&self.artifact.spec.tenant_id, &self.namespace, labels) {
            return Ok(Err(failure));
        }

        let reference = &self.artifact.spec.registry_ref;
        let registry_namespace = reference.namespace.as_deref().unwrap_or(&self.namespace);
        let registry = Api::<ArtifactRegistry>::namespaced(client.clone(), registry_namespace)
            .get_opt(&reference.name)
            .await
            .map_err(self.kube_error("read the ArtifactRegistry"))?;
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
        if !access::admits_namespace(&registry, &self.namespace, labels) {
            return Ok(Err(Failure::permanent(
                reason::NAMESPACE_NOT_ADMITTED,
                format!(
                    "ArtifactRegistry {} does not admit namespace {}: its \
                     spec.tenancy.namespaceSelector does not match the namespace's labels (without \
                     a selector only the registry's own namespace is admitted). Ask the registry's \
                     owner to admit the namespace",
                    registry_key(&registry),
                    self.namespace
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
        let store = OciArtifactStore::with_locks(registry_client, self.context.locks.clone());
        Ok(Ok(Target { registry, store }))
    }

    /// Compares the registry with the status, and pushes when needed.
    async fn sync(
        &mut self,
        target: &Target,
        coordinates: &ArtifactCoordinates,
    ) -> Result<Observation, Failure> {
        let reference = coordinates.reference().to_string();
        match target.client().fetch_jar(coordinates).await {
            Ok(jar) => self.sync_present(target, coordinates, jar).await,
            Err(error) if error.is_not_found() => {
                let in_storage = if self.previous.is_some() {
                    absent(
                        reason::MISSING,
                        format!("{reference} is no longer in the registry"),
                    )
                } else {
                    absent(
                        reason::NOT_FOUND,
                        format!("{reference} is not in the registry yet"),
                    )
                };
                self.sync_missing(target, coordinates)
                    .await
                    .map_err(|failure| failure.or_storage(in_storage))
            }
            Err(error) => Err(registry_failure(&error)),
        }
    }

    /// The registry has the version: verify it, adopt it, or detect a conflict.
    async fn sync_present(
        &mut self,
        target: &Target,
        coordinates: &ArtifactCoordinates,
        jar: JarArtifact,
    ) -> Result<Observation, Failure> {
        let reference = coordinates.reference().to_string();
        let repository = coordinates.reference().repository;
        let blob = target
            .client()
            .blob_size(&repository, &jar.layer.digest)
            .await
            .map_err(|error| registry_failure(&error))?;
        if blob.is_none() {
            return Err(Failure::permanent(
                reason::MISSING,
                format!(
                    "the manifest of {reference} exists but its JAR blob {} is gone; delete the \
                     tag so that the operator pushes the version again",
                    jar.layer.digest
                ),
            )
            .with_storage(absent(
                reason::MISSING,
                format!("the JAR blob of {reference} is missing"),
            )));
        }

        let spec = &self.artifact.spec;
        let host = target.client().registry().to_owned();
        let now = Timestamp::now();
        let digest = jar.layer.digest.to_string();
        let generation_seen = self
            .artifact
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            == self.artifact.meta().generation;

        if let Some(existing) = &spec.source.existing {
            let pin = pinned_digest(existing.sha256.as_ref())?;
            if let Some(pin) = pin.filter(|pin| *pin != jar.layer.digest) {
                return Err(Failure::permanent(
                    reason::DIGEST_MISMATCH,
                    format!(
                        "the registry stores {reference} with digest {digest}, but \
                         spec.source.existing.sha256 expects {pin}; nothing was changed"
                    ),
                )
                .with_storage(present(&reference)));
            }
            return Ok(self.adopted_or_verified(&host, &reference, &jar, now));
        }

        match &self.previous {
            Some(previous) if previous.digest == digest && generation_seen => {
                debug!(%reference, "artifact verified in the registry");
                Ok(self.verified(&host, &reference, &jar, previous, now))
            }
            Some(previous) if previous.digest != digest => Err(Failure::permanent(
                reason::REPLACED,
                format!(
                    "the registry stores {reference} with digest {digest}, but this AppArtifact \
                     stored digest {}; the tag was replaced outside the operator, which leaves \
                     it alone. Restore the original content or delete the tag",
                    previous.digest
                ),
            )
            .with_storage(present(&reference))),
            _ if matches!(SourceKind::of(&spec.source), Some(SourceKind::Upload)) => {
                Ok(self.adopted_or_verified(&host, &reference, &jar, now))
            }
            _ => {
                // A new object, or a changed spec: the source must match the stored version.
                let stored = self
                    .fetch_and_put(target, coordinates)
                    .await
                    .map_err(|failure| failure.with_storage(present(&reference)))?;
                self.note(
                    EventType::Normal,
                    "Adopted",
                    format!("{reference} already held the source's content with digest {digest}"),
                );
                self.context.metrics.record_push("adopted", 0);
                Ok(ready(
                    reason::ADOPTED,
                    format!("adopted {reference} with digest {}", stored.layer.digest),
                    &reference,
                    stored_artifact(&host, &reference, &stored, now),
                ))
            }
        }
    }

    fn adopted_or_verified(
        &mut self,
        host: &str,
        reference: &str,
        jar: &JarArtifact,
        now: Timestamp,
    ) -> Observation {
        let digest = jar.layer.digest.to_string();
        match &self.previous {
            Some(previous) if previous.digest == digest => {
                self.verified(host, reference, jar, previous, now)
            }
            _ => {
                self.note(
                    EventType::Normal,
                    "Adopted",
                    format!("adopted {reference} with digest {digest} from the registry"),
                );
                self.context.metrics.record_push("adopted", 0);
                ready(
                    reason::ADOPTED,
                    format!("adopted {reference} with digest {digest}"),
                    reference,
                    stored_artifact(host, reference, jar, now),
                )
            }
        }
    }

    /// Reports an artifact found as it was reported before. A `Ready` condition that is already
    /// true keeps its reason and message, such as `ArtifactPushed`, so that a check that finds
    /// nothing new writes no status.
    fn verified(
        &self,
        host: &str,
        reference: &str,
        jar: &JarArtifact,
        previous: &StoredArtifact,
        now: Timestamp,
    ) -> Observation {
        let mut artifact = stored_artifact(host, reference, jar, now);
        artifact.last_update_time = previous.last_update_time.clone();
        let conditions = self
            .artifact
            .status
            .as_ref()
            .map(|status| status.conditions.as_slice())
            .unwrap_or_default();
        let (reason, message) = match conditions::find(conditions, conditions::READY) {
            Some(ready) if ready.status == "True" => (ready.reason.clone(), ready.message.clone()),
            _ => (
                reason::VERIFIED.to_owned(),
                format!(
                    "{reference} is in the registry with digest {}",
                    jar.layer.digest
                ),
            ),
        };
        ready(&reason, message, reference, artifact)
    }

    /// The registry lacks the version: push it from the source.
    async fn sync_missing(
        &mut self,
        target: &Target,
        coordinates: &ArtifactCoordinates,
    ) -> Result<Observation, Failure> {
        let reference = coordinates.reference().to_string();
        match SourceKind::of(&self.artifact.spec.source) {
            Some(SourceKind::Existing) => {
                return Err(Failure::permanent(
                    reason::NOT_FOUND,
                    format!(
                        "spec.source.existing adopts {reference}, but the registry has no such \
                         artifact; push it first (for example with `artifact-operator migrate`) \
                         or use another source"
                    ),
                ));
            }
            Some(SourceKind::Upload) | None => {
                return Err(Failure::permanent(
                    reason::UPLOAD_NOT_SUPPORTED,
                    "this operator version has no upload API yet; use spec.source.url, \
                     configMapKeyRef, secretKeyRef or existing",
                ));
            }
            Some(_) => {}
        }
        if let Some(previous) = &self.previous {
            let message = format!(
                "{reference} with digest {} is no longer in the registry; pushing it again from \
                 the source",
                previous.digest
            );
            info!(%reference, "{message}");
            self.note(EventType::Warning, reason::MISSING, message);
        }

        let jar = self.fetch_and_put(target, coordinates).await?;
        let digest = jar.layer.digest;
        let size = jar.layer.size;
        let message = format!("pushed {reference} with digest {digest} and size {size} bytes");
        info!(%reference, %digest, size, "Artifact pushed");
        self.note(EventType::Normal, "Pushed", message.clone());
        self.context.metrics.record_push("pushed", size);
        let host = target.client().registry().to_owned();
        Ok(ready(
            reason::PUSHED,
            message,
            &reference,
            stored_artifact(&host, &reference, &jar, Timestamp::now()),
        ))
    }

    /// Fetches the source and puts it into the registry, which either pushes it, or hashes it
    /// and adopts the existing version with the same digest.
    async fn fetch_and_put(
        &mut self,
        target: &Target,
        coordinates: &ArtifactCoordinates,
    ) -> Result<JarArtifact, Failure> {
        let spec = &self.artifact.spec;
        let kind = SourceKind::of(&spec.source).expect("only readable sources reach the fetch");
        let pin = pinned_digest(spec.source.url.as_ref().and_then(|url| url.sha256.as_ref()))?;
        let checks = ContentChecks {
            max_size: max_artifact_size(&target.registry)?,
            sha256: pin,
        };
        let policy =
            registry_address_policy(&self.context.settings.address_policy, &target.registry);
        let fetcher = UrlFetcher::new(policy, self.context.settings.fetch_options.clone());

        self.note(
            EventType::Normal,
            "Fetching",
            format!(
                "fetching {} from {}",
                coordinates.reference(),
                describe(kind)
            ),
        );
        let opened = content::open(
            &self.context.client,
            &self.namespace,
            kind,
            &fetcher,
            checks,
        )
        .await?;
        let file_name = spec.jar_file_name();
        let mut metadata = JarMetadata::new(&file_name).map_err(|error| {
            Failure::permanent(reason::INVALID_SOURCE, format!("spec.fileName: {error}"))
        })?;
        if let Some(url) = &opened.source_url
            && let Ok(with_url) = metadata.clone().with_source_url(url)
        {
            metadata = with_url;
        }

        let reader = StreamReader::new(opened.stream.map_err(std::io::Error::from));
        target
            .store
            .put(coordinates, reader, pin.as_ref(), &metadata)
            .await
            .map_err(|error| store_failure(&error))?;
        target
            .client()
            .fetch_jar(coordinates)
            .await
            .map_err(|error| registry_failure(&error))
    }
}

fn describe(kind: SourceKind<'_>) -> String {
    match kind {
        SourceKind::Url(url) => match url::Url::parse(&url.url) {
            Ok(parsed) => super::error::redact_url(&parsed),
            Err(_) => "spec.source.url".to_owned(),
        },
        SourceKind::ConfigMap { name, key } => format!("ConfigMap {name} key {key}"),
        SourceKind::Secret { name, key } => format!("Secret {name} key {key}"),
        SourceKind::Existing => "the registry".to_owned(),
        SourceKind::Upload => "the upload API".to_owned(),
    }
}

fn ready(reason: &str, message: String, reference: &str, artifact: StoredArtifact) -> Observation {
    Observation {
        outcome: Outcome::Ready {
            reason: reason.to_owned(),
            message,
        },
        in_storage: Some(present(reference)),
        fetch_failure: None,
        artifact: Some(artifact),
    }
}
