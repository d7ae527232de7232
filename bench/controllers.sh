#!/usr/bin/env bash
# Time `artifact-operator run` (release build) on a namespace of its own. Records the start-up
# time until the webhook's TLS listener responds and until /readyz returns 200 (over
# BENCH_STARTUP_RUNS starts, in an empty namespace and again once all AppArtifacts exist), RSS
# when idle, the time for BENCH_READY AppArtifacts with a
# ConfigMap source to become Ready with the API requests and reconciles that took (over
# BENCH_READY_RUNS rounds, each with new AppArtifacts), and RSS once BENCH_WATCHED AppArtifacts
# exist. Called by bench/run.sh with OPERATOR, RESULTS and the variables of testenv.env. Writes
# $RESULTS/controllers.txt as `key: value` lines; repeated figures are `median (min–max)`
# followed by every run's value.
set -euo pipefail

: "${BENCH_READY:=500}" "${BENCH_WATCHED:=5000}" "${BENCH_STARTUP_RUNS:=5}" "${BENCH_READY_RUNS:=3}"
kubectl() { "$TESTENV_KUBECTL" "$@"; }
log() { printf '[bench] %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v start="$1" -v end="$2" 'BEGIN { printf "%.2f", end - start }'; }
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
hwm_mib() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
# Prints "median (min–max), all: v1 v2 ..." of its arguments.
stats() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    median = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.2f (%.2f–%.2f), all:", median, v[1], v[NR]
  }'
  printf ' %s' "$@"
  printf '\n'
}

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

