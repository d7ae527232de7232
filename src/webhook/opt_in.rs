//! Reads a pod's request for artifacts from its labels and annotations.

use serde_json::Value;

use super::{
    ADD_LOADER_ANNOTATION, ARTIFACTS_ANNOTATION, DEFAULT_LOADER_CONTAINER, Denial, INJECT_LABEL,
    LOADER_CONTAINER_ANNOTATION,
};
use crate::crd::names::{is_dns_label, is_dns_subdomain};

/// Most artifacts one pod may name. Each becomes four environment variables and a signature,
/// and the annotation is read on every admission, so the list stays short.
pub const MAX_ARTIFACTS: usize = 16;

/// The request of an opted-in pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptIn {
    /// AppArtifact names in the pod's namespace, without duplicates, in the annotation's order.
    pub artifacts: Vec<String>,
    /// Name of the loader init container.
    pub loader_container: String,
    /// Whether the webhook adds the loader when the pod has none.
    pub add_loader: bool,
}

/// Reads the opt-in of a pod in `namespace` from its `metadata` as the API server sent it.
///
/// Returns `Ok(None)` for a pod that did not opt in, which the webhook admits unchanged.
///
/// # Errors
///
/// A [`Denial`] naming the annotation and the value at fault when the pod opted in but its
/// annotations are malformed.
pub fn read(namespace: &str, metadata: &Value) -> Result<Option<OptIn>, Denial> {
    if string_entry(metadata, "labels", INJECT_LABEL) != Some("true") {
        return Ok(None);
    }

    let annotation = |key| string_entry(metadata, "annotations", key);
    let artifacts = artifact_names(namespace, annotation(ARTIFACTS_ANNOTATION))?;
    let loader_container = loader_container(annotation(LOADER_CONTAINER_ANNOTATION))?;
    let add_loader = add_loader(annotation(ADD_LOADER_ANNOTATION))?;
    Ok(Some(OptIn {
        artifacts,
        loader_container,
        add_loader,
    }))
}

/// Returns `metadata.{map}[key]` when it is a string.
fn string_entry<'a>(metadata: &'a Value, map: &str, key: &str) -> Option<&'a str> {
    metadata.get(map)?.get(key)?.as_str()
}

fn artifact_names(namespace: &str, value: Option<&str>) -> Result<Vec<String>, Denial> {
    let mut names: Vec<String> = Vec::new();
    for entry in value.into_iter().flat_map(|value| value.split(',')) {
        let name = entry.trim();
        if name.is_empty() || names.iter().any(|known| known == name) {
            continue;
        }
        check_name(namespace, name)?;
        names.push(name.to_owned());
        if names.len() > MAX_ARTIFACTS {
            return Err(Denial::new(
                "too_many_artifacts",
                format!(
                    "annotation {ARTIFACTS_ANNOTATION} names more than {MAX_ARTIFACTS} \
                     AppArtifacts; a pod may use at most {MAX_ARTIFACTS}"
                ),
            ));
        }
    }

    if names.is_empty() {
        return Err(Denial::new(
            "missing_annotation",
            format!(
                "the pod has label {INJECT_LABEL}=true but annotation {ARTIFACTS_ANNOTATION} \
                 lists no AppArtifact; list the AppArtifact names it needs, separated by commas, \
                 or remove the label"
            ),
        ));
    }
    Ok(names)
}

fn check_name(namespace: &str, name: &str) -> Result<(), Denial> {
    if let Some((other, artifact)) = name.split_once('/') {
        return Err(Denial::new(
            "other_namespace",
            format!(
                "annotation {ARTIFACTS_ANNOTATION} names {other:?}/{artifact:?}, but a pod may \
                 only use AppArtifacts of its own namespace {namespace}; create the AppArtifact \
                 in {namespace} and list it by name alone"
            ),
        ));
    }
    if !is_dns_subdomain(name) {
        return Err(Denial::new(
            "invalid_name",
            format!(
                "annotation {ARTIFACTS_ANNOTATION} lists {name:?}, which is not an AppArtifact \
                 name: use lowercase letters, digits, '-' and '.', at most 253 characters"
            ),
        ));
    }
    Ok(())
}

