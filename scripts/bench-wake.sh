#!/usr/bin/env bash
# Wake latency per harness with the real binaries: from a send to an idle
# session until the woken turn's first model request reaches the stub, for
# opencode (its plugin), Codex (`muster run codex`: its own app-server,
# thread/queue/add), Claude Code and Gemini CLI (`muster run`: the TUI under a
# pty, the wake typed after the quiet window). Target: under 2 s.
#
# It runs the wake tests (which assert each wake and print one
# `wake-latency <harness> <ms>` line per wake) ROUNDS times (default 2) and
# prints min / median / max per harness. Harnesses come from
# scripts/install-*.sh, as for the test suite.
#
#   scripts/bench-wake.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}"
MUSTER_CLAUDE_BIN="${MUSTER_CLAUDE_BIN:-$(scripts/install-claude-code.sh)}"
MUSTER_CODEX_BIN="${MUSTER_CODEX_BIN:-$(scripts/install-codex.sh)}"
MUSTER_OPENCODE_BIN="${MUSTER_OPENCODE_BIN:-$(scripts/install-opencode.sh)}"
MUSTER_GEMINI_BIN="${MUSTER_GEMINI_BIN:-$(scripts/install-gemini.sh)}"
export MUSTER_CLAUDE_BIN MUSTER_CODEX_BIN MUSTER_OPENCODE_BIN MUSTER_GEMINI_BIN
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo build --quiet -p muster --tests
for round in $(seq "$rounds"); do
    echo "== round $round of $rounds" >&2
    # One test at a time: the figures are latencies, not throughput.
    cargo nextest run --cargo-quiet -p muster --test opencode --test codex_tui --test claude_tui --test gemini_tui \
        -E 'test(/wake/)' --no-capture 2>&1 | tee -a "$log" | grep -E '^wake-latency|FAIL' >&2 || true
done
echo
printf '%-10s %6s %8s %8s %8s  %s\n' harness wakes min_ms median_ms max_ms "target < 2000 ms"
for harness in claude codex opencode gemini; do
    grep -E "^wake-latency $harness [0-9]+" "$log" | awk '{print $3}' | sort -n > "$log.$harness" || true
    n=$(wc -l < "$log.$harness")
    if [ "$n" -eq 0 ]; then
        printf '%-10s %6s %8s %8s %8s  %s\n' "$harness" 0 - - - "not measured (see the test output above)"
    else
        min=$(head -1 "$log.$harness"); max=$(tail -1 "$log.$harness")
        median=$(awk -v n="$n" 'NR == int((n + 1) / 2) {print}' "$log.$harness")
        verdict=$([ "$max" -lt 2000 ] && echo MET || echo MISS)
        printf '%-10s %6s %8s %8s %8s  %s\n' "$harness" "$n" "$min" "$median" "$max" "$verdict"
    fi
    rm -f "$log.$harness"
done
