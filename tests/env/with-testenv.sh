#!/usr/bin/env bash
# Start the test environment, run the given command with it, and stop the
# environment afterwards, also when the command fails or is interrupted.
# Exits with the command's status.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -gt 0 ]] || die "usage: tests/env/with-testenv.sh COMMAND [ARG...]"

export TESTENV_STATE TESTENV_FILE
trap '"$TESTENV_DIR/down.sh"' EXIT
"$TESTENV_DIR/up.sh"
# shellcheck source=/dev/null
source "$TESTENV_FILE"
set +e
"$@"
status=$?
set -e
exit "$status"
