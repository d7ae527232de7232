#!/usr/bin/env bash
# Upload FILE as a blob of REPOSITORY in the test environment's distribution registry the
# cheapest way the distribution API allows: hash the file, then a POST opens the upload and one
# monolithic PUT sends the file with its digest. bench/run.sh times it as the machine's limit for
# a push. Needs the variables of testenv.env.
#
# HASHER is `sha256sum` (coreutils), `openssl` (openssl dgst, which uses the CPU's SHA
# extensions where present), or `none` to skip hashing and time the upload alone. `none` still
# sends the right digest, taken from FILE.sha256 when present.
set -euo pipefail

[[ $# -eq 3 ]] || { echo "usage: bench/curl_upload.sh sha256sum|openssl|none FILE REPOSITORY" >&2; exit 2; }
hasher=$1
file=$2
repository=$3
registry="https://$TESTENV_DISTRIBUTION_HOST"
curl_args=(--fail --silent --show-error --http1.1 --noproxy '*' --cacert "$TESTENV_CA_FILE"
  --user "$TESTENV_DISTRIBUTION_USERNAME:$TESTENV_DISTRIBUTION_PASSWORD")

case $hasher in
  sha256sum) hex=$(sha256sum "$file" | cut -d' ' -f1) ;;
  openssl) hex=$(openssl dgst -sha256 -r "$file" | cut -d' ' -f1) ;;
  none) hex=$(cut -d' ' -f1 "$file.sha256") ;;
  *) echo "unknown HASHER $hasher: use sha256sum, openssl or none" >&2; exit 2 ;;
esac

location=$(curl "${curl_args[@]}" -X POST -o /dev/null -D - "$registry/v2/$repository/blobs/uploads/" |
  tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')
[[ -n $location ]] || { echo "the registry sent no upload Location" >&2; exit 1; }
# The registry may send the location as a path.
[[ $location == /* ]] && location="$registry$location"
separator='?'
[[ $location == *\?* ]] && separator='&'

# An empty Expect header keeps curl from waiting for "100 Continue" before the body.
curl "${curl_args[@]}" -X PUT -T "$file" -H 'Expect:' -H 'Content-Type: application/octet-stream' \
  -o /dev/null "$location${separator}digest=sha256:$hex"
