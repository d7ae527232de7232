#!/usr/bin/env bash
# Start the test environment on loopback ports chosen at start-up: etcd,
# kube-apiserver, kube-controller-manager, a CNCF distribution registry with
# htpasswd over TLS, and a crane registry. Writes $TESTENV_STATE/testenv.env,
# which tests read and humans can source. Stop it with tests/env/down.sh.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Loopback traffic must never go through a proxy, whatever the caller's shell has.
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

require_binaries() {
  local b
  for b in "$(etcd_bin)" "$(k8s_bin kube-apiserver)" "$(k8s_bin kube-controller-manager)" \
    "$(k8s_bin kubectl)" "$(helm_bin)" "$(oras_bin)" "$(crane_bin)"; do
    [[ -x "$b" ]] || die "$b is missing; run tests/env/build.sh first"
  done
  [[ -f "$(traefik_crds)" ]] || die "$(traefik_crds) is missing; run tests/env/build.sh first"
  command -v docker-registry >/dev/null || die "docker-registry is missing; run tests/env/install-packages.sh"
  command -v htpasswd >/dev/null || die "htpasswd is missing; run tests/env/install-packages.sh"
  command -v openssl >/dev/null || die "openssl is missing; run tests/env/install-packages.sh"
}

# === Certificates ===

PKI=""

make_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
    -subj "/CN=artifact-operator-testenv-ca" -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
}

# issue_cert NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
issue_cert() {
  local name="$1" subject="$2" usage="$3" sans="${4:-}"
  local ext="$PKI/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [[ -z "$sans" ]] || echo "subjectAltName=$sans"
  } >"$ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$subject" \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

make_pki() {
  PKI="$TESTENV_STATE/pki"
  mkdir -p "$PKI"
  make_ca
  local loopback="IP:127.0.0.1,DNS:localhost"
  issue_cert etcd "/CN=etcd" serverAuth "$loopback"
  issue_cert apiserver "/CN=kube-apiserver" serverAuth \
    "$loopback,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue_cert registry "/CN=registry" serverAuth "$loopback"
  issue_cert apiserver-etcd-client "/CN=kube-apiserver-etcd-client" clientAuth
  issue_cert admin "/O=system:masters/CN=testenv-admin" clientAuth
  issue_cert controller-manager "/CN=system:kube-controller-manager" clientAuth
  # Service-account tokens are signed with RSA, as in a kubeadm cluster.
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
}

# write_kubeconfig FILE USER
write_kubeconfig() {
  local file="$1" user="$2"
  cat >"$file" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $user
  user:
    client-certificate: $PKI/$user.crt
    client-key: $PKI/$user.key
contexts:
- name: testenv
  context:
    cluster: testenv
    user: $user
    namespace: default
current-context: testenv
YAML
  chmod 600 "$file"
}

# === Processes ===

# start NAME COMMAND... runs COMMAND in the background, logging to logs/NAME.log.
start() {
  local name="$1"
  shift
  "$@" >"$TESTENV_STATE/logs/$name.log" 2>&1 &
  echo $! >"$TESTENV_STATE/pids/$name.pid"
}

# wait_until NAME SECONDS COMMAND... polls COMMAND until it succeeds. NAME's
# process must stay alive meanwhile; its log tail is printed on failure.
wait_until() {
  local name="$1" limit="$2"
  shift 2
  local pid deadline=$((SECONDS + limit))
  pid="$(cat "$TESTENV_STATE/pids/$name.pid")"
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$TESTENV_STATE/logs/$name.log" >&2 || true
      die "$name exited during start-up; log: $TESTENV_STATE/logs/$name.log"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$TESTENV_STATE/logs/$name.log" >&2 || true
      die "$name was not ready after $limit s; log: $TESTENV_STATE/logs/$name.log"
    fi
    sleep 0.3
  done
  log "$name ready"
}

https_ok() {
  curl -fsS --cacert "$PKI/ca.crt" "$@"
}

start_etcd() {
  ETCD_PORT="$(free_port)"
  local peer_port
  peer_port="$(free_port)"
  # --unsafe-no-fsync: the data is thrown away after the run, so fsync would
  # only slow down every write.
  start etcd "$(etcd_bin)" --name testenv --data-dir "$TESTENV_STATE/etcd" \
    --listen-client-urls "https://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "https://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "testenv=http://127.0.0.1:$peer_port" \
    --cert-file "$PKI/etcd.crt" --key-file "$PKI/etcd.key" \
    --trusted-ca-file "$PKI/ca.crt" --client-cert-auth \
    --unsafe-no-fsync --log-level warn
  wait_until etcd 60 https_ok --cert "$PKI/apiserver-etcd-client.crt" \
    --key "$PKI/apiserver-etcd-client.key" "https://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  APISERVER_PORT="$(free_port)"
  # The endpoint reconciler would publish 127.0.0.1 as the endpoint of the
  # "kubernetes" Service, which endpoint validation rejects as loopback.
  start kube-apiserver "$(k8s_bin kube-apiserver)" \
    --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" --advertise-address 127.0.0.1 \
    --etcd-servers "https://127.0.0.1:$ETCD_PORT" --etcd-cafile "$PKI/ca.crt" \
    --etcd-certfile "$PKI/apiserver-etcd-client.crt" --etcd-keyfile "$PKI/apiserver-etcd-client.key" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota,NodeRestriction,PodSecurity,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy \
    --endpoint-reconciler-type none \
    --cert-dir "$TESTENV_STATE/apiserver" \
    --profiling=false --v 1
  wait_until kube-apiserver 120 https_ok --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz"
}

