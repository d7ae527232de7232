//! Access to an ArtifactRegistry for the other controllers: which namespaces it admits, and a
//! registry client logged in with the operator's push account or the gateway's read account.
//!
//! Managed registries are reached at their in-cluster endpoint with the operator account from
//! the credentials Secret that the registry controller generates. External registries are
//! reached at `spec.external.url` with the credentials, CA bundle and TLS setting of their spec.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement},
};
use kube::{Api, Client, ResourceExt};
use tracing::warn;

use super::{
    credentials::{
        GATEWAY_PASSWORD_KEY, GATEWAY_USERNAME_KEY, OPERATOR_PASSWORD_KEY, OPERATOR_USERNAME_KEY,
    },
    external, resources,
};
use crate::{
    crd::{ArtifactRegistry, ExternalRegistry},
    oci::{Credentials, OciError, RegistryClient, RegistryConfig, TlsRoots},
};

/// Failure to build a client for a registry.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The API server could not be read; the caller retries.
    #[error("failed to read Secret {namespace}/{name} of ArtifactRegistry {registry}: {source}")]
    Kube {
        registry: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// A Secret that the registry needs is missing or incomplete.
    #[error("ArtifactRegistry {registry}: {message}")]
    Credentials { registry: String, message: String },
    /// The registry's URL or CA bundle is invalid.
    #[error("ArtifactRegistry {registry}: {source}")]
    Config {
        registry: String,
        #[source]
        source: OciError,
    },
}

impl AccessError {
    /// Returns whether trying again later may succeed without a change by the user.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Kube { .. })
    }
}

/// The account a registry client logs in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// Pushes and deletes artifacts.
    Operator,
    /// Reads artifacts for the gateway. External registries have one account in their spec,
    /// which serves both purposes.
    Gateway,
}

/// Builds a client for `registry` that pushes and deletes with the operator's account.
pub async fn operator_client(
    client: &Client,
    registry: &ArtifactRegistry,
) -> Result<RegistryClient, AccessError> {
    registry_client(client, registry, Account::Operator).await
}

/// Builds a client for `registry` that logs in with `account`.
pub async fn registry_client(
    client: &Client,
    registry: &ArtifactRegistry,
    account: Account,
) -> Result<RegistryClient, AccessError> {
    let namespace = registry.namespace().unwrap_or_default();
    let name = registry.name_any();
    let key = format!("{namespace}/{name}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let read_secret = |secret_name: String| {
        let secrets = secrets.clone();
        let key = key.clone();
        let namespace = namespace.clone();
        async move {
            secrets
                .get_opt(&secret_name)
                .await
                .map_err(|source| AccessError::Kube {
                    registry: key,
                    namespace,
                    name: secret_name,
                    source,
                })
        }
    };

    match &registry.spec.external {
        Some(external) => {
            let credentials = match &external.credentials_secret_ref {
                None => Credentials::Anonymous,
                Some(reference) => {
                    let secret = read_secret(reference.name.clone()).await?;
                    external::credentials_from_secret(secret.as_ref(), &reference.name).map_err(
                        |outcome| AccessError::Credentials {
                            registry: key.clone(),
                            message: outcome.message().to_owned(),
                        },
                    )?
                }
            };
            external_client(external, credentials).map_err(|source| AccessError::Config {
                registry: key,
                source,
            })
        }
        None => {
            let secret_name = resources::secret_name(&name);
            let secret = read_secret(secret_name.clone()).await?;
            let credentials =
                managed_credentials(secret.as_ref(), &secret_name, account).map_err(|message| {
                    AccessError::Credentials {
                        registry: key.clone(),
                        message,
                    }
                })?;
            RegistryConfig::new(&resources::endpoint(&name, &namespace))
                .map(|config| config.with_credentials(credentials))
                .and_then(RegistryClient::new)
                .map_err(|source| AccessError::Config {
                    registry: key,
                    source,
                })
        }
    }
}

/// Builds a client for an external registry from its spec and credentials.
pub fn external_client(
    external: &ExternalRegistry,
    credentials: Credentials,
) -> Result<RegistryClient, OciError> {
    let mut config = RegistryConfig::new(&external.url)?.with_credentials(credentials);
    if let Some(bundle) = &external.ca_bundle {
        config = config.with_tls_roots(TlsRoots::Only(bundle.clone().into_bytes()));
    }
    if external.insecure_skip_tls_verify {
        warn!(url = %external.url, "TLS verification is off for this registry (spec.external.insecureSkipTlsVerify)");
        config = config.with_tls_roots(TlsRoots::AcceptInvalid);
    }
    RegistryClient::new(config)
}

/// Reads an account from the credentials Secret of a managed registry.
fn managed_credentials(
    secret: Option<&Secret>,
    secret_name: &str,
    account: Account,
) -> Result<Credentials, String> {
    let (username_key, password_key) = match account {
        Account::Operator => (OPERATOR_USERNAME_KEY, OPERATOR_PASSWORD_KEY),
        Account::Gateway => (GATEWAY_USERNAME_KEY, GATEWAY_PASSWORD_KEY),
    };
    let Some(secret) = secret else {
        return Err(format!(
            "credentials Secret {secret_name} does not exist yet; the registry controller \
             creates it when it reconciles the registry"
        ));
    };
    let data = secret.data.as_ref();
    let read = |key: &str| {
        data.and_then(|data| data.get(key))
            .and_then(|value| String::from_utf8(value.0.clone()).ok())
            .ok_or_else(|| {
                format!(
                    "credentials Secret {secret_name} has no valid key {key}; delete the Secret so \
                     that the registry controller generates it again"
                )
            })
    };
    Ok(Credentials::Basic {
        username: read(username_key)?,
        password: read(password_key)?,
    })
}

