#!/usr/bin/env bash
# Install the Debian packages the test environment uses: the CNCF distribution
# registry, htpasswd (bcrypt), openssl, curl and Maven. Skips what is present.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

packages=(docker-registry apache2-utils openssl curl maven)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  log "Debian packages present: ${packages[*]}"
  exit 0
fi

SUDO=()
[[ $(id -u) -eq 0 ]] || SUDO=(sudo)
log "installing Debian packages: ${missing[*]}"
"${SUDO[@]}" apt-get update -qq
# policy-rc.d exit 101 keeps the package's init script from starting a registry
# on port 5000: tests start their own on a free port.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod +x "$policy"
  created_policy=1
fi
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
[[ $created_policy -eq 0 ]] || "${SUDO[@]}" rm -f "$policy"
