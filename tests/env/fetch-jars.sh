#!/usr/bin/env bash
# Download the Apache Camel JARs that tests use, with Maven's own client, into
# "$ARTIFACT_OPERATOR_CACHE/jars", and print their paths, one per line.
#
# The first download of a JAR records its SHA-256 in a ".sha256" file beside
# it. Later runs skip the download and check the JAR against that file, so a
# corrupted or replaced cache entry fails here instead of in a test.
#
# CAMEL_VERSION and CAMEL_ARTIFACT_IDS in versions.env name the JARs.
#
# Usage: tests/env/fetch-jars.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JAR_DIR="$ARTIFACT_OPERATOR_CACHE/jars"

# download ARTIFACT JAR copies the Maven artifact into a scratch directory and
# moves it to JAR only when Maven succeeded, so an interrupted download never
# leaves a partial JAR.
download() {
  local artifact="$1" jar="$2"
  command -v mvn >/dev/null || die "mvn not found in PATH; install Apache Maven"
  local tmp="$JAR_DIR/.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  log "downloading $artifact from Maven Central"
  mvn -q -B dependency:copy -Dartifact="$artifact" -DoutputDirectory="$tmp" >&2 \
    || { rm -rf "$tmp"; die "mvn failed to download $artifact"; }
  [[ -f "$tmp/$(basename "$jar")" ]] || { rm -rf "$tmp"; die "mvn did not write $(basename "$jar")"; }
  mv "$tmp/$(basename "$jar")" "$jar"
  rm -rf "$tmp"
}

# fetch ARTIFACT_ID downloads org.apache.camel:ARTIFACT_ID:$CAMEL_VERSION unless
# it is cached, checks or records its SHA-256 and prints its path.
fetch() {
  local artifact="org.apache.camel:$1:$CAMEL_VERSION"
  local jar="$JAR_DIR/$1-$CAMEL_VERSION.jar"
  if [[ ! -f "$jar" ]]; then
    download "$artifact" "$jar"
  fi

  if [[ -f "$jar.sha256" ]]; then
    (cd "$JAR_DIR" && sha256sum --check --quiet "$(basename "$jar").sha256") \
      || die "$jar does not match $jar.sha256; delete both files and run this script again"
  else
    (cd "$JAR_DIR" && sha256sum "$(basename "$jar")" >"$(basename "$jar").sha256")
    log "recorded SHA-256 in $jar.sha256"
  fi

  printf '%s\n' "$jar"
}

mkdir -p "$JAR_DIR"
read -r -a artifact_ids <<<"$CAMEL_ARTIFACT_IDS"
[[ ${#artifact_ids[@]} -gt 0 ]] || die "CAMEL_ARTIFACT_IDS in versions.env is empty"
for artifact_id in "${artifact_ids[@]}"; do
  fetch "$artifact_id"
done