fn loader_container(value: Option<&str>) -> Result<String, Denial> {
    let Some(name) = value.map(|value| value.trim()) else {
        return Ok(DEFAULT_LOADER_CONTAINER.to_owned());
    };
    if !is_dns_label(name) {
        return Err(Denial::new(
            "invalid_annotation",
            format!(
                "annotation {LOADER_CONTAINER_ANNOTATION} is {name:?}, which is not a container \
                 name: use lowercase letters, digits and '-', at most 63 characters"
            ),
        ));
    }
    Ok(name.to_owned())
}

fn add_loader(value: Option<&str>) -> Result<bool, Denial> {
    match value.map(|value| value.trim()) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(Denial::new(
            "invalid_annotation",
            format!(
                "annotation {ADD_LOADER_ANNOTATION} is {other:?}; set it to \"true\" or \"false\""
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;

    fn metadata(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Value {
        let map = |entries: &[(&str, &str)]| {
            entries
                .iter()
                .map(|(key, value)| ((*key).to_owned(), json!(value)))
                .collect::<Map<_, _>>()
        };
        json!({ "labels": map(labels), "annotations": map(annotations) })
    }

    fn opted_in(annotations: &[(&str, &str)]) -> Result<Option<OptIn>, Denial> {
        read("shop", &metadata(&[(INJECT_LABEL, "true")], annotations))
    }

    #[test]
    fn pod_without_label_is_not_opted_in() {
        let annotations = [(ARTIFACTS_ANNOTATION, "billing")];
        assert_eq!(read("shop", &metadata(&[], &annotations)), Ok(None));
        let other = [(INJECT_LABEL, "false")];
        assert_eq!(read("shop", &metadata(&other, &annotations)), Ok(None));
        assert_eq!(read("shop", &json!({})), Ok(None));
    }

    #[test]
    fn names_are_trimmed_and_deduplicated_in_order() {
        let opt_in = opted_in(&[(ARTIFACTS_ANNOTATION, " billing, ledger ,billing,,")])
            .unwrap()
            .unwrap();
        assert_eq!(
            opt_in,
            OptIn {
                artifacts: vec!["billing".to_owned(), "ledger".to_owned()],
                loader_container: "loader".to_owned(),
                add_loader: false,
            }
        );
    }

    #[test]
    fn loader_annotations_are_read() {
        let opt_in = opted_in(&[
            (ARTIFACTS_ANNOTATION, "billing"),
            (LOADER_CONTAINER_ANNOTATION, "fetch-jar"),
            (ADD_LOADER_ANNOTATION, "true"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(opt_in.loader_container, "fetch-jar");
        assert!(opt_in.add_loader);
    }

    #[test]
    fn denial_table() {
        let too_many = (0..=MAX_ARTIFACTS)
            .map(|index| format!("app-{index}"))
            .collect::<Vec<_>>()
            .join(",");
        for (annotations, reason, needle) in [
            (vec![], "missing_annotation", "lists no AppArtifact"),
            (
                vec![(ARTIFACTS_ANNOTATION, " , ")],
                "missing_annotation",
                "separated by commas",
            ),
            (
                vec![(ARTIFACTS_ANNOTATION, "other/billing")],
                "other_namespace",
                "own namespace shop",
            ),
            (
                vec![(ARTIFACTS_ANNOTATION, "../billing")],
                "other_namespace",
                "\"..\"",
            ),
            (
                vec![(ARTIFACTS_ANNOTATION, "Billing")],
                "invalid_name",
                "\"Billing\"",
            ),
            (
                vec![(ARTIFACTS_ANNOTATION, "bill\ning")],
                "invalid_name",
                "\"bill\\ning\"",
            ),
            (
                vec![(ARTIFACTS_ANNOTATION, "b\u{e9}")],
                "invalid_name",
                "lowercase",
            ),
            (
                vec![(ARTIFACTS_ANNOTATION, too_many.as_str())],
                "too_many_artifacts",
                "at most 16",
            ),
            (
                vec![
                    (ARTIFACTS_ANNOTATION, "billing"),
                    (ADD_LOADER_ANNOTATION, "yes"),
                ],
                "invalid_annotation",
                "\"yes\"",
            ),
            (
                vec![
                    (ARTIFACTS_ANNOTATION, "billing"),
                    (LOADER_CONTAINER_ANNOTATION, "Loader"),
                ],
                "invalid_annotation",
                "\"Loader\"",
            ),
        ] {
            let denial = opted_in(&annotations).unwrap_err();
            assert_eq!(denial.reason, reason, "{annotations:?}");
            assert!(
                denial.message.contains(needle),
                "{annotations:?}: {}",
                denial.message
            );
        }
    }
}
