#!/usr/bin/env bash
# Run the benchmarks against a running test environment and write the results under
# $ARTIFACT_OPERATOR_CACHE/bench/<time>/ (results.md is the summary). `make bench` starts and
# stops an environment of its own around this script; run it alone to reuse one started with
# `make testenv`.
#
# Usage: bench/run.sh [--quick]
#   --quick  small sizes and few repetitions, to check that the harness works (a minute or two).
#
# Environment variables set sizes and repetitions:
#   BENCH_SIZE_MIB     size of the pushed and pulled file (default 256)
#   BENCH_RUNS         timed runs per push or pull command (default 7)
#   BENCH_SMALL_KIB    size of the small JAR pulled for per-request cost (default 64)
#   BENCH_SMALL_RUNS   timed runs per small pull command (default 200)
#   BENCH_ARTIFACTS    AppArtifacts in the webhook's cache (default 1000)
#   BENCH_AB_RUNS      ab runs per server and concurrency (default 5)
#   BENCH_AB_SECONDS   target length of one ab run (default 3)
#   BENCH_MEMORY_MIB   size of the large push for the memory figure (default 1024)
#   BENCH_MEMORY_RUNS  pushes per size for the memory figure (default 3)
#   BENCH_READY        AppArtifacts the controllers make Ready in one round (default 500)
#   BENCH_READY_RUNS   rounds of BENCH_READY new AppArtifacts (default 3)
#   BENCH_STARTUP_RUNS operator starts timed until /readyz (default 5)
#   BENCH_WATCHED      AppArtifacts watched for the operator's RSS (default 5000)
#   BENCH_CONTROLLERS  0 skips the controller figures
source "$(dirname "${BASH_SOURCE[0]}")/../tests/env/lib.sh"

REPO_ROOT="$(cd "$TESTENV_DIR/../.." && pwd)"

if [[ ${1:-} == --quick ]]; then
  : "${BENCH_SIZE_MIB:=16}" "${BENCH_RUNS:=2}" "${BENCH_ARTIFACTS:=50}" "${BENCH_AB_RUNS:=2}"
  : "${BENCH_AB_SECONDS:=1}" "${BENCH_MEMORY_MIB:=64}" "${BENCH_MEMORY_RUNS:=1}"
  : "${BENCH_READY:=20}" "${BENCH_WATCHED:=50}" "${BENCH_READY_RUNS:=2}" "${BENCH_STARTUP_RUNS:=2}"
  : "${BENCH_SMALL_RUNS:=20}"
