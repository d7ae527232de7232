//! Planning of the AppArtifact of each migrated version: its namespace, name and spec, and
//! whether an existing object already declares it. Nothing here calls the API server.

use std::{collections::BTreeMap, collections::BTreeSet, fmt, str::FromStr};

use crate::{
    crd::{
        AppArtifact, AppArtifactSpec, ArtifactSource, DeletionPolicy, ExistingSource, RegistryRef,
        TENANT_LABEL,
        names::{is_dns_label, is_dns_subdomain},
    },
    oci::{ArtifactCoordinates, Digest},
};

/// Hex digits of the hash that makes a rewritten object name unique.
const NAME_HASH_LEN: usize = 8;

const PLACEHOLDERS: [&str; 2] = ["tenantId", "appId"];

// === Namespace template ===

/// A namespace name with `{tenantId}` and `{appId}` placeholders, such as `tenant-{tenantId}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceTemplate(String);

/// A template with an unknown placeholder or an unbalanced brace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid namespace template {template:?}: {reason}; use text with the placeholders \
     {{tenantId}} and {{appId}}, such as tenant-{{tenantId}}"
)]
pub struct InvalidNamespaceTemplate {
    pub template: String,
    pub reason: String,
}

impl FromStr for NamespaceTemplate {
    type Err = InvalidNamespaceTemplate;

    fn from_str(template: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| InvalidNamespaceTemplate {
            template: template.to_owned(),
            reason,
        };
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(invalid("'}' without '{'".to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| invalid("'{' without '}'".to_owned()))?;
            let placeholder = &after[..close];
            if !PLACEHOLDERS.contains(&placeholder) {
                return Err(invalid(format!("unknown placeholder {{{placeholder}}}")));
            }
            rest = &after[close + 1..];
        }
        if template.is_empty() {
            return Err(invalid("the template is empty".to_owned()));
        }
        Ok(Self(template.to_owned()))
    }
}

impl fmt::Display for NamespaceTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A namespace name made by a template that Kubernetes does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "namespace {namespace:?} made by --namespace-template {template:?} for {reference} is not a \
     valid namespace name (at most 63 lowercase letters, digits and '-', starting and ending \
     with a letter or digit); change the template"
)]
pub struct InvalidNamespace {
    pub namespace: String,
    pub template: String,
    pub reference: String,
}

impl NamespaceTemplate {
    /// Fills in the placeholders for one version.
    ///
    /// # Errors
    ///
    /// [`InvalidNamespace`] when the result is not a DNS label, for example because a tenant id
    /// contains `.` or `_`, which OCI names allow and namespace names do not.
    pub fn render(&self, coordinates: &ArtifactCoordinates) -> Result<String, InvalidNamespace> {
        let namespace = self
            .0
            .replace("{tenantId}", coordinates.tenant_id())
            .replace("{appId}", coordinates.app_id());
        if !is_dns_label(&namespace) {
            return Err(InvalidNamespace {
                namespace,
                template: self.0.clone(),
                reference: coordinates.to_string(),
            });
        }
        Ok(namespace)
    }
}

// === Registry reference ===

/// The ArtifactRegistry that created AppArtifacts name, given as `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRefArg {
    pub namespace: String,
    pub name: String,
}

impl FromStr for RegistryRefArg {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            format!(
                "invalid registry reference {value:?}: expected NAMESPACE/NAME of an \
                 ArtifactRegistry, such as artifacts/main"
            )
        };
        let (namespace, name) = value.split_once('/').ok_or_else(invalid)?;
        if !is_dns_label(namespace) || !is_dns_subdomain(name) {
            return Err(invalid());
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for RegistryRefArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

// === Names and objects ===

/// Returns the AppArtifact name of a version: `{appId}-{version}` when that is a valid object
/// name, which covers lowercase versions such as `1.4.2`.
///
/// Otherwise, for example with uppercase letters or `_` in the version, every character other
/// than a lowercase letter or digit becomes `-`. The first 8 hex digits of the SHA-256 of the
/// reference are appended, so versions that differ only in those characters keep apart.
pub fn resource_name(coordinates: &ArtifactCoordinates) -> String {
    let plain = format!("{}-{}", coordinates.app_id(), coordinates.version());
    if is_dns_subdomain(&plain) {
        return plain;
    }
    let rewritten: String = plain
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let hash = Digest::of(coordinates.to_string().as_bytes()).hex();
    let base = rewritten.trim_end_matches('-');
    let name = format!("{base}-{}", &hash[..NAME_HASH_LEN]);
    debug_assert!(is_dns_subdomain(&name), "{name}");
    name
}

/// A version that should have an AppArtifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredResource {
    pub coordinates: ArtifactCoordinates,
    /// Digest of the JAR in the registry.
    pub digest: Digest,
    pub namespace: String,
    pub name: String,
}

