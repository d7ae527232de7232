//! The CustomResourceDefinitions: committed YAML matches the code, and the real apiserver
//! accepts valid objects and rejects invalid ones with the messages we wrote.

mod support;

use artifact_operator::crd;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use support::{TestEnv, create_namespace, install_crds};

#[test]
fn committed_crds_match_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for definition in crd::definitions() {
        let path = dir.join(crd::file_name(&definition));
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{} is not readable: {error}", path.display()));
        assert!(
            committed == crd::render_definition(&definition),
            "{} is out of date; run `make crds` and commit the result",
            path.display()
        );
    }
}

fn dynamic_api(client: &Client, namespace: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(crd::GROUP, "v1alpha1", kind);
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(&gvk))
}

/// Creates an object and returns the apiserver's error message, or None if it was accepted.
async fn try_create(api: &Api<DynamicObject>, object: Value) -> Option<String> {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => Some(status.message),
        Err(other) => panic!("unexpected client error: {other}"),
    }
}

fn app_artifact(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "artifacts.cameleer.io/v1alpha1",
        "kind": "AppArtifact",
        "metadata": { "name": name },
        "spec": spec,
    })
}

fn valid_app_spec() -> Value {
    json!({
        "registryRef": { "name": "main" },
        "tenantId": "acme",
        "appId": "billing",
        "version": "1.2.3",
        "source": { "url": { "url": "https://127.0.0.1:9/billing.jar" } },
    })
}

fn registry(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "artifacts.cameleer.io/v1alpha1",
        "kind": "ArtifactRegistry",
        "metadata": { "name": name },
        "spec": spec,
    })
}

#[tokio::test]
async fn app_artifact_validation_by_apiserver() {
    let env = TestEnv::load();
    let client = env.kube_client().await;
    install_crds(&client).await;
    let namespace = create_namespace(&client, "crd").await;
    let api = dynamic_api(&client, &namespace, "AppArtifact");

    assert_eq!(
        try_create(&api, app_artifact("valid", valid_app_spec())).await,
        None
    );

    // Each case changes one field of the valid spec and names a fragment of the expected error.
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "uppercase-tenant",
            json!({ "tenantId": "Acme" }),
            "spec.tenantId",
        ),
        ("traversal-app", json!({ "appId": ".." }), "spec.appId"),
        ("slash-app", json!({ "appId": "a/b" }), "spec.appId"),
        ("empty-tenant", json!({ "tenantId": "" }), "spec.tenantId"),
        (
            "long-version",
            json!({ "version": "1".repeat(128) }),
            "spec.version",
        ),
        ("space-version", json!({ "version": "1 2" }), "spec.version"),
        (
            "two-sources",
            json!({ "source": {
                "url": { "url": "https://127.0.0.1:9/a.jar" },
                "configMapKeyRef": { "name": "jar", "key": "app.jar" }
            } }),
            "set exactly one of url, configMapKeyRef, secretKeyRef, upload or existing",
        ),
        (
            "no-source",
            json!({ "source": {} }),
            "set exactly one of url",
        ),
        (
            "bad-pin",
            json!({ "source": { "url": { "url": "https://127.0.0.1:9/a.jar", "sha256": "xyz" } } }),
            "spec.source.url.sha256",
        ),
        (
            "ftp-url",
            json!({ "source": { "url": { "url": "ftp://127.0.0.1:9/a.jar" } } }),
            "spec.source.url.url",
        ),
        (
            "bad-policy",
            json!({ "deletionPolicy": "Purge" }),
            "spec.deletionPolicy",
        ),
    ];
    for (name, change, expected) in cases {
        let mut spec = valid_app_spec();
        for (key, value) in change.as_object().unwrap() {
            spec[key] = value.clone();
        }
        let message = try_create(&api, app_artifact(name, spec))
            .await
            .unwrap_or_else(|| {
                panic!("case {name}: the apiserver accepted an invalid AppArtifact")
            });
        assert!(message.contains(expected), "case {name}: {message}");
    }
}

