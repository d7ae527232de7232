#!/usr/bin/env bash
# The end-to-end demo behind `make demo`. It needs a running test environment (make demo
# starts one of its own through tests/env/with-testenv.sh) and the debug binary.
#
# It installs the Helm chart and runs the operator outside the cluster with only the chart's
# ServiceAccount token. The operator stores a real Apache Camel JAR in the registry and its
# webhook injects a pre-signed URL into a Deployment's pod. The demo then downloads the JAR
# through that URL and checks its sha256. Everything listens on 127.0.0.1. The environment has no kubelet, so the pod is
# created and mutated but never runs: the demo does the download that its loader would do.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tests/env/lib.sh"
# shellcheck source=/dev/null
source "$TESTENV_FILE"

BINARY="${CARGO_TARGET_DIR:-$ROOT/target}/debug/artifact-operator"
RELEASE=artifact-operator
OPERATOR_NAMESPACE=artifact-operator
NAMESPACE=shop
TENANT=acme
WORK="$(mktemp -d)"
CAMEL_JAR="$ARTIFACT_OPERATOR_CACHE/jars/camel-core-engine-$CAMEL_VERSION.jar"

STEP="starting"
step() {
  STEP="$*"
  printf '\n==> %s\n' "$*"
}
cleanup() {
  local status=$?
  [[ $status -eq 0 ]] || printf '\ndemo failed at step "%s" (exit %s); operator log: %s\n' \
    "$STEP" "$status" "$WORK/operator.log" >&2
  [[ -z "${OPERATOR_PID:-}" ]] || kill "$OPERATOR_PID" 2>/dev/null || true
  [[ -z "${SERVER_PID:-}" ]] || kill "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

kubectl() { "$TESTENV_KUBECTL" --kubeconfig "$TESTENV_KUBECONFIG" "$@"; }
helm() { "$TESTENV_HELM" --kubeconfig "$TESTENV_KUBECONFIG" "$@"; }

# Polls `command...` every half second until it succeeds, at most `tries` times.
retry() {
  local tries=$1
  shift
  for ((i = 0; i < tries; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  "$@"
}

step "Installing the Helm chart into namespace $OPERATOR_NAMESPACE"
kubectl create namespace "$OPERATOR_NAMESPACE"
helm install "$RELEASE" "$ROOT/charts/artifact-operator" --namespace "$OPERATOR_NAMESPACE"
CONFIGURATION="$(kubectl get mutatingwebhookconfigurations \
  -l "app.kubernetes.io/instance=$RELEASE" -o jsonpath='{.items[0].metadata.name}')"
echo "webhook configuration: $CONFIGURATION"

step "Creating a kubeconfig that holds only a token of the chart's ServiceAccount"
TOKEN="$(kubectl create token "$RELEASE" --namespace "$OPERATOR_NAMESPACE" --duration 1h)"
cat >"$WORK/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: demo
  cluster:
    server: $TESTENV_APISERVER_URL
    certificate-authority: $TESTENV_CA_FILE
users:
- name: operator
  user:
    token: $TOKEN
contexts:
- name: demo
  context: { cluster: demo, user: operator }
current-context: demo
EOF

step "Pointing the chart's webhook configuration at 127.0.0.1, where the operator will listen"
GATEWAY_PORT="$(free_port)"
WEBHOOK_PORT="$(free_port)"
METRICS_PORT="$(free_port)"
# In a cluster the API server calls the chart's Service, but here the operator runs outside.
kubectl patch mutatingwebhookconfiguration "$CONFIGURATION" --type=json -p "[
  {\"op\": \"remove\", \"path\": \"/webhooks/0/clientConfig/service\"},
  {\"op\": \"add\", \"path\": \"/webhooks/0/clientConfig/url\",
   \"value\": \"https://127.0.0.1:$WEBHOOK_PORT/v1/mutate/pods\"}]"

step "Starting the operator outside the cluster"
KUBECONFIG="$WORK/kubeconfig" POD_NAMESPACE="$OPERATOR_NAMESPACE" RUST_LOG=info "$BINARY" run \
  --gateway-listen "127.0.0.1:$GATEWAY_PORT" \
  --gateway-url "http://127.0.0.1:$GATEWAY_PORT" \
  --webhook-listen "127.0.0.1:$WEBHOOK_PORT" \
  --webhook-ip 127.0.0.1 \
  --webhook-configuration "$CONFIGURATION" \
  --webhook-tls-secret "$RELEASE-webhook-tls" \
  --signing-key-secret "$RELEASE-signing-keys" \
  --leader-election-lease "$RELEASE" \
  --metrics-listen "127.0.0.1:$METRICS_PORT" \
  --source-exempt-cidr 127.0.0.1/32 \
  >"$WORK/operator.log" 2>&1 &
OPERATOR_PID=$!
retry 120 curl -fsS "http://127.0.0.1:$METRICS_PORT/readyz"
echo "operator ready (log: $WORK/operator.log)"

step "Serving the Apache Camel JAR $CAMEL_VERSION on 127.0.0.1"
[[ -f "$CAMEL_JAR" ]] || die "$CAMEL_JAR is missing; run tests/env/fetch-jars.sh"
SERVER_PORT="$(free_port)"
python3 -m http.server --bind 127.0.0.1 --directory "$(dirname "$CAMEL_JAR")" "$SERVER_PORT" \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
SHA256="$(sha256sum "$CAMEL_JAR" | cut -d' ' -f1)"
JAR_URL="http://127.0.0.1:$SERVER_PORT/$(basename "$CAMEL_JAR")"
retry 20 curl -fsSI "$JAR_URL"
echo "sha256sum: $SHA256"

step "Creating tenant namespace $NAMESPACE, an ArtifactRegistry and an AppArtifact"
kubectl create namespace "$NAMESPACE"
kubectl label namespace "$NAMESPACE" "artifacts.cameleer.io/tenant=$TENANT"
kubectl create secret generic registry-login --namespace "$NAMESPACE" \
  --from-literal="username=$TESTENV_DISTRIBUTION_USERNAME" \
  --from-literal="password=$TESTENV_DISTRIBUTION_PASSWORD"
kubectl apply --namespace "$NAMESPACE" -f - <<EOF
apiVersion: artifacts.cameleer.io/v1alpha1
kind: ArtifactRegistry
metadata:
  name: main
spec:
  external:
    url: https://$TESTENV_DISTRIBUTION_HOST
    credentialsSecretRef: { name: registry-login }
    caBundle: |
$(sed 's/^/      /' "$TESTENV_CA_FILE")
---
apiVersion: artifacts.cameleer.io/v1alpha1
kind: AppArtifact
metadata:
  name: camel
spec:
  registryRef: { name: main }
  tenantId: $TENANT
  appId: camel-core-engine
  version: "$CAMEL_VERSION"
  source:
    url:
      url: $JAR_URL
      sha256: $SHA256
EOF
kubectl wait --namespace "$NAMESPACE" --for=condition=Ready artifactregistry/main --timeout=120s
kubectl wait --namespace "$NAMESPACE" --for=condition=Ready appartifact/camel --timeout=180s

step "Creating a Deployment whose pod opts in to the artifact"
kubectl apply --namespace "$NAMESPACE" -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  replicas: 1
  selector:
    matchLabels: { app: shop }
  template:
    metadata:
      labels:
        app: shop
        artifacts.cameleer.io/inject: "true"
      annotations:
        artifacts.cameleer.io/artifacts: camel
    spec:
      initContainers:
        - name: loader
          image: curlimages/curl:8.11.1
          command: ["sh", "-c", 'curl -fsSL "\$ARTIFACT_URL" -o /app/app.jar']
      containers:
        - name: app
          image: eclipse-temurin:21-jre
EOF
env_value() {
  kubectl get pods --namespace "$NAMESPACE" -l app=shop -o \
    "jsonpath={.items[0].spec.initContainers[?(@.name==\"loader\")].env[?(@.name==\"$1\")].value}"
}
pod_has_url() { [[ -n "$(env_value ARTIFACT_URL 2>/dev/null)" ]]; }
retry 120 pod_has_url
URL="$(env_value ARTIFACT_URL)"
DIGEST="$(env_value ARTIFACT_DIGEST)"
echo "pod: $(kubectl get pods --namespace "$NAMESPACE" -l app=shop -o name)"
echo "ARTIFACT_URL=$URL"
echo "ARTIFACT_DIGEST=$DIGEST"
echo "ARTIFACT_SIZE=$(env_value ARTIFACT_SIZE)"

step "Downloading the JAR through the injected URL, as the loader would"
curl -fsSL "$URL" -o "$WORK/app.jar"
DOWNLOADED="$(sha256sum "$WORK/app.jar" | cut -d' ' -f1)"
echo "downloaded $(stat -c %s "$WORK/app.jar") bytes, sha256 $DOWNLOADED"
[[ "sha256:$DOWNLOADED" == "$DIGEST" && "$DOWNLOADED" == "$SHA256" ]] ||
  die "the downloaded JAR has sha256 $DOWNLOADED, expected $SHA256"
echo "sha256 matches the Maven Central JAR"

step "Listing the artifacts"
kubectl get artifacts --all-namespaces

step "Tearing down"
kill "$OPERATOR_PID"
wait "$OPERATOR_PID" || true
OPERATOR_PID=
helm uninstall "$RELEASE" --namespace "$OPERATOR_NAMESPACE"
printf '\ndemo finished: the JAR went from an HTTP server into the registry and out through a pre-signed URL\n'
