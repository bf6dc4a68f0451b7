"""MCP's JSON-RPC over HTTP: the few pieces of the wire the bridge speaks.

Two protocol eras share the Streamable HTTP transport (one POST per JSON-RPC message,
answered with JSON or with an SSE stream that carries the answer):

- the modern era (revision 2026-07-28): every request is self-contained, carrying its
  protocol version in the `MCP-Protocol-Version` header and in `params._meta`, with the
  method in an `Mcp-Method` header; no session, no `initialize`;
- the handshake era (2024-11-05 to 2025-11-25): `initialize`, then requests on the
  session the server hands out (`Mcp-Session-Id`), ended with DELETE.

A JSON-RPC error can come with any HTTP status (the modern transport maps error codes to
4xx); it is raised as RpcError. An HTTP refusal without a JSON-RPC body is HttpRefused.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

# The revisions this bridge knows, oldest first (as the official SDK lists them).
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS = ("2026-07-28",)
LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[-1]
LATEST_MODERN = MODERN_VERSIONS[-1]

# params._meta keys of the modern envelope, and the server's identity in a result's _meta.
PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
LOG_LEVEL_KEY = "io.modelcontextprotocol/logLevel"  # 2026-07-28: a request opts in to logs
SUBSCRIPTION_ID_KEY = "io.modelcontextprotocol/subscriptionId"  # each frame of a listen

UNSUPPORTED_PROTOCOL_VERSION = -32022
METHOD_NOT_FOUND = -32601

CLIENT_INFO = {"name": "mcp-bridge", "version": "0.2.0"}
MAX_BODY = 1024 * 1024
ACCEPT = "application/json, text/event-stream"


class ProbeFailed(Exception):
    """The peer answered, but not as an MCP server would; the message says how."""


class HttpRefused(ProbeFailed):
    """An HTTP error status without a JSON-RPC answer."""

    def __init__(
        self, url: str, status: int, body: str, challenge: str | None, method: str = "POST"
    ) -> None:
        super().__init__(f"{method} {url}: HTTP {status} {body}".rstrip())
        self.status = status
        self.challenge = challenge  # WWW-Authenticate, when the server sent one


class RpcError(ProbeFailed):
    """A JSON-RPC error answer."""

    def __init__(self, method: str, code: Any, message: Any, data: Any, http_status: int) -> None:
        super().__init__(f"{method} failed: JSON-RPC error {code}: {message}")
        self.code = code
        self.data = data
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class Reply:
    result: dict[str, Any]
    session_id: str | None  # Mcp-Session-Id, in the handshake era


def modern_request(
    method: str, version: str, request_id: int, params: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """A self-contained modern-era request: the body and its headers."""
    envelope = {
        PROTOCOL_VERSION_KEY: version,
        CLIENT_INFO_KEY: CLIENT_INFO,
        CLIENT_CAPABILITIES_KEY: {},
    }
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": method,
        "params": {**(params or {}), "_meta": envelope},
    }
    return body, {"MCP-Protocol-Version": version, "Mcp-Method": method}


def request(
    method: str, request_id: int, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = dict(params)
    return body


def session_headers(version: str, session_id: str | None) -> dict[str, str]:
    """Headers of every request after `initialize` in the handshake era."""
    headers = {"MCP-Protocol-Version": version}
    if session_id:
        headers["Mcp-Session-Id"] = session_id
    return headers


def _encoded(headers: Mapping[str, str]) -> bool:
    """A body sent compressed (Content-Encoding other than identity)."""
    return headers.get("Content-Encoding", "identity").strip().lower() != "identity"


async def read_body(response: aiohttp.ClientResponse, limit: int, *, cut: bool = False) -> bytes:
    """The body up to EOF (content.read(n) returns only what has arrived so far). Over
    `limit`: cut there when `cut`, else the answer is refused."""
    length = response.content_length
    if length is not None and length <= limit and not _encoded(response.headers):
        # The usual case: one read of exactly that. (Not for a compressed body: its
        # length is the compressed one, and content gives it uncompressed.) aiohttp ends a
        # body cut short with an error of its own, as for the loop below.
        return await response.content.readexactly(length)
    body = bytearray()
    while chunk := await response.content.read(65536):
        body += chunk
        if len(body) > limit:
            if cut:
                return bytes(body[:limit])
            raise ProbeFailed(f"answer over {limit} bytes")
    return bytes(body)


async def sse_events(
    response: aiohttp.ClientResponse, limit: int | None = MAX_BODY
) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream body, as they arrive. `limit`: bytes to
    read at most (None: a long-lived stream, unlimited)."""
    event, data = "message", list[str]()
    total = 0
    async for raw in response.content:
        total += len(raw)
        if limit is not None and total > limit:
            raise ProbeFailed(f"SSE stream over {limit} bytes without an answer")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def answer_of(message: Any, method: str, request_id: int, http_status: int) -> dict[str, Any]:
    """The result of a JSON-RPC response to `request_id`, or the error it carries. An
    error is taken whatever its id: servers that could not read the request answer with
    a null id, and some with one of their own ("server-error")."""
    if isinstance(message, dict) and isinstance(message.get("error"), dict):
        error = message["error"]
        raise RpcError(
            method, error.get("code"), error.get("message"), error.get("data"), http_status
        )
    if not isinstance(message, dict) or message.get("id") != request_id:
        raise ProbeFailed(f"not a JSON-RPC response to {method}: {str(message)[:200]}")
    result = message.get("result")
    if not isinstance(result, dict):
        raise ProbeFailed(f"{method} answered without a result")
    return result


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """POST one JSON-RPC request and read its answer, as JSON or off an SSE stream."""
    method, request_id = str(body.get("method")), int(body["id"])
    sent = {"Accept": ACCEPT, "Content-Type": "application/json", **(headers or {})}
    async with http.post(url, data=json.dumps(body), headers=sent) as response:
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        session_id = response.headers.get("Mcp-Session-Id")
        if kind == "application/json":
            text = await read_body(response, MAX_BODY)
            try:
                message = json.loads(text)
            except ValueError:
                message = None
            rpc_error = (
                isinstance(message, dict)
                and message.get("jsonrpc") == "2.0"
                and isinstance(message.get("error"), dict)
            )
            # 401 is the transport's (MCP authorization), whatever the body says.
            if response.status == 401 or (response.status >= 400 and not rpc_error):
                raise refused(url, response, text[:300])
            return Reply(answer_of(message, method, request_id, response.status), session_id)
        if response.status >= 400:
            raise refused(url, response, await read_body(response, 300, cut=True))
        if kind == "text/event-stream":
            async for _, data in sse_events(response):
                candidate = json.loads(data)
                if isinstance(candidate, dict) and candidate.get("id") == request_id:
                    return Reply(answer_of(candidate, method, request_id, 200), session_id)
            raise ProbeFailed(f"SSE stream ended without an answer to {method}")
        raise ProbeFailed(f"POST {url}: unexpected Content-Type {kind!r}")


def refused(
    url: str, response: aiohttp.ClientResponse, body: bytes, method: str = "POST"
) -> HttpRefused:
    text = body.decode("utf-8", "replace").strip()[:200]
    challenge = response.headers.get("WWW-Authenticate")
    return HttpRefused(url, response.status, text, challenge, method)


async def notify(
    http: aiohttp.ClientSession, url: str, method: str, headers: Mapping[str, str]
) -> None:
    """A JSON-RPC notification (no answer expected; 202 Accepted)."""
    sent = {"Accept": ACCEPT, "Content-Type": "application/json", **headers}
    body = json.dumps({"jsonrpc": "2.0", "method": method})
    async with http.post(url, data=body, headers=sent):
        pass