#[tokio::test]
async fn app_artifact_coordinates_immutable() {
    let env = TestEnv::load();
    let client = env.kube_client().await;
    install_crds(&client).await;
    let namespace = create_namespace(&client, "crd").await;
    let api = dynamic_api(&client, &namespace, "AppArtifact");
    assert_eq!(
        try_create(&api, app_artifact("pinned", valid_app_spec())).await,
        None
    );

    for (field, value) in [
        ("tenantId", "other"),
        ("appId", "other"),
        ("version", "9.9.9"),
    ] {
        let patch = json!({ "spec": { field: value } });
        let error = api
            .patch("pinned", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err("changing a coordinate must be rejected");
        let kube::Error::Api(status) = error else {
            panic!("unexpected error: {error}")
        };
        assert!(
            status.message.contains(&format!("{field} is immutable")),
            "{}",
            status.message
        );
    }
}

#[tokio::test]
async fn artifact_registry_validation_by_apiserver() {
    let env = TestEnv::load();
    let client = env.kube_client().await;
    install_crds(&client).await;
    let namespace = create_namespace(&client, "crd").await;
    let api = dynamic_api(&client, &namespace, "ArtifactRegistry");

    let managed = json!({ "zot": { "storage": { "size": "10Gi" } } });
    assert_eq!(try_create(&api, registry("managed", managed)).await, None);
    let external = json!({ "external": { "url": "https://127.0.0.1:9" } });
    assert_eq!(try_create(&api, registry("external", external)).await, None);

    let cases: Vec<(&str, Value, &str)> = vec![
        ("neither", json!({}), "set exactly one of spec.zot"),
        (
            "both",
            json!({
                "zot": { "storage": { "size": "10Gi" } },
                "external": { "url": "https://127.0.0.1:9" }
            }),
            "set exactly one of spec.zot",
        ),
        (
            "s3-and-size",
            json!({ "zot": { "storage": {
                "size": "10Gi",
                "s3": { "bucket": "artifacts", "region": "eu-west-1" }
            } } }),
            "set either storage.size",
        ),
        (
            "no-storage",
            json!({ "zot": { "storage": {} } }),
            "set storage.size",
        ),
        (
            "zero-replicas",
            json!({ "zot": { "replicas": 0, "storage": { "size": "1Gi" } } }),
            "spec.zot.replicas",
        ),
        (
            "bad-duration",
            json!({ "zot": { "storage": { "size": "1Gi" }, "gc": { "interval": "daily" } } }),
            "spec.zot.gc.interval",
        ),
        (
            "external-not-url",
            json!({ "external": { "url": "127.0.0.1:9" } }),
            "spec.external.url",
        ),
        (
            "tls-both",
            json!({
                "external": { "url": "https://127.0.0.1:9" },
                "ingress": { "traefik": {
                    "host": "registry.example.invalid",
                    "tls": { "secretName": "cert", "certResolver": "le" }
                } }
            }),
            "set exactly one of tls.secretName or tls.certResolver",
        ),
    ];
    for (name, spec, expected) in cases {
        let message = try_create(&api, registry(name, spec))
            .await
            .unwrap_or_else(|| panic!("case {name}: the apiserver accepted an invalid registry"));
        assert!(message.contains(expected), "case {name}: {message}");
    }
}

#[tokio::test]
async fn kubectl_explain_describes_fields() {
    let env = TestEnv::load();
    let client = env.kube_client().await;
    install_crds(&client).await;

    // The apiserver publishes a new CRD's OpenAPI schema a few seconds after the CRD is
    // established, so kubectl explain is retried until it finds the resource.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let output = loop {
        let output = std::process::Command::new(env.var("TESTENV_KUBECTL"))
            .args(["--kubeconfig", env.var("TESTENV_KUBECONFIG")])
            .args(["explain", "appartifacts.spec.tenantId"])
            .output()
            .unwrap();
        if output.status.success() || std::time::Instant::now() >= deadline {
            break output;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("Tenant that owns the artifact"), "{text}");
}
