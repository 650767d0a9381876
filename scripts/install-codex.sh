#!/usr/bin/env bash
# Installs a pinned Codex CLI (npm @openai/codex) into a cache directory outside
# the repository, for the end-to-end tests in crates/cli/tests/codex.rs, and
# prints the path of its `codex` executable as the last line. Skips the install
# when that exact version is already there. Needs node and npm; only the npm
# registry is contacted (the native binary comes in a per-platform optional
# dependency of the package, nothing is downloaded from elsewhere).
#
#   MUSTER_HARNESS_CACHE   cache root (default ~/.cache/muster-harnesses)
#   CODEX_VERSION          version to install (default: the pinned one below)
set -euo pipefail

CODEX_VERSION="${CODEX_VERSION:-0.171.0}"
dir="${MUSTER_HARNESS_CACHE:-$HOME/.cache/muster-harnesses}/codex"
pkg="$dir/node_modules/@openai/codex"
# A stable name for the native binary (bin/codex.js only finds and spawns it),
# so the tests run and kill the real process and can find it without node.
bin="$dir/bin/codex"

installed_version() {
    [ -f "$pkg/package.json" ] || return 0
    node -e 'process.stdout.write(require(process.argv[1]).version)' "$pkg/package.json" 2>/dev/null || true
}

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

if [ "$(installed_version)" != "$CODEX_VERSION" ] || ! works; then
    command -v npm >/dev/null 2>&1 || { echo "install-codex: npm is not on PATH" >&2; exit 1; }
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || printf '{"name":"muster-harness-codex","private":true}\n' >"$dir/package.json"
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    if ! npm install --prefix "$dir" --no-audit --no-fund --save-exact --loglevel=error \
        "@openai/codex@$CODEX_VERSION" >"$log" 2>&1; then
        cat "$log" >&2
        echo "install-codex: npm install @openai/codex@$CODEX_VERSION failed" >&2
        exit 1
    fi
    target="$(native)" || {
        cat "$log" >&2
        echo "install-codex: no native codex binary under $dir/node_modules/@openai (optional dependencies skipped?)" >&2
        exit 1
    }
    mkdir -p "$dir/bin"
    ln -sfn "$target" "$bin"
    if ! works; then
        cat "$log" >&2
        echo "install-codex: $bin does not run as codex-cli $CODEX_VERSION" >&2
        exit 1
    fi
fi

echo "$bin"
