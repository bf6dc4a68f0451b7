"""A health probe that speaks MCP the way a current client does.

streamable-http, as the official SDK's client negotiates (mcp/client/_probe.py):
1. `server/discover` at the newest modern revision (2026-07-28): self-contained, no
   session. An answer listing a modern revision the bridge knows: the modern era.
2. An unsupported-version error (-32022) naming a modern revision the bridge knows:
   discover once more at that revision. Naming only revisions the bridge does not know,
   and no handshake-era one: incompatible, critical.
3. Anything else that says "I do not know server/discover" (method not found or another
   JSON-RPC error, an HTTP 4xx such as a stateful server's "missing session", an answer
   without `supportedVersions`): the `initialize` handshake at the newest handshake
   revision (2025-11-25), accepting the revision the server answers with; then
   `notifications/initialized` and DELETE of the session, so probing leaves nothing open.
   A -32022 to `initialize` is modern evidence: discover again at the revision it names.
One corrective discover at most (step 2, or after a -32022 to `initialize`), as in the
SDK. Then, or when the server refuses the very revision it names, a -32022 naming no
handshake-era revision is critical (`initialize` would be refused too), and so is a
-32022 to `initialize`.

sse (the legacy HTTP+SSE transport): GET the stream, read the `endpoint` event, POST
`initialize` there, read the answer off the stream, close it. An HTTP error status is
judged as in streamable-http (a 401 with a challenge: protected).

The verdict is passing (a proper answer in good time), warning (slow, or an answer that
lacks the server's name or revision; or a server protected by MCP authorization, which
answers 401 with a WWW-Authenticate challenge: up and speaking HTTP, but the bridge holds
no credentials to look inside) or critical (no answer, an HTTP or JSON-RPC failure).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import aiohttp

from bridge.mcp.tools import list_tools
from bridge.mcp.wire import (
    CLIENT_INFO,
    HANDSHAKE_VERSIONS,
    LATEST_HANDSHAKE,
    LATEST_MODERN,
    MODERN_VERSIONS,
    SERVER_INFO_KEY,
    UNSUPPORTED_PROTOCOL_VERSION,
    HttpRefused,
    ProbeFailed,
    RpcError,
    answer_of,
    modern_request,
    notify,
    post,
    read_body,
    refused,
    request,
    session_headers,
    sse_events,
)

SLOW_FRACTION = 0.5  # an answer after half the timeout is a warning
_INITIALIZE = {"protocolVersion": LATEST_HANDSHAKE, "capabilities": {}, "clientInfo": CLIENT_INFO}
TOOLS_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class ProbeResult:
    status: str  # passing | warning | critical
    output: str
    meta: dict[str, str] = field(default_factory=dict)  # mcp_server_name, ...
    seconds: float = 0.0
    tools: list[dict[str, Any]] | None = None  # listed by this probe, when asked and able
    tools_error: str | None = None
    listens: bool = False  # a modern server that announces tool list changes
    # How to hear them when not over HTTP (a served stdio server): until cancelled or the
    # process ends, calls its argument at each change.
    watch: Callable[[Callable[[], None]], Awaitable[None]] | None = None
    # Whether the answer declared the `tools` capability; None when no answer was read
    # (a failure, a protected server): only then is a missing inventory not a verdict.
    tools_declared: bool | None = None


@dataclass(slots=True)
class Conversation:
    """One probe's exchange with a server, in the era it turned out to speak."""

    http: aiohttp.ClientSession
    url: str  # where requests go (the SSE transport's endpoint)
    era: str  # modern | handshake | sse
    version: str  # the revision spoken (what the server answered, in the handshake)
    result: dict[str, Any]  # the discover or initialize result
    step: str  # what answered, and why the probe got there
    session_id: str | None = None
    stream: aiohttp.ClientResponse | None = None  # the legacy SSE stream
    events: Any = None
    next_id: int = 2

    @property
    def capabilities(self) -> dict[str, Any]:
        caps = self.result.get("capabilities")
        return caps if isinstance(caps, dict) else {}

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One more request in this conversation's era."""
        request_id, self.next_id = self.next_id, self.next_id + 1
        if self.era == "modern":
            body, headers = modern_request(method, self.version, request_id, params)
            return (await post(self.http, self.url, body, headers)).result
        if self.era == "handshake":
            headers = session_headers(self.version, self.session_id)
            return (
                await post(self.http, self.url, request(method, request_id, params), headers)
            ).result
        return await _sse_call(self, request(method, request_id, params))

    async def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        elif self.era == "handshake" and self.session_id:
            headers = session_headers(self.version, self.session_id)
            async with self.http.delete(self.url, headers=headers):
                pass  # 405 means the server does not let clients end sessions: fine


