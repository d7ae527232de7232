# Shared helpers for the test-environment scripts. Source it; do not run it.
# shellcheck shell=bash

set -euo pipefail

TESTENV_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# shellcheck source=versions.env
source "$TESTENV_DIR/versions.env"

# Build outputs live outside the repository so a fresh clone reuses them.
ARTIFACT_OPERATOR_CACHE="${ARTIFACT_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/artifact-operator}"
BIN_CACHE="$ARTIFACT_OPERATOR_CACHE/bin"

# Runtime state of a started environment (certificates, data, logs, pids).
TESTENV_STATE="${TESTENV_STATE:-$ARTIFACT_OPERATOR_CACHE/run}"
TESTENV_FILE="$TESTENV_STATE/testenv.env"
# Child scripts and tests must agree on where the environment lives.
export TESTENV_STATE TESTENV_FILE

log() { printf '[testenv] %s\n' "$*" >&2; }
die() { printf '[testenv] error: %s\n' "$*" >&2; exit 1; }

# Directory that contains the binary of one pinned component, e.g. bin_dir etcd "$ETCD_VERSION".
bin_dir() { printf '%s/%s-%s\n' "$BIN_CACHE" "$1" "$2"; }

k8s_bin() { printf '%s/%s\n' "$(bin_dir kubernetes "$KUBERNETES_VERSION")" "$1"; }
etcd_bin() { printf '%s/etcd\n' "$(bin_dir etcd "$ETCD_VERSION")"; }
helm_bin() { printf '%s/helm\n' "$(bin_dir helm "$HELM_VERSION")"; }
oras_bin() { printf '%s/oras\n' "$(bin_dir oras "$ORAS_VERSION")"; }
traefik_crds() { printf '%s/traefik-crds.yaml\n' "$(bin_dir traefik-crds "$TRAEFIK_VERSION")"; }
cert_manager_crds() { printf '%s/cert-manager-crds.yaml\n' "$(bin_dir cert-manager-crds "$CERT_MANAGER_VERSION")"; }
crane_bin() { printf '%s/crane\n' "$(bin_dir crane "$CRANE_VERSION")"; }

# Check that the machine's Go is recent enough for the pinned modules.
require_go() {
  command -v go >/dev/null || die "go not found in PATH; install Go $GO_MIN_VERSION or newer"
  local have
  have="$(go env GOVERSION)"
  have="${have#go}"
  if [[ "$(printf '%s\n%s\n' "$GO_MIN_VERSION" "$have" | sort -V | head -n1)" != "$GO_MIN_VERSION" ]]; then
    die "Go $have is older than $GO_MIN_VERSION; export GOTOOLCHAIN=go$GO_MIN_VERSION or install a newer Go"
  fi
}

# Pick a free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
