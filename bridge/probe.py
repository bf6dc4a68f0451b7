"""A health probe that speaks MCP: JSON-RPC `initialize` over the server's transport.

streamable-http: POST `initialize` to the endpoint with `Accept: application/json,
text/event-stream`; the answer is JSON or an SSE stream carrying the JSON-RPC response.
When the server hands out a session (`Mcp-Session-Id`), the probe sends
`notifications/initialized` and then ends the session with DELETE, so probing every few
seconds leaves no sessions behind.

sse (the legacy HTTP+SSE transport): GET the SSE stream, read the `endpoint` event, POST
`initialize` to that URL, read the response off the stream, close the stream.

The result is passing (a proper answer in good time), warning (an answer that is slow or
odd: no serverInfo, no protocolVersion), or critical (no answer, an HTTP or JSON-RPC
error), with the reason in the output, as the Consul TTL check shows it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import aiohttp

PROTOCOL_VERSION = "2025-06-18"
CLIENT_INFO = {"name": "mcp-bridge", "version": "0.1.0"}
SLOW_FRACTION = 0.5  # an answer after half the timeout is a warning
MAX_BODY = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ProbeResult:
    status: str  # passing | warning | critical
    output: str
    meta: dict[str, str] = field(default_factory=dict)  # mcp_server_name, ...
    seconds: float = 0.0


def _initialize(request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": CLIENT_INFO,
        },
    }


class ProbeFailed(Exception):
    pass


async def _read_body(response: aiohttp.ClientResponse, limit: int, *, cut: bool = False) -> bytes:
    """The body up to EOF (content.read(n) returns only what has arrived so far). Over
    `limit`: cut there when `cut`, else the probe fails."""
    body = bytearray()
    while chunk := await response.content.read(65536):
        body += chunk
        if len(body) > limit:
            if cut:
                return bytes(body[:limit])
            raise ProbeFailed(f"answer over {limit} bytes")
    return bytes(body)


async def _sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream body, as they arrive."""
    event, data = "message", list[str]()
    total = 0
    async for raw in response.content:
        total += len(raw)
        if total > MAX_BODY:
            raise ProbeFailed("SSE stream over 1 MiB without an answer")
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


def _judge(message: Any, elapsed: float, budget: float, request_id: int = 1) -> ProbeResult:
    if not isinstance(message, dict) or message.get("id") != request_id:
        raise ProbeFailed(f"not a JSON-RPC response to initialize: {str(message)[:200]}")
    if "error" in message:
        error = message["error"] if isinstance(message["error"], dict) else {}
        raise ProbeFailed(
            f"initialize failed: JSON-RPC error {error.get('code')}: {error.get('message')}"
        )
    result = message.get("result")
    if not isinstance(result, dict):
        raise ProbeFailed("initialize answered without a result")
    raw_info = result.get("serverInfo")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    meta = {
        "mcp_server_name": str(info.get("name", ""))[:256],
        "mcp_server_version": str(info.get("version", ""))[:256],
        "mcp_protocol_version": str(result.get("protocolVersion", ""))[:64],
    }
    meta = {k: v for k, v in meta.items() if v}
    odd = [k for k in ("mcp_server_name", "mcp_protocol_version") if k not in meta]
    name = meta.get("mcp_server_name", "?")
    summary = (
        f"MCP initialize OK in {elapsed * 1000:.0f} ms: {name}"
        f" {meta.get('mcp_server_version', '')} (protocol {meta.get('mcp_protocol_version', '?')})"
    )
    if odd:
        return ProbeResult("warning", f"{summary}; answer lacks {', '.join(odd)}", meta, elapsed)
    if elapsed > budget * SLOW_FRACTION:
        return ProbeResult("warning", f"{summary}; slow (timeout {budget:g}s)", meta, elapsed)
    return ProbeResult("passing", summary, meta, elapsed)


async def _streamable_http(
    session: aiohttp.ClientSession, url: str, budget: float, started: float
) -> ProbeResult:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with session.post(url, data=json.dumps(_initialize()), headers=headers) as response:
        if response.status != 200:
            body = (await _read_body(response, 300, cut=True)).decode("utf-8", "replace")
            raise ProbeFailed(f"POST {url}: HTTP {response.status} {body.strip()[:200]}")
        session_id = response.headers.get("Mcp-Session-Id")
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind == "text/event-stream":
            message = None
            async for _, data in _sse_events(response):
                candidate = json.loads(data)
                if isinstance(candidate, dict) and candidate.get("id") == 1:
                    message = candidate
                    break
            if message is None:
                raise ProbeFailed("SSE stream ended without an answer to initialize")
        elif kind == "application/json":
            message = json.loads(await _read_body(response, MAX_BODY))
        else:
            raise ProbeFailed(f"POST {url}: unexpected Content-Type {kind!r}")
    result = _judge(message, time.monotonic() - started, budget)
    if session_id:
        session_headers = {**headers, "Mcp-Session-Id": session_id}
        if "mcp_protocol_version" in result.meta:
            session_headers["MCP-Protocol-Version"] = result.meta["mcp_protocol_version"]
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with session.post(url, data=json.dumps(initialized), headers=session_headers):
            pass
        async with session.delete(url, headers=session_headers):
            pass  # 405 means the server does not let clients end sessions: fine
    return result


async def _legacy_sse(
    session: aiohttp.ClientSession, url: str, budget: float, started: float
) -> ProbeResult:
    async with session.get(url, headers={"Accept": "text/event-stream"}) as stream:
        if stream.status != 200:
            raise ProbeFailed(f"GET {url}: HTTP {stream.status}")
        events = _sse_events(stream)
        endpoint = None
        async for event, data in events:
            if event == "endpoint":
                endpoint = urljoin(url, data.strip())
                break
        if endpoint is None:
            raise ProbeFailed("SSE stream ended without an endpoint event")
        post = await session.post(
            endpoint,
            data=json.dumps(_initialize()),
            headers={"Content-Type": "application/json"},
        )
        post.release()
        if post.status not in (200, 202):
            raise ProbeFailed(f"POST {endpoint}: HTTP {post.status}")
        async for event, data in events:
            if event == "message":
                candidate = json.loads(data)
                if isinstance(candidate, dict) and candidate.get("id") == 1:
                    return _judge(candidate, time.monotonic() - started, budget)
        raise ProbeFailed("SSE stream ended without an answer to initialize")


async def probe(
    session: aiohttp.ClientSession, url: str, transport: str, budget: float
) -> ProbeResult:
    """Probe the MCP server at `url`; never raises, always says why."""
    started = time.monotonic()
    run = _legacy_sse if transport == "sse" else _streamable_http
    try:
        async with asyncio.timeout(budget):
            return await run(session, url, budget, started)
    except TimeoutError:
        return ProbeResult("critical", f"no answer to MCP initialize within {budget:g}s at {url}")
    except ProbeFailed as exc:
        return ProbeResult("critical", str(exc), seconds=time.monotonic() - started)
    except (aiohttp.ClientError, OSError) as exc:
        return ProbeResult(
            "critical",
            f"cannot reach {url}: {type(exc).__name__}: {exc}",
            seconds=time.monotonic() - started,
        )
    except ValueError as exc:  # JSON that does not parse
        return ProbeResult(
            "critical", f"answer is not JSON: {exc}", seconds=time.monotonic() - started
        )
