#!/usr/bin/env bash
# Build every Go component of the test environment from its Go module and cache
# the binaries outside the repository, keyed by version. Already-built versions
# are skipped.
#
# Usage: tests/env/build.sh [component...]   (default: all)
# Components: kubernetes etcd helm oras crane traefik-crds cert-manager-crds
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_go
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -trimpath"

# Run a build into a scratch directory and move it into place only when it
# succeeded, so an interrupted build never leaves a half-filled cache entry.
build_into() {
  local name="$1" version="$2" fn="$3"
  local dest tmp
  dest="$(bin_dir "$name" "$version")"
  if [[ -f "$dest/.complete" ]]; then
    log "$name $version: cached in $dest"
    return
  fi
  tmp="$dest.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  log "$name $version: building (first time only)"
  local start=$SECONDS
  "$fn" "$tmp" "$version"
  touch "$tmp/.complete"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  log "$name $version: built in $((SECONDS - start)) s"
}

# kube-apiserver, kube-controller-manager and kubectl. k8s.io/kubernetes points
# its staging modules at ./staging, which does not exist in the module zip, so a
# wrapper module replaces each of them with its published v0.MINOR.PATCH.
build_kubernetes() {
  local out="$1" version="$2"
  local work="$out/src"
  mkdir -p "$work"
  local gomod
  gomod="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  local staging="v0.${version#v1.}"
  {
    echo "module artifactoperator.test/kubernetes"
    echo
    echo "go $(awk '/^go /{print $2; exit}' "$gomod")"
    echo
    echo "replace ("
    grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" \
      | awk -v v="$staging" '{printf "\t%s => %s %s\n", $1, $1, v}'
    echo ")"
  } >"$work/go.mod"
  local pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)
  (cd "$work" && go get "k8s.io/kubernetes@$version" && go get "${pkgs[@]}")

  local minor="${version#v1.}"
  minor="${minor%%.*}"
  local ldflags="-s -w"
  local pkg
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$work" && go build -ldflags "$ldflags" -o "$out/" "${pkgs[@]}")
  rm -rf "$work"
}

# etcd's server module has no main package of its own; etcdmain.Main is what
# the upstream etcd binary calls.
build_etcd() {
  local out="$1" version="$2"
  local work="$out/src"
  mkdir -p "$work"
  cat >"$work/main.go" <<'GO'
// Command etcd runs etcdmain.Main, exactly as the upstream etcd binary does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$work" && go mod init artifactoperator.test/etcd >/dev/null 2>&1 \
    && go get "go.etcd.io/etcd/server/v3@$version" && go mod tidy \
    && go build -ldflags "-s -w" -o "$out/etcd" .)
  rm -rf "$work"
}

build_go_install() {
  local out="$1" pkg="$2"
  GOBIN="$out" go install -ldflags "-s -w" "$pkg"
}

# Traefik publishes its CRDs as YAML inside its Go module; nothing is compiled.
build_traefik_crds() {
  local out="$1" version="$2" dir
  dir="$(cd "$out" && GOFLAGS=-mod=mod go mod download -json "github.com/traefik/traefik/v3@$version" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  cp "$dir/docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml" \
    "$out/traefik-crds.yaml"
  chmod 644 "$out/traefik-crds.yaml"
}

# cert-manager ships its CRDs as YAML in its Go module too. The cert-manager.io group is
# enough for the chart (Issuer, ClusterIssuer, Certificate, CertificateRequest); the ACME
# group is left out.
build_cert_manager_crds() {
  local out="$1" version="$2" dir
  dir="$(cd "$out" && GOFLAGS=-mod=mod go mod download -json "github.com/cert-manager/cert-manager@$version" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  cat "$dir"/deploy/crds/cert-manager.io_{certificates,certificaterequests,issuers,clusterissuers}.yaml \
    >"$out/cert-manager-crds.yaml"
  chmod 644 "$out/cert-manager-crds.yaml"
}

build_helm() { build_go_install "$1" "helm.sh/helm/v4/cmd/helm@$2"; }
build_oras() { build_go_install "$1" "oras.land/oras/cmd/oras@$2"; }
build_crane() { build_go_install "$1" "github.com/google/go-containerregistry/cmd/crane@$2"; }

main() {
  local components=("$@")
  [[ ${#components[@]} -gt 0 ]] || components=(etcd crane oras helm traefik-crds cert-manager-crds kubernetes)
  local c
  for c in "${components[@]}"; do
    case "$c" in
      kubernetes) build_into kubernetes "$KUBERNETES_VERSION" build_kubernetes ;;
      etcd) build_into etcd "$ETCD_VERSION" build_etcd ;;
      helm) build_into helm "$HELM_VERSION" build_helm ;;
      oras) build_into oras "$ORAS_VERSION" build_oras ;;
      crane) build_into crane "$CRANE_VERSION" build_crane ;;
      traefik-crds) build_into traefik-crds "$TRAEFIK_VERSION" build_traefik_crds ;;
      cert-manager-crds) build_into cert-manager-crds "$CERT_MANAGER_VERSION" build_cert_manager_crds ;;
      *) die "unknown component '$c'; expected one of: kubernetes etcd helm oras crane traefik-crds cert-manager-crds" ;;
    esac
  done
}

main "$@"