async def probe(
    http: aiohttp.ClientSession,
    url: str,
    transport: str,
    budget: float,
    *,
    want_tools: bool = False,
) -> ProbeResult:
    """Probe the MCP server at `url`; never raises, always says why."""
    started = time.monotonic()
    conversation: Conversation | None = None
    try:
        try:
            async with asyncio.timeout(budget):
                open_ = _open_sse if transport == "sse" else _open_streamable
                conversation = await open_(http, url)
            result = _judge(conversation, time.monotonic() - started, budget)
            if want_tools and result.tools_declared:
                result = await _with_tools(conversation, result)
            return result
        finally:
            if conversation is not None:
                await _close_quietly(conversation, budget)
    except TimeoutError:
        return ProbeResult("critical", f"no answer to MCP within {budget:g}s at {url}")
    except HttpRefused as exc:
        seconds = time.monotonic() - started
        if exc.status == 401 and exc.challenge:
            # Said in meta: the gateway must not proxy it (no token passthrough), and a
            # warning alone does not tell it from a slow server.
            protected = {"mcp_auth": "required"}
            return ProbeResult("warning", _protected(url, exc.challenge), protected, seconds)
        return ProbeResult("critical", str(exc), seconds=seconds)
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


def _protected(url: str, challenge: str) -> str:
    return (
        f"MCP authorization required at {url}: HTTP 401, WWW-Authenticate: {challenge[:200]}"
        " (up and speaking HTTP; the bridge holds no credentials to look inside)"
    )


async def _close_quietly(conversation: Conversation, budget: float) -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        # The check is being stopped and a pass waits for it to end: no goodbye to a
        # server that may be gone (a session it keeps expires on its own).
        if conversation.stream is not None:
            conversation.stream.close()
        return
    try:
        async with asyncio.timeout(budget):
            await conversation.close()
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass  # the verdict is made; a session the server keeps expires on its own


async def _with_tools(conversation: Conversation, result: ProbeResult) -> ProbeResult:
    try:
        async with asyncio.timeout(TOOLS_TIMEOUT):
            tools = await list_tools(conversation.call)
    except (TimeoutError, ProbeFailed, aiohttp.ClientError, OSError, ValueError) as exc:
        why = str(exc) or type(exc).__name__
        return _replace(result, tools_error=f"tools/list failed: {why}")
    return _replace(result, tools=tools, output=f"{result.output}; {len(tools)} tools")


def _replace(result: ProbeResult, **changes: Any) -> ProbeResult:
    values = {f: getattr(result, f) for f in ProbeResult.__dataclass_fields__}
    return ProbeResult(**{**values, **changes})


def _supported(data: Any) -> list[str] | None:
    supported = data.get("supported") if isinstance(data, dict) else None
    return [str(v) for v in supported] if isinstance(supported, list) else None


async def _discover(http: aiohttp.ClientSession, url: str, version: str) -> dict[str, Any]:
    body, headers = modern_request("server/discover", version, 1)
    return (await post(http, url, body, headers)).result


async def _open_streamable(http: aiohttp.ClientSession, url: str) -> Conversation:
    version = LATEST_MODERN
    for attempt in range(2):  # the second: the one corrective discover
        try:
            result = await _discover(http, url, version)
        except HttpRefused as exc:
            if exc.status == 401 or not 400 <= exc.status < 500:
                raise  # authorization, or a server error: no era verdict
            why = f"HTTP {exc.status}"
        except RpcError as exc:
            supported = _supported(exc.data)
            if exc.code == UNSUPPORTED_PROTOCOL_VERSION and supported is not None:
                mutual = [v for v in MODERN_VERSIONS if v in supported]
                if mutual and mutual[-1] != version and attempt == 0:
                    version = mutual[-1]
                    continue
                if not any(v in HANDSHAKE_VERSIONS for v in supported):
                    # Modern only, and no revision left to try: initialize would fail too.
                    raise _incompatible(version, supported, bool(mutual)) from None
            why = f"JSON-RPC error {exc.code}"
        else:
            offered = result.get("supportedVersions")
            known = [v for v in MODERN_VERSIONS if isinstance(offered, list) and v in offered]
            if known:
                spoken = version if version in known else known[-1]
                return Conversation(http, url, "modern", spoken, result, "server/discover")
            why = "answer without a modern revision"
        try:
            return await _handshake(http, url, f"server/discover: {why}")
        except RpcError as exc:
            mutual = [v for v in MODERN_VERSIONS if v in (_supported(exc.data) or ())]
            if exc.code != UNSUPPORTED_PROTOCOL_VERSION or not mutual or attempt != 0:
                raise
            # Modern evidence after all (a slow start, say): discover at the revision named.
            version = mutual[-1]
    raise AssertionError("unreachable")


