"""`subscriptions/listen` for 2026-07-28 clients of a handshake-only server.

Such a server announces list changes as notifications on its one connection; a 2026-07-28
client asks for them with `subscriptions/listen` and keeps the answer's SSE stream open.
The bridge grants what the server declared (`listChanged` for tools, prompts, resources),
says so first (`notifications/subscriptions/acknowledged`), then passes on each matching
notification until the client leaves or the process ends; the stream ends with the
request's result. Resource subscriptions are not granted here: on the shared connection
they are the handshake sessions' (shared.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from bridge.mcp.stdio.handshake import Handshake
from bridge.mcp.stdio.http import KEEP_ALIVE, STREAM_HEADERS, event
from bridge.mcp.stdio.mux import params_of
from bridge.mcp.stdio.process import StdioServer

# The filter's key -> (the capability that must declare listChanged, the notification)
KINDS = {
    "toolsListChanged": ("tools", "notifications/tools/list_changed"),
    "promptsListChanged": ("prompts", "notifications/prompts/list_changed"),
    "resourcesListChanged": ("resources", "notifications/resources/list_changed"),
}


def granted(shook: Handshake, asked: Any) -> dict[str, bool]:
    """What of the client's filter the server can deliver."""
    asked = asked if isinstance(asked, dict) else {}
    caps = shook.capabilities
    grant = {}
    for key, (capability, _) in KINDS.items():
        declared = caps.get(capability)
        if asked.get(key) is True and isinstance(declared, dict) and declared.get("listChanged"):
            grant[key] = True
    return grant


async def listen(
    request: web.Request, message: dict[str, Any], server: StdioServer, shook: Handshake, key: Any
) -> web.StreamResponse:
    grant = granted(shook, params_of(message).get("notifications"))
    wanted = {KINDS[k][1] for k in grant}
    channel = server.open(key, listens=True)
    response = web.StreamResponse(headers=STREAM_HEADERS)
    got: asyncio.Future[dict[str, Any]] | None = None
    ended = asyncio.ensure_future(server.ended.wait())
    try:
        await response.prepare(request)
        acknowledged = {"notifications": grant}
        await event(
            response,
            {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
             "params": acknowledged},
        )  # fmt: skip
        while not ended.done():
            got = asyncio.ensure_future(channel.queue.get())
            done, _ = await asyncio.wait(
                {got, ended}, timeout=KEEP_ALIVE, return_when=asyncio.FIRST_COMPLETED
            )
            if got in done:
                said = got.result()
                if said.get("method") in wanted:
                    await event(response, said)
            elif not done:
                got.cancel()
                await response.write(b": keep-alive\n\n")  # a client that left is noticed
        result = {"jsonrpc": "2.0", "id": message.get("id"), "result": {"resultType": "complete"}}
        await event(response, result)
        return response
    finally:
        for future in (got, ended):
            if future is not None:
                future.cancel()
        await server.close(channel, cancel=False)