/// Builds the AppArtifact that adopts the version already in the registry.
pub fn build_app_artifact(desired: &DesiredResource, registry: &RegistryRefArg) -> AppArtifact {
    let spec = AppArtifactSpec {
        registry_ref: RegistryRef {
            name: registry.name.clone(),
            namespace: Some(registry.namespace.clone()),
        },
        tenant_id: desired.coordinates.tenant_id().to_owned(),
        app_id: desired.coordinates.app_id().to_owned(),
        version: desired.coordinates.version().to_owned(),
        file_name: None,
        source: ArtifactSource {
            existing: Some(ExistingSource {
                sha256: Some(desired.digest.hex()),
            }),
            ..ArtifactSource::default()
        },
        deletion_policy: DeletionPolicy::Retain,
    };
    let mut object = AppArtifact::new(&desired.name, spec);
    object.metadata.namespace = Some(desired.namespace.clone());
    object
}

// === Existing objects ===

/// A reason that a version gets no AppArtifact even though its namespace is usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceConflict {
    #[error(
        "AppArtifact {namespace}/{name} already exists for {other}; rename or delete it, then \
         run the migration again"
    )]
    NameTaken {
        namespace: String,
        name: String,
        other: String,
    },

    #[error(
        "AppArtifact {namespace}/{name} pins sha256 {pinned}, but the registry has {digest}; \
         correct or delete the object, then run the migration again"
    )]
    PinnedOtherDigest {
        namespace: String,
        name: String,
        pinned: String,
        digest: Digest,
    },
}

/// The step planned for one desired AppArtifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the object, or apply it again over an earlier migration's identical object.
    Apply,
    /// An object of another name, or with another source, declares the version: leave it.
    AlreadyDeclared {
        by: String,
    },
    Reject(ResourceConflict),
}

/// Plans the desired AppArtifacts of one namespace against the objects it already has.
///
/// The object the migration would create is recognized by name, coordinates and an `existing`
/// source. An object that declares the same version under another name or with another source
/// is left alone, so a rerun never adds a duplicate or rewrites a user's object. Two desired
/// versions that get the same name (which `{appId}-{version}` allows, for example app `a-b`
/// version `1` and app `a` version `b-1`) are both planned, and the second is rejected.
pub fn plan_namespace(desired: &[DesiredResource], existing: &[AppArtifact]) -> Vec<Action> {
    let by_name: BTreeMap<&str, &AppArtifact> = existing
        .iter()
        .filter_map(|object| Some((object.metadata.name.as_deref()?, object)))
        .collect();
    let mut claimed: BTreeMap<&str, &ArtifactCoordinates> = BTreeMap::new();
    let mut actions = Vec::with_capacity(desired.len());

    for resource in desired {
        let action = plan_one(resource, &by_name, existing);
        let action = match (action, claimed.get(resource.name.as_str())) {
            (Action::Apply, Some(other)) => Action::Reject(ResourceConflict::NameTaken {
                namespace: resource.namespace.clone(),
                name: resource.name.clone(),
                other: other.to_string(),
            }),
            (action, _) => action,
        };
        if action == Action::Apply {
            claimed.insert(&resource.name, &resource.coordinates);
        }
        actions.push(action);
    }
    actions
}

