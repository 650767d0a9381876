#!/usr/bin/env bash
# Type-checks every crate of the workspace, tests and benches included, for a
# Unix that is not Linux (default x86_64-apple-darwin: most people who run
# these harnesses use a Mac), so a Linux-only call outside
# cfg(target_os = "linux") fails here rather than on someone's Mac.
#
#   scripts/test-portability.sh [TARGET]
#
# Installs the target's standard library with rustup if it is missing (exit
# 2 if that is not possible). `cargo check` never links, so no macOS SDK is
# needed; the one C dependency (SQLite, bundled by rusqlite) has its build
# script pointed at a stand-in compiler that writes empty objects: this
# checks the Rust code for the target, not SQLite's C (which upstream builds
# for macOS itself).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-x86_64-apple-darwin}"
case "$target" in
    *-linux-*) echo "test-portability: $target is Linux; name a non-Linux Unix target" >&2; exit 2 ;;
esac

if ! rustup target list --installed | grep -qx "$target"; then
    echo "== rustup target add $target" >&2
    if ! rustup target add "$target" >&2; then
        echo "test-portability: cannot install the $target standard library here" >&2
        exit 2
    fi
fi

stub="$(mktemp -d "${TMPDIR:-/tmp}/muster-portability.XXXXXX")"
trap 'rm -rf "$stub"' EXIT
cat > "$stub/cc" <<'EOF'
#!/bin/sh
# Stand-in C compiler for `cargo check`: writes an empty file where -o points.
out=""
prev=""
for arg in "$@"; do
    [ "$prev" = "-o" ] && out="$arg"
    prev="$arg"
done
[ -n "$out" ] && : > "$out"
exit 0
EOF
chmod +x "$stub/cc"
cat > "$stub/ar" <<'EOF'
#!/bin/sh
# Stand-in archiver: cc-rs runs `ar cq LIB OBJ…` then `ar s LIB`; an empty LIB will do.
for arg in "$@"; do
    case "$arg" in
        *.a) : > "$arg" ;;
    esac
done
exit 0
EOF
chmod +x "$stub/ar"

var="$(echo "$target" | tr '-' '_')"
echo "== cargo check --workspace --all-targets --target $target" >&2
env "CC_$var=$stub/cc" "AR_$var=$stub/ar" \
    cargo check --workspace --all-targets --locked --target "$target"