start_controller_manager() {
  local port kubeconfig="$TESTENV_STATE/controller-manager.kubeconfig"
  port="$(free_port)"
  write_kubeconfig "$kubeconfig" controller-manager
  start kube-controller-manager "$(k8s_bin kube-controller-manager)" \
    --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" \
    --authorization-kubeconfig "$kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$port" --leader-elect=false \
    --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
    --use-service-account-credentials \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --cert-dir "$TESTENV_STATE/controller-manager" --v 1
  wait_until kube-controller-manager 60 curl -fsSk "https://127.0.0.1:$port/healthz"
}

start_distribution() {
  DISTRIBUTION_PORT="$(free_port)"
  DISTRIBUTION_USERNAME=testenv
  DISTRIBUTION_PASSWORD="$(openssl rand -hex 16)"
  local dir="$TESTENV_STATE/distribution"
  mkdir -p "$dir/data"
  htpasswd -nbB "$DISTRIBUTION_USERNAME" "$DISTRIBUTION_PASSWORD" >"$dir/htpasswd"
  cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$DISTRIBUTION_PORT
  secret: $(openssl rand -hex 16)
  tls:
    certificate: $PKI/registry.crt
    key: $PKI/registry.key
auth:
  htpasswd:
    realm: testenv
    path: $dir/htpasswd
YAML
  start distribution docker-registry serve "$dir/config.yml"
  wait_until distribution 30 https_ok -u "$DISTRIBUTION_USERNAME:$DISTRIBUTION_PASSWORD" \
    "https://127.0.0.1:$DISTRIBUTION_PORT/v2/"
}

# crane's registry has no TLS or authentication options; it serves plain HTTP on
# loopback and covers anonymous access.
start_crane() {
  CRANE_PORT="$(free_port)"
  mkdir -p "$TESTENV_STATE/crane"
  start crane "$(crane_bin)" registry serve --address "127.0.0.1:$CRANE_PORT" \
    --disk "$TESTENV_STATE/crane"
  wait_until crane 30 curl -fsS "http://127.0.0.1:$CRANE_PORT/v2/"
}

write_env_file() {
  local tmp="$TESTENV_FILE.tmp"
  local kv
  {
    echo "# Written by tests/env/up.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ). Source it to use the environment."
    for kv in \
      "TESTENV_STATE=$TESTENV_STATE" \
      "KUBECONFIG=$TESTENV_STATE/admin.kubeconfig" \
      "TESTENV_KUBECONFIG=$TESTENV_STATE/admin.kubeconfig" \
      "TESTENV_APISERVER_URL=https://127.0.0.1:$APISERVER_PORT" \
      "TESTENV_CA_FILE=$PKI/ca.crt" \
      "TESTENV_SA_SIGNING_KEY=$PKI/sa.key" \
      "TESTENV_DISTRIBUTION_HOST=127.0.0.1:$DISTRIBUTION_PORT" \
      "TESTENV_DISTRIBUTION_USERNAME=$DISTRIBUTION_USERNAME" \
      "TESTENV_DISTRIBUTION_PASSWORD=$DISTRIBUTION_PASSWORD" \
      "TESTENV_CRANE_HOST=127.0.0.1:$CRANE_PORT" \
      "TESTENV_KUBECTL=$(k8s_bin kubectl)" \
      "TESTENV_HELM=$(helm_bin)" \
      "TESTENV_ORAS=$(oras_bin)" \
      "TESTENV_CRANE=$(crane_bin)" \
      "TESTENV_TRAEFIK_CRDS=$(traefik_crds)" \
      "TESTENV_ETCD_PID=$(cat "$TESTENV_STATE/pids/etcd.pid")" \
      "TESTENV_APISERVER_PID=$(cat "$TESTENV_STATE/pids/kube-apiserver.pid")" \
      "TESTENV_DISTRIBUTION_PID=$(cat "$TESTENV_STATE/pids/distribution.pid")" \
      "TESTENV_CRANE_PID=$(cat "$TESTENV_STATE/pids/crane.pid")"; do
      [[ "$kv" != *"'"* ]] || die "value contains a single quote: $kv"
      printf "export %s='%s'\n" "${kv%%=*}" "${kv#*=}"
    done
  } >"$tmp"
  chmod 600 "$tmp"
  mv "$tmp" "$TESTENV_FILE"
}

main() {
  require_binaries
  if compgen -G "$TESTENV_STATE/pids/*.pid" >/dev/null; then
    log "an environment is already running; stopping it first"
    "$TESTENV_DIR/down.sh"
  fi
  rm -rf "$TESTENV_STATE"
  mkdir -p "$TESTENV_STATE/logs" "$TESTENV_STATE/pids"
  chmod 700 "$TESTENV_STATE"

  local start_time=$SECONDS
  # Stop whatever already started if a later step fails.
  UP_COMPLETE=0
  trap '[[ ${UP_COMPLETE:-0} -eq 1 ]] || "$TESTENV_DIR/down.sh" >/dev/null 2>&1 || true' EXIT
  make_pki
  start_etcd
  start_apiserver
  write_kubeconfig "$TESTENV_STATE/admin.kubeconfig" admin
  start_controller_manager
  start_distribution
  start_crane
  write_env_file
  UP_COMPLETE=1

  log "environment up in $((SECONDS - start_time)) s"
  log "source $TESTENV_FILE to use it; tests/env/down.sh stops it"
}

main "$@"
