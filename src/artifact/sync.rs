//! One reconcile of an AppArtifact that is not being deleted: check tenancy, find the
//! registry, compare what the registry stores with what the AppArtifact reported, and fetch and
//! push the JAR when the registry lacks it.
//!
//! A version is never overwritten. When the tag exists, the source is hashed (not uploaded) and
//! either adopted (same digest) or reported as a `VersionConflict`.
//!
//! An upload source is never fetched: its JAR arrives through the gateway's upload API, which
//! pushes it and writes the status. Until then the AppArtifact waits with `AwaitingUpload`;
//! afterwards reconciles only verify that the registry still stores it.

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt, runtime::events::EventType};
use tracing::{debug, info};

use super::{
    address_policy::AddressPolicy,
    checks::DEFAULT_MAX_SIZE,
    content::{self, SourceKind},
    controller::{Context, Error, Note},
    source::UrlFetcher,
    status::{
        self, Failure, Observation, absent, present, reason, registry_failure, stored_artifact,
    },
    target::{self, Target, registry_key},
};
use crate::{
    conditions::Outcome,
    crd::{AppArtifact, ArtifactRegistry, StoredArtifact, TENANT_LABEL},
    gateway::upload::upload_command,
    oci::{ArtifactCoordinates, Digest, JarArtifact},
    registry::resources::quantity_bytes,
};

/// The result of one reconcile: the observation for the status and the Events to publish.
pub struct Report {
    pub observation: Observation,
    pub notes: Vec<Note>,
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

/// Parses a pinned sha256 from the spec, which the CRD schema restricts to 64 hex digits.
pub fn pinned_digest(pin: Option<&String>) -> Result<Option<Digest>, Failure> {
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
        let target = match target::resolve(
            &self.context.client,
            self.artifact,
            self.context.locks.clone(),
        )
        .await?
        {
            Ok(target) => target,
            Err(failure) => return Ok(Err(failure)),
        };
        Ok(self.sync(&target, &coordinates).await)
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
                Ok(status::verified(
                    self.artifact,
                    &host,
                    &reference,
                    &jar,
                    previous,
                    now,
                ))
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
                Ok(Observation::ready(
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
                status::verified(self.artifact, host, reference, jar, previous, now)
            }
            _ => {
                self.note(
                    EventType::Normal,
                    "Adopted",
                    format!("adopted {reference} with digest {digest} from the registry"),
                );
                self.context.metrics.record_push("adopted", 0);
                Observation::ready(
                    reason::ADOPTED,
                    format!("adopted {reference} with digest {digest}"),
                    reference,
                    stored_artifact(host, reference, jar, now),
                )
            }
        }
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
            Some(SourceKind::Upload) => return self.await_upload(&reference),
            None => {
                return Err(Failure::permanent(
                    reason::INVALID_SOURCE,
                    "spec.source sets no source; set one of url, configMapKeyRef, secretKeyRef, \
                     upload or existing",
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
        Ok(Observation::ready(
            reason::PUSHED,
            message,
            &reference,
            stored_artifact(&host, &reference, &jar, Timestamp::now()),
        ))
    }

    /// Reports an upload source whose version is not in the registry. Before the first upload
    /// the AppArtifact waits for it. After an upload the version can only have been deleted
    /// outside the operator, which has no copy to push again, so the user must upload it again.
    fn await_upload(&self, reference: &str) -> Result<Observation, Failure> {
        let command = upload_command(
            self.context.settings.gateway_url.as_deref(),
            &self.namespace,
            &self.artifact.name_any(),
        );
        let Some(previous) = &self.previous else {
            return Ok(Observation {
                outcome: Outcome::Waiting {
                    reason: reason::AWAITING_UPLOAD.to_owned(),
                    message: format!("{reference} waits for its JAR; upload it with: {command}"),
                },
                in_storage: Some(absent(
                    reason::NOT_FOUND,
                    format!("{reference} is not in the registry yet"),
                )),
                fetch_failure: None,
                artifact: None,
            });
        };
        Err(Failure::permanent(
            reason::REUPLOAD_REQUIRED,
            format!(
                "{reference} with digest {} is no longer in the registry, and the operator keeps \
                 no copy of uploaded JARs; upload it again with: {command}",
                previous.digest
            ),
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
        let checks = target.content_checks(pin)?;
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
        target::put(
            target,
            coordinates,
            spec,
            opened.stream,
            pin.as_ref(),
            opened.source_url.as_deref(),
        )
        .await
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
