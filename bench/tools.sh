#!/usr/bin/env bash
# Install hyperfine, built from crates.io with cargo, into the artifact-operator cache, so every
# machine times with the same pinned version. Skips the build when present. Prints the directory
# that contains the binary.
source "$(dirname "${BASH_SOURCE[0]}")/../tests/env/lib.sh"

HYPERFINE_VERSION=1.19.0
TOOLS_ROOT="$ARTIFACT_OPERATOR_CACHE/tools/hyperfine-$HYPERFINE_VERSION"

if [[ ! -x $TOOLS_ROOT/bin/hyperfine ]]; then
  log "building hyperfine $HYPERFINE_VERSION into $TOOLS_ROOT"
  # A separate target directory, so this build never touches the project's.
  CARGO_TARGET_DIR="$ARTIFACT_OPERATOR_CACHE/tools/target" \
    cargo install --locked --quiet "hyperfine@$HYPERFINE_VERSION" --root "$TOOLS_ROOT"
fi
printf '%s\n' "$TOOLS_ROOT/bin"
