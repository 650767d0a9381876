"""A scriptable MCP client on the official Python SDK (PyPI `mcp`, 2.x), to
drive muster's MCP servers from a code base other than rmcp.

    client.py stdio                  spawns $MUSTER_BIN (default `muster`) `mcp`
                                     with this process's environment
    client.py http URL [SESSION_ID]  Streamable HTTP at URL, sending
                                     `X-Muster-Session: SESSION_ID` if given
                                     and `x-muster-key: $MUSTER_KEY` if set

It initializes, prints {"initialized": {...}} (or {"error": {...}} and exits
1), then reads JSON commands one per line on stdin and prints one JSON answer
per line on stdout:

    {"list_tools": true}                    -> {"tools": [...]}
    {"call": NAME, "args": {...}}           -> {"result": CallToolResult} | {"error": {"code", "message"}}
    {"wait_notification": {"timeout": 5}}   -> {"notification": {"method", "params"}} | {"notification": null}
    {"raw": LINE, "wait": 1.0}              -> {"server_lines": [...], "exit_code": int | null}  (stdio only:
                                               LINE goes to the server's stdin as is; the answer lists the
                                               lines the server wrote in the next `wait` seconds)

`notifications/claude/channel` is not a core MCP method, so the SDK drops it
unless a `NotificationBinding` observes it: that binding is how it reaches us.
"""

import json
import os
import sys
import time
from typing import Any

import anyio
import anyio.to_thread
import mcp.client.stdio as sdk_stdio
from mcp.client.extension import NotificationBinding
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict

CHANNEL = "notifications/claude/channel"
TIMEOUT = float(os.environ.get("MCP_CLIENT_TIMEOUT", "30"))


class AnyParams(BaseModel):
    """Keeps the notification's params exactly as sent (no coercion)."""

    model_config = ConfigDict(extra="allow")


# The stdio transport hides the server process and its wire; wrap the two
# module functions it calls so `raw` can write a line and see the answers.
wire: dict[str, Any] = {"process": None, "lines": []}
_spawn, _parse = sdk_stdio._create_platform_compatible_process, sdk_stdio._parse_line


async def _spawn_and_keep(*args: Any, **kwargs: Any) -> Any:
    wire["process"] = await _spawn(*args, **kwargs)
    return wire["process"]


def _parse_and_log(line: str) -> Any:
    wire["lines"].append((time.monotonic(), line))
    return _parse(line)


sdk_stdio._create_platform_compatible_process = _spawn_and_keep
sdk_stdio._parse_line = _parse_and_log


def emit(value: Any) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def error_of(e: BaseException) -> dict[str, Any]:
    if isinstance(e, MCPError):
        return {"code": e.code, "message": e.message}
    return {"code": None, "message": f"{type(e).__name__}: {e}"}


def dump(model: BaseModel) -> Any:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


async def drive(read: Any, write: Any) -> int:
    inbox_tx, inbox_rx = anyio.create_memory_object_stream[dict[str, Any]](1000)

    async def on_channel(params: AnyParams) -> None:
        await inbox_tx.send({"method": CHANNEL, "params": params.model_dump()})

    async def on_message(message: Any) -> None:
        # Core notifications (and transport faults) the session surfaces.
        if isinstance(message, Exception):
            await inbox_tx.send({"method": None, "error": f"{type(message).__name__}: {message}"})
        else:
            await inbox_tx.send({"method": getattr(message, "method", None), "params": dump(message).get("params")})

    binding = NotificationBinding(method=CHANNEL, params_type=AnyParams, handler=on_channel)
    async with ClientSession(
        read, write, read_timeout_seconds=TIMEOUT, message_handler=on_message, notification_bindings=[binding]
    ) as session:
        try:
            with anyio.fail_after(TIMEOUT):
                init = await session.initialize()
        except Exception as e:
            emit({"error": error_of(e)})
            return 1
        emit({"initialized": dump(init)})

        while line := await anyio.to_thread.run_sync(sys.stdin.readline):
            if not line.strip():
                continue
            cmd = json.loads(line)
            try:
                if "list_tools" in cmd:
                    emit({"tools": dump(await session.list_tools())["tools"]})
                elif "call" in cmd:
                    emit({"result": dump(await session.call_tool(cmd["call"], cmd.get("args")))})
                elif "wait_notification" in cmd:
                    got = None
                    with anyio.move_on_after(float(cmd["wait_notification"].get("timeout", 5))):
                        got = await inbox_rx.receive()
                    emit({"notification": got})
                elif "raw" in cmd:
                    process = wire["process"]
                    if process is None:
                        raise RuntimeError("raw needs the stdio transport")
                    sent_at = time.monotonic()
                    await process.stdin.send((cmd["raw"] + "\n").encode())
                    await anyio.sleep(float(cmd.get("wait", 1.0)))
                    lines = [text for (at, text) in wire["lines"] if at >= sent_at]
                    emit({"server_lines": lines, "exit_code": process.returncode})
                else:
                    emit({"error": {"code": None, "message": f"unknown command {cmd!r}"}})
            except Exception as e:
                emit({"error": error_of(e)})
    return 0


async def main(argv: list[str]) -> int:
    if argv[:1] == ["stdio"]:
        server = StdioServerParameters(command=os.environ.get("MUSTER_BIN", "muster"), args=["mcp"], env=dict(os.environ))
        async with stdio_client(server) as (read, write):
            return await drive(read, write)
    if argv[:1] == ["http"] and len(argv) in (2, 3):
        headers = {"X-Muster-Session": argv[2]} if len(argv) == 3 else {}
        # The daemon's local key, as an HTTP MCP client configured by its user would send it.
        if os.environ.get("MUSTER_KEY"):
            headers["x-muster-key"] = os.environ["MUSTER_KEY"]
        async with create_mcp_http_client(headers=headers or None) as http:
            async with streamable_http_client(argv[1], http_client=http) as (read, write):
                return await drive(read, write)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
