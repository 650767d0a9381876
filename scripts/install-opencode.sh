#!/usr/bin/env bash
# Installs a pinned opencode (npm opencode-ai) into a cache directory outside
# the repository, for the end-to-end tests in crates/cli/tests/opencode.rs, and
# prints the path of its `opencode` executable as the last line. Skips the
# install when that exact version is already there. Needs node and npm; only
# the npm registry is contacted.
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

OPENCODE_VERSION="${OPENCODE_VERSION:-1.18.33}"
dir="${MUSTER_HARNESS_CACHE:-$HOME/.cache/muster-harnesses}/opencode"
pkg="$dir/node_modules/opencode-ai"
# The package's postinstall hard-links the native binary from its per-platform
# optional dependency over bin/opencode.exe.
bin="$pkg/bin/opencode.exe"
deps="$dir/plugin-deps"

installed_version() {
    [ -f "$pkg/package.json" ] || return 0
    node -e 'process.stdout.write(require(process.argv[1]).version)' "$pkg/package.json" 2>/dev/null || true
}

works() {
    [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "$OPENCODE_VERSION" ]
}

deps_ready() {
    [ -f "$deps/package-lock.json" ] && [ -f "$deps/node_modules/@opencode-ai/plugin/package.json" ] &&
        [ "$(node -e 'process.stdout.write(require(process.argv[1]).version)' \
            "$deps/node_modules/@opencode-ai/plugin/package.json" 2>/dev/null)" = "$OPENCODE_VERSION" ]
}

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

if [ "$(installed_version)" != "$OPENCODE_VERSION" ] || ! works; then
    command -v npm >/dev/null 2>&1 || { echo "install-opencode: npm is not on PATH" >&2; exit 1; }
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || printf '{"name":"muster-harness-opencode","private":true}\n' >"$dir/package.json"
    if ! npm install --prefix "$dir" --no-audit --no-fund --save-exact --loglevel=error \
        "opencode-ai@$OPENCODE_VERSION" >"$log" 2>&1; then
        cat "$log" >&2
        echo "install-opencode: npm install opencode-ai@$OPENCODE_VERSION failed" >&2
        exit 1
    fi
    # If npm skipped the postinstall (install scripts not allowed), run it by hand.
    if ! works && [ -f "$pkg/postinstall.mjs" ]; then
        (cd "$pkg" && node postinstall.mjs) >>"$log" 2>&1 || true
    fi
    if ! works; then
        cat "$log" >&2
        echo "install-opencode: $bin does not run as opencode $OPENCODE_VERSION" >&2
        exit 1
    fi
fi

if ! deps_ready; then
    rm -rf "$deps"
    mkdir -p "$deps"
    # The package.json opencode writes into a config directory.
    printf '{\n  "dependencies": {\n    "@opencode-ai/plugin": "%s"\n  }\n}\n' "$OPENCODE_VERSION" >"$deps/package.json"
    if ! (cd "$deps" && npm install --no-audit --no-fund --loglevel=error) >"$log" 2>&1 || ! deps_ready; then
        cat "$log" >&2
        echo "install-opencode: npm install @opencode-ai/plugin@$OPENCODE_VERSION into $deps failed" >&2
        exit 1
    fi
fi

echo "$bin"
