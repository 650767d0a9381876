#!/usr/bin/env bash
# Installs a pinned Claude Code (npm @anthropic-ai/claude-code) into a cache
# directory outside the repository, for the end-to-end tests in
# crates/cli/tests/claude_code.rs, and prints the path of its `claude`
# executable as the last line. Skips the install when that exact version is
# already there. Needs node and npm; only the npm registry is contacted.
#
#   MUSTER_HARNESS_CACHE   cache root (default ~/.cache/muster-harnesses)
#   CLAUDE_CODE_VERSION    version to install (default: the pinned one below)
set -euo pipefail

CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.332}"
dir="${MUSTER_HARNESS_CACHE:-$HOME/.cache/muster-harnesses}/claude-code"
pkg="$dir/node_modules/@anthropic-ai/claude-code"
# Since 2.1.x the package ships a native binary (from a per-platform optional
# dependency); its postinstall hard-links it over bin/claude.exe.
bin="$pkg/bin/claude.exe"

installed_version() {
    [ -f "$pkg/package.json" ] || return 0
    node -e 'process.stdout.write(require(process.argv[1]).version)' "$pkg/package.json" 2>/dev/null || true
}

works() {
    [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "^$CLAUDE_CODE_VERSION "
}

if [ "$(installed_version)" != "$CLAUDE_CODE_VERSION" ] || ! works; then
    command -v npm >/dev/null 2>&1 || { echo "install-claude-code: npm is not on PATH" >&2; exit 1; }
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || printf '{"name":"muster-harness-claude-code","private":true}\n' >"$dir/package.json"
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    if ! npm install --prefix "$dir" --no-audit --no-fund --save-exact --loglevel=error \
        "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >"$log" 2>&1; then
        cat "$log" >&2
        echo "install-claude-code: npm install @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION failed" >&2
        exit 1
    fi
    # If npm skipped the postinstall (install scripts not allowed), run it by hand.
    if ! works && [ -f "$pkg/install.cjs" ]; then
        (cd "$pkg" && node install.cjs) >>"$log" 2>&1 || true
    fi
    if ! works; then
        cat "$log" >&2
        echo "install-claude-code: $bin does not run as Claude Code $CLAUDE_CODE_VERSION" >&2
        exit 1
    fi
fi

echo "$bin"
