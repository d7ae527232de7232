#!/usr/bin/env bash
# Stop every process that tests/env/up.sh started and remove its env file.
# Logs stay in $TESTENV_STATE/logs until the next start.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# stop_pid PID NAME sends SIGTERM, waits up to 20 s, then sends SIGKILL.
stop_pid() {
  local pid="$1" name="$2" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

main() {
  rm -f "$TESTENV_FILE"
  [[ -d "$TESTENV_STATE/pids" ]] || { log "nothing to stop"; return; }

  # Stop in reverse start order, so clients go before the servers they use.
  local name pidfile
  for name in crane distribution kube-controller-manager kube-apiserver etcd; do
    pidfile="$TESTENV_STATE/pids/$name.pid"
    [[ -f "$pidfile" ]] || continue
    stop_pid "$(cat "$pidfile")" "$name"
    rm -f "$pidfile"
  done

  # Every command line that up.sh starts names the state directory, so anything
  # still matching it is a process of ours that escaped its pid file.
  local stray
  stray="$(pgrep -f -- "$TESTENV_STATE/" || true)"
  if [[ -n "$stray" ]]; then
    log "stopping stray processes: $stray"
    local pid
    for pid in $stray; do stop_pid "$pid" stray; done
  fi
  log "environment stopped"
}

main "$@"