fn plan_one(
    resource: &DesiredResource,
    by_name: &BTreeMap<&str, &AppArtifact>,
    existing: &[AppArtifact],
) -> Action {
    if let Some(object) = by_name.get(resource.name.as_str()) {
        if !declares(object, &resource.coordinates) {
            return Action::Reject(ResourceConflict::NameTaken {
                namespace: resource.namespace.clone(),
                name: resource.name.clone(),
                other: describe(object),
            });
        }
        return match &object.spec.source.existing {
            Some(ExistingSource {
                sha256: Some(pinned),
            }) if *pinned != resource.digest.hex() => {
                Action::Reject(ResourceConflict::PinnedOtherDigest {
                    namespace: resource.namespace.clone(),
                    name: resource.name.clone(),
                    pinned: pinned.clone(),
                    digest: resource.digest,
                })
            }
            Some(_) => Action::Apply,
            None => Action::AlreadyDeclared {
                by: resource.name.clone(),
            },
        };
    }

    let declared_by: BTreeSet<&str> = existing
        .iter()
        .filter(|object| declares(object, &resource.coordinates))
        .filter_map(|object| object.metadata.name.as_deref())
        .collect();
    match declared_by.first() {
        Some(name) => Action::AlreadyDeclared {
            by: (*name).to_owned(),
        },
        None => Action::Apply,
    }
}

fn declares(object: &AppArtifact, coordinates: &ArtifactCoordinates) -> bool {
    object.spec.tenant_id == coordinates.tenant_id()
        && object.spec.app_id == coordinates.app_id()
        && object.spec.version == coordinates.version()
}

fn describe(object: &AppArtifact) -> String {
    format!(
        "{}/{}:v{}",
        object.spec.tenant_id, object.spec.app_id, object.spec.version
    )
}

// === Namespaces ===

/// A namespace that cannot take a tenant's AppArtifacts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceProblem {
    #[error(
        "namespace {namespace} not found; create it with the label {TENANT_LABEL}={tenant} and \
         run the migration again"
    )]
    NotFound { namespace: String, tenant: String },

    #[error(
        "namespace {namespace} has no label {TENANT_LABEL}, so it belongs to no tenant; label it \
         with {TENANT_LABEL}={tenant} and run the migration again"
    )]
    Unlabeled { namespace: String, tenant: String },

    #[error(
        "namespace {namespace} belongs to tenant {label} ({TENANT_LABEL}), not to {tenant}; \
         change --namespace-template or the label"
    )]
    OtherTenant {
        namespace: String,
        tenant: String,
        label: String,
    },
}

impl NamespaceProblem {
    /// Short, stable label for the kind of problem, used in reports.
    pub fn label(&self) -> &'static str {
        match self {
            NamespaceProblem::NotFound { .. } => "namespace_not_found",
            NamespaceProblem::Unlabeled { .. } => "namespace_unlabeled",
            NamespaceProblem::OtherTenant { .. } => "namespace_other_tenant",
        }
    }
}