def _incompatible(version: str, supported: list[str], known: bool) -> ProbeFailed:
    named = ", ".join(supported[:5])
    if known:  # it names a revision the bridge speaks, yet refused it
        return ProbeFailed(f"server refused protocol revision {version}, naming only {named}")
    return ProbeFailed(f"server speaks only protocol revisions this bridge does not know: {named}")


async def _handshake(http: aiohttp.ClientSession, url: str, why: str) -> Conversation:
    reply = await post(http, url, request("initialize", 1, _INITIALIZE))
    result = reply.result
    spoken = str(result.get("protocolVersion") or LATEST_HANDSHAKE)
    conversation = Conversation(
        http, url, "handshake", spoken, result, f"initialize ({why})", reply.session_id
    )
    if reply.session_id:  # a stateless server hands out none: nothing to confirm or end
        await notify(
            http, url, "notifications/initialized", session_headers(spoken, reply.session_id)
        )
    return conversation


async def _open_sse(http: aiohttp.ClientSession, url: str) -> Conversation:
    stream = await http.get(url, headers={"Accept": "text/event-stream"})
    try:
        if stream.status >= 400:  # HttpRefused: a 401 with a challenge is protected
            raise refused(url, stream, await read_body(stream, 300, cut=True), "GET")
        if stream.status != 200:
            raise ProbeFailed(f"GET {url}: HTTP {stream.status}")
        events = sse_events(stream)
        endpoint = None
        async for event, data in events:
            if event == "endpoint":
                endpoint = urljoin(url, data.strip())
                break
        if endpoint is None:
            raise ProbeFailed("SSE stream ended without an endpoint event")
        conversation = Conversation(
            http, endpoint, "sse", LATEST_HANDSHAKE, {}, "initialize", stream=stream, events=events
        )
        params = {
            "protocolVersion": LATEST_HANDSHAKE,
            "capabilities": {},
            "clientInfo": CLIENT_INFO,
        }
        conversation.result = await _sse_call(conversation, request("initialize", 1, params))
        conversation.version = str(conversation.result.get("protocolVersion") or "")
        return conversation
    except BaseException:
        stream.close()
        raise


async def _sse_call(conversation: Conversation, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the SSE transport's endpoint; the answer comes on the stream."""
    async with conversation.http.post(conversation.url, json=body) as posted:
        if posted.status >= 400:
            raise refused(conversation.url, posted, await read_body(posted, 300, cut=True))
        if posted.status not in (200, 202):
            raise ProbeFailed(f"POST {conversation.url}: HTTP {posted.status}")
    async for event, data in conversation.events:
        if event == "message":
            candidate = json.loads(data)
            if isinstance(candidate, dict) and candidate.get("id") == body["id"]:
                return answer_of(candidate, str(body["method"]), int(body["id"]), 200)
    raise ProbeFailed(f"SSE stream ended without an answer to {body['method']}")


def server_meta(info: dict[str, Any], version: str) -> dict[str, str]:
    """What a server says of itself, as service meta (bounded; empty values left out)."""
    meta = {
        "mcp_server_name": str(info.get("name", ""))[:256],
        "mcp_server_version": str(info.get("version", ""))[:256],
        "mcp_protocol_version": version[:64],
    }
    return {k: v for k, v in meta.items() if v}


def _judge(conversation: Conversation, elapsed: float, budget: float) -> ProbeResult:
    result = conversation.result
    if conversation.era == "modern":
        stamp = (result.get("_meta") or {}).get(SERVER_INFO_KEY)
    else:
        stamp = result.get("serverInfo")
    meta = server_meta(stamp if isinstance(stamp, dict) else {}, conversation.version)
    tools = conversation.capabilities.get("tools")
    listens = (
        conversation.era == "modern" and isinstance(tools, dict) and bool(tools.get("listChanged"))
    )
    name = f"{meta.get('mcp_server_name', '?')} {meta.get('mcp_server_version', '')}".rstrip()
    summary = (
        f"MCP {meta.get('mcp_protocol_version', '?')} OK: {conversation.step}"
        f" answered in {elapsed * 1000:.0f} ms by {name}"
    )
    # The handshake's serverInfo and protocolVersion are required; the modern serverInfo
    # stamp is display-only (it may be left out).
    required = ("mcp_server_name", "mcp_protocol_version")
    odd = [k for k in required if k not in meta] if conversation.era != "modern" else []
    status, output = "passing", summary
    if odd:
        status, output = "warning", f"{summary}; answer lacks {', '.join(odd)}"
    elif elapsed > budget * SLOW_FRACTION:
        status, output = "warning", f"{summary}; slow (timeout {budget:g}s)"
    declared = "tools" in conversation.capabilities
    return ProbeResult(status, output, meta, elapsed, listens=listens, tools_declared=declared)
