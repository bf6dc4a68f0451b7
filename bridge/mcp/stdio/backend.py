"""What the endpoint serves: one MCP server shared by many clients, each on a Channel.

An attached stdio process (process.py) is one; the gateway's union of a datacenter's
servers (gateway/backend.py) is another. Channel keys are the endpoint's: a handshake-era
client's requests are keyed `(session id, n)` and its session's own channel
`(session id, "session")`; a 2026-07-28 request `("modern", n)`; a listen stream
`("listen", n)`; the bridge's own `("mcp-bridge", ...)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Protocol

from bridge.mcp.stdio.process import Channel


class Backend(Protocol):
    @property
    def ended(self) -> asyncio.Event: ...

    def open(
        self,
        key: Hashable,
        capabilities: Iterable[str] = (),
        *,
        listens: bool = False,
        refusal: str | None = None,
    ) -> Channel: ...

    async def close(self, channel: Channel, *, cancel: bool) -> None: ...

    def submit(self, channel: Channel, message: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Send a request now (in order with everything sent before); its answer later."""
        ...

    async def request(self, channel: Channel, message: dict[str, Any]) -> dict[str, Any]: ...

    async def send(self, channel: Channel, message: dict[str, Any]) -> bool:
        """A notification, or an answer to a server request; False when refused (busy)."""
        ...

    def asker_of(self, our_id: str) -> Hashable | None:
        """The channel that was given the server request the bridge numbered `our_id`."""
        ...

    def client_of(self, client_id: Any, owned: Callable[[Hashable], bool]) -> Hashable | None:
        """The channel, among those `owned`, with a request under this client id."""
        ...
