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

from bridge.mcp.stdio.backend import Backend
from bridge.mcp.stdio.connection import Connection
from bridge.mcp.stdio.handshake import Handshake
from bridge.mcp.stdio.http import KEEP_ALIVE, STREAM_HEADERS, event
from bridge.mcp.stdio.mux import params_of
from bridge.mcp.wire import SUBSCRIPTION_ID_KEY

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


def resources_asked(shook: Handshake, asked: Any) -> list[str]:
    """The uris of a filter's `resourceSubscriptions`, if the server can subscribe."""
    uris = asked.get("resourceSubscriptions") if isinstance(asked, dict) else None
    resources = shook.capabilities.get("resources")
    if not isinstance(uris, list) or not (
        isinstance(resources, dict) and resources.get("subscribe")
    ):
        return []
    return list(dict.fromkeys(u for u in uris if isinstance(u, str)))


def stamped(notification: dict[str, Any], sid: Any) -> dict[str, Any]:
    """A copy with the subscription's id in `_meta`, as 2026-07-28 requires on every frame
    of a listen stream (clients find their subscription by it); the message itself may be
    on its way to other listeners too."""
    params = params_of(notification)
    meta = params.get("_meta")
    meta = {**(meta if isinstance(meta, dict) else {}), SUBSCRIPTION_ID_KEY: sid}
    return dict(notification, params={**params, "_meta": meta})


async def listen(
    request: web.Request,
    message: dict[str, Any],
    server: Backend,
    shook: Handshake,
    key: Any,
    connection: Connection,
) -> web.StreamResponse:
    asked = params_of(message).get("notifications")
    grant: dict[str, Any] = dict(granted(shook, asked))
    wanted = {KINDS[k][1] for k in grant}
    member, sid = f"listen {key[1]}", message.get("id")
    channel = server.open(key, listens=True)
    response = web.StreamResponse(headers=STREAM_HEADERS)
    got: asyncio.Future[dict[str, Any]] | None = None
    ended = asyncio.ensure_future(server.ended.wait())
    try:
        uris = await connection.subscribe(server, member, resources_asked(shook, asked))
        if uris:
            grant["resourceSubscriptions"] = uris
            wanted.add("notifications/resources/updated")
        await response.prepare(request)
        acknowledged = {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                        "params": {"notifications": grant}}  # fmt: skip
        await event(response, stamped(acknowledged, sid))
        while not ended.done():
            got = asyncio.ensure_future(channel.queue.get())
            done, _ = await asyncio.wait(
                {got, ended}, timeout=KEEP_ALIVE, return_when=asyncio.FIRST_COMPLETED
            )
            if got in done:
                said = got.result()
                if said.get("method") in wanted and connection.wants(member, said):
                    await event(response, stamped(said, sid))
            elif not done:
                got.cancel()
                await response.write(b": keep-alive\n\n")  # a client that left is noticed
        ended_result = {"resultType": "complete", "_meta": {SUBSCRIPTION_ID_KEY: sid}}
        result = {"jsonrpc": "2.0", "id": sid, "result": ended_result}
        await event(response, result)
        return response
    finally:
        for future in (got, ended):
            if future is not None:
                future.cancel()
        connection.leave(server, member)
        await server.close(channel, cancel=False)
