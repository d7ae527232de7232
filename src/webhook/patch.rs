//! Builds the JSON patch that injects artifacts into a pod.
//!
//! The patch is made of explicit `add` operations on the raw pod as the API server sent it.
//! Re-serialising a typed `Pod` would drop every field newer than our copy of the API types,
//! so the builder reads the JSON and only adds. It is idempotent: an operation whose result is
//! already in the pod (a variable, the loader, the volume, a mount) is left out, so a
//! reinvocation after another webhook changed the pod adds nothing twice.

use serde::Serialize;
use serde_json::{Value, json};

use super::{
    Denial, INJECTED_ANNOTATION, LOADER_CONTAINER_ANNOTATION, opt_in::OptIn, resolve::Injection,
};

/// Name of the emptyDir volume that an added loader writes into.
pub const VOLUME_NAME: &str = "artifact-operator-jars";

/// Room in the emptyDir beyond the artifacts themselves, for the loader's partial file.
const VOLUME_SLACK_BYTES: i64 = 1024 * 1024;

/// Template of an added loader init container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderTemplate {
    /// Image whose entrypoint is the `artifact-operator` binary.
    pub image: String,
    /// Directory that the loader writes JARs into and that app containers mount read-only.
    pub mount_path: String,
}

/// One JSON patch operation. The builder only ever adds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operation {
    pub op: &'static str,
    pub path: String,
    pub value: Value,
}

fn add(path: impl Into<String>, value: Value) -> Operation {
    Operation {
        op: "add",
        path: path.into(),
        value,
    }
}

/// Escapes one JSON pointer token (RFC 6901): `~` as `~0` and `/` as `~1`.
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Returns the operations that give `pod` its `injections`.
///
/// # Errors
///
/// A [`Denial`] when the pod has no loader and did not ask for one, when its loader already
/// sets a variable the webhook owns, or when an app container already uses the mount path.
pub fn build(
    pod: &Value,
    opt_in: &OptIn,
    injections: &[Injection],
    loader: &LoaderTemplate,
) -> Result<Vec<Operation>, Denial> {
    let already_injected = annotation(pod, INJECTED_ANNOTATION).is_some();
    let init_containers = containers(pod, "initContainers");
    let loader_index = init_containers
        .iter()
        .position(|container| name_of(container) == opt_in.loader_container);

    let mut operations = match loader_index {
        Some(index) => {
            let container = init_containers[index];
            let base = format!("/spec/initContainers/{index}");
            let expected = injections.iter().flat_map(env);
            env_operations(&base, container, expected.collect(), already_injected)?
        }
        None if opt_in.add_loader => {
            added_loader_operations(pod, opt_in, injections, loader, already_injected)?
        }
        None => return Err(missing_loader(&opt_in.loader_container)),
    };

    operations.extend(marker_operations(pod, injections));
    Ok(operations)
}

// === Reading the raw pod ===

fn containers<'a>(pod: &'a Value, field: &str) -> Vec<&'a Value> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|list| list.iter().collect())
        .unwrap_or_default()
}

fn name_of(container: &Value) -> &str {
    container
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/annotations")
        .and_then(|annotations| annotations.get(key))
        .and_then(Value::as_str)
}

fn has_named(list: Option<&Value>, name: &str) -> bool {
    list.and_then(Value::as_array)
        .is_some_and(|items| items.iter().any(|item| name_of(item) == name))
}

// === Variables ===

fn env(injection: &Injection) -> [(String, String); 4] {
    let prefix = &injection.env_prefix;
    [
        (format!("{prefix}URL"), injection.url.clone()),
        (format!("{prefix}DIGEST"), injection.digest.clone()),
        (format!("{prefix}SIZE"), injection.size.to_string()),
        (format!("{prefix}FILENAME"), injection.file_name.clone()),
    ]
}

fn env_var((name, value): (String, String)) -> Value {
    json!({ "name": name, "value": value })
}

