//! The webhook's JSON patch on arbitrary pods: it applies cleanly, gives the loader every
//! variable with its value, keeps every field the pod had, and adds nothing on reinvocation.
//! Pods it must deny are denied with the reason the test predicts.

use std::collections::BTreeSet;

use artifact_operator::webhook::{
    INJECTED_ANNOTATION,
    opt_in::OptIn,
    patch::{self, LoaderTemplate, Operation, VOLUME_NAME},
    resolve::{self, Injection},
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::corpus;

const TARGET: &str = "patch";
const MOUNT_PATH: &str = "/artifacts";
/// Container names, unique within a pod; the first three can collide with loaders.
const CONTAINER_NAMES: [&str; 8] = [
    "loader", "loader-1", "loader-2", "fetch", "setup", "app", "sidecar", "proxy",
];

/// A pod as the API server sends it and the artifacts it requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchCase {
    pod: Value,
    loader_container: String,
    add_loader: bool,
    /// AppArtifact names and their sizes, in the annotation's order.
    artifacts: Vec<(String, i64)>,
}

proptest! {
    #![proptest_config(corpus::config(TARGET))]

    #[test]
    fn patch_injects_keeps_user_fields_and_is_idempotent(case in patch_case()) {
        check(&case)?;
    }
}

#[test]
fn seeds_hold_the_properties() {
    for (file, case) in corpus::seeds::<PatchCase>(TARGET) {
        check(&case).unwrap_or_else(|error| panic!("seed {file}: {error}"));
    }
}

// === Cases ===

fn patch_case() -> impl Strategy<Value = PatchCase> {
    let artifacts = prop::collection::btree_map(
        "[a-z]{1,6}(-[a-z]{1,4})?",
        prop_oneof![4 => 0i64..(1 << 40), 1 => any::<i64>()],
        1..4,
    );
    (
        pod(),
        prop::sample::select(vec!["loader", "fetch", "loader-1"]),
        prop::option::of(container()),
        prop::bool::weighted(0.7),
        artifacts,
    )
        .prop_map(|(mut pod, loader, own_loader, add_loader, artifacts)| {
            // Random names rarely pick the loader's, so half of the pods get their own loader.
            if let Some(own_loader) = own_loader {
                add_init_container(&mut pod, loader, own_loader);
            }
            PatchCase {
                pod,
                loader_container: loader.to_owned(),
                add_loader,
                artifacts: artifacts.into_iter().collect(),
            }
        })
}

/// Adds `container`, named `name`, at the end of the pod's init containers, unless a container
/// already has that name.
fn add_init_container(pod: &mut Value, name: &str, mut container: Value) {
    let spec = &mut pod["spec"];
    let taken = [&spec["initContainers"], &spec["containers"]]
        .into_iter()
        .any(|list| named(list).contains(name));
    if taken {
        return;
    }
    container["name"] = json!(name);
    match spec["initContainers"].as_array_mut() {
        Some(list) => list.push(container),
        None => spec["initContainers"] = json!([container]),
    }
}

