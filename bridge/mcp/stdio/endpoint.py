"""A stdio server served as a Streamable HTTP MCP endpoint, to clients of both eras.

POST carries one JSON-RPC message. A request is forwarded on a channel of its own, so its
answer, its progress and any server request made while it runs come back on its own
response: JSON, or an SSE stream when the client accepts one. Handshake-era clients get a
session from the bridge (`initialize` is answered from the bridge's one handshake; GET opens
the session's stream for list changes; DELETE ends it); 2026-07-28 requests are
self-contained and checked as that revision says before they reach the server.

Refused before anything reaches the server, each with its HTTP status and a JSON-RPC error:
a foreign `Origin` (DNS rebinding: only BRIDGE_ALLOWED_ORIGINS, requests without one
pass), a missing bearer token where one is set (401 with a challenge), a body that is not
JSON, too large, a batch, an unknown or ended session (404). None of them disturbs anything
else. While no process is attached, requests are answered 503 with a JSON-RPC error.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bridge.mcp.stdio import eras
from bridge.mcp.stdio.backend import Backend
from bridge.mcp.stdio.connection import Connection
from bridge.mcp.stdio.handshake import Handshake
from bridge.mcp.stdio.http import (
    HANDSHAKE,
    INVALID_REQUEST,
    JSON,
    KEEP_ALIVE,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PER_CONNECTION,
    SERVER_REQUESTS_REFUSED,
    SESSION_HEADER,
    SSE,
    STREAM_HEADERS,
    ServeRules,
    event,
    overloaded,
    refuse,
    rpc_error,
)
from bridge.mcp.stdio.listen import listen
from bridge.mcp.stdio.mux import PROCESS_ENDED, error, params_of
from bridge.mcp.stdio.process import Channel
from bridge.mcp.stdio.sessions import Session, Sessions, SessionsFull
from bridge.mcp.wire import HANDSHAKE_VERSIONS, LOG_LEVEL_KEY


class StdioEndpoint:
    def __init__(self, rules: ServeRules, clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
        self.sessions = Sessions(rules.max_sessions, rules.session_idle, clock)
        self.server: Backend | None = None
        self.shook: Handshake | None = None
        self._keys = itertools.count(1)
        self.connection = Connection()  # log levels and subscriptions, held for many

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(self.rules.path, self.post)
        app.router.add_get(self.rules.path, self.get)
        app.router.add_delete(self.rules.path, self.delete)

    def serve(self, server: Backend, shook: Handshake) -> None:
        """The process to serve from now on (after each attach and handshake)."""
        self.server, self.shook = server, shook

    async def gone(self) -> None:
        """The process ended: its handshake sessions end with it (their ids answer 404)."""
        self.server = self.shook = None
        self.connection.reset()  # the next process starts with nothing set
        for session in self.sessions.end_all():
            _end_streams(session)

    # ---- POST ---------------------------------------------------------------------------

    async def post(self, request: web.Request) -> web.StreamResponse:
        refused = refuse(request, self.rules)
        if refused is not None:
            return refused
        if request.content_type != JSON:
            return rpc_error(415, INVALID_REQUEST, "Content-Type must be application/json")
        body = await self._body(request)
        if body is None:
            return rpc_error(413, INVALID_REQUEST, f"over {self.rules.max_message} bytes")
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            return rpc_error(400, PARSE_ERROR, "Parse error: the body is not JSON")
        if isinstance(message, list):
            return rpc_error(400, INVALID_REQUEST, "batches are not supported")
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return rpc_error(400, INVALID_REQUEST, "not a JSON-RPC 2.0 message")
        server, shook = self.server, self.shook
        if server is None or shook is None or server.ended.is_set():
            return rpc_error(503, PROCESS_ENDED, "the server is not running", message.get("id"))
        said = request.headers.get("MCP-Protocol-Version")
        if said is not None and said not in HANDSHAKE_VERSIONS:  # modern, or unknown: -32022
            return await self._modern(request, message, server, shook)
        return await self._handshake_era(request, message, server, shook)

    async def _body(self, request: web.Request) -> bytes | None:
        """The whole body, or None past max_message (never read further than that)."""
        limit, length = self.rules.max_message, request.content_length
        encoded = request.headers.get("Content-Encoding", "identity").lower() != "identity"
        if length is not None and not encoded:  # the usual case: one read of exactly that
            if length > limit:
                return None
            # (A compressed body's length is the compressed one; content gives it
            # uncompressed, so it is read as a chunked one is, below.) aiohttp 3.14's
            # readexactly(0) at the end of the body raises instead of giving b"".
            return await request.content.readexactly(length) if length else b""
        body = bytearray()
        async for chunk in request.content.iter_chunked(65536):  # read() stops at what came
            body += chunk
            if len(body) > limit:
                return None
        return bytes(body)

    async def _modern(
        self, request: web.Request, message: dict[str, Any], server: Backend, shook: Handshake
    ) -> web.StreamResponse:
        rid = message.get("id")
        try:
            said = {h: request.headers.get(h) for h in eras.CHECKED_HEADERS}
            eras.check_modern(message, said)
        except eras.Unsupported as exc:
            return web.json_response(exc.answer(rid), status=400)
        method = message.get("method")
        if "id" not in message:
            # 2026-07-28 cancels by closing the response, and has no handshake: a client's
            # cancellation (its own id, which the server never saw) and `initialized` stop
            # here; other notifications go on to a modern server.
            passes = shook.era == "modern" and method not in ("notifications/cancelled", *HANDSHAKE)
            if passes and not await server.send(Channel(("modern", "notification")), message):
                return overloaded()
            return web.Response(status=202)
        if not isinstance(method, str) or method in HANDSHAKE:
            why = "initialize is not part of 2026-07-28" if method else "a request names a method"
            return web.json_response(error(rid, METHOD_NOT_FOUND, why), status=404)
        if shook.era == "handshake":
            if method in PER_CONNECTION:  # not in 2026-07-28, which has what replaces them
                why = (
                    f"{method} is not part of 2026-07-28: a request's _meta carries its log"
                    " level, subscriptions/listen its resource subscriptions"
                )
                return web.json_response(error(rid, METHOD_NOT_FOUND, why), status=404)
            if message.get("method") == "server/discover":
                result = eras.discover_result(shook)
                return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})
            if method == "subscriptions/listen":  # list changes, from the shared connection
                key = ("listen", next(self._keys))
                return await listen(request, message, server, shook, key, self.connection)
            return await self._modern_of_handshake(request, message, server, shook)
        # 2026-07-28: closing the response is a cancellation.
        key = ("modern", next(self._keys))
        return await self._forward(request, message, server, key, (), cancel=True)

    async def _modern_of_handshake(
        self, request: web.Request, message: dict[str, Any], server: Backend, shook: Handshake
    ) -> web.StreamResponse:
        """A 2026-07-28 request to a handshake-only server, adapted both ways. Opted in to
        logs (and streamed, and the server logs at all), it gets the server's log messages
        at its level while it runs: they are the one connection's, so the server cannot
        say which request one is for. Nothing else of the connection's news reaches it."""
        method, version = str(message.get("method")), shook.version
        meta = params_of(message).get("_meta")
        asked = meta.get(LOG_LEVEL_KEY) if isinstance(meta, dict) else None
        streams = SSE in request.headers.get("Accept", "")
        logs = asked is not None and streams and "logging" in shook.capabilities
        key = ("modern", next(self._keys))
        member = f"request {key[1]}"

        def adapt(answer: dict[str, Any]) -> dict[str, Any]:
            return eras.to_modern_result(method, version, answer)

        def keep(said: dict[str, Any]) -> bool:  # its progress, and the logs it opted in to
            if said.get("method") == "notifications/message":
                return logs and self.connection.wants(member, said)
            return said.get("method") == "notifications/progress"

        try:
            # A level the server refuses (or no level the revision knows): no logs, the
            # request served all the same.
            logs = logs and not await self.connection.set_level(server, member, asked)
            return await self._forward(
                request, eras.to_handshake_server(message), server, key, (),
                cancel=True, adapt=adapt, listens=logs, keep=keep,
                refusal=SERVER_REQUESTS_REFUSED,
            )  # fmt: skip
        finally:
            self.connection.leave(server, member)

    async def _handshake_era(
        self, request: web.Request, message: dict[str, Any], server: Backend, shook: Handshake
    ) -> web.StreamResponse:
        if message.get("method") == "initialize":
            return await self._initialize(message, server, shook)
        session = await self._session(request)
        if session is None:
            if SESSION_HEADER not in request.headers:
                return rpc_error(400, INVALID_REQUEST, f"{SESSION_HEADER} header required")
            return rpc_error(404, -32001, "session not found", message.get("id"))
        if "method" not in message:  # the answer to a server request it was given
            asker = server.asker_of(str(message.get("id")))
            ours = isinstance(asker, tuple) and asker[0] == session.id
            if ours and not await server.send(Channel(asker), message):
                return overloaded()
            return web.Response(status=202)
        if message.get("method") in PER_CONNECTION and "id" in message:
            return await self._per_connection(message, session, server, shook)
        streams = SSE in request.headers.get("Accept", "")
        if shook.era == "modern":
            if message.get("method") == "ping":  # 2026-07-28 has none: the bridge answers
                return web.json_response({"jsonrpc": "2.0", "id": message.get("id"), "result": {}})
            # Only a streamed answer can carry a server request back to the client.
            declared: dict[str, Any] = {n: {} for n in session.capabilities} if streams else {}
            message = eras.to_modern_server(message, declared)
        if "id" not in message:
            # A cancellation names one of this session's requests, each on its own channel.
            params = params_of(message)
            owner = server.client_of(
                params.get("requestId"), lambda key: isinstance(key, tuple) and key[0] == session.id
            )
            if not await server.send(
                Channel(owner) if owner is not None else session.channel, message
            ):
                return overloaded()
            return web.Response(status=202)
        key = (session.id, next(self._keys))
        session.busy += 1
        try:
            # The handshake era: a disconnect is not a cancellation (the client cancels).
            return await self._forward(
                request, message, server, key, session.capabilities, cancel=False
            )
        finally:
            session.busy -= 1
            self.sessions.touch(session)

    async def _per_connection(
        self, message: dict[str, Any], session: Session, server: Backend, shook: Handshake
    ) -> web.Response:
        """logging/setLevel and resources/(un)subscribe, shared out among the sessions."""
        rid, method = message.get("id"), message.get("method")
        if shook.era == "modern":  # 2026-07-28 has neither: levels and listens go per request
            return web.json_response(error(rid, METHOD_NOT_FOUND, f"{method}: not in 2026-07-28"))
        return web.json_response(await self.connection.request(server, session.id, message))

    async def _session(self, request: web.Request) -> Session | None:
        """The request's session; one found expired on the way is ended properly."""
        session = self.sessions.get(request.headers.get(SESSION_HEADER))
        expired, self.sessions.expired = self.sessions.expired, []
        for gone in expired:
            await self._session_ended(gone)
        return session

    async def _session_ended(self, session: Session) -> None:
        """Its streams and channel closed, its level and subscriptions let go of."""
        _end_streams(session)
        self.connection.leave(self.server, session.id)
        if self.server is not None:
            await self.server.close(session.channel, cancel=False)

    async def _initialize(
        self, message: dict[str, Any], server: Backend, shook: Handshake
    ) -> web.Response:
        rid = message.get("id")
        params = params_of(message)
        requested = params.get("protocolVersion")
        result = eras.initialize_result(shook, requested)
        caps = params.get("capabilities")
        caps = caps if isinstance(caps, dict) else {}
        for idle in self.sessions.idle_ones():
            await self._session_ended(idle)
        try:
            session = self.sessions.new(
                result["protocolVersion"],
                frozenset(k for k in ("sampling", "elicitation", "roots") if k in caps),
                lambda sid: server.open((sid, "session")),
            )
        except SessionsFull as exc:
            return rpc_error(503, INVALID_REQUEST, str(exc), rid)
        answer = {"jsonrpc": "2.0", "id": rid, "result": result}
        return web.json_response(answer, headers={SESSION_HEADER: session.id})

    async def _forward(
        self,
        request: web.Request,
        message: dict[str, Any],
        server: Backend,
        key: Any,
        capabilities: Any,
        *,
        cancel: bool,
        adapt: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        listens: bool = False,
        keep: Callable[[dict[str, Any]], bool] = lambda said: True,
        refusal: str | None = None,
    ) -> web.StreamResponse:
        """One request on a channel of its own; its answer as JSON, or its stream as SSE
        (with its progress, and any server request made for it, before the answer)."""
        streams = SSE in request.headers.get("Accept", "")
        # A JSON answer carries nothing but the answer: a server request for this one
        # could never reach the client, so the channel declares no capability.
        channel = server.open(
            key, capabilities if streams else (), listens=listens and streams, refusal=refusal
        )
        asked = asyncio.ensure_future(server.request(channel, message))
        inbox = channel.queue
        try:
            if streams:
                # Most answers come with nothing before them: then one JSON answer (one
                # write) serves a client that accepts both; SSE only once there is more.
                await inbox.until(asked)
                streams = not inbox.empty()
            if not streams:
                answer = await asked
                return web.json_response(adapt(answer) if adapt else answer)
            response = web.StreamResponse(headers=STREAM_HEADERS)
            await response.prepare(request)
            while True:
                while not inbox.empty():  # what came with the answer goes before it
                    if keep(told := inbox.get_nowait()):
                        await event(response, told)
                if asked.done():
                    break
                await inbox.until(asked)
            answer = asked.result()
            await event(response, adapt(answer) if adapt else answer)
            return response
        finally:
            answered = asked.done() and not asked.cancelled()
            if not asked.done():
                asked.cancel()
            await server.close(channel, cancel=cancel and not answered)

    # ---- GET and DELETE -----------------------------------------------------------------

    async def get(self, request: web.Request) -> web.StreamResponse:
        """A handshake session's stream: list changes and other news from the server."""
        refused = refuse(request, self.rules)
        if refused is not None:
            return refused
        if SSE not in request.headers.get("Accept", ""):
            return web.Response(
                status=406, text="GET opens an SSE stream: Accept text/event-stream"
            )
        session = await self._session(request)
        server = self.server
        if session is None or server is None:
            return rpc_error(404, -32001, "session not found")
        if session.streams:  # each message goes out on one stream only, as the spec says
            return rpc_error(409, INVALID_REQUEST, "this session's stream is already open")
        channel = server.open((session.id, "stream", next(self._keys)), listens=True)
        response = web.StreamResponse(headers=STREAM_HEADERS)
        task = asyncio.current_task()
        session.streams.add(task)
        try:
            await response.prepare(request)
            while True:
                try:
                    said = await asyncio.wait_for(channel.queue.get(), KEEP_ALIVE)
                except TimeoutError:
                    # A comment line now and then: a client that went away is noticed
                    # (the write fails) even where the server does not cancel handlers.
                    await response.write(b": keep-alive\n\n")
                    continue
                if self.connection.wants(session.id, said):  # its log level, its subscriptions
                    await event(response, said)
        except ConnectionResetError:
            return response
        finally:
            session.streams.discard(task)
            self.sessions.touch(session)  # idle from when its stream ended, not before
            await server.close(channel, cancel=False)

    async def delete(self, request: web.Request) -> web.Response:
        refused = refuse(request, self.rules)
        if refused is not None:
            return refused
        session = self.sessions.end(request.headers.get(SESSION_HEADER) or "")
        if session is None:
            return rpc_error(404, -32001, "session not found")
        await self._session_ended(session)
        return web.Response(status=200)

    # ---- who may ask --------------------------------------------------------------------


def _end_streams(session: Session) -> None:
    for stream in list(session.streams):
        stream.cancel()
