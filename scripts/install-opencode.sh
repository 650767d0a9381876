#!/usr/bin/env bash
# Installs a pinned opencode (npm opencode-ai) into a cache directory outside
# the repository, for the end-to-end tests in crates/cli/tests/opencode.rs, and
# prints the path of its `opencode` executable as the last line. Skips the
# install when that exact version is already there. Needs node and npm; only
# the npm registry is contacted. The npm part is scripts/lib/npm-harness.sh.
#
# It also fills <cache>/opencode/plugin-deps with what opencode itself installs
# from npm into every config directory (`.opencode/`, ~/.config/opencode) on its
# first start: package.json, package-lock.json and node_modules holding
# @opencode-ai/plugin at the same version. The tests lay these into their
# throwaway project and home, so a test run reaches nothing but loopback and
# does not spend ~15 s installing.
#
#   MUSTER_HARNESS_CACHE   cache root (default ~/.cache/muster-harnesses)
#   OPENCODE_VERSION       version to install (default: the pinned one below)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/npm-harness.sh"

OPENCODE_VERSION="${OPENCODE_VERSION:-1.18.33}"
npm_harness opencode opencode-ai "$OPENCODE_VERSION"
# The package's postinstall hard-links the native binary from its per-platform
# optional dependency over bin/opencode.exe.
bin="$pkg/bin/opencode.exe"
deps="$dir/plugin-deps"

works() {
    [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "$OPENCODE_VERSION" ]
}

after_npm_install() {
    npm_harness_postinstall postinstall.mjs
}

deps_ready() {
    [ -f "$deps/package-lock.json" ] && [ -f "$deps/node_modules/@opencode-ai/plugin/package.json" ] &&
        [ "$(package_version "$deps/node_modules/@opencode-ai/plugin/package.json")" = "$OPENCODE_VERSION" ]
}

npm_harness_install "opencode $OPENCODE_VERSION"

if ! deps_ready; then
    rm -rf "$deps"
    mkdir -p "$deps"
    # The package.json opencode writes into a config directory.
    printf '{\n  "dependencies": {\n    "@opencode-ai/plugin": "%s"\n  }\n}\n' "$OPENCODE_VERSION" >"$deps/package.json"
    if ! (cd "$deps" && npm install --no-audit --no-fund --loglevel=error) >"$log" 2>&1 || ! deps_ready; then
        npm_harness_fail "npm install @opencode-ai/plugin@$OPENCODE_VERSION into $deps failed"
    fi
fi

echo "$bin"