fn pod() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(container(), 0..3)),
        prop::collection::vec(container(), 1..3),
        Just(CONTAINER_NAMES.to_vec()).prop_shuffle(),
        prop::option::of(prop::collection::vec(
            prop::sample::select(vec!["config", "data", "cache"]),
            0..3,
        )),
        prop::option::of(prop::collection::btree_map(
            prop::sample::select(vec![
                "team",
                "a/b~c",
                "x~1y",
                "artifacts.cameleer.io/artifacts",
            ]),
            "\\PC{0,8}",
            0..3,
        )),
        prop::option::of(json_value()),
    )
        .prop_map(|(init, app, names, volumes, annotations, extra)| {
            let mut names = names.into_iter();
            let mut name = |mut container: Value| {
                container["name"] = json!(names.next().expect("more names than containers"));
                container
            };
            let init: Option<Vec<Value>> =
                init.map(|list| list.into_iter().map(&mut name).collect());
            let app: Vec<Value> = app.into_iter().map(&mut name).collect();

            let mut metadata = json!({ "generateName": "web-", "namespace": "shop" });
            if let Some(annotations) = annotations {
                metadata["annotations"] = json!(annotations);
            }
            let mut spec = json!({ "containers": app });
            if let Some(init) = init {
                spec["initContainers"] = json!(init);
            }
            if let Some(volumes) = volumes {
                let volumes: BTreeSet<&str> = volumes.into_iter().collect();
                let volumes: Vec<Value> = volumes
                    .into_iter()
                    .map(|volume| json!({ "name": volume, "emptyDir": {} }))
                    .collect();
                spec["volumes"] = json!(volumes);
            }
            if let Some(extra) = extra {
                spec["futureField"] = extra;
            }
            json!({ "apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec })
        })
}

fn container() -> impl Strategy<Value = Value> {
    let env_name = prop_oneof![
        prop::sample::select(vec![
            "JAVA_OPTS",
            "ARTIFACT_URL",
            "ARTIFACT_SIZE",
            "ARTIFACT_OUTPUT",
        ])
        .prop_map(str::to_owned),
        "[A-Z_]{1,8}",
    ];
    let mount = (
        prop::sample::select(vec!["config", "data", "cache"]),
        prop::sample::select(vec![MOUNT_PATH, "/data", "/etc/app", "/artifacts/sub"]),
    );
    (
        prop::option::of(prop::collection::vec((env_name, "\\PC{0,8}"), 0..3)),
        prop::option::of(prop::collection::vec(mount, 0..3)),
        prop::option::of(json_value()),
    )
        .prop_map(|(env, mounts, extra)| {
            let mut container = json!({ "image": "registry.test/app:1" });
            if let Some(env) = env {
                let env: Vec<Value> = env
                    .into_iter()
                    .map(|(name, value)| json!({ "name": name, "value": value }))
                    .collect();
                container["env"] = json!(env);
            }
            if let Some(mounts) = mounts {
                let mounts: Vec<Value> = mounts
                    .into_iter()
                    .map(|(name, path)| json!({ "name": name, "mountPath": path }))
                    .collect();
                container["volumeMounts"] = json!(mounts);
            }
            if let Some(extra) = extra {
                container["futureField"] = extra;
            }
            container
        })
}

/// Any JSON, standing for fields newer than the operator's API types.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z/~]{1,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

// === Properties ===

fn check(case: &PatchCase) -> Result<(), TestCaseError> {
    let names: Vec<String> = case
        .artifacts
        .iter()
        .map(|(name, _)| name.clone())
        .collect();
    let Ok(prefixes) = resolve::env_prefixes(&names) else {
        // Names whose variables collide are denied before the patch is built.
        return Ok(());
    };
    let injections: Vec<Injection> = case
        .artifacts
        .iter()
        .zip(prefixes)
        .map(|((name, size), env_prefix)| injection(name, *size, env_prefix))
        .collect();
    let opt_in = OptIn {
        artifacts: names,
        loader_container: case.loader_container.clone(),
        add_loader: case.add_loader,
    };

    let expected = expected_outcome(case, &injections);
    let operations = match (
        patch::build(&case.pod, &opt_in, &injections, &template()),
        expected,
    ) {
        (Ok(operations), Ok(())) => operations,
        (Err(denial), Err(reason)) => {
            prop_assert_eq!(denial.reason, reason, "{}", denial.message);
            return Ok(());
        }
        (result, expected) => {
            return Err(TestCaseError::fail(format!(
                "expected {expected:?}, got {result:?}"
            )));
        }
    };

    prop_assert!(operations.iter().all(|operation| operation.op == "add"));
    let patched = apply(&case.pod, &operations)?;
    prop_assert!(
        preserved(&case.pod, &patched),
        "a field of the pod changed:\n{:#}\n{:#}",
        case.pod,
        patched
    );
    check_injected(case, &injections, &patched)?;
    let second = patch::build(&patched, &opt_in, &injections, &template());
    prop_assert_eq!(second, Ok(Vec::new()));
    Ok(())
}

/// Predicts what the webhook does with the pod: inject, or deny with a reason.
fn expected_outcome(case: &PatchCase, injections: &[Injection]) -> Result<(), &'static str> {
    let init = containers(&case.pod, "initContainers");
    if let Some(loader) = init.iter().find(|c| c["name"] == *case.loader_container) {
        let owned = injections.iter().flat_map(variables);
        let taken = named(&loader["env"]);
        return match owned.into_iter().any(|(name, _)| taken.contains(&name)) {
            true => Err("variable_conflict"),
            false => Ok(()),
        };
    }
    if !case.add_loader {
        return Err("loader_missing");
    }
    let mount_taken = containers(&case.pod, "containers").iter().any(|container| {
        container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|mount| mount["mountPath"] == MOUNT_PATH && mount["name"] != VOLUME_NAME)
    });
    if mount_taken {
        return Err("mount_conflict");
    }
    let mut taken = named(&case.pod["spec"]["initContainers"]);
    taken.extend(named(&case.pod["spec"]["containers"]));
    if loader_names(case).iter().any(|name| taken.contains(name)) {
        return Err("loader_conflict");
    }
    Ok(())
}

