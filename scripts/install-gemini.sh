#!/usr/bin/env bash
# Installs a pinned Gemini CLI (npm @google/gemini-cli) into a cache directory
# outside the repository, for the end-to-end tests in crates/cli/tests/gemini.rs,
# and prints the path of its `gemini` executable (a node script) as the last
# line. Skips the install when that exact version is already there. Needs node
# (20 or later) and npm; only the npm registry is contacted.
#
#   MUSTER_HARNESS_CACHE   cache root (default ~/.cache/muster-harnesses)
#   GEMINI_CLI_VERSION     version to install (default: the pinned one below)
set -euo pipefail

GEMINI_CLI_VERSION="${GEMINI_CLI_VERSION:-0.61.0}"
dir="${MUSTER_HARNESS_CACHE:-$HOME/.cache/muster-harnesses}/gemini"
pkg="$dir/node_modules/@google/gemini-cli"
bin="$pkg/bundle/gemini.js"

installed_version() {
    [ -f "$pkg/package.json" ] || return 0
    node -e 'process.stdout.write(require(process.argv[1]).version)' "$pkg/package.json" 2>/dev/null || true
}

works() {
    [ -x "$bin" ] && [ "$(GEMINI_CLI_NO_RELAUNCH=true "$bin" --version 2>/dev/null)" = "$GEMINI_CLI_VERSION" ]
}

if [ "$(installed_version)" != "$GEMINI_CLI_VERSION" ] || ! works; then
    command -v npm >/dev/null 2>&1 || { echo "install-gemini: npm is not on PATH" >&2; exit 1; }
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || printf '{"name":"muster-harness-gemini","private":true}\n' >"$dir/package.json"
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    if ! npm install --prefix "$dir" --no-audit --no-fund --save-exact --loglevel=error \
        "@google/gemini-cli@$GEMINI_CLI_VERSION" >"$log" 2>&1; then
        cat "$log" >&2
        echo "install-gemini: npm install @google/gemini-cli@$GEMINI_CLI_VERSION failed" >&2
        exit 1
    fi
    if ! works; then
        cat "$log" >&2
        echo "install-gemini: $bin does not run as Gemini CLI $GEMINI_CLI_VERSION" >&2
        exit 1
    fi
fi

echo "$bin"