elif [[ $# -gt 0 ]]; then
  die "usage: bench/run.sh [--quick]"
fi
: "${BENCH_SIZE_MIB:=256}" "${BENCH_RUNS:=7}" "${BENCH_ARTIFACTS:=1000}" "${BENCH_AB_RUNS:=5}"
: "${BENCH_AB_SECONDS:=3}" "${BENCH_MEMORY_MIB:=1024}" "${BENCH_MEMORY_RUNS:=3}"
: "${BENCH_SMALL_KIB:=64}" "${BENCH_SMALL_RUNS:=200}"
SMALL_MEMORY_MIB=16
CONCURRENCY_LEVELS=(1 16 64)

[[ -r $TESTENV_FILE ]] || die "no running test environment ($TESTENV_FILE); start one with \`make testenv\` or run \`make bench\`"
# shellcheck source=/dev/null
source "$TESTENV_FILE"
command -v ab >/dev/null || die "ab not found; run tests/env/install-packages.sh (apache2-utils)"

RESULTS="$ARTIFACT_OPERATOR_CACHE/bench/$(date -u +%Y%m%dT%H%M%SZ)"
WORK="$RESULTS/work"
mkdir -p "$WORK"
log "results in $RESULTS"

# === Build ===

HYPERFINE="$("$REPO_ROOT/bench/tools.sh")/hyperfine"
TARGET="${CARGO_TARGET_DIR:-$ARTIFACT_OPERATOR_CACHE/target}/release"
(cd "$REPO_ROOT" && cargo build --locked --release --bins --examples)
OPERATOR="$TARGET/artifact-operator"
EXAMPLES="$TARGET/examples"

# Servers started in the background; stopped by pid on exit.
server_pids=()
stop_servers() {
  for pid in "${server_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${server_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  server_pids=()
}
trap stop_servers EXIT

# Waits for a server's env file, or fails when the server exits first.
wait_for_env_file() {
  local file=$1 pid=$2 log_file=$3
  for _ in $(seq 1 1200); do
    [[ -s $file ]] && return 0
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log_file" >&2; die "server $pid exited before writing $file"; }
    sleep 0.5
  done
  die "server $pid wrote no $file within 10 minutes"
}

# === Machine ===

{
  printf 'cpu: %s\n' "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  printf 'cores: %s\n' "$(nproc)"
  printf 'memory: %s MiB\n' "$(awk '/^MemTotal/ { print int($2 / 1024) }' /proc/meminfo)"
  printf 'sha_ni: %s\n' "$(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no)"
  printf 'kernel: %s\n' "$(uname -r)"
  printf 'load_before: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RESULTS/machine.txt"
{
  printf 'size_mib: %s\nruns: %s\nartifacts: %s\nab_runs: %s\n' \
    "$BENCH_SIZE_MIB" "$BENCH_RUNS" "$BENCH_ARTIFACTS" "$BENCH_AB_RUNS"
  printf 'memory_small_mib: %s\nmemory_large_mib: %s\n' "$SMALL_MEMORY_MIB" "$BENCH_MEMORY_MIB"
  printf 'small_kib: %s\n' "$BENCH_SMALL_KIB"
} >"$RESULTS/parameters.txt"

# The file pushed and pulled: a local file header signature, then random bytes, which are as
# incompressible as a JAR's deflated entries.
JAR="$WORK/app.jar"
{
  printf 'PK\003\004'
  head -c $((BENCH_SIZE_MIB * 1024 * 1024 - 4)) /dev/urandom
} >"$JAR"
sha256sum "$JAR" >"$JAR.sha256"

# A small JAR, for the fixed cost of one download: a real ZIP with one stored entry.
SMALL_JAR="$WORK/small.jar"
python3 - "$SMALL_JAR" "$BENCH_SMALL_KIB" <<'EOF'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_STORED) as jar:
    jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    jar.writestr("app/Data.bin", os.urandom(int(sys.argv[2]) * 1024))
EOF

export TESTENV_CA_FILE TESTENV_DISTRIBUTION_HOST TESTENV_DISTRIBUTION_USERNAME TESTENV_DISTRIBUTION_PASSWORD
export TESTENV_KUBECTL TESTENV_KUBECONFIG BENCH_READY BENCH_WATCHED BENCH_READY_RUNS BENCH_STARTUP_RUNS
export JAR WORK
# Commands below are single-quoted: hyperfine's shell expands the variables on each run, so the
# password and signed URLs stay out of the exported JSON and every run gets a new repository.
hyperfine() {
  "$HYPERFINE" --style basic --warmup 1 --runs "$BENCH_RUNS" "$@"
}

# === 1. Push ===

log "push: $BENCH_SIZE_MIB MiB, $BENCH_RUNS runs, a new repository per run"
hyperfine --export-json "$RESULTS/push.json" \
  -n 'ours: RegistryClient::push_jar' \
  "$EXAMPLES/bench_push"' --file "$JAR" --tenant bench --app "ours-$(date +%s%N)"' \
  -n 'oras push' \
  'cd "$WORK" && '"$TESTENV_ORAS"' push --no-tty --ca-file "$TESTENV_CA_FILE" -u "$TESTENV_DISTRIBUTION_USERNAME" -p "$TESTENV_DISTRIBUTION_PASSWORD" --artifact-type application/vnd.cameleer.app.jar.v1 "$TESTENV_DISTRIBUTION_HOST/bench/oras-$(date +%s%N):v1" app.jar:application/java-archive >/dev/null' \
  -n 'limit: sha256sum + curl -T' \
  "$REPO_ROOT/bench/curl_upload.sh"' sha256sum "$JAR" "bench/curl-$(date +%s%N)"' \
  -n 'limit: openssl dgst + curl -T' \
  "$REPO_ROOT/bench/curl_upload.sh"' openssl "$JAR" "bench/curl-$(date +%s%N)"' \
  -n 'limit: curl -T alone, digest known' \
  "$REPO_ROOT/bench/curl_upload.sh"' none "$JAR" "bench/curl-$(date +%s%N)"'

# === 2. Pull ===

log "pull: starting the gateway"
"$EXAMPLES/bench_gateway" --file "$JAR" --output "$WORK/gateway.env" 2>"$RESULTS/gateway.log" &
server_pids+=($!)
wait_for_env_file "$WORK/gateway.env" "$!" "$RESULTS/gateway.log"
# shellcheck source=/dev/null
source "$WORK/gateway.env"
export GATEWAY_URL BLOB_URL ORAS_REF DIGEST
export PULL_DIR="$WORK/pull"
mkdir -p "$PULL_DIR"

log "pull: $BENCH_SIZE_MIB MiB, $BENCH_RUNS runs"
hyperfine --export-json "$RESULTS/pull.json" \
  -n 'ours: gateway, curl to /dev/null' \
  'curl -fsS --noproxy "*" -o /dev/null "$GATEWAY_URL"' \
  -n 'ours: loader through the gateway' \
  'rm -f "$PULL_DIR/loader.jar" && '"$OPERATOR"' loader --url "$GATEWAY_URL" --digest "$DIGEST" --output "$PULL_DIR/loader.jar" 2>/dev/null' \
  -n 'registry: curl to /dev/null (HTTP/2)' \
  'curl -fsS --noproxy "*" --cacert "$TESTENV_CA_FILE" -u "$TESTENV_DISTRIBUTION_USERNAME:$TESTENV_DISTRIBUTION_PASSWORD" -o /dev/null "$BLOB_URL"' \
  -n 'registry: curl --http1.1 to /dev/null' \
  'curl -fsS --http1.1 --noproxy "*" --cacert "$TESTENV_CA_FILE" -u "$TESTENV_DISTRIBUTION_USERNAME:$TESTENV_DISTRIBUTION_PASSWORD" -o /dev/null "$BLOB_URL"' \
  -n 'registry: curl --http1.1 | openssl dgst' \
  'curl -fsS --http1.1 --noproxy "*" --cacert "$TESTENV_CA_FILE" -u "$TESTENV_DISTRIBUTION_USERNAME:$TESTENV_DISTRIBUTION_PASSWORD" "$BLOB_URL" | openssl dgst -sha256 >/dev/null' \
  -n 'oras pull' \
  'rm -rf "$PULL_DIR/oras" && '"$TESTENV_ORAS"' pull --no-tty --ca-file "$TESTENV_CA_FILE" -u "$TESTENV_DISTRIBUTION_USERNAME" -p "$TESTENV_DISTRIBUTION_PASSWORD" -o "$PULL_DIR/oras" "$ORAS_REF" >/dev/null'
stop_servers

log "pull: a $BENCH_SMALL_KIB KiB JAR, $BENCH_SMALL_RUNS runs"
"$EXAMPLES/bench_gateway" --file "$SMALL_JAR" --output "$WORK/gateway-small.env" 2>"$RESULTS/gateway-small.log" &
server_pids+=($!)
wait_for_env_file "$WORK/gateway-small.env" "$!" "$RESULTS/gateway-small.log"
# shellcheck source=/dev/null
source "$WORK/gateway-small.env"
export GATEWAY_URL BLOB_URL
"$HYPERFINE" --style basic --warmup 10 --runs "$BENCH_SMALL_RUNS" --export-json "$RESULTS/pull-small.json" \
  -n 'ours: gateway, curl to /dev/null' \
  'curl -fsS --noproxy "*" -o /dev/null "$GATEWAY_URL"' \
  -n 'registry: curl --http1.1 to /dev/null' \
  'curl -fsS --http1.1 --noproxy "*" --cacert "$TESTENV_CA_FILE" -u "$TESTENV_DISTRIBUTION_USERNAME:$TESTENV_DISTRIBUTION_PASSWORD" -o /dev/null "$BLOB_URL"'
stop_servers
rm -rf "$PULL_DIR"

# === 3. Admission latency ===

log "admission: creating $BENCH_ARTIFACTS AppArtifacts and starting the webhook"
"$EXAMPLES/bench_webhook" --artifacts "$BENCH_ARTIFACTS" --output "$WORK/webhook.env" \
  --review "$WORK/review.json" 2>"$RESULTS/webhook.log" &
server_pids+=($!)
wait_for_env_file "$WORK/webhook.env" "$!" "$RESULTS/webhook.log"
# shellcheck source=/dev/null
source "$WORK/webhook.env"
cp "$WORK/review.json" "$RESULTS/admission-review.json"

# One short ab run per server sizes the request count so a run lasts about BENCH_AB_SECONDS.
mkdir -p "$RESULTS/admission"
for server in ours peer; do
  url=$WEBHOOK_URL
  [[ $server == peer ]] && url=$PEER_URL
  rate=$(ab -q -k -n 500 -c 1 -T application/json -p "$WORK/review.json" "$url" |
    awk '/^Requests per second/ { print int($4) }')
  for concurrency in "${CONCURRENCY_LEVELS[@]}"; do
    requests=$((rate * BENCH_AB_SECONDS * (concurrency > 1 ? 2 : 1)))
    ((requests >= concurrency * 20)) || requests=$((concurrency * 20))
    log "admission: $server, $concurrency clients, $BENCH_AB_RUNS runs of $requests requests"
    for run in $(seq 1 "$BENCH_AB_RUNS"); do
      prefix="$RESULTS/admission/$server-c$concurrency-r$run"
      ab -q -k -n "$requests" -c "$concurrency" -T application/json -p "$WORK/review.json" \
        -e "$prefix.csv" "$url" >"$prefix.txt"
    done
  done
done
stop_servers
# The webhook logs one line per injection; keep the count instead of tens of MiB of lines.
injected=$(grep -c '"message":"Injected"' "$RESULTS/webhook.log" || true)
grep -v '"message":"Injected"' "$RESULTS/webhook.log" >"$WORK/webhook.log" || true
printf '%s "Injected" lines removed\n' "$injected" >>"$WORK/webhook.log"
mv "$WORK/webhook.log" "$RESULTS/webhook.log"

# === 4. Memory ===

export REGISTRY_PASSWORD=$TESTENV_DISTRIBUTION_PASSWORD
mkdir -p "$RESULTS/memory"
for size in "$SMALL_MEMORY_MIB" "$BENCH_MEMORY_MIB"; do
  log "memory: pushing $size MiB, $BENCH_MEMORY_RUNS runs"
  for run in $(seq 1 "$BENCH_MEMORY_RUNS"); do
    /usr/bin/time -v -o "$RESULTS/memory/push-$size-r$run.txt" \
      "$EXAMPLES/oci_transfer" push --registry "https://$TESTENV_DISTRIBUTION_HOST" \
      --ca-file "$TESTENV_CA_FILE" --username "$TESTENV_DISTRIBUTION_USERNAME" \
      --size-mib "$size" --tenant bench --app "memory-$(date +%s%N)" --version 1 >/dev/null
  done
done

# === 5. Controllers ===

if [[ ${BENCH_CONTROLLERS:-1} == 1 ]]; then
  OPERATOR="$OPERATOR" RESULTS="$RESULTS" "$REPO_ROOT/bench/controllers.sh"
fi

# === Summary ===

printf 'load_after: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS/machine.txt"
rm -rf "$WORK"
python3 "$REPO_ROOT/bench/report.py" "$RESULTS" | tee "$RESULTS/results.md"
