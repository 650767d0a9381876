# Sourced by scripts/install-{claude-code,codex,opencode,gemini}.sh: installs a
# pinned npm package into its own directory of the harness cache (outside the
# repository), and skips npm when that exact version is already there and its
# executable works. Only the npm registry is contacted.
#
# A script sets itself up with `npm_harness NAME PACKAGE VERSION`, sets `bin`
# (the executable whose path it prints) and defines `works` (true when $bin
# runs as VERSION), may define `after_npm_install` (run after a fresh npm
# install, before `works` is checked), then calls `npm_harness_install WHAT`.
#
#   MUSTER_HARNESS_CACHE   cache root (default ~/.cache/muster-harnesses)

# npm_harness NAME PACKAGE VERSION sets
#   dir   <cache root>/NAME, npm's prefix
#   pkg   $dir/node_modules/PACKAGE
#   log   a temporary file (removed on exit) for the output of what is run
npm_harness() {
    npm_harness_name="$1"
    npm_harness_package="$2"
    npm_harness_version="$3"
    dir="${MUSTER_HARNESS_CACHE:-$HOME/.cache/muster-harnesses}/$1"
    pkg="$dir/node_modules/$2"
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
}

# package_version FILE: the version a package.json names (nothing if unreadable).
package_version() {
    node -e 'process.stdout.write(require(process.argv[1]).version)' "$1" 2>/dev/null || true
}

# The version of PACKAGE installed in $dir (nothing if none is).
installed_version() {
    [ -f "$pkg/package.json" ] || return 0
    package_version "$pkg/package.json"
}

# npm_harness_fail MESSAGE: prints the log and `install-NAME: MESSAGE` on stderr; exits 1.
npm_harness_fail() {
    cat "$log" >&2
    echo "install-$npm_harness_name: $1" >&2
    exit 1
}

# npm_harness_postinstall FILE: if $bin does not work yet (npm skipped the
# package's postinstall because install scripts are not allowed), runs the
# package's FILE with node by hand.
npm_harness_postinstall() {
    if ! works && [ -f "$pkg/$1" ]; then
        (cd "$pkg" && node "$1") >>"$log" 2>&1 || true
    fi
}

# npm_harness_install WHAT: unless PACKAGE@VERSION is installed and $bin works,
# installs it with npm and checks that $bin then runs as WHAT; fails otherwise.
npm_harness_install() {
    if [ "$(installed_version)" = "$npm_harness_version" ] && works; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || { echo "install-$npm_harness_name: npm is not on PATH" >&2; exit 1; }
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] ||
        printf '{"name":"muster-harness-%s","private":true}\n' "$npm_harness_name" >"$dir/package.json"
    if ! npm install --prefix "$dir" --no-audit --no-fund --save-exact --loglevel=error \
        "$npm_harness_package@$npm_harness_version" >"$log" 2>&1; then
        npm_harness_fail "npm install $npm_harness_package@$npm_harness_version failed"
    fi
    if declare -F after_npm_install >/dev/null; then
        after_npm_install
    fi
    works || npm_harness_fail "$bin does not run as $1"
}