/// Checks that the loader of each artifact has its four variables, an added loader mounts the
/// volume that every app container mounts read-only, and the marker names each artifact's digest.
fn check_injected(
    case: &PatchCase,
    injections: &[Injection],
    patched: &Value,
) -> Result<(), TestCaseError> {
    let init = containers(patched, "initContainers");
    let has_loader = containers(&case.pod, "initContainers")
        .iter()
        .any(|container| container["name"] == *case.loader_container);
    if has_loader {
        let loader = init
            .iter()
            .find(|container| container["name"] == *case.loader_container)
            .expect("the loader stays");
        for variable in injections.iter().flat_map(variables) {
            prop_assert!(
                has_variable(loader, &variable),
                "{:?} missing in {:#}",
                variable,
                loader
            );
        }
    } else {
        for (index, (name, injection)) in loader_names(case).iter().zip(injections).enumerate() {
            let loader = &init[index];
            prop_assert_eq!(
                &loader["name"],
                name,
                "added loaders come first: {:#}",
                patched
            );
            for variable in variables(injection) {
                prop_assert!(has_variable(loader, &variable), "{:?} missing", variable);
            }
            prop_assert_eq!(
                &loader["volumeMounts"],
                &json!([{ "name": VOLUME_NAME, "mountPath": MOUNT_PATH }])
            );
        }
        let mount = json!({ "name": VOLUME_NAME, "mountPath": MOUNT_PATH, "readOnly": true });
        for container in containers(patched, "containers") {
            let mounts = container["volumeMounts"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            prop_assert!(
                mounts.contains(&mount),
                "no read-only mount in {:#}",
                container
            );
        }
        prop_assert!(
            named(&patched["spec"]["volumes"]).contains(VOLUME_NAME),
            "no volume in {:#}",
            patched
        );
    }
    let marker: Vec<String> = injections
        .iter()
        .map(|injection| format!("{}={}", injection.artifact, injection.digest))
        .collect();
    prop_assert_eq!(
        &patched["metadata"]["annotations"][INJECTED_ANNOTATION],
        &json!(marker.join(","))
    );
    Ok(())
}

/// Returns whether every field of `original` is still in `patched` with the same value. Lists
/// may have gained items, but their own items keep their order.
fn preserved(original: &Value, patched: &Value) -> bool {
    match (original, patched) {
        (Value::Object(original), Value::Object(patched)) => original
            .iter()
            .all(|(key, value)| patched.get(key).is_some_and(|kept| preserved(value, kept))),
        (Value::Array(original), Value::Array(patched)) => {
            let mut remaining = patched.iter();
            original
                .iter()
                .all(|item| remaining.any(|kept| preserved(item, kept)))
        }
        _ => original == patched,
    }
}

// === Helpers ===

fn injection(name: &str, size: i64, env_prefix: String) -> Injection {
    let digest = format!(
        "sha256:{}",
        format!("{name:0>64}").replace(|c: char| !c.is_ascii_hexdigit(), "0")
    );
    Injection {
        artifact: name.to_owned(),
        url: format!("https://gateway.test/v1/artifacts/shop/{name}/{digest}?kid=k&exp=1&sig=s"),
        digest,
        size,
        file_name: format!("{name}.jar"),
        env_prefix,
    }
}

fn template() -> LoaderTemplate {
    LoaderTemplate {
        image: "registry.test/artifact-operator:1".to_owned(),
        mount_path: MOUNT_PATH.to_owned(),
    }
}

/// Names of the loaders the webhook adds: the loader's own name for one artifact, numbered
/// from 1 for several.
fn loader_names(case: &PatchCase) -> Vec<String> {
    match case.artifacts.len() {
        1 => vec![case.loader_container.clone()],
        count => (1..=count)
            .map(|number| format!("{}-{number}", case.loader_container))
            .collect(),
    }
}

fn variables(injection: &Injection) -> [(String, String); 4] {
    let prefix = &injection.env_prefix;
    [
        (format!("{prefix}URL"), injection.url.clone()),
        (format!("{prefix}DIGEST"), injection.digest.clone()),
        (format!("{prefix}SIZE"), injection.size.to_string()),
        (format!("{prefix}FILENAME"), injection.file_name.clone()),
    ]
}

fn has_variable(container: &Value, (name, value): &(String, String)) -> bool {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|variable| variable["name"] == **name && variable["value"] == **value)
}

fn containers(pod: &Value, field: &str) -> Vec<Value> {
    pod["spec"][field].as_array().cloned().unwrap_or_default()
}

/// Returns the `name` of every item of a list.
fn named(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["name"].as_str().map(str::to_owned))
        .collect()
}

/// Applies `operations` with a JSON patch implementation, as the API server does.
fn apply(pod: &Value, operations: &[Operation]) -> Result<Value, TestCaseError> {
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(operations).unwrap())
            .map_err(|error| TestCaseError::fail(format!("not a JSON patch: {error}")))?;
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch)
        .map_err(|error| TestCaseError::fail(format!("{error}: {operations:?}")))?;
    Ok(patched)
}
