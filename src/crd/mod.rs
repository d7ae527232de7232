//! The custom resources of the `artifacts.cameleer.io` API group.
//!
//! `ArtifactRegistry` runs or adopts an OCI registry; `AppArtifact` is one JAR in it. The YAML
//! in the repository's `crds/` folder is generated from these types by `artifact-operator crds`
//! and a test fails when the two drift apart.

mod artifact;
pub mod names;
mod registry;

pub use artifact::*;
pub use registry::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every resource in this module.
pub const GROUP: &str = "artifacts.cameleer.io";

/// Namespace label that names the tenant owning every AppArtifact in the namespace.
pub const TENANT_LABEL: &str = "artifacts.cameleer.io/tenant";

/// Returns every CustomResourceDefinition the operator serves, in installation order.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    vec![ArtifactRegistry::crd(), AppArtifact::crd()]
}

/// Renders every definition as one multi-document YAML stream.
pub fn render_yaml() -> String {
    definitions().iter().map(render_definition).collect()
}

/// Renders one definition as a YAML document, exactly as committed under `crds/`.
pub fn render_definition(crd: &CustomResourceDefinition) -> String {
    let document =
        serde_norway::to_string(crd).expect("a CustomResourceDefinition must serialise to YAML");
    format!("---\n{document}")
}

/// Returns the name of the file under `crds/` that contains one definition.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!(
        "{}.yaml",
        crd.metadata
            .name
            .as_deref()
            .expect("a generated CRD must have a name")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn schema_of(crd: &CustomResourceDefinition) -> Value {
        let version = &crd.spec.versions[0];
        serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap()
    }

    #[test]
    fn definitions_share_group_and_category() {
        for crd in definitions() {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&["artifacts".to_owned()][..])
            );
            assert!(
                crd.spec.versions[0]
                    .subresources
                    .as_ref()
                    .unwrap()
                    .status
                    .is_some()
            );
        }
    }

    #[test]
    fn schema_patterns_match_constants() {
        let schema = schema_of(&AppArtifact::crd());
        let spec = &schema["properties"]["spec"]["properties"];
        for field in ["tenantId", "appId"] {
            assert_eq!(spec[field]["pattern"], COMPONENT_PATTERN, "{field}");
            assert_eq!(spec[field]["maxLength"], COMPONENT_MAX_LENGTH, "{field}");
        }
        assert_eq!(spec["version"]["pattern"], VERSION_PATTERN);
        assert_eq!(spec["version"]["maxLength"], VERSION_MAX_LENGTH);
    }

    #[test]
    fn coordinates_are_immutable() {
        let schema = schema_of(&AppArtifact::crd());
        let spec = &schema["properties"]["spec"]["properties"];
        for field in ["tenantId", "appId", "version"] {
            let rule = &spec[field]["x-kubernetes-validations"][0]["rule"];
            assert_eq!(rule, "self == oldSelf", "{field}");
        }
    }

    #[test]
    fn printer_columns_show_reference_and_digest() {
        let crd = AppArtifact::crd();
        let columns = crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap();
        let paths: Vec<&str> = columns
            .iter()
            .map(|column| column.json_path.as_str())
            .collect();
        assert!(paths.contains(&".status.artifact.ociRef"), "{paths:?}");
        assert!(paths.contains(&".status.artifact.digest"), "{paths:?}");
    }

    #[test]
    fn spec_defaults_fill_in() {
        let spec: ArtifactRegistrySpec =
            serde_json::from_value(serde_json::json!({ "zot": { "storage": { "size": "1Gi" } } }))
                .unwrap();
        let zot = spec.zot.unwrap();
        assert_eq!(zot.image, DEFAULT_ZOT_IMAGE);
        assert_eq!(zot.replicas, 1);
        assert!(zot.storage.dedupe);
        assert_eq!(zot.log_level, ZotLogLevel::Info);
    }
}
