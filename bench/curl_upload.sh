#!/usr/bin/env bash
# Upload FILE as a blob of REPOSITORY in the test environment's distribution registry the
# cheapest way the distribution API allows: sha256sum first, then a POST that opens the upload
# and one monolithic PUT with the digest. bench/run.sh times it as the machine's limit for a
# push. Needs the variables of testenv.env.
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: bench/curl_upload.sh FILE REPOSITORY" >&2; exit 2; }
file=$1
repository=$2
registry="https://$TESTENV_DISTRIBUTION_HOST"
curl_args=(--fail --silent --show-error --noproxy '*' --cacert "$TESTENV_CA_FILE"
  --user "$TESTENV_DISTRIBUTION_USERNAME:$TESTENV_DISTRIBUTION_PASSWORD")

digest="sha256:$(sha256sum "$file" | cut -d' ' -f1)"

location=$(curl "${curl_args[@]}" -X POST -o /dev/null -D - "$registry/v2/$repository/blobs/uploads/" |
  tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')
[[ -n $location ]] || { echo "the registry sent no upload Location" >&2; exit 1; }
# The registry may send the location as a path.
[[ $location == /* ]] && location="$registry$location"
separator='?'
[[ $location == *\?* ]] && separator='&'

# An empty Expect header keeps curl from waiting for "100 Continue" before the body.
curl "${curl_args[@]}" -X PUT -T "$file" -H 'Expect:' -H 'Content-Type: application/octet-stream' \
  -o /dev/null "$location${separator}digest=$digest"
