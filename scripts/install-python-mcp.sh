#!/usr/bin/env bash
# Installs the official Python MCP SDK (PyPI `mcp`, pinned) into a virtualenv
# in a cache directory outside the repository, for the tests in
# crates/cli/tests/mcp_python.rs (an MCP client from another code base than
# rmcp), and prints the venv's python as the last line. Skips pip when that
# exact version is already there. Needs python3 >= 3.10 with the venv module;
# only PyPI is contacted.
#
#   MUSTER_HARNESS_CACHE   cache root (default ~/.cache/muster-harnesses)
#   MCP_PY_VERSION         version to install (default: the pinned one below)
#   PYTHON                 interpreter to create the venv with (default python3)
set -euo pipefail

MCP_PY_VERSION="${MCP_PY_VERSION:-2.3.0}"
dir="${MUSTER_HARNESS_CACHE:-$HOME/.cache/muster-harnesses}/py"
py="$dir/bin/python"

installed_version() {
    [ -x "$py" ] || return 0
    "$py" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null || true
}

works() {
    [ "$(installed_version)" = "$MCP_PY_VERSION" ] &&
        "$py" -c 'import mcp.client.session, mcp.client.stdio, mcp.client.streamable_http' >/dev/null 2>&1
}

if ! works; then
    base="${PYTHON:-python3}"
    command -v "$base" >/dev/null 2>&1 || { echo "install-python-mcp: $base is not on PATH" >&2; exit 1; }
    if [ ! -x "$py" ]; then
        mkdir -p "$(dirname "$dir")"
        "$base" -m venv "$dir" || { echo "install-python-mcp: $base -m venv $dir failed" >&2; exit 1; }
    fi
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    if ! "$py" -m pip install --disable-pip-version-check --no-input --quiet "mcp==$MCP_PY_VERSION" >"$log" 2>&1; then
        cat "$log" >&2
        echo "install-python-mcp: pip install mcp==$MCP_PY_VERSION into $dir failed" >&2
        exit 1
    fi
    if ! works; then
        cat "$log" >&2
        echo "install-python-mcp: $py does not import mcp $MCP_PY_VERSION" >&2
        exit 1
    fi
fi

echo "$py"
