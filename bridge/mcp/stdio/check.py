"""The `mcp` check of a served stdio server: a real round trip to the process, every time.

Not through HTTP: the served endpoint answers `initialize` and, for a handshake-only
server, `server/discover` from the one handshake it kept, so an HTTP probe could pass with
the process wedged. This asks the process itself (`ping`, or `server/discover` of a modern
server) on the bridge's own channel, and is critical while nothing is attached. When asked,
it also lists the server's tools for the inventory, through the same channel, and, for a
server that announces tool list changes, hears them on a listening channel of the bridge's
own (`watch_tools`), so the inventory is listed again at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from bridge.mcp.probe import SLOW_FRACTION, TOOLS_TIMEOUT, ProbeResult, server_meta
from bridge.mcp.stdio.handshake import next_id, round_trip
from bridge.mcp.stdio.served import Served
from bridge.mcp.tools import list_tools
from bridge.mcp.wire import ProbeFailed, modern_request


async def probe_served(
    served: Served | None,
    budget: float,
    *,
    want_tools: bool,
    find: Callable[[], Served | None] | None = None,
) -> ProbeResult:
    """`find`: the service's Served whenever asked (it is replaced when its container is),
    for the watch of tool list changes that outlives this probe."""
    if served is None:
        return ProbeResult("critical", "not served yet")
    server, own, shook = served.server, served.own, served.shook
    if server is None or own is None or shook is None or server.ended.is_set():
        return ProbeResult("critical", served.state)
    meta = server_meta(shook.server_info, shook.version)
    started = time.monotonic()
    try:
        async with asyncio.timeout(budget):
            answer = await round_trip(server, own, shook)
    except TimeoutError:
        return ProbeResult("critical", f"stdio server did not answer within {budget:g}s", meta)
    elapsed = time.monotonic() - started
    if "result" not in answer:
        said = (answer.get("error") or {}).get("message", answer)
        return ProbeResult("critical", f"stdio server answered with an error: {said}", meta)
    method = "server/discover" if shook.era == "modern" else "ping"
    name = f"{meta.get('mcp_server_name', '?')} {meta.get('mcp_server_version', '')}".rstrip()
    output = (
        f"MCP {shook.version} OK over stdio: {method} answered in {elapsed * 1000:.0f} ms"
        f" by {name} (process {served.processes} attached)"
    )
    status = "passing"
    if elapsed > budget * SLOW_FRACTION:
        status, output = "warning", f"{output}; slow (timeout {budget:g}s)"
    tools = shook.capabilities.get("tools")
    declared = tools is not None
    listens = isinstance(tools, dict) and bool(tools.get("listChanged"))
    watch = partial(watch_tools, find or (lambda: served)) if listens else None
    result = ProbeResult(
        status, output, meta, elapsed, tools_declared=declared, listens=listens, watch=watch
    )
    if not (want_tools and declared):
        return result

    async def call(method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        if shook.era == "modern":
            request, _ = modern_request(method, shook.version, next_id(), params)
        else:
            request = {"jsonrpc": "2.0", "id": next_id(), "method": method}
            if params is not None:
                request["params"] = params
        answer = await server.request(own, request)
        if not isinstance(answer.get("result"), dict):
            raise ProbeFailed(f"{method}: {answer.get('error') or answer}")
        return dict(answer["result"])

    try:
        async with asyncio.timeout(TOOLS_TIMEOUT):
            tools = await list_tools(call)
    except (ProbeFailed, TimeoutError) as exc:
        why = str(exc) or f"tools/list not answered within {TOOLS_TIMEOUT:g}s"
        return replace(result, tools_error=why)
    return replace(result, tools=tools)


CHANGES = ("mcp-bridge", "tool list changes")


async def watch_tools(find: Callable[[], Served | None], changed: Callable[[], None]) -> None:
    """Each `notifications/tools/list_changed` of the process the service's Served serves
    (the next one, when none is), until it ends; the caller watches again, and lists the
    tools of a new process then. A 2026-07-28 server sends list changes only to whoever
    asked (`subscriptions/listen`); a handshake-era one to its one connection."""
    served = find()
    if served is None:
        return
    await served.serving.wait()
    server, shook = served.server, served.shook
    if server is None or shook is None:
        return
    modern = shook.era == "modern"
    channel = server.open((*CHANGES, id(changed)), listens=not modern)
    ended = asyncio.ensure_future(server.ended.wait())
    waits: set[asyncio.Future[Any]] = {ended}
    if modern:
        filtered = {"notifications": {"toolsListChanged": True}}
        ask, _ = modern_request("subscriptions/listen", shook.version, next_id(), filtered)
        waits.add(server.submit(channel, ask))  # answered when the server ends the stream
    said: asyncio.Future[dict[str, Any]] | None = None
    try:
        while not any(w.done() for w in waits):
            said = asyncio.ensure_future(channel.queue.get())
            await asyncio.wait({said, *waits}, return_when=asyncio.FIRST_COMPLETED)
            if said.done() and said.result().get("method") == "notifications/tools/list_changed":
                changed()
    finally:
        for future in (said, *waits):
            if future is not None:
                future.cancel()
        await server.close(channel, cancel=modern)  # a modern listen ends when closed
