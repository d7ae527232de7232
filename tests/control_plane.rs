//! Proves that the test environment runs a real control plane: the apiserver stores and watches
//! objects, and the controller-manager turns a Deployment into a ReplicaSet and a Pod.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{ConfigMap, Namespace, Pod},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use support::{TestEnv, create_namespace};

/// Upper bound for an object to appear; generous because CI machines are slow and shared.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(60);

async fn delete_namespace(client: &Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
        .expect("deleting the namespace must succeed");
}

#[tokio::test]
async fn configmap_create_is_seen_by_watch() {
    let env = TestEnv::load();
    let client = env.kube_client().await;
    let namespace = create_namespace(&client, "cp").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);

    let stream = watcher(configmaps.clone(), watcher::Config::default()).applied_objects();
    let mut stream = std::pin::pin!(stream);

    let configmap: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "greeting" },
        "data": { "message": "hello" }
    }))
    .unwrap();
    configmaps
        .create(&PostParams::default(), &configmap)
        .await
        .expect("creating a ConfigMap must succeed");

    let seen = tokio::time::timeout(APPEAR_TIMEOUT, async {
        while let Some(object) = stream.try_next().await.expect("the watch must not fail") {
            if object.name_any() == "greeting" {
                return object;
            }
        }
        panic!("the watch ended before the ConfigMap appeared");
    })
    .await
    .expect("the watch must deliver the ConfigMap");

    assert_eq!(seen.data.unwrap()["message"], "hello");
    delete_namespace(&client, &namespace).await;
}

#[tokio::test]
async fn deployment_becomes_replicaset_and_pod() {
    let env = TestEnv::load();
    let client = env.kube_client().await;
    let namespace = create_namespace(&client, "cp").await;

    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] }
            }
        }
    }))
    .unwrap();
    let created = Api::<Deployment>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("creating a Deployment must succeed");
    let deployment_uid = created.uid().unwrap();

    let replica_set = wait_for_owned::<ReplicaSet>(&client, &namespace, &deployment_uid).await;
    let pod = wait_for_owned::<Pod>(&client, &namespace, &replica_set.uid().unwrap()).await;

    assert_eq!(pod.labels()["app"], "web");
    assert!(
        pod.metadata
            .generate_name
            .as_deref()
            .unwrap_or_default()
            .starts_with("web-"),
        "the ReplicaSet controller names pods with generateName"
    );
    delete_namespace(&client, &namespace).await;
}

/// Waits until an object of kind `K` owned by `owner_uid` exists in `namespace`.
async fn wait_for_owned<K>(client: &Client, namespace: &str, owner_uid: &str) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let owned_by = |object: &K| {
        object
            .owner_references()
            .iter()
            .any(|owner| owner.uid == owner_uid)
    };
    if let Some(found) = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(owned_by)
    {
        return found;
    }
    let stream = watcher(api, watcher::Config::default()).applied_objects();
    let mut stream = std::pin::pin!(stream);
    tokio::time::timeout(APPEAR_TIMEOUT, async {
        while let Some(object) = stream.next().await {
            let object = object.expect("the watch must not fail");
            if owned_by(&object) {
                return object;
            }
        }
        panic!("the watch ended before an owned {} appeared", K::kind(&Default::default()));
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {} owned by {owner_uid} appeared in {namespace}; is kube-controller-manager running?",
            K::kind(&Default::default())
        )
    })
}

#[tokio::test]
async fn service_account_token_passes_token_review() {
    use k8s_openapi::api::{
        authentication::v1::{TokenRequest, TokenReview},
        core::v1::ServiceAccount,
    };

    let env = TestEnv::load();
    let client = env.kube_client().await;
    let namespace = create_namespace(&client, "cp").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let account: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "loader" } })).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();

    let request: TokenRequest =
        serde_json::from_value(json!({ "spec": { "audiences": [], "expirationSeconds": 600 } }))
            .unwrap();
    let issued = accounts
        .create_token_request("loader", &PostParams::default(), &request)
        .await
        .expect("TokenRequest must succeed when the service-account signing key is configured");
    let token = issued.status.unwrap().token;

    let review: TokenReview =
        serde_json::from_value(json!({ "spec": { "token": token } })).unwrap();
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    let status = reviewed.status.unwrap();
    assert_eq!(status.authenticated, Some(true), "{:?}", status.error);
    assert_eq!(
        status.user.unwrap().username.unwrap(),
        format!("system:serviceaccount:{namespace}:loader")
    );

    let bogus: TokenReview =
        serde_json::from_value(json!({ "spec": { "token": "not-a-token" } })).unwrap();
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &bogus)
        .await
        .unwrap();
    assert_ne!(reviewed.status.unwrap().authenticated, Some(true));
    delete_namespace(&client, &namespace).await;
}