// === Tenancy ===

/// Returns whether `registry` accepts AppArtifacts from the namespace `namespace` with the
/// labels `labels`.
///
/// Without `spec.tenancy.namespaceSelector`, or with an empty selector, only the registry's own
/// namespace is admitted, so that a registry never serves other namespaces by accident.
pub fn admits_namespace(
    registry: &ArtifactRegistry,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let selector = registry
        .spec
        .tenancy
        .as_ref()
        .and_then(|tenancy| tenancy.namespace_selector.as_ref())
        .filter(|selector| !is_empty_selector(selector));
    match selector {
        Some(selector) => selector_matches(selector, labels),
        None => registry.namespace().as_deref() == Some(namespace),
    }
}

fn is_empty_selector(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// Evaluates a label selector with the semantics of Kubernetes: every `matchLabels` entry and
/// every `matchExpressions` requirement must hold. An unknown operator matches nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions_match = selector
        .match_expressions
        .iter()
        .flatten()
        .all(|requirement| requirement_matches(requirement, labels));
    labels_match && expressions_match
}

fn requirement_matches(
    requirement: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let value = labels.get(&requirement.key);
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|value| values.contains(value)),
        "NotIn" => value.is_none_or(|value| !values.contains(value)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ArtifactRegistrySpec, Tenancy};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: Some(values.iter().map(|value| (*value).to_owned()).collect()),
        }
    }

    fn registry(selector: Option<LabelSelector>) -> ArtifactRegistry {
        let spec: ArtifactRegistrySpec = serde_json::from_value(serde_json::json!({
            "external": {"url": "https://registry.test"}
        }))
        .unwrap();
        let mut registry = ArtifactRegistry::new("main", spec);
        registry.metadata.namespace = Some("platform".to_owned());
        registry.spec.tenancy = Some(Tenancy {
            namespace_selector: selector,
        });
        registry
    }

    #[test]
    fn match_labels_require_every_pair() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("team", "a"), ("tier", "apps")])),
            match_expressions: None,
        };
        assert!(selector_matches(
            &selector,
            &labels(&[("team", "a"), ("tier", "apps"), ("x", "y")])
        ));
        assert!(!selector_matches(&selector, &labels(&[("team", "a")])));
    }

    #[test]
    fn match_expressions_follow_kubernetes_operators() {
        let present = labels(&[("tenant", "acme")]);
        let absent = labels(&[]);
        let case = |requirement: LabelSelectorRequirement, labels: &BTreeMap<String, String>| {
            selector_matches(
                &LabelSelector {
                    match_labels: None,
                    match_expressions: Some(vec![requirement]),
                },
                labels,
            )
        };
        assert!(case(requirement("tenant", "In", &["acme", "b"]), &present));
        assert!(!case(requirement("tenant", "In", &["b"]), &present));
        assert!(!case(requirement("tenant", "In", &["acme"]), &absent));
        assert!(case(requirement("tenant", "NotIn", &["b"]), &present));
        assert!(case(requirement("tenant", "NotIn", &["b"]), &absent));
        assert!(!case(requirement("tenant", "NotIn", &["acme"]), &present));
        assert!(case(requirement("tenant", "Exists", &[]), &present));
        assert!(!case(requirement("tenant", "Exists", &[]), &absent));
        assert!(case(requirement("tenant", "DoesNotExist", &[]), &absent));
        assert!(!case(requirement("tenant", "Bogus", &[]), &present));
    }

    #[test]
    fn without_selector_only_own_namespace_admitted() {
        let registry = registry(None);
        assert!(admits_namespace(&registry, "platform", &labels(&[])));
        assert!(!admits_namespace(&registry, "tenant-a", &labels(&[])));

        let empty = registry_with_empty_selector();
        assert!(!admits_namespace(
            &empty,
            "tenant-a",
            &labels(&[("a", "b")])
        ));
    }

    fn registry_with_empty_selector() -> ArtifactRegistry {
        registry(Some(LabelSelector::default()))
    }

    #[test]
    fn selector_admits_matching_namespaces_only() {
        let registry = registry(Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![requirement(crate::crd::TENANT_LABEL, "Exists", &[])]),
        }));
        let tenant = labels(&[(crate::crd::TENANT_LABEL, "acme")]);
        assert!(admits_namespace(&registry, "tenant-acme", &tenant));
        assert!(!admits_namespace(&registry, "kube-system", &labels(&[])));
    }

    #[test]
    fn missing_managed_secret_names_its_fix() {
        let error =
            managed_credentials(None, "main-zot-credentials", Account::Operator).unwrap_err();
        assert!(error.contains("main-zot-credentials"), "{error}");
        let empty = Secret::default();
        let error = managed_credentials(Some(&empty), "main-zot-credentials", Account::Operator)
            .unwrap_err();
        assert!(error.contains(OPERATOR_USERNAME_KEY), "{error}");
        let error = managed_credentials(Some(&empty), "main-zot-credentials", Account::Gateway)
            .unwrap_err();
        assert!(error.contains(GATEWAY_USERNAME_KEY), "{error}");
    }
}
