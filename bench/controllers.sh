#!/usr/bin/env bash
# Time `artifact-operator run` (release build) on a namespace of its own. Records the start-up
# time until the webhook's TLS listener responds and until /readyz returns 200, RSS when idle,
# the time for BENCH_READY AppArtifacts with a ConfigMap source to become Ready, the API
# requests and reconciles that took, and RSS once BENCH_WATCHED AppArtifacts exist. Called by
# bench/run.sh with OPERATOR, RESULTS and the variables of testenv.env. Writes
# $RESULTS/controllers.txt as `key: value` lines.
set -euo pipefail

: "${BENCH_READY:=500}" "${BENCH_WATCHED:=5000}"
kubectl() { "$TESTENV_KUBECTL" "$@"; }
log() { printf '[bench] %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v start="$1" -v end="$2" 'BEGIN { printf "%.2f", end - start }'; }
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
hwm_mib() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

suffix=$(date +%s%N)
tenant="bench-$suffix"
operator_namespace="bench-op-$suffix"
namespace="bench-ctl-$suffix"
work="$RESULTS/controllers-work"
mkdir -p "$work"
out="$RESULTS/controllers.txt"
: >"$out"

# Resources whose requests count as the operator's. Other clients of the same API server touch
# them too, such as kube-controller-manager emptying a deleted namespace, so the count is an
# upper bound.
RESOURCES='appartifacts|artifactregistries|configmaps|secrets|events'

# apiserver_request_total from the API server's /metrics, summed per verb and resource for
# RESOURCES, as `verb resource count` lines.
api_requests() {
  kubectl get --raw /metrics |
    awk -v resources="^($RESOURCES)\$" '/^apiserver_request_total\{/ {
      verb = $0; sub(/.*[{,]verb="/, "", verb); sub(/".*/, "", verb)
      resource = $0; sub(/.*[{,]resource="/, "", resource); sub(/".*/, "", resource)
      if (resource ~ resources) sum[verb " " resource] += $NF
    } END { for (key in sum) printf "%s %d\n", key, sum[key] }' | sort
}

# Prints the per-verb-and-resource increase from file $1 to file $2, and the total last.
api_delta() {
  awk 'NR == FNR { before[$1 " " $2] = $3; next }
    { delta = $3 - before[$1 " " $2]; total += delta; if (delta) printf "  %s %s: %d\n", $1, $2, delta }
    END { printf "%d\n", total }' "$1" "$2"
}

# Number of AppArtifacts in the namespace whose Ready condition has the status $1 and, when
# given, the reason $2.
count_ready() {
  kubectl get appartifacts -n "$namespace" \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}/{.status.conditions[?(@.type=="Ready")].reason}{"\n"}{end}' |
    grep -c "^$1/${2:-}" || true
}

kubectl create namespace "$operator_namespace" >/dev/null
kubectl create namespace "$namespace" >/dev/null
kubectl label namespace "$namespace" "artifacts.cameleer.io/tenant=$tenant" >/dev/null
cleanup() {
  [[ -z ${operator_pid:-} ]] || { kill -TERM "$operator_pid" 2>/dev/null || true; wait "$operator_pid" 2>/dev/null || true; }
  kubectl delete namespace "$namespace" "$operator_namespace" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

kubectl create secret generic registry-login -n "$namespace" \
  --from-literal=username="$TESTENV_DISTRIBUTION_USERNAME" \
  --from-literal=password="$TESTENV_DISTRIBUTION_PASSWORD" >/dev/null
python3 - "$work/registry.json" <<'EOF'
import json, os, sys
registry = {
    "apiVersion": "artifacts.cameleer.io/v1alpha1",
    "kind": "ArtifactRegistry",
    "metadata": {"name": "main"},
    "spec": {"external": {
        "url": "https://" + os.environ["TESTENV_DISTRIBUTION_HOST"],
        "credentialsSecretRef": {"name": "registry-login"},
        "caBundle": open(os.environ["TESTENV_CA_FILE"]).read(),
    }},
}
json.dump(registry, open(sys.argv[1], "w"))
EOF
kubectl create -n "$namespace" -f "$work/registry.json" >/dev/null

# A small real JAR: a ZIP with a manifest and one entry.
python3 - "$work/app.jar" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as jar:
    jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nMain-Class: bench.App\n")
    jar.writestr("bench/App.class", bytes(range(256)) * 64)
EOF
kubectl create configmap jars -n "$namespace" --from-file=app.jar="$work/app.jar" >/dev/null

# AppArtifacts app-FIRST..app-LAST with the given source, as one multi-document file.
write_artifacts() {
  local first=$1 last=$2 source=$3 file=$4
  for i in $(seq "$first" "$last"); do
    printf -- '---\napiVersion: artifacts.cameleer.io/v1alpha1\nkind: AppArtifact\nmetadata: {name: app-%05d}\nspec: {registryRef: {name: main}, tenantId: %s, appId: app-%05d, version: "1", source: %s}\n' \
      "$i" "$tenant" "$i" "$source"
  done >"$file"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
webhook_port=$(free_port)
metrics_port=$(free_port)
# Sum of the operator's artifact_operator_reconciles_total over both controllers and results.
reconciles() {
  curl -fsS "http://127.0.0.1:$metrics_port/metrics" |
    awk '/^artifact_operator_reconciles_total/ { sum += $NF } END { printf "%d", sum }'
}
log "starting the operator on $namespace"
started=$(now)
RUST_LOG=info LOG_FORMAT=json KUBECONFIG="$TESTENV_KUBECONFIG" "$OPERATOR" run \
  --watch-namespace "$namespace" --operator-namespace "$operator_namespace" \
  --gateway-listen 127.0.0.1:0 --webhook-listen "127.0.0.1:$webhook_port" \
  --metrics-listen "127.0.0.1:$metrics_port" \
  --webhook-ip 127.0.0.1 --webhook-configuration "bench-$suffix" 2>"$RESULTS/operator.log" &
operator_pid=$!
# The webhook listens once the caches, keys and certificate are loaded. The configuration name
# is unique, so the operator publishes its CA bundle into no other webhook's configuration.
until curl -sk -o /dev/null "https://127.0.0.1:$webhook_port/"; do
  kill -0 "$operator_pid" 2>/dev/null || { tail -n 20 "$RESULTS/operator.log" >&2; exit 1; }
  sleep 0.05
done
printf 'startup_to_webhook_s: %s\n' "$(elapsed "$started" "$(now)")" >>"$out"
until curl -fs -o /dev/null "http://127.0.0.1:$metrics_port/readyz"; do
  sleep 0.05
done
printf 'startup_to_readyz_s: %s\n' "$(elapsed "$started" "$(now)")" >>"$out"
sleep 10
printf 'idle_rss_mib: %s\n' "$(rss_mib "$operator_pid")" >>"$out"

log "creating $BENCH_READY AppArtifacts with a ConfigMap source"
write_artifacts 1 "$BENCH_READY" '{configMapKeyRef: {name: jars, key: app.jar}}' "$work/ready.yaml"
api_requests >"$work/requests-before.txt"
reconciles_before=$(reconciles)
started=$(now)
kubectl create -n "$namespace" -f "$work/ready.yaml" >/dev/null
printf 'create_%s_s: %s\n' "$BENCH_READY" "$(elapsed "$started" "$(now)")" >>"$out"
polls=0
until [[ $(count_ready True) -ge $BENCH_READY ]]; do
  polls=$((polls + 1))
  ((polls < 6000)) || { echo "AppArtifacts not Ready after 10 minutes" >&2; exit 1; }
  sleep 0.1
done
polls=$((polls + 1))
printf 'ready_%s_s: %s\n' "$BENCH_READY" "$(elapsed "$started" "$(now)")" >>"$out"
sleep 2
api_requests >"$work/requests-after.txt"
reconciles_after=$(reconciles)
delta=$(api_delta "$work/requests-before.txt" "$work/requests-after.txt")
# This script's own requests: the creates and the polls (LIST appartifacts).
own=$((BENCH_READY + polls))
total=$(tail -n 1 <<<"$delta")
{
  printf 'api_requests_delta: %s (this script: %s)\n' "$total" "$own"
  head -n -1 <<<"$delta"
  printf 'api_requests_per_ready_artifact: %s\n' \
    "$(awk -v d="$((total - own))" -v n="$BENCH_READY" 'BEGIN { printf "%.1f", d / n }')"
  printf 'reconciles: %s\n' "$((reconciles_after - reconciles_before))"
  printf 'api_requests_per_reconcile: %s\n' \
    "$(awk -v d="$((total - own))" -v n="$((reconciles_after - reconciles_before))" 'BEGIN { if (n) printf "%.1f", d / n; else print "n/a" }')"
} >>"$out"
printf 'rss_after_%s_ready_mib: %s\n' "$BENCH_READY" "$(rss_mib "$operator_pid")" >>"$out"

if ((BENCH_WATCHED > BENCH_READY)); then
  log "creating $((BENCH_WATCHED - BENCH_READY)) AppArtifacts that wait for an upload"
  write_artifacts "$((BENCH_READY + 1))" "$BENCH_WATCHED" '{upload: {}}' "$work/watched.yaml"
  started=$(now)
  kubectl create -n "$namespace" -f "$work/watched.yaml" >/dev/null
  until [[ $(count_ready False AwaitingUpload) -ge $((BENCH_WATCHED - BENCH_READY)) ]]; do
    sleep 1
  done
  printf 'reconciled_%s_waiting_s: %s\n' "$((BENCH_WATCHED - BENCH_READY))" "$(elapsed "$started" "$(now)")" >>"$out"
  sleep 5
  printf 'rss_with_%s_watched_mib: %s\n' "$BENCH_WATCHED" "$(rss_mib "$operator_pid")" >>"$out"
fi
printf 'peak_rss_mib: %s\n' "$(hwm_mib "$operator_pid")" >>"$out"
rm -rf "$work"
cat "$out"