# AppArtifacts PREFIX-FIRST..PREFIX-LAST with the given source, as one multi-document file. The
# app id is the name, so every AppArtifact has a repository of its own.
write_artifacts() {
  local prefix=$1 first=$2 last=$3 source=$4 file=$5
  for i in $(seq "$first" "$last"); do
    printf -- '---\napiVersion: artifacts.cameleer.io/v1alpha1\nkind: AppArtifact\nmetadata: {name: %s-%05d}\nspec: {registryRef: {name: main}, tenantId: %s, appId: %s-%05d, version: "1", source: %s}\n' \
      "$prefix" "$i" "$tenant" "$prefix" "$i" "$source"
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

# Starts the operator and waits for its webhook and /readyz. Sets operator_pid, and
# webhook_s and readyz_s to the seconds since the start.
start_operator() {
  local started
  started=$(now)
  RUST_LOG=info LOG_FORMAT=json KUBECONFIG="$TESTENV_KUBECONFIG" "$OPERATOR" run \
    --watch-namespace "$namespace" --operator-namespace "$operator_namespace" \
    --gateway-listen 127.0.0.1:0 --webhook-listen "127.0.0.1:$webhook_port" \
    --metrics-listen "127.0.0.1:$metrics_port" \
    --webhook-ip 127.0.0.1 --webhook-configuration "bench-$suffix" 2>>"$RESULTS/operator.log" &
  operator_pid=$!
  # The webhook listens once the caches, keys and certificate are loaded. The configuration
  # name is unique, so the operator publishes its CA bundle into no other webhook's
  # configuration.
  until curl -sk -o /dev/null "https://127.0.0.1:$webhook_port/"; do
    kill -0 "$operator_pid" 2>/dev/null || { tail -n 20 "$RESULTS/operator.log" >&2; exit 1; }
    sleep 0.05
  done
  webhook_s=$(elapsed "$started" "$(now)")
  until curl -fs -o /dev/null "http://127.0.0.1:$metrics_port/readyz"; do
    sleep 0.05
  done
  readyz_s=$(elapsed "$started" "$(now)")
}

stop_operator() {
  kill -TERM "$operator_pid"
  wait "$operator_pid" || true
  operator_pid=
}

log "starting the operator $BENCH_STARTUP_RUNS times on $namespace"
webhook_times=()
readyz_times=()
for run in $(seq "$BENCH_STARTUP_RUNS"); do
  start_operator
  webhook_times+=("$webhook_s")
  readyz_times+=("$readyz_s")
  ((run == BENCH_STARTUP_RUNS)) || stop_operator
done
printf 'startup_to_webhook_s: %s\n' "$(stats "${webhook_times[@]}")" >>"$out"
printf 'startup_to_readyz_s: %s\n' "$(stats "${readyz_times[@]}")" >>"$out"
sleep 10
printf 'idle_rss_mib: %s\n' "$(rss_mib "$operator_pid")" >>"$out"

# One round: BENCH_READY new AppArtifacts with a ConfigMap source until all are Ready. Sets
# ready_s, per_artifact (API requests per Ready AppArtifact, less this script's own),
# per_reconcile and round_reconciles, and leaves the request counts per verb in
# $work/requests-delta.txt.
ready_round() {
  local round=$1 started polls=0 reconciles_before delta own total
  write_artifacts "r$round" 1 "$BENCH_READY" '{configMapKeyRef: {name: jars, key: app.jar}}' "$work/ready.yaml"
  api_requests >"$work/requests-before.txt"
  reconciles_before=$(reconciles)
  started=$(now)
  kubectl create -n "$namespace" -f "$work/ready.yaml" >/dev/null
  until [[ $(count_ready True) -ge $((round * BENCH_READY)) ]]; do
    polls=$((polls + 1))
    ((polls < 6000)) || { echo "AppArtifacts of round $round not Ready after 10 minutes" >&2; exit 1; }
    sleep 0.1
  done
  polls=$((polls + 1))
  ready_s=$(elapsed "$started" "$(now)")
  sleep 2
  api_requests >"$work/requests-after.txt"
  round_reconciles=$(($(reconciles) - reconciles_before))
  delta=$(api_delta "$work/requests-before.txt" "$work/requests-after.txt")
  # This script's own requests: the creates and the polls (LIST appartifacts).
  own=$((BENCH_READY + polls))
  total=$(tail -n 1 <<<"$delta")
  head -n -1 <<<"$delta" >"$work/requests-delta.txt"
  printf 'api_requests_delta: %s (this script: %s)\n' "$total" "$own" >>"$work/requests-delta.txt"
  per_artifact=$(awk -v d="$((total - own))" -v n="$BENCH_READY" 'BEGIN { printf "%.1f", d / n }')
  per_reconcile=$(awk -v d="$((total - own))" -v n="$round_reconciles" 'BEGIN { if (n) printf "%.1f", d / n; else print "n/a" }')
}

ready_times=()
per_artifact_values=()
per_reconcile_values=()
reconcile_counts=()
for round in $(seq "$BENCH_READY_RUNS"); do
  log "round $round of $BENCH_READY_RUNS: creating $BENCH_READY AppArtifacts with a ConfigMap source"
  ready_round "$round"
  ready_times+=("$ready_s")
  per_artifact_values+=("$per_artifact")
  per_reconcile_values+=("$per_reconcile")
  reconcile_counts+=("$round_reconciles")
done
{
  printf 'ready_%s_s: %s\n' "$BENCH_READY" "$(stats "${ready_times[@]}")"
  printf 'api_requests_per_ready_artifact: %s\n' "$(stats "${per_artifact_values[@]}")"
  printf 'reconciles_per_round: %s\n' "$(stats "${reconcile_counts[@]}")"
  printf 'api_requests_per_reconcile: %s\n' "$(stats "${per_reconcile_values[@]}")"
  printf 'api_requests_of_the_last_round:\n'
  cat "$work/requests-delta.txt"
} >>"$out"
printf 'rss_after_%s_ready_mib: %s\n' "$((BENCH_READY * BENCH_READY_RUNS))" "$(rss_mib "$operator_pid")" >>"$out"

ready_total=$((BENCH_READY * BENCH_READY_RUNS))
waiting=$((BENCH_WATCHED - ready_total))
if ((waiting > 0)); then
  log "creating $waiting AppArtifacts that wait for an upload"
  write_artifacts upload 1 "$waiting" '{upload: {}}' "$work/watched.yaml"
  started=$(now)
  kubectl create -n "$namespace" -f "$work/watched.yaml" >/dev/null
  until [[ $(count_ready False AwaitingUpload) -ge $waiting ]]; do
    sleep 1
  done
  printf 'reconciled_%s_waiting_s: %s\n' "$waiting" "$(elapsed "$started" "$(now)")" >>"$out"
  sleep 5
  printf 'rss_with_%s_watched_mib: %s\n' "$BENCH_WATCHED" "$(rss_mib "$operator_pid")" >>"$out"
fi
printf 'peak_rss_mib: %s\n' "$(hwm_mib "$operator_pid")" >>"$out"

log "restarting the operator $BENCH_STARTUP_RUNS times with $BENCH_WATCHED AppArtifacts present"
stop_operator
readyz_times=()
for run in $(seq "$BENCH_STARTUP_RUNS"); do
  start_operator
  readyz_times+=("$readyz_s")
  stop_operator
done
printf 'startup_to_readyz_with_%s_present_s: %s\n' "$BENCH_WATCHED" "$(stats "${readyz_times[@]}")" >>"$out"
rm -rf "$work"
cat "$out"
