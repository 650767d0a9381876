#!/usr/bin/env bash
# Installs a pinned Claude Code (npm @anthropic-ai/claude-code) into a cache
# directory outside the repository, for the end-to-end tests in
# crates/cli/tests/claude_code.rs, and prints the path of its `claude`
# executable as the last line. Skips the install when that exact version is
# already there. Needs node and npm; only the npm registry is contacted. The
# npm part is scripts/lib/npm-harness.sh.
#
#   MUSTER_HARNESS_CACHE   cache root (default ~/.cache/muster-harnesses)
#   CLAUDE_CODE_VERSION    version to install (default: the pinned one below)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/npm-harness.sh"

CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.332}"
npm_harness claude-code @anthropic-ai/claude-code "$CLAUDE_CODE_VERSION"
# Since 2.1.x the package ships a native binary (from a per-platform optional
# dependency); its postinstall hard-links it over bin/claude.exe.
bin="$pkg/bin/claude.exe"

works() {
    [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "^$CLAUDE_CODE_VERSION "
}

after_npm_install() {
    npm_harness_postinstall install.cjs
}

npm_harness_install "Claude Code $CLAUDE_CODE_VERSION"
echo "$bin"
