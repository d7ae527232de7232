#!/usr/bin/env bash
# Download the Apache Camel JAR that tests serve over HTTP, with Maven's own
# client, into "$ARTIFACT_OPERATOR_CACHE/jars", and print its path.
#
# The first download records the JAR's SHA-256 in a ".sha256" file beside it.
# Later runs skip the download and check the JAR against that file, so a
# corrupted or replaced cache entry fails here instead of in a test.
#
# Usage: tests/env/fetch-jars.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JAR_DIR="$ARTIFACT_OPERATOR_CACHE/jars"
ARTIFACT="org.apache.camel:camel-core-engine:$CAMEL_VERSION"
JAR="$JAR_DIR/camel-core-engine-$CAMEL_VERSION.jar"

# Copy the artifact into a scratch directory and move it into place only when
# Maven succeeded, so an interrupted download never leaves a partial JAR.
download() {
  command -v mvn >/dev/null || die "mvn not found in PATH; install Apache Maven"
  local tmp="$JAR_DIR/.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  log "downloading $ARTIFACT from Maven Central"
  mvn -q -B dependency:copy -Dartifact="$ARTIFACT" -DoutputDirectory="$tmp" >&2 \
    || { rm -rf "$tmp"; die "mvn failed to download $ARTIFACT"; }
  [[ -f "$tmp/$(basename "$JAR")" ]] || { rm -rf "$tmp"; die "mvn did not write $(basename "$JAR")"; }
  mv "$tmp/$(basename "$JAR")" "$JAR"
  rm -rf "$tmp"
}

mkdir -p "$JAR_DIR"
if [[ ! -f "$JAR" ]]; then
  download
fi

if [[ -f "$JAR.sha256" ]]; then
  (cd "$JAR_DIR" && sha256sum --check --quiet "$(basename "$JAR").sha256") \
    || die "$JAR does not match $JAR.sha256; delete both files and run this script again"
else
  (cd "$JAR_DIR" && sha256sum "$(basename "$JAR")" > "$(basename "$JAR").sha256")
  log "recorded SHA-256 in $JAR.sha256"
fi

printf '%s\n' "$JAR"
