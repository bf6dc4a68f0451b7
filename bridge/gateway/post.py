"""One POST of the gateway to an instance, and what its failure means.

A connection that could not be made (refused, unreachable, a TLS handshake that failed)
never carried the request: `NotDelivered`, and the call may go to another instance. Once
the request is written the tool may have run, so a failure then is final: `Failed`,
naming the instance. An answer comes as JSON or on an SSE stream; notifications on the
stream (the call's progress, its log messages) are handed to `tell` as they arrive.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp

from bridge.consul.catalog import Instance
from bridge.mcp.wire import ProbeFailed, read_body, sse_events

MAX_ANSWER = 16 << 20  # bytes of one JSON answer
Tell = Callable[[dict[str, Any]], None]


class NotDelivered(Exception):
    """The call never reached the instance: it may go to another."""


class Failed(Exception):
    """The call may have reached the instance and did not come back with an answer."""


class SessionGone(Exception):
    """404 on a handshake session: the instance no longer knows it (the call never ran)."""


async def post(
    http: aiohttp.ClientSession,
    instance: Instance,
    body: dict[str, Any],
    headers: dict[str, str],
    tell: Tell | None,
) -> tuple[dict[str, Any], str | None]:
    """The answer to `body` and the session id it came with (a notification: {})."""
    where = instance.service_id
    try:
        response = await http.post(instance.url, data=json.dumps(body).encode(), headers=headers)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise NotDelivered(f"{where}: cannot connect: {exc}") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise Failed(f"{where}: {type(exc).__name__}: {exc}") from exc
    async with response:
        try:
            return await _read(instance, body, response, tell)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise Failed(f"{where}: the answer broke off: {exc}") from exc


async def _read(
    instance: Instance, body: dict[str, Any], response: aiohttp.ClientResponse, tell: Tell | None
) -> tuple[dict[str, Any], str | None]:
    where, sid = instance.service_id, response.headers.get("Mcp-Session-Id")
    if response.status == 404 and "Mcp-Session-Id" in response.request_info.headers:
        raise SessionGone()
    if response.status >= 500:
        text = (await response.content.read(300)).decode("utf-8", "replace")
        raise Failed(f"{where}: HTTP {response.status} {text}".rstrip())
    if tell is None or "id" not in body:
        return {}, sid
    kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if kind == "text/event-stream":
        async for _, data in sse_events(response, None):
            said = json.loads(data)
            if not isinstance(said, dict):
                continue
            if said.get("id") == body["id"] and "method" not in said:
                return said, sid
            if "method" in said and "id" not in said:
                tell(said)
        raise Failed(f"{where}: the stream ended without an answer")
    try:
        raw = await read_body(response, MAX_ANSWER)
    except ProbeFailed as exc:
        raise Failed(f"{where}: {exc}") from exc
    try:
        said = json.loads(raw) if raw else None
    except ValueError:
        said = None
    if isinstance(said, dict) and ("result" in said or "error" in said):
        return said, sid
    why = f"{where} answered HTTP {response.status} {raw[:200].decode('utf-8', 'replace')}"
    return {"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32603, "message": why}}, sid
