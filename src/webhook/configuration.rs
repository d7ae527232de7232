//! Renders the MutatingWebhookConfiguration that routes pod creation to the webhook, and
//! applies it when the operator registers itself (a control plane outside the cluster, as in
//! tests and `make demo`). In a cluster the Helm chart owns the configuration and the operator
//! only keeps its `caBundle` current.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::admissionregistration::v1::{
        MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
        WebhookClientConfig,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

use super::{INJECT_LABEL, admission::MUTATE_PODS_PATH};

/// Default name of the configuration.
pub const DEFAULT_NAME: &str = "artifact-operator";
/// Name of the pod webhook inside the configuration.
pub const WEBHOOK_NAME: &str = "pods.artifacts.cameleer.io";
/// Seconds the API server waits for a response. Kubernetes accepts 1 to 30; a short wait keeps
/// pod creation fast when the operator is unreachable.
pub const TIMEOUT_SECONDS: i32 = 5;
/// Field manager of the operator's server-side apply.
const FIELD_MANAGER: &str = "artifact-operator";
/// Label the API server puts on every namespace with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Destination of the API server's admission reviews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Service in the cluster (the Helm chart's layout).
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
    /// An HTTPS URL, such as `https://127.0.0.1:8443` for an operator outside the cluster. The
    /// path is appended.
    Url(String),
}

/// Everything the configuration depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub name: String,
    pub endpoint: Endpoint,
    /// PEM of the CAs that sign the serving certificate.
    pub ca_bundle: String,
    /// Namespaces whose pods never reach the webhook: `kube-system` and the operator's own, so
    /// that a broken webhook does not block the pods that would repair it.
    pub excluded_namespaces: Vec<String>,
    /// When not empty, only pods of these namespaces reach the webhook, as for an operator
    /// that watches one namespace.
    pub only_namespaces: Vec<String>,
}

impl WebhookConfig {
    /// Returns the default configuration for an operator in `operator_namespace`.
    pub fn new(endpoint: Endpoint, ca_bundle: String, operator_namespace: &str) -> Self {
        Self {
            name: DEFAULT_NAME.to_owned(),
            endpoint,
            ca_bundle,
            excluded_namespaces: vec!["kube-system".to_owned(), operator_namespace.to_owned()],
            only_namespaces: Vec::new(),
        }
    }
}

/// Builds the MutatingWebhookConfiguration.
///
/// Only pods with the opt-in label reach the webhook (objectSelector), so `failurePolicy: Fail`
/// blocks only pods that need their JAR, and every other pod is created even when the operator
/// is down.
pub fn build(config: &WebhookConfig) -> MutatingWebhookConfiguration {
    let client_config = match &config.endpoint {
        Endpoint::Service {
            namespace,
            name,
            port,
        } => WebhookClientConfig {
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(MUTATE_PODS_PATH.to_owned()),
                port: Some(*port),
            }),
            ca_bundle: Some(ByteString(config.ca_bundle.clone().into_bytes())),
            url: None,
        },
        Endpoint::Url(base) => WebhookClientConfig {
            url: Some(format!("{}{MUTATE_PODS_PATH}", base.trim_end_matches('/'))),
            ca_bundle: Some(ByteString(config.ca_bundle.clone().into_bytes())),
            service: None,
        },
    };

    let webhook = MutatingWebhook {
        name: WEBHOOK_NAME.to_owned(),
        admission_review_versions: vec!["v1".to_owned()],
        client_config,
        rules: Some(vec![RuleWithOperations {
            api_groups: Some(vec![String::new()]),
            api_versions: Some(vec!["v1".to_owned()]),
            operations: Some(vec!["CREATE".to_owned()]),
            resources: Some(vec!["pods".to_owned()]),
            scope: Some("Namespaced".to_owned()),
        }]),
        object_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                INJECT_LABEL.to_owned(),
                "true".to_owned(),
            )])),
            match_expressions: None,
        }),
        namespace_selector: Some(namespace_selector(config)),
        failure_policy: Some("Fail".to_owned()),
        match_policy: Some("Equivalent".to_owned()),
        reinvocation_policy: Some("IfNeeded".to_owned()),
        side_effects: "None".to_owned(),
        timeout_seconds: Some(TIMEOUT_SECONDS),
        match_conditions: None,
    };

    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "artifact-operator".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![webhook]),
    }
}

fn namespace_selector(config: &WebhookConfig) -> LabelSelector {
    let requirement = |operator: &str, values: &[String]| LabelSelectorRequirement {
        key: NAMESPACE_NAME_LABEL.to_owned(),
        operator: operator.to_owned(),
        values: Some(values.to_vec()),
    };
    let mut expressions = vec![requirement("NotIn", &config.excluded_namespaces)];
    if !config.only_namespaces.is_empty() {
        expressions.push(requirement("In", &config.only_namespaces));
    }
    LabelSelector {
        match_expressions: Some(expressions),
        match_labels: None,
    }
}

/// Creates or updates the configuration with server-side apply.
///
/// # Errors
///
/// The API server's error, for example when the operator may not write
/// mutatingwebhookconfigurations.
pub async fn apply(
    client: &Client,
    config: &WebhookConfig,
) -> kube::Result<MutatingWebhookConfiguration> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mut desired = build(config);
    desired.metadata.managed_fields = None;
    let body = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": desired.metadata,
        "webhooks": desired.webhooks,
    });
    api.patch(
        &config.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn url_endpoint_renders_every_safety_setting() {
        let config = WebhookConfig::new(
            Endpoint::Url("https://127.0.0.1:8443/".to_owned()),
            "PEM".to_owned(),
            "artifact-operator",
        );
        let rendered = serde_json::to_value(build(&config)).unwrap();
        assert_eq!(
            rendered["webhooks"][0],
            json!({
                "name": "pods.artifacts.cameleer.io",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {
                    "url": "https://127.0.0.1:8443/v1/mutate/pods",
                    "caBundle": "UEVN",
                },
                "rules": [{
                    "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                    "resources": ["pods"], "scope": "Namespaced",
                }],
                "objectSelector": { "matchLabels": { "artifacts.cameleer.io/inject": "true" } },
                "namespaceSelector": { "matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                    "values": ["kube-system", "artifact-operator"],
                }] },
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "reinvocationPolicy": "IfNeeded",
                "sideEffects": "None",
                "timeoutSeconds": 5,
            })
        );
    }

    #[test]
    fn watched_namespace_narrows_the_selector() {
        let mut config = WebhookConfig::new(
            Endpoint::Url("https://127.0.0.1:8443".to_owned()),
            String::new(),
            "ops",
        );
        config.only_namespaces = vec!["shop".to_owned()];
        let rendered = serde_json::to_value(build(&config)).unwrap();
        assert_eq!(
            rendered["webhooks"][0]["namespaceSelector"]["matchExpressions"][1],
            json!({ "key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop"] })
        );
    }

    #[test]
    fn service_endpoint_names_the_path() {
        let config = WebhookConfig::new(
            Endpoint::Service {
                namespace: "ops".to_owned(),
                name: "artifact-operator-webhook".to_owned(),
                port: 443,
            },
            String::new(),
            "ops",
        );
        let rendered = serde_json::to_value(build(&config)).unwrap();
        assert_eq!(
            rendered["webhooks"][0]["clientConfig"]["service"],
            json!({
                "namespace": "ops", "name": "artifact-operator-webhook",
                "path": "/v1/mutate/pods", "port": 443,
            })
        );
    }
}