/// Adds the variables that `container` (at JSON pointer `base`) lacks. A variable it already
/// sets is the webhook's own on reinvocation; before the first injection it is a conflict.
fn env_operations(
    base: &str,
    container: &Value,
    expected: Vec<(String, String)>,
    already_injected: bool,
) -> Result<Vec<Operation>, Denial> {
    let existing = container.get("env");
    let mut missing = Vec::with_capacity(expected.len());
    for (name, value) in expected {
        if !has_named(existing, &name) {
            missing.push((name, value));
        } else if !already_injected {
            return Err(Denial::new(
                "variable_conflict",
                format!(
                    "init container {} already sets {name}, which the webhook sets; remove it \
                     from the pod template",
                    name_of(container)
                ),
            ));
        }
    }

    if missing.is_empty() {
        return Ok(Vec::new());
    }
    if existing.and_then(Value::as_array).is_none() {
        let list = missing.into_iter().map(env_var).collect();
        return Ok(vec![add(format!("{base}/env"), Value::Array(list))]);
    }
    Ok(missing
        .into_iter()
        .map(|variable| add(format!("{base}/env/-"), env_var(variable)))
        .collect())
}

fn missing_loader(loader: &str) -> Denial {
    Denial::new(
        "loader_missing",
        format!(
            "the pod has no init container named {loader} to receive the artifact URL; add one, \
             name yours with annotation {LOADER_CONTAINER_ANNOTATION}, or set annotation \
             {}=true to have one added",
            super::ADD_LOADER_ANNOTATION
        ),
    )
}

// === Added loader ===

/// Adds a loader per injection, the volume they write into and its read-only mounts. After an
/// earlier injection (the marker is present), an init container with a loader's name is that
/// loader. Before one, it is the user's container, so the pod is denied.
fn added_loader_operations(
    pod: &Value,
    opt_in: &OptIn,
    injections: &[Injection],
    loader: &LoaderTemplate,
    already_injected: bool,
) -> Result<Vec<Operation>, Denial> {
    check_mount_path(pod, loader)?;

    let mut operations = Vec::new();
    let init_present = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .is_some();
    let mut new_containers = Vec::new();
    for (index, injection) in injections.iter().enumerate() {
        let name = match injections.len() {
            1 => opt_in.loader_container.clone(),
            _ => format!("{}-{}", opt_in.loader_container, index + 1),
        };
        let in_init = has_named(pod.pointer("/spec/initContainers"), &name);
        if has_named(pod.pointer("/spec/containers"), &name) || (in_init && !already_injected) {
            return Err(loader_conflict(&name, &injection.artifact));
        }
        if !in_init {
            new_containers.push(loader_container(&name, injection, loader));
        }
    }
    if init_present {
        // Loaders run first, so other init containers may already use the JARs.
        operations.extend(
            new_containers
                .into_iter()
                .enumerate()
                .map(|(index, container)| add(format!("/spec/initContainers/{index}"), container)),
        );
    } else if !new_containers.is_empty() {
        operations.push(add("/spec/initContainers", Value::Array(new_containers)));
    }

    operations.extend(volume_operations(pod, injections));
    operations.extend(mount_operations(pod, loader));
    Ok(operations)
}

/// Container names are unique within a pod, and a user's container of a loader's name would
/// otherwise be taken for the loader and never receive the artifact.
fn loader_conflict(name: &str, artifact: &str) -> Denial {
    Denial::new(
        "loader_conflict",
        format!(
            "the pod already has a container named {name}, the name of the loader that the \
             webhook adds for AppArtifact {artifact}; rename that container, or provide your own \
             loader and name it with annotation {LOADER_CONTAINER_ANNOTATION}"
        ),
    )
}

/// Refuses a pod whose app container already mounts another volume at the loader's path.
fn check_mount_path(pod: &Value, loader: &LoaderTemplate) -> Result<(), Denial> {
    for container in containers(pod, "containers") {
        let mounts = container.get("volumeMounts").and_then(Value::as_array);
        let clash = mounts.into_iter().flatten().find(|mount| {
            mount.get("mountPath").and_then(Value::as_str) == Some(loader.mount_path.as_str())
                && name_of(mount) != VOLUME_NAME
        });
        if let Some(mount) = clash {
            return Err(Denial::new(
                "mount_conflict",
                format!(
                    "container {} already mounts volume {} at {}, where the added loader puts \
                     the JARs; move that mount or provide your own loader",
                    name_of(container),
                    name_of(mount),
                    loader.mount_path
                ),
            ));
        }
    }
    Ok(())
}

