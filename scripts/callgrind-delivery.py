#!/usr/bin/env python3
"""Instructions per message of one `muster mcp` shim, or of the daemon,
counted by valgrind's callgrind (BENCHMARKS.md, 2026-12-04 evening).

Starts a `muster serve` on a free loopback port in a temporary data
directory and two real shims (A sends to B). A makes N `send_message`
calls one at a time, each answered and pushed before the next. One
process runs under callgrind: the sender's shim, the receiver's, or the
daemon. It is run twice, with a small and a large N; the difference in
instructions over the difference in N is the cost per message, start-up
and shutdown excluded.

Usage: scripts/callgrind-delivery.py MUSTER_BINARY sender|receiver|daemon [SMALL LARGE]
Needs valgrind on PATH. Counts are instructions (callgrind's Ir), not time;
callgrind counts a `rep stosb` per byte, so large memsets look dearer than
they are.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def callgrind(out):
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]


def instructions(out):
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise SystemExit(f"no totals in {out}")


def wait_listening(port, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"no daemon on port {port} within {limit} s")


def line(p, obj):
    p.stdin.write((json.dumps(obj) + "\n").encode())


def read(p, what):
    raw = p.stdout.readline()
    if not raw:
        raise SystemExit(f"the {what} shim closed its output")
    try:
        return json.loads(raw)
    except ValueError:
        raise SystemExit(f"the {what} shim wrote a line that is not JSON: {raw!r}")


def run(binary, role, n, work):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = os.path.join(work, f"data-{n}")
    out = os.path.join(work, f"{role}-{n}.out")
    env = dict(os.environ, MUSTER_OPERATOR="bench", RUST_LOG="warn")
    for k in ("MUSTER_URL", "MUSTER_TOKEN", "MUSTER_BIND"):
        env.pop(k, None)
    serve = (callgrind(out) if role == "daemon" else []) + [
        binary, "serve", "--bind", f"127.0.0.1:{port}", "--data-dir", data]
    daemon = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        tag = f"cg{os.getpid()}-{n}"
        shims = {}
        for name in ("sender", "receiver"):
            shim_env = dict(env, MUSTER_URL=url, MUSTER_AUTOSTART="0",
                            MUSTER_SESSION_ID=f"{tag}-{name}", MUSTER_HARNESS="claude",
                            MUSTER_CHANNELS="on")
            cmd = (callgrind(out) if role == name else []) + [binary, "mcp"]
            shims[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.DEVNULL, env=shim_env, bufsize=0)
        for name, p in shims.items():
            line(p, {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                     "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                "clientInfo": {"name": "callgrind-delivery", "version": "1"}}})
            read(p, name)
            line(p, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        # The shims link and say they can push; a push before that would queue.
        time.sleep(3)
        a, b = shims["sender"], shims["receiver"]
        states = {}
        for i in range(1, n + 1):
            line(a, {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                     "params": {"name": "send_message",
                                "arguments": {"to": f"{tag}-receiver", "body": f"message {i}"}}})
            while True:
                m = read(a, "sender")
                if m.get("id") == i:
                    state = json.loads(m["result"]["content"][0]["text"])["state"]
                    states[state] = states.get(state, 0) + 1
                    break
            while read(b, "receiver").get("method") != "notifications/claude/channel":
                pass
        for p in shims.values():
            p.stdin.close()
        for p in shims.values():
            p.wait(timeout=120)
    finally:
        daemon.send_signal(2)
        daemon.wait(timeout=120)
    if states.get("pushed") != n:
        raise SystemExit(f"not every send was pushed: {states}")
    return instructions(out)


def main():
    if len(sys.argv) not in (3, 5) or sys.argv[2] not in ("sender", "receiver", "daemon"):
        raise SystemExit(__doc__)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not on PATH (Debian: apt-get install valgrind)")
    binary = os.path.abspath(sys.argv[1])
    role = sys.argv[2]
    small, large = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) == 5 else (1000, 3000)
    if not 0 < small < large:
        raise SystemExit("SMALL and LARGE must be counts with SMALL < LARGE")
    with tempfile.TemporaryDirectory() as work:
        few = run(binary, role, small, work)
        many = run(binary, role, large, work)
    per = (many - few) / (large - small)
    print(f"{role}: {few:,} instructions at {small} sends, {many:,} at {large}: "
          f"{per:,.0f} per message")


if __name__ == "__main__":
    main()
