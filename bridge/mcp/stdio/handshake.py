"""The server's handshake, done by the bridge itself, once per server process.

A stdio server is one process and so one MCP connection: a second `initialize` is refused
by some SDKs and confuses others (ToolHive's users saw health checks get servers marked
unhealthy that way). So the bridge never forwards a client's `initialize`: it asks the
server once, keeps what it said, and answers every client from that.

It asks `server/discover` first (2026-07-28): a server that answers speaks the modern
revision, and modern clients' requests pass through to it. A server that refuses it (a
handshake-era server says -32601, method not found) gets the `initialize` handshake at the
newest handshake revision, declaring the client capabilities the bridge can route to its
clients (sampling, elicitation, roots) and no more, then `notifications/initialized`.

The health check's round trip is a request the server itself must answer, never one the
bridge answers from what it kept: `ping` in the handshake era, `server/discover` in the
modern one (which has no ping).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

from bridge.mcp.stdio.mux import BRIDGE_KEY, PROCESS_ENDED
from bridge.mcp.stdio.process import Channel, StdioServer
from bridge.mcp.wire import CLIENT_INFO, LATEST_HANDSHAKE, LATEST_MODERN, modern_request

# What the bridge declares in its one handshake: the server requests it can route.
ROUTABLE = {"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}}
_ids = itertools.count(1)


class HandshakeFailed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Handshake:
    era: Literal["modern", "handshake"]
    version: str  # the revision the bridge speaks to the server
    result: dict[str, Any]  # server/discover's result, or initialize's
    # Serves any handshake revision a client asks for (the gateway, which is no process
    # with one revision agreed).
    any_version: bool = False

    @property
    def server_info(self) -> dict[str, Any]:
        if self.era == "handshake":
            info = self.result.get("serverInfo")
        else:
            info = (self.result.get("_meta") or {}).get("io.modelcontextprotocol/serverInfo")
        return info if isinstance(info, dict) else {}

    @property
    def capabilities(self) -> dict[str, Any]:
        caps = self.result.get("capabilities")
        return caps if isinstance(caps, dict) else {}


def own_channel(server: StdioServer) -> Channel:
    """The bridge's own: it answers no server request (those go to clients, or are
    refused), so it declares no capability of its own."""
    return server.open(BRIDGE_KEY)


def next_id() -> int:
    """The ids of everything the bridge asks on its own channel (handshake, checks, tool
    listings): one counter, so a late answer can never be taken for another request's."""
    return next(_ids)


async def handshake(server: StdioServer, channel: Channel, *, again: bool = False) -> Handshake:
    """`again`: an `initialize` may have reached this process already, its answer lost (the
    bridge stopped in the middle). A server that refuses this second one is served all
    the same, on what the bridge asked for (the refusal is logged by the caller)."""
    discover, _ = modern_request("server/discover", LATEST_MODERN, next(_ids))
    answer = await server.request(channel, discover)
    result = answer.get("result")
    if isinstance(result, dict) and LATEST_MODERN in (result.get("supportedVersions") or []):
        return Handshake("modern", LATEST_MODERN, result)
    _stopped(answer)
    initialize = {
        "jsonrpc": "2.0",
        "id": next(_ids),
        "method": "initialize",
        "params": {
            "protocolVersion": LATEST_HANDSHAKE,
            "capabilities": ROUTABLE,
            "clientInfo": CLIENT_INFO,
        },
    }
    answer = await server.request(channel, initialize)
    result = answer.get("result")
    if again and "error" in answer and not server_gone(answer):
        # Already initialized: what it declared is not known, so assume what clients may
        # ask; a method it lacks gets its own -32601.
        result = {
            "protocolVersion": LATEST_HANDSHAKE,
            "capabilities": {"tools": {}, "resources": {}, "prompts": {}},
            "serverInfo": {"name": "unknown", "version": ""},
            "instructions": "",
        }
    if not isinstance(result, dict) or not isinstance(result.get("protocolVersion"), str):
        _stopped(answer)
        raise HandshakeFailed(f"initialize was not answered as MCP says: {_said(answer)}")
    # Straight to the server: the mux keeps clients' `initialized` from it, not the bridge's.
    await server.write_raw({"jsonrpc": "2.0", "method": "notifications/initialized"})
    return Handshake("handshake", result["protocolVersion"], result)


async def round_trip(server: StdioServer, channel: Channel, shook: Handshake) -> dict[str, Any]:
    """A request the server itself answers: what the `mcp` check asks every time."""
    if shook.era == "modern":
        request, _ = modern_request("server/discover", shook.version, next(_ids))
    else:
        request = {"jsonrpc": "2.0", "id": next(_ids), "method": "ping"}
    return await server.request(channel, request)


def _stopped(answer: dict[str, Any]) -> None:
    """The process ended while the bridge asked: that is the answer, not a protocol fault."""
    if server_gone(answer):
        raise HandshakeFailed(_said(answer))


def server_gone(answer: dict[str, Any]) -> bool:
    return (answer.get("error") or {}).get("code") == PROCESS_ENDED


def _said(answer: dict[str, Any]) -> str:
    err = answer.get("error")
    if isinstance(err, dict):
        return f"JSON-RPC error {err.get('code')}: {err.get('message')}"
    return str(answer)[:300]
