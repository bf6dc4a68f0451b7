"""The one MCP connection of a handshake-only stdio server, and the many clients on it.

Log levels and resource subscriptions are per connection in the handshake era, so the
bridge holds them for its clients (shared.py says how). Members are the handshake
sessions (`logging/setLevel`, `resources/subscribe`) and, for 2026-07-28 clients of such a
server, a request that opts in to log messages (`io.modelcontextprotocol/logLevel` in its
`_meta`, for as long as it runs) and a `subscriptions/listen` stream's
`resourceSubscriptions` (for as long as it stays open). What the server must be told is
asked on a channel of the bridge's own, written the moment it is decided, so the server
hears the decisions in the order they were made; what a member's leaving changes is not
waited for by the request that ended it (a hung server would hold it).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Iterable
from typing import Any

from bridge.mcp.stdio.backend import Backend
from bridge.mcp.stdio.http import INVALID_PARAMS
from bridge.mcp.stdio.mux import error, params_of
from bridge.mcp.stdio.shared import LEVELS, Shared


class Connection:
    def __init__(self) -> None:
        self.shared = Shared()
        self._keys = itertools.count(1)
        self._background: set[asyncio.Future[Any]] = set()

    def reset(self) -> None:
        """A new process: nothing set at it yet."""
        self.shared = Shared()

    def wants(self, member: str, message: dict[str, Any]) -> bool:
        return self.shared.wants(member, message)

    def _ask(
        self, server: Backend, method: str, params: dict[str, Any]
    ) -> Awaitable[dict[str, Any]]:
        """A request of the bridge's own on a channel of its own, written at once: every
        decision about the one connection reaches the server in the order it was made."""
        channel = server.open(("mcp-bridge", "shared", next(self._keys)))
        asked = server.submit(
            channel, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        )

        async def answer() -> dict[str, Any]:
            try:
                return await asked
            finally:
                await server.close(channel, cancel=False)

        return answer()

    async def ask(self, server: Backend, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self._ask(server, method, params)

    async def request(
        self, server: Backend, member: str, message: dict[str, Any]
    ) -> dict[str, Any]:
        """A session's `logging/setLevel` or `resources/(un)subscribe`: its answer."""
        rid, method, params = message.get("id"), message.get("method"), params_of(message)
        if method == "logging/setLevel":
            refused = await self.set_level(server, member, params.get("level"))
            return dict(refused, id=rid) if refused else {"jsonrpc": "2.0", "id": rid, "result": {}}
        uri = params.get("uri")
        if not isinstance(uri, str):
            return error(rid, INVALID_PARAMS, f"{method} names a uri")
        if method == "resources/unsubscribe":
            if self.shared.unsubscribe(member, uri):
                self._in_background(server, [("resources/unsubscribe", {"uri": uri})])
            return {"jsonrpc": "2.0", "id": rid, "result": {}}
        refused = await self._subscribe(server, member, uri)
        return dict(refused, id=rid) if refused else {"jsonrpc": "2.0", "id": rid, "result": {}}

    async def set_level(self, server: Backend, member: str, level: Any) -> dict[str, Any]:
        """The member's level set, the server asked when the most verbose one changed: {}
        when done, else the JSON-RPC error (without an id) that refused it."""
        if level not in LEVELS:
            return error(None, INVALID_PARAMS, f"no log level {level!r}")
        ask = self.shared.set_level(member, str(level))
        if ask is None:
            return {}
        answer = await self._ask(server, "logging/setLevel", {"level": ask})
        if "error" in answer:  # refused: the member holds no level, and it is asked again
            self.shared.levels.pop(member, None)
            self.shared.sent_level = None
            return answer
        return {}

    async def subscribe(self, server: Backend, member: str, uris: Iterable[str]) -> list[str]:
        """A listen stream's resource subscriptions: the uris the server took."""
        return [uri for uri in uris if not await self._subscribe(server, member, uri)]

    async def _subscribe(self, server: Backend, member: str, uri: str) -> dict[str, Any]:
        """{} when the member holds `uri` now, else the error that refused it."""
        if not self.shared.subscribe(member, uri):
            return {}  # held already: the server has it
        wanting = self.shared.subscribers[uri]
        answer = await self._ask(server, "resources/subscribe", {"uri": uri})
        if "error" in answer and self.shared.subscribers.get(uri) is wanting:
            # Refused: nobody holds it, those who joined meanwhile included (they were
            # told it was held: the server's refusal reaches them as no updates).
            del self.shared.subscribers[uri]
            return answer
        return {}

    def leave(self, server: Backend | None, member: str) -> None:
        """The member is gone: its level and subscriptions let go of at once, the server
        told at once too (so nothing decided after this reaches it first); their answers
        are awaited in the background, not in the way of the request that ended it."""
        level, released = self.shared.forget(member)
        if server is None:
            return
        asks = [("logging/setLevel", {"level": level})] if level is not None else []
        asks += [("resources/unsubscribe", {"uri": uri}) for uri in released]
        self._in_background(server, asks)

    def _in_background(self, server: Backend, asks: list[tuple[str, dict[str, Any]]]) -> None:
        if not asks:
            return
        answers = [self._ask(server, method, params) for method, params in asks]  # written now
        task = asyncio.ensure_future(asyncio.gather(*answers, return_exceptions=True))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