/// Checks that a namespace exists and belongs to `tenant` through its tenant label, because the
/// AppArtifact controller stalls an AppArtifact whose tenant differs from its namespace's.
/// `labels` is `None` for a namespace that does not exist.
pub fn check_namespace(
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    tenant: &str,
) -> Result<(), NamespaceProblem> {
    let Some(labels) = labels else {
        return Err(NamespaceProblem::NotFound {
            namespace: namespace.to_owned(),
            tenant: tenant.to_owned(),
        });
    };
    match labels.get(TENANT_LABEL) {
        Some(label) if label == tenant => Ok(()),
        Some(label) => Err(NamespaceProblem::OtherTenant {
            namespace: namespace.to_owned(),
            tenant: tenant.to_owned(),
            label: label.clone(),
        }),
        None => Err(NamespaceProblem::Unlabeled {
            namespace: namespace.to_owned(),
            tenant: tenant.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinates(tenant: &str, app: &str, version: &str) -> ArtifactCoordinates {
        ArtifactCoordinates::new(tenant, app, version).unwrap()
    }

    fn desired(app: &str, version: &str, content: &[u8]) -> DesiredResource {
        let coordinates = coordinates("acme", app, version);
        DesiredResource {
            name: resource_name(&coordinates),
            coordinates,
            digest: Digest::of(content),
            namespace: "tenant-acme".to_owned(),
        }
    }

    fn registry() -> RegistryRefArg {
        "artifacts/main".parse().unwrap()
    }

    #[test]
    fn template_renders_placeholders() {
        let template: NamespaceTemplate = "tenant-{tenantId}".parse().unwrap();
        assert_eq!(
            template
                .render(&coordinates("acme", "billing", "1"))
                .unwrap(),
            "tenant-acme"
        );
        let template: NamespaceTemplate = "{tenantId}-{appId}".parse().unwrap();
        assert_eq!(
            template
                .render(&coordinates("acme", "billing", "1"))
                .unwrap(),
            "acme-billing"
        );
    }

    #[test]
    fn template_rejects_unknown_or_unbalanced_placeholders() {
        let cases = [
            ("tenant-{tenant}", "unknown placeholder {tenant}"),
            ("tenant-{tenantId", "'{' without '}'"),
            ("tenant-}", "'}' without '{'"),
            ("", "the template is empty"),
        ];
        for (template, reason) in cases {
            let error = template.parse::<NamespaceTemplate>().unwrap_err();
            assert_eq!(error.reason, reason, "{template:?}");
        }
    }

    #[test]
    fn rendered_namespace_must_be_dns_label() {
        let template: NamespaceTemplate = "tenant-{tenantId}".parse().unwrap();
        let error = template
            .render(&coordinates("acme_corp", "billing", "1"))
            .unwrap_err();
        assert_eq!(error.namespace, "tenant-acme_corp");
        assert!(error.to_string().contains("change the template"), "{error}");
    }

    #[test]
    fn registry_ref_parsed() {
        assert_eq!(
            registry(),
            RegistryRefArg {
                namespace: "artifacts".to_owned(),
                name: "main".to_owned()
            }
        );
        for invalid in ["main", "/main", "artifacts/", "Artifacts/main", "a/b/c"] {
            assert!(invalid.parse::<RegistryRefArg>().is_err(), "{invalid}");
        }
    }

    #[test]
    fn resource_name_plain_when_valid() {
        assert_eq!(
            resource_name(&coordinates("acme", "billing", "1.4.2")),
            "billing-1.4.2"
        );
    }

    #[test]
    fn resource_name_rewritten_and_hashed_otherwise() {
        let upper = resource_name(&coordinates("acme", "billing", "1.0-RC1"));
        let lower = resource_name(&coordinates("acme", "billing", "1.0-rc1"));
        assert_eq!(lower, "billing-1.0-rc1");
        assert!(upper.starts_with("billing-1-0-rc1-"), "{upper}");
        assert_eq!(upper.len(), "billing-1-0-rc1-".len() + NAME_HASH_LEN);
        assert_ne!(upper, lower);

        let trailing = resource_name(&coordinates("acme", "billing", "1.0-"));
        assert!(is_dns_subdomain(&trailing), "{trailing}");
        let underscore = resource_name(&coordinates("acme", "billing__x", "2_0"));
        assert!(underscore.starts_with("billing--x-2-0-"), "{underscore}");
    }

    #[test]
    fn resource_name_valid_for_longest_coordinates() {
        let app = "a".repeat(63);
        let version = "V".repeat(127);
        let name = resource_name(&coordinates("acme", &app, &version));
        assert!(is_dns_subdomain(&name), "{name}");
    }

    #[test]
    fn app_artifact_adopts_existing_digest() {
        let resource = desired("billing", "1.0", b"jar");
        let object = build_app_artifact(&resource, &registry());
        assert_eq!(object.metadata.name.as_deref(), Some("billing-1.0"));
        assert_eq!(object.metadata.namespace.as_deref(), Some("tenant-acme"));
        let json = serde_json::to_value(&object).unwrap();
        assert_eq!(json["apiVersion"], "artifacts.cameleer.io/v1alpha1");
        assert_eq!(json["kind"], "AppArtifact");
        assert_eq!(
            json["spec"]["registryRef"],
            serde_json::json!({"name": "main", "namespace": "artifacts"})
        );
        assert_eq!(json["spec"]["tenantId"], "acme");
        assert_eq!(json["spec"]["appId"], "billing");
        assert_eq!(json["spec"]["version"], "1.0");
        assert_eq!(
            json["spec"]["source"],
            serde_json::json!({"existing": {"sha256": Digest::of(b"jar").hex()}})
        );
    }

    #[test]
    fn new_version_applied() {
        let actions = plan_namespace(&[desired("billing", "1.0", b"jar")], &[]);
        assert_eq!(actions, [Action::Apply]);
    }

    #[test]
    fn earlier_migration_object_applied_again() {
        let resource = desired("billing", "1.0", b"jar");
        let existing = build_app_artifact(&resource, &registry());
        assert_eq!(plan_namespace(&[resource], &[existing]), [Action::Apply]);
    }

    #[test]
    fn object_of_other_name_left_alone() {
        let resource = desired("billing", "1.0", b"jar");
        let mut existing = build_app_artifact(&resource, &registry());
        existing.metadata.name = Some("billing-prod".to_owned());
        assert_eq!(
            plan_namespace(&[resource], &[existing]),
            [Action::AlreadyDeclared {
                by: "billing-prod".to_owned()
            }]
        );
    }

    #[test]
    fn object_with_url_source_left_alone() {
        let resource = desired("billing", "1.0", b"jar");
        let mut existing = build_app_artifact(&resource, &registry());
        existing.spec.source = ArtifactSource {
            url: Some(
                serde_json::from_value(serde_json::json!({"url": "https://x/b.jar"})).unwrap(),
            ),
            ..ArtifactSource::default()
        };
        assert_eq!(
            plan_namespace(&[resource], &[existing]),
            [Action::AlreadyDeclared {
                by: "billing-1.0".to_owned()
            }]
        );
    }

    #[test]
    fn object_pinning_other_digest_rejected() {
        let resource = desired("billing", "1.0", b"jar");
        let existing = build_app_artifact(&desired("billing", "1.0", b"other"), &registry());
        let actions = plan_namespace(&[resource], &[existing]);
        assert!(
            matches!(
                &actions[0],
                Action::Reject(ResourceConflict::PinnedOtherDigest { pinned, .. })
                    if *pinned == Digest::of(b"other").hex()
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn name_of_other_version_rejected() {
        let resource = desired("billing", "1.0", b"jar");
        let mut existing = build_app_artifact(&desired("billing", "2.0", b"jar"), &registry());
        existing.metadata.name = Some(resource.name.clone());
        let actions = plan_namespace(&[resource], &[existing]);
        assert_eq!(
            actions,
            [Action::Reject(ResourceConflict::NameTaken {
                namespace: "tenant-acme".to_owned(),
                name: "billing-1.0".to_owned(),
                other: "acme/billing:v2.0".to_owned(),
            })]
        );
    }

    #[test]
    fn colliding_names_in_one_run_rejected() {
        let first = desired("a-b", "1", b"x");
        let second = desired("a", "b-1", b"y");
        assert_eq!(first.name, second.name);
        let actions = plan_namespace(&[first, second], &[]);
        assert_eq!(actions[0], Action::Apply);
        assert!(
            matches!(&actions[1], Action::Reject(ResourceConflict::NameTaken { other, .. }) if other == "acme/a-b:v1"),
            "{actions:?}"
        );
    }

    #[test]
    fn namespace_checks_tenant_label() {
        let labels = |value: &str| BTreeMap::from([(TENANT_LABEL.to_owned(), value.to_owned())]);
        assert_eq!(
            check_namespace("tenant-acme", Some(&labels("acme")), "acme"),
            Ok(())
        );
        assert_eq!(
            check_namespace("tenant-acme", None, "acme")
                .unwrap_err()
                .label(),
            "namespace_not_found"
        );
        assert_eq!(
            check_namespace("tenant-acme", Some(&BTreeMap::new()), "acme")
                .unwrap_err()
                .label(),
            "namespace_unlabeled"
        );
        assert_eq!(
            check_namespace("tenant-acme", Some(&labels("beta")), "acme")
                .unwrap_err()
                .label(),
            "namespace_other_tenant"
        );
    }

    #[test]
    fn missing_namespace_message_says_how_to_create_it() {
        let error = check_namespace("tenant-acme", None, "acme").unwrap_err();
        assert_eq!(
            error.to_string(),
            "namespace tenant-acme not found; create it with the label \
             artifacts.cameleer.io/tenant=acme and run the migration again"
        );
    }

    #[test]
    fn dns_grammar_table() {
        let long_label = "a".repeat(64);
        let cases = [
            ("tenant-acme", true, true),
            ("a", true, true),
            ("billing-1.0", false, true),
            ("-a", false, false),
            ("a-", false, false),
            ("A", false, false),
            ("a_b", false, false),
            ("a..b", false, false),
            ("", false, false),
            (long_label.as_str(), false, true),
        ];
        for (value, label, subdomain) in cases {
            assert_eq!(is_dns_label(value), label, "label {value:?}");
            assert_eq!(is_dns_subdomain(value), subdomain, "subdomain {value:?}");
        }
    }
}
