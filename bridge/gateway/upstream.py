"""The gateway's calls to one upstream instance, in the protocol era and transport it
speaks (what a failure of one POST means: post.py).

- **2026-07-28** (the instance's `mcp_protocol_version`): each call is self-contained, the
  envelope added to `_meta` and the headers the revision mirrors from the body
  (headers.py); closing the response cancels it.
- **The handshake era**: a session per gateway client session and instance (a server may
  keep state per session), begun with `initialize` and `notifications/initialized` on the
  first call and ended (DELETE) with the client's session. A session the instance no
  longer knows (404: it restarted) is begun again and the call sent once more: a 404 says
  the call never ran. A cancelled call is cancelled at the server too.
- **The legacy HTTP+SSE transport**: the same, on a stream per session (sse.py); progress
  tokens are the gateway's own there, since one stream may carry several clients' calls.

Anything that fails before the call's own request is written (opening a session, the
stream) did not deliver it. Connections are kept alive, but only for KEEP_ALIVE seconds of
idleness, shorter than the idle timeouts servers use (5 s and more), so an instance never
closes one the gateway is about to reuse; a kept connection that fails anyway (the
instance died) fails the call on the safe side: an error, not a second try. What the
gateway tells an instance on the side (a cancellation, a session's end) is sent in the
background, with a timeout of its own, never in a client's way. Ids are the gateway's own
on the way up and the client's again on the way back. The fleet's token
(BRIDGE_SERVE_TOKEN_FILE) goes only to the stdio endpoints the bridges serve.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from collections import OrderedDict
from collections.abc import Callable, Collection, Coroutine, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp

from bridge.consul.catalog import Instance
from bridge.gateway.post import Failed, NotDelivered, SessionGone, Tell, post
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
)

__all__ = ["CANCEL_UPSTREAM", "GATEWAY_INFO", "Failed", "NotDelivered", "Upstreams"]

CONNECT_TIMEOUT = 5.0
KEEP_ALIVE = 2.0  # seconds an idle upstream connection is kept
ASIDE_TIMEOUT = 5.0  # a cancellation or a session's end, sent on the side
ENDED_KEPT = 4096  # client sessions remembered as ended (a late call must not revive one)
GATEWAY_INFO = {"name": "mcp-bridge-gateway", "version": CLIENT_INFO["version"]}
# A call cancelled with this message is cancelled at the server too (the client said so,
# or it timed out); a client that only went away is not (the handshake era's rule).
CANCEL_UPSTREAM = "cancelled by the client"


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
        self._token = token
        self._tls = tls
        self._http: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._sessions: dict[tuple[Hashable, str], _Session] = {}
        self._streams: dict[tuple[Hashable, str], SseSession] = {}  # the legacy transport
        self._opening: dict[tuple[Hashable, str], asyncio.Lock] = {}
        self._ended: OrderedDict[Hashable, None] = OrderedDict()
        self._aside: set[asyncio.Task[Any]] = set()
        self._served: set[str] = set()  # URLs of bridges' stdio endpoints (the token's)

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:  # made inside the running loop
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    keepalive_timeout=KEEP_ALIVE, limit=1000, ssl=self._tls or True
                ),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
                # No cookies: one client's would go with every other client's calls (and
                # keeping a jar costs each call a filter and a parse).
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._http

    async def close(self) -> None:
        if self._aside:  # what is under way on the side ends (each within its timeout)
            await asyncio.wait(self._aside)
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
        sent = dict(message, id=next(self._ids))
        era = era_of(instance)
        if era == "modern":
            answer = await self._modern(instance, sent, tell, input_schema)
        elif era == "sse":
            answer = await self._sse(instance, sent, session, tell)
        else:
            answer = await self._handshake(instance, sent, session, tell)
        return dict(answer, id=rid)

    def end(self, session: Hashable) -> None:
        """The client's session ended: so do its sessions upstream (on the side)."""
        self._ended[session] = None
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)
        for key in [k for k in self._opening if k[0] == session]:
            self._drop(key)

    def forget(self, alive: Collection[str]) -> None:
        """Instances (by URL) no longer in Consul: what was open to them is let go of."""
        for key in [k for k in self._opening if k[1] not in alive]:
            self._drop(key, tell=False)

    def _drop(self, key: tuple[Hashable, str], *, tell: bool = True) -> None:
        self._opening.pop(key, None)
        stream = self._streams.pop(key, None)
        if stream is not None:
            self._aside_do(partial(stream.close))
        upstream = self._sessions.pop(key, None)
        if upstream is not None and tell:
            self._aside_do(partial(self._delete, key[1], upstream))

    async def _delete(self, url: str, upstream: _Session) -> None:
        headers = {"MCP-Protocol-Version": upstream.version, "Mcp-Session-Id": upstream.id or ""}
        if self._token is not None and url in self._served:
            headers["Authorization"] = f"Bearer {self._token}"
        async with self._client().delete(url, headers=headers):
            pass

    def _aside_do(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """`work` (made only when its turn comes: one never begun is never left unawaited)
        on the side, within ASIDE_TIMEOUT."""

        async def bounded() -> None:
            try:
                async with asyncio.timeout(ASIDE_TIMEOUT):
                    await work()
            except (aiohttp.ClientError, OSError, TimeoutError, Failed, NotDelivered, SessionGone):
                pass  # a session ends by itself at the server's idle timeout

        task = asyncio.ensure_future(bounded())
        self._aside.add(task)
        task.add_done_callback(self._aside.discard)

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
        headers = self._headers(instance, version, None)
        method = str(message.get("method"))
        headers["Mcp-Method"] = method
        headers.update(mirrored(method, params, schema))
        answer, _ = await post(
            self._client(), instance, dict(message, params=params), headers, tell
        )
        return answer

    async def _handshake(
        self, instance: Instance, message: dict[str, Any], session: Hashable, tell: Tell
    ) -> dict[str, Any]:
        key = (session, instance.url)
        for _ in range(2):
            upstream = await self._session(instance, session)
            headers = self._headers(instance, upstream.version, upstream.id)
            try:
                answer, _ = await post(self._client(), instance, message, headers, tell)
                return answer
            except SessionGone:
                if self._sessions.get(key) is upstream:  # not one begun meanwhile
                    del self._sessions[key]
            except asyncio.CancelledError as exc:
                if CANCEL_UPSTREAM in exc.args:  # not when the client just went away
                    why = {"requestId": message.get("id"), "reason": "cancelled at the gateway"}
                    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": why}
                    self._aside_do(partial(post, self._client(), instance, cancel, headers, None))
                raise
        raise NotDelivered(f"{instance.service_id} forgot its session twice in a row")

    async def _session(self, instance: Instance, session: Hashable) -> _Session:
        key = (session, instance.url)
        async with self._opening.setdefault(key, asyncio.Lock()):  # one initialize each
            known = self._sessions.get(key)
            if known is not None:
                return known
            version = (
                instance.protocol if instance.protocol in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE
            )
            params = {"protocolVersion": version, "capabilities": {}, "clientInfo": GATEWAY_INFO}
            ask = {
                "jsonrpc": "2.0",
                "id": next(self._ids),
                "method": "initialize",
                "params": params,
            }
            try:
                headers = self._headers(instance, version, None)
                answer, sid = await post(self._client(), instance, ask, headers, lambda _: None)
                result = answer.get("result")
                if not isinstance(result, dict):
                    raise NotDelivered(
                        f"{instance.service_id} refused initialize: {answer.get('error')}"
                    )
                opened = _Session(sid, str(result.get("protocolVersion") or version))
                done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                headers = self._headers(instance, opened.version, sid)
                await post(self._client(), instance, done, headers, None)
            except (Failed, SessionGone) as exc:  # before the call: it was not delivered
                raise NotDelivered(f"{instance.service_id}: opening a session: {exc}") from exc
            if session in self._ended:  # its client left meanwhile: end it at once
                self._aside_do(partial(self._delete, instance.url, opened))
                raise NotDelivered(f"{instance.service_id}: the client's session has ended")
            self._sessions[key] = opened
            if instance.served:
                self._served.add(instance.url)
            return opened

    async def _sse(
        self, instance: Instance, message: dict[str, Any], session: Hashable, tell: Tell
    ) -> dict[str, Any]:
        key = (session, instance.url)
        async with self._opening.setdefault(key, asyncio.Lock()):
            stream = self._streams.get(key)
            if stream is None or stream.broken is not None:
                if stream is not None:
                    self._aside_do(partial(stream.close))
                stream = await self._open_stream(instance)
                if session in self._ended:
                    self._aside_do(partial(stream.close))
                    raise NotDelivered(f"{instance.service_id}: the client's session has ended")
                self._streams[key] = stream
        # One stream may carry several clients' calls: their progress tokens are the
        # gateway's own there, and the client's again on the way back.
        params = dict(message.get("params") or {})
        meta = dict(params.get("_meta") or {})
        theirs = meta.get("progressToken")
        if theirs is not None:
            meta["progressToken"] = f"gw{message['id']}"
            params["_meta"] = meta
            message = dict(message, params=params)

        def restored(said: dict[str, Any]) -> None:
            p = dict(said.get("params") or {})
            tell(dict(said, params=dict(p, progressToken=theirs)))

        try:
            return await stream.request(message, restored, NotDelivered, Failed)
        except asyncio.CancelledError as exc:
            if CANCEL_UPSTREAM in exc.args:
                why = {"requestId": message.get("id"), "reason": "cancelled at the gateway"}
                cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": why}
                self._aside_do(partial(stream.request, cancel, tell, NotDelivered, Failed))
            raise

    async def _open_stream(self, instance: Instance) -> SseSession:
        headers = self._headers(instance, LATEST_HANDSHAKE, None)
        stream = SseSession(self._client(), instance, headers)
        try:
            await stream.open(NotDelivered)
            answer = await stream.request(
                hello(next(self._ids), GATEWAY_INFO), lambda _: None, NotDelivered, Failed
            )
            if "result" not in answer:
                raise NotDelivered(
                    f"{instance.service_id} refused initialize: {answer.get('error')}"
                )
            done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            await stream.request(done, lambda _: None, NotDelivered, Failed)
        except Failed as exc:  # before the call: it was not delivered
            await stream.close()
            raise NotDelivered(f"{instance.service_id}: opening the stream: {exc}") from exc
        except BaseException:
            await stream.close()
            raise
        return stream

    def _headers(self, instance: Instance, version: str, session_id: str | None) -> dict[str, str]:
        headers = {
            "Accept": ACCEPT,
            "Content-Type": "application/json",
            "MCP-Protocol-Version": version,
        }
        if session_id:
            headers["Mcp-Session-Id"] = session_id
        if self._token is not None and instance.served:  # never to anyone else
            headers["Authorization"] = f"Bearer {self._token}"
        return headers
