"""The HTTP pieces of a served stdio endpoint: its rules (the settings it is served
with), who may ask at all (DNS rebinding's `Origin`, the bearer token), refusals as an HTTP
status with a JSON-RPC error, and SSE events."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bridge.mcp.stdio.mux import OVERLOADED, error

JSON, SSE = "application/json", "text/event-stream"
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND = -32700, -32600, -32601
HANDSHAKE = ("initialize", "notifications/initialized")
INVALID_PARAMS = -32602
# Per connection in MCP, so shared out among the sessions (shared.py).
PER_CONNECTION = ("logging/setLevel", "resources/subscribe", "resources/unsubscribe")
SESSION_HEADER = "Mcp-Session-Id"
KEEP_ALIVE = 15.0  # seconds between comment lines on an idle GET stream
STREAM_HEADERS = {"Content-Type": SSE, "Cache-Control": "no-cache"}


@dataclass(frozen=True, slots=True)
class ServeRules:
    path: str = "/mcp"
    max_message: int = 4 << 20  # BRIDGE_STDIO_MAX_MESSAGE
    max_sessions: int = 1000  # BRIDGE_STDIO_MAX_SESSIONS
    session_idle: float = 1800.0  # BRIDGE_STDIO_SESSION_IDLE
    allowed_origins: frozenset[str] = frozenset()  # BRIDGE_ALLOWED_ORIGINS
    token: str | None = None  # BRIDGE_SERVE_TOKEN_FILE's content


def rpc_error(
    status: int, code: int, message: str, rid: Any = None, **headers: str
) -> web.Response:
    return web.json_response(error(rid, code, message), status=status, headers=headers)


def overloaded() -> web.Response:
    """A server that stopped reading its stdin (process.OUTBOX_LIMIT)."""
    return rpc_error(503, OVERLOADED, "the server is not reading its input", **{"Retry-After": "1"})


def refuse(request: web.Request, rules: ServeRules) -> web.Response | None:
    """Who may ask at all, before anything is read: Origin, then the bearer token."""
    origin = request.headers.get("Origin")
    if origin is not None and origin not in rules.allowed_origins:
        return rpc_error(403, INVALID_REQUEST, f"Origin {origin!r} is not allowed")
    token = rules.token
    if token is not None:
        given = request.headers.get("Authorization", "")
        presented = given.encode("utf-8", "surrogateescape")  # as the header came
        if not hmac.compare_digest(presented, f"Bearer {token}".encode()):
            return rpc_error(
                401, INVALID_REQUEST, "a bearer token is required",
                **{"WWW-Authenticate": 'Bearer realm="mcp-bridge"'},
            )  # fmt: skip
    return None


async def event(response: web.StreamResponse, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":"))
    await response.write(f"event: message\ndata: {data}\n\n".encode())


SERVER_REQUESTS_REFUSED = (
    "this server speaks only the handshake era, and mcp-bridge does not carry its requests"
    " to 2026-07-28 clients (as input-required results): connect in the handshake era"
)