fn loader_container(name: &str, injection: &Injection, loader: &LoaderTemplate) -> Value {
    let output = format!("{}/", loader.mount_path.trim_end_matches('/'));
    json!({
        "name": name,
        "image": loader.image,
        "args": ["loader", "--env-prefix", injection.env_prefix, "--output", output],
        "env": env(injection).into_iter().map(env_var).collect::<Vec<_>>(),
        "volumeMounts": [{ "name": VOLUME_NAME, "mountPath": loader.mount_path }],
        "resources": {
            "requests": { "cpu": "50m", "memory": "32Mi" },
            "limits": { "memory": "64Mi" },
        },
        "securityContext": {
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
}

fn volume_operations(pod: &Value, injections: &[Injection]) -> Vec<Operation> {
    let volumes = pod.pointer("/spec/volumes");
    if has_named(volumes, VOLUME_NAME) {
        return Vec::new();
    }
    // Sizes come from AppArtifact statuses, which anyone allowed to write them can set to any
    // int64, so the sum saturates instead of overflowing.
    let bytes = injections
        .iter()
        .fold(VOLUME_SLACK_BYTES, |total, injection| {
            total.saturating_add(injection.size.max(0))
        });
    let volume = json!({
        "name": VOLUME_NAME,
        "emptyDir": { "sizeLimit": bytes.to_string() },
    });
    match volumes.and_then(Value::as_array) {
        Some(_) => vec![add("/spec/volumes/-", volume)],
        None => vec![add("/spec/volumes", json!([volume]))],
    }
}

fn mount_operations(pod: &Value, loader: &LoaderTemplate) -> Vec<Operation> {
    let mount = json!({ "name": VOLUME_NAME, "mountPath": loader.mount_path, "readOnly": true });
    containers(pod, "containers")
        .into_iter()
        .enumerate()
        .filter(|(_, container)| !has_named(container.get("volumeMounts"), VOLUME_NAME))
        .map(|(index, container)| {
            let base = format!("/spec/containers/{index}/volumeMounts");
            match container.get("volumeMounts").and_then(Value::as_array) {
                Some(_) => add(format!("{base}/-"), mount.clone()),
                None => add(base, json!([mount.clone()])),
            }
        })
        .collect()
}

// === Marker ===

/// Records `name=digest` of every injection, so that people and reinvocations can see what the
/// pod received.
fn marker_operations(pod: &Value, injections: &[Injection]) -> Vec<Operation> {
    let value = injections
        .iter()
        .map(|injection| format!("{}={}", injection.artifact, injection.digest))
        .collect::<Vec<_>>()
        .join(",");
    if annotation(pod, INJECTED_ANNOTATION) == Some(value.as_str()) {
        return Vec::new();
    }
    let path = format!(
        "/metadata/annotations/{}",
        escape_token(INJECTED_ANNOTATION)
    );
    match pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        // On an existing member `add` replaces the value (RFC 6902, section 4.1).
        Some(_) => vec![add(path, Value::String(value))],
        None => vec![add(
            "/metadata/annotations",
            json!({ INJECTED_ANNOTATION: value }),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn injection(name: &str, prefix: &str, size: i64) -> Injection {
        Injection {
            artifact: name.to_owned(),
            env_prefix: prefix.to_owned(),
            url: format!("http://gw/v1/artifacts/shop/{name}/{DIGEST}?kid=k&exp=1&sig=s"),
            digest: DIGEST.to_owned(),
            size,
            file_name: format!("{name}.jar"),
        }
    }

    fn opt_in(add_loader: bool) -> OptIn {
        OptIn {
            artifacts: vec!["billing".to_owned()],
            loader_container: "loader".to_owned(),
            add_loader,
        }
    }

    fn template() -> LoaderTemplate {
        LoaderTemplate {
            image: "registry.example/artifact-operator:1".to_owned(),
            mount_path: "/artifacts".to_owned(),
        }
    }

    fn pod_with_loader(env: Option<Value>) -> Value {
        let mut loader = json!({ "name": "loader", "image": "curl" });
        if let Some(env) = env {
            loader["env"] = env;
        }
        json!({
            "metadata": { "generateName": "web-", "labels": { "app": "web" } },
            "spec": {
                "initContainers": [{ "name": "setup", "image": "busybox" }, loader],
                "containers": [{ "name": "app", "image": "java" }],
                "futureField": { "kept": true },
            },
        })
    }

    /// Applies `operations` the way the API server does.
    fn apply(pod: &Value, operations: &[Operation]) -> Value {
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::to_value(operations).unwrap()).unwrap();
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        patched
    }

    #[test]
    fn existing_loader_gets_env_and_marker() {
        let pod = pod_with_loader(None);
        let injections = [injection("billing", "ARTIFACT_", 1234)];
        let operations = build(&pod, &opt_in(false), &injections, &template()).unwrap();
        let url = &injections[0].url;
        assert_eq!(
            serde_json::to_value(&operations).unwrap(),
            json!([
                { "op": "add", "path": "/spec/initContainers/1/env", "value": [
                    { "name": "ARTIFACT_URL", "value": url },
                    { "name": "ARTIFACT_DIGEST", "value": DIGEST },
                    { "name": "ARTIFACT_SIZE", "value": "1234" },
                    { "name": "ARTIFACT_FILENAME", "value": "billing.jar" },
                ] },
                { "op": "add", "path": "/metadata/annotations", "value": {
                    "artifacts.cameleer.io/injected": format!("billing={DIGEST}"),
                } },
            ])
        );
        let patched = apply(&pod, &operations);
        assert_eq!(patched["spec"]["futureField"], json!({ "kept": true }));
    }

    #[test]
    fn existing_env_list_is_appended_to() {
        let pod = pod_with_loader(Some(json!([{ "name": "JAVA_OPTS", "value": "-Xmx1g" }])));
        let operations = build(
            &pod,
            &opt_in(false),
            &[injection("billing", "ARTIFACT_", 1)],
            &template(),
        )
        .unwrap();
        let paths: Vec<&str> = operations.iter().map(|op| op.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/spec/initContainers/1/env/-",
                "/spec/initContainers/1/env/-",
                "/spec/initContainers/1/env/-",
                "/spec/initContainers/1/env/-",
                "/metadata/annotations",
            ]
        );
        let patched = apply(&pod, &operations);
        assert_eq!(
            patched["spec"]["initContainers"][1]["env"][0]["name"],
            "JAVA_OPTS"
        );
        assert_eq!(
            patched["spec"]["initContainers"][1]["env"][4]["name"],
            "ARTIFACT_FILENAME"
        );
    }

    #[test]
    fn reinvocation_adds_nothing_twice() {
        let injections = [injection("billing", "ARTIFACT_", 1)];
        for (pod, add_loader) in [
            (pod_with_loader(None), false),
            (
                json!({
                    "metadata": { "annotations": { "team": "a/b~c" } },
                    "spec": { "containers": [{ "name": "app" }, { "name": "sidecar" }] },
                }),
                true,
            ),
        ] {
            let first = build(&pod, &opt_in(add_loader), &injections, &template()).unwrap();
            let patched = apply(&pod, &first);
            let second = build(&patched, &opt_in(add_loader), &injections, &template()).unwrap();
            assert_eq!(second, [], "{first:?}");
        }
    }

    #[test]
    fn variable_set_by_the_user_conflicts() {
        let pod = pod_with_loader(Some(json!([{ "name": "ARTIFACT_URL", "value": "x" }])));
        let denial = build(
            &pod,
            &opt_in(false),
            &[injection("billing", "ARTIFACT_", 1)],
            &template(),
        )
        .unwrap_err();
        assert_eq!(denial.reason, "variable_conflict");
        assert!(
            denial.message.contains("loader already sets ARTIFACT_URL"),
            "{denial}"
        );
    }

    #[test]
    fn missing_loader_is_denied_unless_added() {
        let pod = json!({ "spec": { "containers": [{ "name": "app" }] } });
        let injections = [injection("billing", "ARTIFACT_", 1)];
        let denial = build(&pod, &opt_in(false), &injections, &template()).unwrap_err();
        assert_eq!(denial.reason, "loader_missing");
        assert!(
            denial
                .message
                .contains("artifacts.cameleer.io/add-loader=true"),
            "{denial}"
        );
    }

    #[test]
    fn added_loader_gets_volume_and_read_only_mounts() {
        let pod = json!({
            "metadata": { "annotations": { "team": "payments" } },
            "spec": {
                "containers": [
                    { "name": "app", "volumeMounts": [{ "name": "config", "mountPath": "/etc/app" }] },
                    { "name": "sidecar" },
                ],
                "volumes": [{ "name": "config", "configMap": { "name": "app" } }],
            },
        });
        let injections = [
            injection("billing", "ARTIFACT_BILLING_", 3 * 1024 * 1024),
            injection("ledger", "ARTIFACT_LEDGER_", 1024),
        ];
        let operations = build(&pod, &opt_in(true), &injections, &template()).unwrap();
        let patched = apply(&pod, &operations);

        let loaders = patched["spec"]["initContainers"].as_array().unwrap();
        let names: Vec<&str> = loaders.iter().map(name_of).collect();
        assert_eq!(names, ["loader-1", "loader-2"]);
        assert_eq!(
            loaders[1]["args"],
            json!([
                "loader",
                "--env-prefix",
                "ARTIFACT_LEDGER_",
                "--output",
                "/artifacts/"
            ])
        );
        assert_eq!(loaders[1]["env"][0]["name"], "ARTIFACT_LEDGER_URL");
        assert_eq!(loaders[0]["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            patched["spec"]["volumes"][1],
            json!({ "name": VOLUME_NAME, "emptyDir": { "sizeLimit": (4 * 1024 * 1024 + 1024).to_string() } })
        );
        let read_only = json!({ "name": VOLUME_NAME, "mountPath": "/artifacts", "readOnly": true });
        assert_eq!(
            patched["spec"]["containers"][0]["volumeMounts"][1],
            read_only
        );
        assert_eq!(
            patched["spec"]["containers"][1]["volumeMounts"][0],
            read_only
        );
        assert_eq!(
            patched["metadata"]["annotations"],
            json!({ "team": "payments", INJECTED_ANNOTATION: format!("billing={DIGEST},ledger={DIGEST}") })
        );
    }

    #[test]
    fn added_loader_runs_before_other_init_containers() {
        let pod = json!({ "metadata": {}, "spec": {
            "initContainers": [{ "name": "migrate-db" }],
            "containers": [{ "name": "app" }],
        } });
        let operations = build(
            &pod,
            &opt_in(true),
            &[injection("billing", "ARTIFACT_", 1)],
            &template(),
        )
        .unwrap();
        let patched = apply(&pod, &operations);
        let names: Vec<&str> = patched["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(name_of)
            .collect();
        assert_eq!(names, ["loader", "migrate-db"]);
    }

    #[test]
    fn mount_path_in_use_is_denied() {
        let pod = json!({ "spec": { "containers": [
            { "name": "app", "volumeMounts": [{ "name": "data", "mountPath": "/artifacts" }] },
        ] } });
        let denial = build(
            &pod,
            &opt_in(true),
            &[injection("billing", "ARTIFACT_", 1)],
            &template(),
        )
        .unwrap_err();
        assert_eq!(denial.reason, "mount_conflict");
        assert!(
            denial
                .message
                .contains("app already mounts volume data at /artifacts"),
            "{denial}"
        );
    }

    /// Found by the patch property test: a user's `loader-2` was taken for the added loader and
    /// never received the artifact, and an app container named like a loader made the pod
    /// invalid.
    #[test]
    fn container_with_a_loader_name_is_denied() {
        let injections = [
            injection("billing", "ARTIFACT_BILLING_", 1),
            injection("ledger", "ARTIFACT_LEDGER_", 1),
        ];
        for pod in [
            json!({ "spec": {
                "initContainers": [{ "name": "loader-2", "image": "busybox" }],
                "containers": [{ "name": "app" }],
            } }),
            json!({ "spec": { "containers": [{ "name": "loader-1" }] } }),
        ] {
            let denial = build(&pod, &opt_in(true), &injections, &template()).unwrap_err();
            assert_eq!(denial.reason, "loader_conflict", "{denial}");
            assert!(
                denial.message.contains("container named loader-"),
                "{denial}"
            );
        }
    }

    /// Found by the patch property test: sizes whose sum exceeds `i64::MAX` overflowed.
    #[test]
    fn volume_size_saturates() {
        let pod = json!({ "metadata": {}, "spec": { "containers": [{ "name": "app" }] } });
        let injections = [
            injection("billing", "ARTIFACT_BILLING_", i64::MAX),
            injection("ledger", "ARTIFACT_LEDGER_", i64::MAX),
        ];
        let operations = build(&pod, &opt_in(true), &injections, &template()).unwrap();
        let patched = apply(&pod, &operations);
        assert_eq!(
            patched["spec"]["volumes"][0]["emptyDir"]["sizeLimit"],
            i64::MAX.to_string()
        );
    }

    #[test]
    fn pointer_tokens_are_escaped() {
        assert_eq!(
            escape_token("artifacts.cameleer.io/injected"),
            "artifacts.cameleer.io~1injected"
        );
        assert_eq!(escape_token("a~b/c"), "a~0b~1c");
    }
}
