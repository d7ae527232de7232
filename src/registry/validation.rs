//! Checks of an `ArtifactRegistry` that find what Zot v2.1.20 rejects at startup, what it
//! cannot do, and changes that would lose artifacts or that a StatefulSet cannot apply.
//!
//! Every problem names the field to change and explains the fix. `spec.external` is not checked
//! here.

use std::fmt;

use k8s_openapi::{api::apps::v1::StatefulSet, apimachinery::pkg::api::resource::Quantity};

use super::resources::{self, DATA_VOLUME};
use crate::crd::{RegistryIngress, ZotSpec, names};

const REPLICAS: &str = "spec.zot.replicas";
const STORAGE_SIZE: &str = "spec.zot.storage.size";
const STORAGE_CLASS: &str = "spec.zot.storage.storageClassName";
const STORAGE_S3: &str = "spec.zot.storage.s3";
const S3_CACHE_DRIVER: &str = "spec.zot.storage.s3.cacheDriver";
const S3_REDIRECT: &str = "spec.zot.storage.s3.redirectBlobUrl";
const SCANNING_ENABLED: &str = "spec.zot.scanning.enabled";
const IDLE_TIMEOUT: &str = "spec.zot.httpTimeouts.idle";
const INGRESS_HOST: &str = "spec.ingress.traefik.host";

/// One reason why a spec cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Path of the field to change, for example `spec.zot.storage.s3.cacheDriver`.
    pub field: String,
    /// Description of the problem and of its fix.
    pub message: String,
}

impl ConfigProblem {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.field, self.message)
    }
}

/// State in the cluster, left by earlier reconciles, that limits which specs can be applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedState {
    /// The registry's StatefulSet, when it exists.
    pub stateful_set: Option<ObservedStatefulSet>,
}

/// The parts of an existing StatefulSet that the checks compare with the spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedStatefulSet {
    pub name: String,
    pub replicas: i32,
    /// The claim template of the data volume, or `None` when the registry stores in S3.
    pub volume_claim: Option<ObservedVolumeClaim>,
}

/// The data volume's claim template, which Kubernetes does not let a StatefulSet update change.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedVolumeClaim {
    pub size: Option<Quantity>,
    pub storage_class_name: Option<String>,
}

impl ObservedState {
    /// Extracts what the checks need from the registry's StatefulSet, if there is one.
    pub fn from_stateful_set(stateful_set: Option<&StatefulSet>) -> Self {
        Self {
            stateful_set: stateful_set.map(observe_stateful_set),
        }
    }
}

fn observe_stateful_set(stateful_set: &StatefulSet) -> ObservedStatefulSet {
    let spec = stateful_set.spec.as_ref();
    let volume_claim = spec
        .and_then(|spec| spec.volume_claim_templates.as_ref())
        .and_then(|claims| {
            claims
                .iter()
                .find(|claim| claim.metadata.name.as_deref() == Some(DATA_VOLUME))
        })
        .map(|claim| {
            let claim_spec = claim.spec.as_ref();
            ObservedVolumeClaim {
                size: claim_spec
                    .and_then(|spec| spec.resources.as_ref())
                    .and_then(|resources| resources.requests.as_ref())
                    .and_then(|requests| requests.get("storage"))
                    .cloned(),
                storage_class_name: claim_spec.and_then(|spec| spec.storage_class_name.clone()),
            }
        });
    ObservedStatefulSet {
        name: stateful_set.metadata.name.clone().unwrap_or_default(),
        // Kubernetes defaults an absent replica count to 1.
        replicas: spec.and_then(|spec| spec.replicas).unwrap_or(1),
        volume_claim,
    }
}

