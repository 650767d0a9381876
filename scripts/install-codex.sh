#!/usr/bin/env bash
# Installs a pinned Codex CLI (npm @openai/codex) into a cache directory outside
# the repository, for the end-to-end tests in crates/cli/tests/codex.rs, and
# prints the path of its `codex` executable as the last line. Skips the install
# when that exact version is already there. Needs node and npm; only the npm
# registry is contacted (the native binary comes in a per-platform optional
# dependency of the package, nothing is downloaded from elsewhere). The npm
# part is scripts/lib/npm-harness.sh.
#
#   MUSTER_HARNESS_CACHE   cache root (default ~/.cache/muster-harnesses)
#   CODEX_VERSION          version to install (default: the pinned one below)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/npm-harness.sh"

CODEX_VERSION="${CODEX_VERSION:-0.171.0}"
npm_harness codex @openai/codex "$CODEX_VERSION"
# A stable name for the native binary (bin/codex.js only finds and spawns it),
# so the tests run and kill the real process and can find it without node.
bin="$dir/bin/codex"

works() {
    [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "^codex-cli $CODEX_VERSION\$"
}

# The native executable inside the platform package npm installed.
native() {
    local found
    for found in "$dir"/node_modules/@openai/codex-*/vendor/*/bin/codex; do
        [ -x "$found" ] && { echo "$found"; return 0; }
    done
    return 1
}

after_npm_install() {
    local target
    target="$(native)" ||
        npm_harness_fail "no native codex binary under $dir/node_modules/@openai (optional dependencies skipped?)"
    mkdir -p "$dir/bin"
    ln -sfn "$target" "$bin"
}

npm_harness_install "codex-cli $CODEX_VERSION"
echo "$bin"
