"""The gateway's calls to one upstream instance, in the protocol era it speaks.

- **2026-07-28** (the instance's `mcp_protocol_version`): each call is self-contained, the
  envelope added to `_meta`; closing the response cancels it.
- **The handshake era**: a session per gateway client session and instance (a server may
  keep state per session), begun with `initialize` and `notifications/initialized` on the
  first call and ended (DELETE) with the client's session. A session the instance no
  longer knows (404: it restarted) is begun again and the call sent once more: a 404 says
  the call never ran. A cancelled call is cancelled at the server too.

Whether a call was delivered decides what its failure means. A connection that could not
be made (refused, unreachable, a TLS handshake that failed) never carried it, so the call
may go to another instance (`NotDelivered`). Once a connection is made the request may
have run, so a failure then is final (`Failed`, naming the instance): no tool ever runs
twice. That is why no connection is reused: a pooled connection the instance has closed
fails after the request was written, which could not be told apart.

An answer comes as JSON or on an SSE stream; notifications on the stream (the call's
progress, its log messages) are handed to `tell` as they arrive. Ids are the gateway's own
on the way up and the client's again on the way back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import aiohttp

from bridge.consul.catalog import Instance
from bridge.gateway.sse import SseSession, hello
from bridge.mcp.headers import mirrored
from bridge.mcp.wire import (
    ACCEPT,
    CLIENT_CAPABILITIES_KEY,
    CLIENT_INFO,
    CLIENT_INFO_KEY,
    HANDSHAKE_VERSIONS,
    LATEST_HANDSHAKE,
    MODERN_VERSIONS,
    PROTOCOL_VERSION_KEY,
    ProbeFailed,
    read_body,
    sse_events,
)

CONNECT_TIMEOUT = 5.0
MAX_ANSWER = 16 << 20  # bytes of one JSON answer
GATEWAY_INFO = {"name": "mcp-bridge-gateway", "version": CLIENT_INFO["version"]}
Tell = Callable[[dict[str, Any]], None]
# A call cancelled with this message is cancelled at the server too (the client said so,
# or it timed out); a client that only went away is not (the handshake era's rule).
CANCEL_UPSTREAM = "cancelled by the client"


class NotDelivered(Exception):
    """The call never reached the instance: it may go to another."""


class Failed(Exception):
    """The call may have reached the instance and did not come back with an answer."""


class _SessionGone(Exception):
    """404 on a handshake session: the instance no longer knows it (the call never ran)."""


@dataclass(slots=True)
class _Session:
    id: str | None
    version: str


def era_of(instance: Instance) -> str:
    if instance.transport == "sse":
        return "sse"
    return "modern" if instance.protocol in MODERN_VERSIONS else "handshake"


class Upstreams:
    def __init__(self, *, token: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        self._token = token  # BRIDGE_SERVE_TOKEN_FILE's, for the stdio servers bridges serve
        self._tls = tls
        self._http: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._sessions: dict[tuple[Hashable, str], _Session] = {}
        self._streams: dict[tuple[Hashable, str], SseSession] = {}  # the legacy transport
        self._opening: dict[tuple[Hashable, str], asyncio.Lock] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:  # made inside the running loop
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, ssl=self._tls or True),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
            )
        return self._http

    async def close(self) -> None:
        for stream in self._streams.values():
            await stream.close()
        self._streams.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def call(
        self,
        instance: Instance,
        message: dict[str, Any],
        session: Hashable,
        tell: Tell,
        input_schema: Any = None,
    ) -> dict[str, Any]:
        """The instance's answer to the client's request, under the client's id.
        `input_schema`: the tool's, for the headers a 2026-07-28 server checks."""
        rid = message.get("id")
        ours = next(self._ids)
        sent = dict(message, id=ours)
        era = era_of(instance)
        if era == "modern":
            answer = await self._modern(instance, sent, tell, input_schema)
        elif era == "sse":
            answer = await self._sse(instance, sent, session, tell)
        else:
            answer = await self._handshake(instance, sent, session, tell)
        return dict(answer, id=rid)

    async def end(self, session: Hashable) -> None:
        """The client's session ended: so do its sessions upstream."""
        for key in [k for k in self._streams if k[0] == session]:
            await self._streams.pop(key).close()
        for key in [k for k in self._sessions if k[0] == session]:
            upstream = self._sessions.pop(key)
            self._opening.pop(key, None)
            url = key[1]
            try:
                headers = self._headers(url, upstream.version, upstream.id)
                async with self._client().delete(url, headers=headers):
                    pass
            except (aiohttp.ClientError, OSError):
                pass  # it ends by itself at the server's idle timeout

    # ---- the eras -----------------------------------------------------------------------

    async def _modern(
        self, instance: Instance, message: dict[str, Any], tell: Tell, schema: Any
    ) -> dict[str, Any]:
        version = instance.protocol
        params = dict(message.get("params") or {})
        params["_meta"] = {
            **(params.get("_meta") or {}),
            PROTOCOL_VERSION_KEY: version,
            CLIENT_INFO_KEY: GATEWAY_INFO,
            CLIENT_CAPABILITIES_KEY: {},
        }
        headers = self._headers(instance.url, version, None)
        method = str(message.get("method"))
        headers["Mcp-Method"] = method
        headers.update(mirrored(method, params, schema))
        answer, _ = await self._post(instance, dict(message, params=params), headers, tell)
        return answer

    async def _handshake(
        self, instance: Instance, message: dict[str, Any], session: Hashable, tell: Tell
    ) -> dict[str, Any]:
        for _ in range(2):
            upstream = await self._session(instance, session)
            headers = self._headers(instance.url, upstream.version, upstream.id)
            try:
                answer, _ = await self._post(instance, message, headers, tell)
                return answer
            except _SessionGone:
                self._sessions.pop((session, instance.url), None)
            except asyncio.CancelledError as exc:
                if CANCEL_UPSTREAM in exc.args:  # not when the client just went away
                    self._cancel_later(instance, upstream, message.get("id"))
                raise
        raise Failed(f"{instance.service_id} forgot its session twice in a row")

    async def _session(self, instance: Instance, session: Hashable) -> _Session:
        key = (session, instance.url)
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:  # one initialize per session and instance, however many calls
            known = self._sessions.get(key)
            if known is not None:
                return known
            version = (
                instance.protocol if instance.protocol in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE
            )
            params = {"protocolVersion": version, "capabilities": {}, "clientInfo": GATEWAY_INFO}
            hello = {
                "jsonrpc": "2.0",
                "id": next(self._ids),
                "method": "initialize",
                "params": params,
            }
            headers = self._headers(instance.url, version, None)
            answer, sid = await self._post(instance, hello, headers, lambda _: None)
            result = answer.get("result")
            if not isinstance(result, dict):
                raise NotDelivered(
                    f"{instance.service_id} refused initialize: {answer.get('error')}"
                )
            agreed = str(result.get("protocolVersion") or version)
            opened = _Session(sid, agreed)
            done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            await self._post(instance, done, self._headers(instance.url, agreed, sid), None)
            self._sessions[key] = opened
            return opened

    async def _sse(
        self, instance: Instance, message: dict[str, Any], session: Hashable, tell: Tell
    ) -> dict[str, Any]:
        key = (session, instance.url)
        async with self._opening.setdefault(key, asyncio.Lock()):
            stream = self._streams.get(key)
            if stream is None or stream.broken is not None:
                if stream is not None:
                    await stream.close()
                stream = SseSession(
                    self._client(), instance, self._headers(instance.url, LATEST_HANDSHAKE, None)
                )
                await stream.open(NotDelivered, Failed)
                try:
                    answer = await stream.request(
                        hello(next(self._ids), GATEWAY_INFO), tell, NotDelivered, Failed
                    )
                    if "result" not in answer:
                        raise NotDelivered(
                            f"{instance.service_id} refused initialize: {answer.get('error')}"
                        )
                    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                    await stream.request(done, tell, NotDelivered, Failed)
                except BaseException:
                    await stream.close()
                    raise
                self._streams[key] = stream
        try:
            return await stream.request(message, tell, NotDelivered, Failed)
        except asyncio.CancelledError as exc:
            if CANCEL_UPSTREAM in exc.args:
                why = {"requestId": message.get("id"), "reason": "cancelled at the gateway"}
                cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": why}
                task = asyncio.ensure_future(stream.request(cancel, tell, NotDelivered, Failed))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise

    def _cancel_later(self, instance: Instance, upstream: _Session, our_id: Any) -> None:
        """The server hears of a cancelled call (the handshake era's own way to cancel)."""
        cancel = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": our_id, "reason": "cancelled at the gateway"},
        }
        headers = self._headers(instance.url, upstream.version, upstream.id)
        task = asyncio.ensure_future(self._post(instance, cancel, headers, None))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _headers(self, url: str, version: str, session_id: str | None) -> dict[str, str]:
        headers = {
            "Accept": ACCEPT,
            "Content-Type": "application/json",
            "MCP-Protocol-Version": version,
        }
        if session_id:
            headers["Mcp-Session-Id"] = session_id
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    # ---- one POST -----------------------------------------------------------------------

    async def _post(
        self,
        instance: Instance,
        body: dict[str, Any],
        headers: dict[str, str],
        tell: Tell | None,
    ) -> tuple[dict[str, Any], str | None]:
        """The answer to `body` (for a notification, `tell` None: an empty dict)."""
        where = instance.service_id
        try:
            response = await self._client().post(
                instance.url, data=json.dumps(body), headers=headers
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise NotDelivered(f"{where}: cannot connect: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise Failed(f"{where}: {type(exc).__name__}: {exc}") from exc
        async with response:
            try:
                return await self._read(instance, body, response, tell)
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                raise Failed(f"{where}: the answer broke off: {exc}") from exc

    async def _read(
        self,
        instance: Instance,
        body: dict[str, Any],
        response: aiohttp.ClientResponse,
        tell: Tell | None,
    ) -> tuple[dict[str, Any], str | None]:
        where, sid = instance.service_id, response.headers.get("Mcp-Session-Id")
        if response.status == 404 and "Mcp-Session-Id" in response.request_info.headers:
            raise _SessionGone()
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
