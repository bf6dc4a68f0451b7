"""The one MCP connection of a handshake-only stdio server, and the many clients on it.

Log levels and resource subscriptions are per connection in the handshake era, so the
bridge holds them for its clients (shared.py says how). Members are the handshake
sessions (`logging/setLevel`, `resources/subscribe`) and, for 2026-07-28 clients of such a
server, a request that opts in to log messages (`io.modelcontextprotocol/logLevel` in its
`_meta`, for as long as it runs) and a `subscriptions/listen` stream's
`resourceSubscriptions` (for as long as it stays open). What the server must be told is
asked on a channel of the bridge's own; what a member's leaving changes is asked in the
background, never in the way of the request that ended it (a hung server would hold it).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from typing import Any

from bridge.mcp.stdio.http import INVALID_PARAMS
from bridge.mcp.stdio.mux import error, params_of
from bridge.mcp.stdio.process import StdioServer
from bridge.mcp.stdio.shared import LEVELS, Shared


class Connection:
    def __init__(self) -> None:
        self.shared = Shared()
        self._keys = itertools.count(1)
        self._background: set[asyncio.Task[None]] = set()

    def reset(self) -> None:
        """A new process: nothing set at it yet."""
        self.shared = Shared()

    def wants(self, member: str, message: dict[str, Any]) -> bool:
        return self.shared.wants(member, message)

    async def ask(self, server: StdioServer, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request of the bridge's own, on a channel of its own."""
        channel = server.open(("mcp-bridge", "shared", next(self._keys)))
        try:
            ask = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            return await server.request(channel, ask)
        finally:
            await server.close(channel, cancel=False)

    async def request(
        self, server: StdioServer, member: str, message: dict[str, Any]
    ) -> dict[str, Any]:
        """A session's `logging/setLevel` or `resources/(un)subscribe`: its answer."""
        rid, method, params = message.get("id"), message.get("method"), params_of(message)
        if method == "logging/setLevel":
            refused = await self.set_level(server, member, params.get("level"))
            return dict(refused, id=rid) if refused else {"jsonrpc": "2.0", "id": rid, "result": {}}
        uri = params.get("uri")
        if not isinstance(uri, str):
            return error(rid, INVALID_PARAMS, f"{method} names a uri")
        first = method == "resources/subscribe" and self.shared.subscribe(member, uri)
        last = method == "resources/unsubscribe" and self.shared.unsubscribe(member, uri)
        if first or last:
            answer = await self.ask(server, str(method), {"uri": uri})
            if "error" in answer:  # refused: nobody holds it (the members that joined
                self.shared.subscribers.pop(uri, None)  # meanwhile get no updates either)
                return dict(answer, id=rid)
        return {"jsonrpc": "2.0", "id": rid, "result": {}}

    async def set_level(self, server: StdioServer, member: str, level: Any) -> dict[str, Any]:
        """The member's level set, the server asked when the most verbose one changed: {}
        when done, else the JSON-RPC error (without an id) that refused it."""
        if level not in LEVELS:
            return error(None, INVALID_PARAMS, f"no log level {level!r}")
        ask = self.shared.set_level(member, str(level))
        if ask is not None:
            answer = await self.ask(server, "logging/setLevel", {"level": ask})
            if "error" in answer:  # refused: asked again next time
                self.shared.sent_level = None
                return answer
        return {}

    async def subscribe(self, server: StdioServer, member: str, uris: Iterable[str]) -> list[str]:
        """A listen stream's resource subscriptions: the uris the server took."""
        taken = []
        for uri in uris:
            first = self.shared.subscribe(member, uri)
            if first and "error" in await self.ask(server, "resources/subscribe", {"uri": uri}):
                self.shared.subscribers.pop(uri, None)
                continue
            taken.append(uri)
        return taken

    def leave(self, server: StdioServer | None, member: str) -> None:
        """The member is gone: its level and subscriptions let go of at once, the server
        told in the background."""
        level, released = self.shared.forget(member)
        if server is None:
            return
        asks = [("logging/setLevel", {"level": level})] if level is not None else []
        asks += [("resources/unsubscribe", {"uri": uri}) for uri in released]
        if asks:
            task = asyncio.create_task(self._ask_all(server, asks))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _ask_all(self, server: StdioServer, asks: list[tuple[str, dict[str, Any]]]) -> None:
        for method, params in asks:
            await self.ask(server, method, params)