/// Checks `spec.zot` against what Zot accepts and against the registry's existing StatefulSet.
///
/// Returns every problem found, not only the first.
pub fn validate(spec: &ZotSpec, observed: &ObservedState) -> Result<(), Vec<ConfigProblem>> {
    let existing = observed.stateful_set.as_ref();
    let problems: Vec<ConfigProblem> = [
        s3_dedupe_without_cache(spec),
        scanning_with_s3(spec),
        replicas_without_shared_store(spec),
        scanning_in_cluster(spec),
        idle_timeout(spec),
        blob_redirect(spec),
        existing.and_then(|existing| storage_backend_switch(spec, existing)),
        existing.and_then(|existing| volume_size_change(spec, existing)),
        existing.and_then(|existing| storage_class_change(spec, existing)),
        existing.and_then(|existing| cluster_resize(spec, existing)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Checks `spec.ingress`: the host goes into a Traefik rule, so it must be a plain DNS name.
pub fn validate_ingress(ingress: &RegistryIngress) -> Result<(), Vec<ConfigProblem>> {
    let Some(traefik) = &ingress.traefik else {
        return Ok(());
    };
    if names::is_host_name(&traefik.host) {
        return Ok(());
    }
    Err(vec![ConfigProblem::new(
        INGRESS_HOST,
        format!(
            "{:?} is not a DNS name. Use lowercase letters, digits, '-' and '.', for example \
             registry.example.com",
            traefik.host
        ),
    )])
}

fn s3_dedupe_without_cache(spec: &ZotSpec) -> Option<ConfigProblem> {
    let s3 = spec.storage.s3.as_ref()?;
    (spec.storage.dedupe && s3.cache_driver.is_none()).then(|| {
        ConfigProblem::new(
            S3_CACHE_DRIVER,
            "Zot rejects S3 storage with dedupe and no shared blob cache. Add a DynamoDB \
             cacheDriver, or set spec.zot.storage.dedupe to false",
        )
    })
}

fn scanning_with_s3(spec: &ZotSpec) -> Option<ConfigProblem> {
    (is_scanning(spec) && spec.storage.s3.is_some()).then(|| {
        ConfigProblem::new(
            SCANNING_ENABLED,
            "Zot cannot scan for CVEs on S3 storage and rejects the combination. Set \
             scanning.enabled to false",
        )
    })
}

fn replicas_without_shared_store(spec: &ZotSpec) -> Option<ConfigProblem> {
    let shared = spec.storage.s3.is_some() || is_cluster(spec);
    (spec.replicas > 1 && !shared).then(|| {
        ConfigProblem::new(
            REPLICAS,
            format!(
                "{} pods on persistent volumes would each keep a separate store, so a pull \
                 could miss an artifact pushed to another pod. Set replicas to 1, enable \
                 spec.zot.cluster, or use spec.zot.storage.s3",
                spec.replicas
            ),
        )
    })
}

// NOTE: Zot's configuration check does not reject this combination, but Zot's scale-out
// documentation states that CVE scanning is not supported in a cluster.
fn scanning_in_cluster(spec: &ZotSpec) -> Option<ConfigProblem> {
    (is_scanning(spec) && is_cluster(spec) && spec.replicas > 1).then(|| {
        ConfigProblem::new(
            SCANNING_ENABLED,
            "Zot does not support CVE scanning in a cluster of more than one pod. Set \
             scanning.enabled to false, or run one replica",
        )
    })
}

fn idle_timeout(spec: &ZotSpec) -> Option<ConfigProblem> {
    spec.http_timeouts.as_ref()?.idle.as_ref()?;
    Some(ConfigProblem::new(
        IDLE_TIMEOUT,
        "Zot v2.1.20 has no setting for the idle timeout of its HTTP server, which is fixed at \
         120s. Remove the field",
    ))
}

fn blob_redirect(spec: &ZotSpec) -> Option<ConfigProblem> {
    spec.storage
        .s3
        .as_ref()
        .filter(|s3| s3.redirect_blob_url)
        .map(|_| {
            ConfigProblem::new(
                S3_REDIRECT,
                "Zot v2.1.20 cannot redirect blob downloads to S3 and always serves blobs itself. \
             Set redirectBlobUrl to false",
            )
        })
}

fn storage_backend_switch(spec: &ZotSpec, existing: &ObservedStatefulSet) -> Option<ConfigProblem> {
    let name = &existing.name;
    match (&existing.volume_claim, &spec.storage.s3) {
        (Some(claim), Some(_)) => Some(ConfigProblem::new(
            STORAGE_S3,
            format!(
                "StatefulSet {name} keeps the artifacts on persistent volumes, and switching to \
                 S3 would start an empty registry. Remove storage.s3 and set storage.size back \
                 to {}, or copy the artifacts to a new ArtifactRegistry that uses S3",
                describe_size(claim.size.as_ref())
            ),
        )),
        (None, None) => Some(ConfigProblem::new(
            STORAGE_SIZE,
            format!(
                "StatefulSet {name} keeps the artifacts in S3, and switching to persistent \
                 volumes would start an empty registry. Restore storage.s3, or copy the \
                 artifacts to a new ArtifactRegistry that uses volumes"
            ),
        )),
        _ => None,
    }
}

fn volume_size_change(spec: &ZotSpec, existing: &ObservedStatefulSet) -> Option<ConfigProblem> {
    let claim = existing.volume_claim.as_ref()?;
    let current = claim.size.as_ref()?;
    let requested = spec.storage.size.as_ref()?;
    // `Some(true)` when the volumes grow, and `None` when a size is not a valid quantity.
    let grows = match (
        resources::quantity_bytes(current),
        resources::quantity_bytes(requested),
    ) {
        (Some(current), Some(requested)) if current == requested => return None,
        (Some(current), Some(requested)) => Some(requested > current),
        _ if current == requested => return None,
        _ => None,
    };

    let name = &existing.name;
    let (current, requested) = (&current.0, &requested.0);
    let locked = format!(
        "The volume claim template of StatefulSet {name} requests {current}, and Kubernetes \
         does not allow changing it"
    );
    let message = match grows {
        Some(true) => format!(
            "{locked}. To grow the volumes, expand each PersistentVolumeClaim \
             {DATA_VOLUME}-{name}-<ordinal> to {requested} (its StorageClass must set \
             allowVolumeExpansion: true), then set storage.size back to {current}"
        ),
        Some(false) => {
            format!("{locked}, and volumes cannot shrink. Set storage.size back to {current}")
        }
        None => format!("{locked}. Set storage.size back to {current}"),
    };
    Some(ConfigProblem::new(STORAGE_SIZE, message))
}

fn storage_class_change(spec: &ZotSpec, existing: &ObservedStatefulSet) -> Option<ConfigProblem> {
    let claim = existing.volume_claim.as_ref()?;
    if spec.storage.s3.is_some() || claim.storage_class_name == spec.storage.storage_class_name {
        return None;
    }
    let current = match &claim.storage_class_name {
        Some(class) => format!("StorageClass {class}"),
        None => "the cluster's default StorageClass".to_owned(),
    };
    let revert = match &claim.storage_class_name {
        Some(class) => format!("Set storageClassName back to {class}"),
        None => "Remove storageClassName".to_owned(),
    };
    Some(ConfigProblem::new(
        STORAGE_CLASS,
        format!(
            "The volume claim template of StatefulSet {} uses {current}, and Kubernetes does \
             not allow changing it. {revert}, or copy the artifacts to a new ArtifactRegistry",
            existing.name
        ),
    ))
}

fn cluster_resize(spec: &ZotSpec, existing: &ObservedStatefulSet) -> Option<ConfigProblem> {
    let on_volumes = existing.volume_claim.is_some() && spec.storage.s3.is_none();
    if !(is_cluster(spec) && on_volumes && existing.replicas != spec.replicas) {
        return None;
    }
    Some(ConfigProblem::new(
        REPLICAS,
        format!(
            "In cluster mode Zot assigns each repository to a pod by its name's hash modulo \
             the number of pods, and the pod keeps it on its own volume. Changing replicas \
             from {} to {} would send requests to pods whose volumes lack the repository. Set \
             replicas back to {}",
            existing.replicas, spec.replicas, existing.replicas
        ),
    ))
}

fn is_scanning(spec: &ZotSpec) -> bool {
    spec.scanning
        .as_ref()
        .is_some_and(|scanning| scanning.enabled)
}

fn is_cluster(spec: &ZotSpec) -> bool {
    spec.cluster.is_some_and(|cluster| cluster.enabled)
}

fn describe_size(size: Option<&Quantity>) -> &str {
    size.map_or("its current value", |size| size.0.as_str())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn spec(value: Value) -> ZotSpec {
        serde_json::from_value(value).unwrap()
    }

    fn volumes(size: &str, class: Option<&str>, replicas: i32) -> ObservedState {
        ObservedState {
            stateful_set: Some(ObservedStatefulSet {
                name: "main-zot".to_owned(),
                replicas,
                volume_claim: Some(ObservedVolumeClaim {
                    size: Some(Quantity(size.to_owned())),
                    storage_class_name: class.map(str::to_owned),
                }),
            }),
        }
    }

    fn s3_store(replicas: i32) -> ObservedState {
        ObservedState {
            stateful_set: Some(ObservedStatefulSet {
                name: "main-zot".to_owned(),
                replicas,
                volume_claim: None,
            }),
        }
    }

    fn bucket() -> Value {
        json!({ "bucket": "artifacts", "region": "eu-west-1" })
    }

    fn problem(field: &str, message: &str) -> ConfigProblem {
        ConfigProblem::new(field, message)
    }

    struct Case {
        name: &'static str,
        spec: Value,
        observed: ObservedState,
        expected: Vec<ConfigProblem>,
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "valid volume spec on an existing StatefulSet",
                spec: json!({ "storage": { "size": "20Gi", "storageClassName": "fast" },
                              "scanning": { "enabled": true }, "httpTimeouts": { "read": "1h" } }),
                observed: volumes("20480Mi", Some("fast"), 1),
                expected: vec![],
            },
            Case {
                name: "valid S3 cluster",
                spec: json!({ "replicas": 3, "cluster": { "enabled": true },
                              "storage": { "s3": { "bucket": "artifacts", "region": "eu-west-1",
                                  "cacheDriver": { "endpoint": "http://dynamodb:8000",
                                                   "region": "eu-west-1", "tablePrefix": "Main" } } } }),
                observed: s3_store(2),
                expected: vec![],
            },
            Case {
                name: "S3 with dedupe and no cache",
                spec: json!({ "storage": { "s3": bucket() } }),
                observed: ObservedState::default(),
                expected: vec![problem(
                    "spec.zot.storage.s3.cacheDriver",
                    "Zot rejects S3 storage with dedupe and no shared blob cache. Add a DynamoDB \
                     cacheDriver, or set spec.zot.storage.dedupe to false",
                )],
            },
            Case {
                name: "scanning on S3",
                spec: json!({ "scanning": { "enabled": true },
                              "storage": { "dedupe": false, "s3": bucket() } }),
                observed: ObservedState::default(),
                expected: vec![problem(
                    "spec.zot.scanning.enabled",
                    "Zot cannot scan for CVEs on S3 storage and rejects the combination. Set \
                     scanning.enabled to false",
                )],
            },
            Case {
                name: "replicas on volumes without cluster mode",
                spec: json!({ "replicas": 2, "storage": { "size": "1Gi" } }),
                observed: ObservedState::default(),
                expected: vec![problem(
                    "spec.zot.replicas",
                    "2 pods on persistent volumes would each keep a separate store, so a pull \
                     could miss an artifact pushed to another pod. Set replicas to 1, enable \
                     spec.zot.cluster, or use spec.zot.storage.s3",
                )],
            },
            Case {
                name: "scanning in a cluster",
                spec: json!({ "replicas": 3, "cluster": { "enabled": true },
                              "scanning": { "enabled": true }, "storage": { "size": "1Gi" } }),
                observed: ObservedState::default(),
                expected: vec![problem(
                    "spec.zot.scanning.enabled",
                    "Zot does not support CVE scanning in a cluster of more than one pod. Set \
                     scanning.enabled to false, or run one replica",
                )],
            },
            Case {
                name: "idle timeout",
                spec: json!({ "storage": { "size": "1Gi" }, "httpTimeouts": { "idle": "5m" } }),
                observed: ObservedState::default(),
                expected: vec![problem(
                    "spec.zot.httpTimeouts.idle",
                    "Zot v2.1.20 has no setting for the idle timeout of its HTTP server, which is \
                     fixed at 120s. Remove the field",
                )],
            },
            Case {
                name: "blob redirect",
                spec: json!({ "storage": { "dedupe": false, "s3": { "bucket": "artifacts",
                              "region": "eu-west-1", "redirectBlobUrl": true } } }),
                observed: ObservedState::default(),
                expected: vec![problem(
                    "spec.zot.storage.s3.redirectBlobUrl",
                    "Zot v2.1.20 cannot redirect blob downloads to S3 and always serves blobs \
                     itself. Set redirectBlobUrl to false",
                )],
            },
            Case {
                name: "volume grows",
                spec: json!({ "storage": { "size": "50Gi" } }),
                observed: volumes("20Gi", None, 1),
                expected: vec![problem(
                    "spec.zot.storage.size",
                    "The volume claim template of StatefulSet main-zot requests 20Gi, and \
                     Kubernetes does not allow changing it. To grow the volumes, expand each \
                     PersistentVolumeClaim data-main-zot-<ordinal> to 50Gi (its StorageClass \
                     must set allowVolumeExpansion: true), then set storage.size back to 20Gi",
                )],
            },
            Case {
                name: "volume shrinks",
                spec: json!({ "storage": { "size": "10G" } }),
                observed: volumes("20Gi", None, 1),
                expected: vec![problem(
                    "spec.zot.storage.size",
                    "The volume claim template of StatefulSet main-zot requests 20Gi, and \
                     Kubernetes does not allow changing it, and volumes cannot shrink. Set \
                     storage.size back to 20Gi",
                )],
            },
            Case {
                name: "storage class changes",
                spec: json!({ "storage": { "size": "20Gi", "storageClassName": "fast" } }),
                observed: volumes("20Gi", None, 1),
                expected: vec![problem(
                    "spec.zot.storage.storageClassName",
                    "The volume claim template of StatefulSet main-zot uses the cluster's \
                     default StorageClass, and Kubernetes does not allow changing it. Remove \
                     storageClassName, or copy the artifacts to a new ArtifactRegistry",
                )],
            },
            Case {
                name: "volumes switch to S3",
                spec: json!({ "storage": { "dedupe": false, "s3": bucket() } }),
                observed: volumes("20Gi", None, 1),
                expected: vec![problem(
                    "spec.zot.storage.s3",
                    "StatefulSet main-zot keeps the artifacts on persistent volumes, and \
                     switching to S3 would start an empty registry. Remove storage.s3 and set \
                     storage.size back to 20Gi, or copy the artifacts to a new ArtifactRegistry \
                     that uses S3",
                )],
            },
            Case {
                name: "S3 switches to volumes",
                spec: json!({ "storage": { "size": "20Gi" } }),
                observed: s3_store(1),
                expected: vec![problem(
                    "spec.zot.storage.size",
                    "StatefulSet main-zot keeps the artifacts in S3, and switching to persistent \
                     volumes would start an empty registry. Restore storage.s3, or copy the \
                     artifacts to a new ArtifactRegistry that uses volumes",
                )],
            },
            Case {
                name: "cluster on volumes resized",
                spec: json!({ "replicas": 3, "cluster": { "enabled": true },
                              "storage": { "size": "20Gi" } }),
                observed: volumes("20Gi", None, 2),
                expected: vec![problem(
                    "spec.zot.replicas",
                    "In cluster mode Zot assigns each repository to a pod by its name's hash \
                     modulo the number of pods, and the pod keeps it on its own volume. Changing \
                     replicas from 2 to 3 would send requests to pods whose volumes lack the \
                     repository. Set replicas back to 2",
                )],
            },
            Case {
                name: "every problem is reported",
                spec: json!({ "replicas": 2, "storage": { "size": "1Gi" },
                              "httpTimeouts": { "idle": "5m" } }),
                observed: ObservedState::default(),
                expected: vec![
                    problem(
                        "spec.zot.replicas",
                        "2 pods on persistent volumes would each keep a separate store, so a \
                         pull could miss an artifact pushed to another pod. Set replicas to 1, \
                         enable spec.zot.cluster, or use spec.zot.storage.s3",
                    ),
                    problem(
                        "spec.zot.httpTimeouts.idle",
                        "Zot v2.1.20 has no setting for the idle timeout of its HTTP server, \
                         which is fixed at 120s. Remove the field",
                    ),
                ],
            },
        ]
    }

    #[test]
    fn validate_table() {
        for case in cases() {
            let result = validate(&spec(case.spec), &case.observed);

            let expected = if case.expected.is_empty() {
                Ok(())
            } else {
                Err(case.expected)
            };
            assert_eq!(result, expected, "case: {}", case.name);
        }
    }

    #[test]
    fn unparsable_sizes_compare_as_text() {
        let observed = volumes("lots", None, 1);

        assert_eq!(
            validate(&spec(json!({ "storage": { "size": "lots" } })), &observed),
            Ok(())
        );
        let changed = validate(&spec(json!({ "storage": { "size": "more" } })), &observed);
        assert_eq!(changed.unwrap_err()[0].field, "spec.zot.storage.size");
    }

    #[test]
    fn problem_displays_field_first() {
        let problem = problem("spec.zot.replicas", "set replicas to 1");

        assert_eq!(problem.to_string(), "spec.zot.replicas: set replicas to 1");
    }

    #[test]
    fn observed_from_stateful_set() {
        let stateful_set: StatefulSet = serde_json::from_value(json!({
            "metadata": { "name": "main-zot" },
            "spec": {
                "replicas": 3,
                "serviceName": "main-zot-headless",
                "selector": {},
                "template": {},
                "volumeClaimTemplates": [{
                    "metadata": { "name": "data" },
                    "spec": { "storageClassName": "fast", "resources": { "requests": { "storage": "5Gi" } } }
                }]
            }
        }))
        .unwrap();

        let observed = ObservedState::from_stateful_set(Some(&stateful_set));

        let expected = ObservedState {
            stateful_set: Some(ObservedStatefulSet {
                name: "main-zot".to_owned(),
                replicas: 3,
                volume_claim: Some(ObservedVolumeClaim {
                    size: Some(Quantity("5Gi".to_owned())),
                    storage_class_name: Some("fast".to_owned()),
                }),
            }),
        };
        assert_eq!(observed, expected);
        assert_eq!(
            ObservedState::from_stateful_set(None),
            ObservedState::default()
        );
    }

    #[test]
    fn observed_without_claim_or_replicas() {
        let stateful_set: StatefulSet = serde_json::from_value(json!({
            "metadata": { "name": "main-zot" },
            "spec": { "serviceName": "main-zot-headless", "selector": {}, "template": {} }
        }))
        .unwrap();

        let observed = ObservedState::from_stateful_set(Some(&stateful_set));

        assert_eq!(observed, s3_store(1));
    }

    #[test]
    fn ingress_host_must_be_dns_name() {
        let ingress = |host: &str| -> RegistryIngress {
            serde_json::from_value(json!({ "traefik": { "host": host } })).unwrap()
        };

        assert_eq!(validate_ingress(&ingress("registry.example.com")), Ok(()));
        assert_eq!(validate_ingress(&RegistryIngress::default()), Ok(()));
        for host in [
            "a`) || PathPrefix(`/",
            "Registry.example.com",
            "-a.example.com",
            "a..b",
            "",
        ] {
            let problems = validate_ingress(&ingress(host)).unwrap_err();
            assert_eq!(problems.len(), 1, "{host}");
            assert_eq!(problems[0].field, "spec.ingress.traefik.host", "{host}");
        }
        let expected = vec![problem(
            "spec.ingress.traefik.host",
            "\"a b\" is not a DNS name. Use lowercase letters, digits, '-' and '.', for example \
             registry.example.com",
        )];
        assert_eq!(validate_ingress(&ingress("a b")), Err(expected));
    }
}
