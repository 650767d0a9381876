#!/usr/bin/env bash
# Installs a pinned Gemini CLI (npm @google/gemini-cli) into a cache directory
# outside the repository, for the end-to-end tests in crates/cli/tests/gemini.rs,
# and prints the path of its `gemini` executable (a node script) as the last
# line. Skips the install when that exact version is already there. Needs node
# (20 or later) and npm; only the npm registry is contacted. The npm part is
# scripts/lib/npm-harness.sh.
#
#   MUSTER_HARNESS_CACHE   cache root (default ~/.cache/muster-harnesses)
#   GEMINI_CLI_VERSION     version to install (default: the pinned one below)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/npm-harness.sh"

GEMINI_CLI_VERSION="${GEMINI_CLI_VERSION:-0.61.0}"
npm_harness gemini @google/gemini-cli "$GEMINI_CLI_VERSION"
bin="$pkg/bundle/gemini.js"

works() {
    [ -x "$bin" ] && [ "$(GEMINI_CLI_NO_RELAUNCH=true "$bin" --version 2>/dev/null)" = "$GEMINI_CLI_VERSION" ]
}

npm_harness_install "Gemini CLI $GEMINI_CLI_VERSION"
echo "$bin"
