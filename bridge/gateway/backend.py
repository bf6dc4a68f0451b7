"""The one MCP server the gateway's endpoint serves: the union of the datacenter's tools,
each call routed to an instance of the tool's service.

The endpoint (mcp/stdio/endpoint.py, the same one that serves a stdio process) gives it
each client request on a channel of its own and handles sessions and eras; this answers
`tools/list` from the union, sends `tools/call` to an instance (balance.py), and tells
every listening client when the union changes. A call goes to the instance the balancer
chooses; if it was not delivered it goes to another, if it was it is never sent again;
a client's `notifications/cancelled` cancels it upstream too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from bridge.consul.catalog import Instance
from bridge.gateway.balance import Balancer, NoInstance
from bridge.gateway.breaker import BASE_EJECTION
from bridge.gateway.catalog import View
from bridge.gateway.names import Offered, listing
from bridge.gateway.upstream import CANCEL_UPSTREAM, GATEWAY_INFO, Failed, NotDelivered
from bridge.mcp.stdio.eras import ENVELOPE
from bridge.mcp.stdio.handshake import Handshake
from bridge.mcp.stdio.mux import error, params_of
from bridge.mcp.stdio.process import Channel

log = structlog.get_logger("bridge.gateway")

INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601
UNAVAILABLE = -32000  # no instance could take it, or the one that had it failed
TIMED_OUT = -32002
CANCELLED = -32800
STATE_SEP = "~"  # <instance token>~<the instance's requestState>


def gateway_handshake() -> Handshake:
    """What the endpoint tells clients the gateway is (both eras are served from it)."""
    result = {
        "protocolVersion": "2025-11-25",
        "capabilities": {"tools": {"listChanged": True}, "logging": {}},
        "serverInfo": GATEWAY_INFO,
        "instructions": (
            "Every MCP server of this Consul datacenter behind one endpoint: each tool is"
            " named <service>__<tool>."
        ),
    }
    return Handshake("handshake", "2025-11-25", result, any_version=True)


@dataclass(slots=True)
class Outcomes:
    """Calls by how they ended, per instance, for status and metrics."""

    ok: int = 0
    error: int = 0  # an answer that is a JSON-RPC error (the server answering)
    failed: int = 0  # taken, then no answer (never sent again)
    not_delivered: int = 0  # refused before it was sent: tried on another
    timed_out: int = 0
    cancelled: int = 0


class Upstream(Protocol):
    """upstream.py's Upstreams, as the server uses it."""

    async def call(
        self,
        instance: Instance,
        message: dict[str, Any],
        session: Hashable,
        tell: Any,
        input_schema: Any = None,
    ) -> dict[str, Any]: ...

    def end(self, session: Hashable) -> None: ...

    def forget(self, alive: Collection[str]) -> None: ...


class GatewayServer:
    def __init__(
        self,
        upstreams: Upstream,
        *,
        timeout: float,
        ejection: float = BASE_EJECTION,
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[Instance, str, float], None] | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.timeout = timeout
        self.clock = clock
        self.ended = asyncio.Event()  # never set: the gateway lives while it runs
        self.balancer = Balancer(ejection)
        self.view = View()
        self.offered: dict[str, Offered] = {}
        self.outcomes: dict[str, Outcomes] = {}
        self._observe = observe  # metrics (instance, outcome, seconds)
        self._channels: dict[Hashable, Channel] = {}
        self._listening: set[Hashable] = set()
        self._calls: dict[tuple[Hashable, Any], asyncio.Future[dict[str, Any]]] = {}
        self._pins: dict[tuple[str, str], str] = {}  # (session, service) -> instance id
        self._callable: dict[str, dict[str, Instance]] = {}  # the view's, by service and id

    # ---- what the catalog says -----------------------------------------------------------

    def update(self, view: View, offered: dict[str, Offered]) -> None:
        """A new view of Consul and the union of tools made from it."""
        changed = listing(offered) != listing(self.offered)
        self.view, self.offered = view, offered
        self._callable = {s: {i.service_id: i for i in view.callable(s)} for s in view.instances}
        alive = [i for g in view.instances.values() for i in g]
        ids = {i.service_id for i in alive}
        self.balancer.forget(ids)  # what is kept per instance goes with it
        for gone in [sid for sid in self.outcomes if sid not in ids]:
            del self.outcomes[gone]
        self.upstreams.forget({i.url for i in alive})
        if changed:
            note = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
            for key in list(self._listening):
                self._put(key, note)

    # ---- the endpoint's side (mcp/stdio/backend.py) --------------------------------------

    @property
    def listening(self) -> set[Hashable]:
        """Channels told when the union changes (GET streams, listens)."""
        return self._listening

    def open(
        self,
        key: Hashable,
        capabilities: Iterable[str] = (),
        *,
        listens: bool = False,
        refusal: str | None = None,
    ) -> Channel:
        channel = Channel(key)
        self._channels[key] = channel
        if listens:
            self._listening.add(key)
        return channel

    async def close(self, channel: Channel, *, cancel: bool) -> None:
        self._channels.pop(channel.key, None)
        self._listening.discard(channel.key)
        session = _session_of(channel.key)
        if session is not None and _is_session_channel(channel.key):
            for pin in [p for p in self._pins if p[0] == session]:
                del self._pins[pin]
            self.upstreams.end(session)

    async def send(self, channel: Channel, message: dict[str, Any]) -> bool:
        if message.get("method") == "notifications/cancelled":
            call = self._calls.get((channel.key, params_of(message).get("requestId")))
            if call is not None:
                call.cancel(CANCEL_UPSTREAM)
        return True  # nothing else a client tells the gateway goes anywhere

    def asker_of(self, our_id: str) -> Hashable | None:
        return None  # the gateway passes on no server requests

    def client_of(self, client_id: Any, owned: Callable[[Hashable], bool]) -> Hashable | None:
        for key, rid in self._calls:
            if rid == client_id and owned(key):
                return key
        return None

    def submit(self, channel: Channel, message: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        return asyncio.ensure_future(self.request(channel, message))

    async def request(self, channel: Channel, message: dict[str, Any]) -> dict[str, Any]:
        rid, method = message.get("id"), message.get("method")
        if method == "ping" or method == "logging/setLevel":
            return {"jsonrpc": "2.0", "id": rid, "result": {}}
        if method == "tools/list":
            return {"jsonrpc": "2.0", "id": rid, "result": {"tools": listing(self.offered)}}
        if method == "tools/call":
            return await self._call(channel, message)
        why = f"{method}: the gateway serves tools only (no prompts or resources)"
        return error(rid, METHOD_NOT_FOUND, why)

    # ---- a call --------------------------------------------------------------------------

    async def _call(self, channel: Channel, message: dict[str, Any]) -> dict[str, Any]:
        rid, params = message.get("id"), params_of(message)
        offered = self.offered.get(str(params.get("name")))
        if offered is None:
            return error(rid, INVALID_PARAMS, f"unknown tool {params.get('name')!r}")
        up_params = {**params, "name": offered.tool}
        meta = {k: v for k, v in (params.get("_meta") or {}).items() if k not in ENVELOPE}
        up_params.pop("_meta", None)
        if meta:
            up_params["_meta"] = meta
        pinned = self._unwrap_state(up_params)
        session = _session_of(channel.key)
        tried: list[str] = []
        while True:
            try:
                instance = self._choose(offered.service, session, pinned, tried)
            except NoInstance as exc:
                return error(rid, UNAVAILABLE, str(exc))
            schema = offered.definition.get("inputSchema")
            forwarded = dict(message, params=up_params)
            outcome, answer = await self._one(channel, instance, forwarded, schema)
            if outcome != "not_delivered":
                live = session is not None and (session, "session") in self._channels
                if outcome == "ok" and session is not None and live:  # not ended meanwhile
                    self._pins[(session, offered.service)] = instance.service_id
                return self._wrap_state(answer, instance) if outcome == "ok" else answer
            tried.append(instance.service_id)
            if pinned is not None:
                return error(rid, UNAVAILABLE, f"{instance.service_id} that began it is away")

    def _choose(
        self, service: str, session: str | None, pinned: str | None, tried: list[str]
    ) -> Instance:
        instances = self._callable.get(service, {})
        now = self.clock()
        if pinned is not None:
            chosen = self.balancer.pinned(pinned, list(instances), now)
        else:
            sticky = self._pins.get((session, service)) if session is not None else None
            chosen = self.balancer.choose(
                service, list(instances), now, sticky=sticky, exclude=tried
            )
        return instances[chosen]

    async def _one(
        self, channel: Channel, instance: Instance, message: dict[str, Any], schema: Any
    ) -> tuple[str, dict[str, Any]]:
        """One try on one instance: (outcome, the answer for the client)."""
        rid, where = message.get("id"), instance.service_id
        started = self.clock()
        session = _session_of(channel.key) or "stateless"
        call = asyncio.ensure_future(
            self.upstreams.call(
                instance, message, session, lambda m: self._put(channel.key, m), schema
            )
        )
        self._calls[(channel.key, rid)] = call
        # Exactly one of these per try, whatever ends it: the balancer's count of calls in
        # flight (and a half-open trial) is released on every path.
        outcome, answer = "left", error(rid, CANCELLED, "the client went away")
        try:
            async with asyncio.timeout(self.timeout):
                answer = await asyncio.shield(call)
            outcome = "error" if "error" in answer else "ok"
        except NotDelivered as exc:
            outcome, answer = "not_delivered", error(rid, UNAVAILABLE, str(exc))
            log.warning(
                "gateway_not_delivered", instance=where, service=instance.service, error=str(exc)
            )
        except Failed as exc:
            outcome = "failed"
            answer = error(rid, UNAVAILABLE, f"{exc}; it may have run, so it was not sent again")
            log.warning(
                "gateway_call_failed", instance=where, service=instance.service, error=str(exc)
            )
        except TimeoutError:
            call.cancel(CANCEL_UPSTREAM)
            outcome = "timed_out"
            answer = error(rid, TIMED_OUT, f"{where} did not answer within {self.timeout:g}s")
        except asyncio.CancelledError:
            if not call.cancelled() or asyncio.current_task().cancelling():  # type: ignore[union-attr]
                # The client went away. In 2026-07-28 that is its cancellation, to be heard
                # upstream; in the handshake era it is not (the call runs on, unheard).
                call.cancel(CANCEL_UPSTREAM if _session_of(channel.key) is None else None)
                raise
            outcome, answer = "cancelled", error(rid, CANCELLED, CANCEL_UPSTREAM)
        except Exception as exc:  # a fault of the gateway's own: said, and counted failed
            outcome = "failed"
            answer = error(rid, UNAVAILABLE, f"{where}: {type(exc).__name__}: {exc}")
            log.exception("gateway_call_broke", instance=where, service=instance.service)
        finally:
            self._calls.pop((channel.key, rid), None)
            self._account(instance, outcome, started)
        return outcome, answer

    def _account(self, instance: Instance, outcome: str, started: float) -> None:
        where, now = instance.service_id, self.clock()
        if outcome in ("cancelled", "left"):  # neither the instance's success nor its fault
            self.balancer.release(where)
        elif self.balancer.done(where, now, ok=outcome in ("ok", "error")):
            log.warning("gateway_instance_ejected", instance=where, service=instance.service)
        if outcome == "left":
            outcome = "cancelled"
        counts = self.outcomes.setdefault(where, Outcomes())
        setattr(counts, outcome, getattr(counts, outcome) + 1)
        if self._observe is not None:
            self._observe(instance, outcome, now - started)

    # ---- requestState: a 2026-07-28 retry goes back where it began ------------------------

    def _unwrap_state(self, params: dict[str, Any]) -> str | None:
        state = params.get("requestState")
        if not isinstance(state, str) or STATE_SEP not in state:
            return None
        instance, _, theirs = state.partition(STATE_SEP)
        params["requestState"] = theirs
        return instance

    def _wrap_state(self, answer: dict[str, Any], instance: Instance) -> dict[str, Any]:
        result = answer.get("result")
        if isinstance(result, dict) and isinstance(result.get("requestState"), str):
            state = f"{instance.service_id}{STATE_SEP}{result['requestState']}"
            return dict(answer, result={**result, "requestState": state})
        return answer

    def _put(self, key: Hashable, message: dict[str, Any]) -> None:
        channel = self._channels.get(key)
        if channel is not None:
            channel.queue.put_nowait(message)


def _session_of(key: Hashable) -> str | None:
    """A handshake-era client's session id, from its channels' keys (the endpoint's
    `(session id, n)`), or None for a 2026-07-28 client."""
    if isinstance(key, tuple) and key and isinstance(key[0], str):
        first = key[0]
        if first not in ("modern", "listen", "mcp-bridge"):
            return first
    return None


def _is_session_channel(key: Hashable) -> bool:
    return isinstance(key, tuple) and len(key) == 2 and key[1] == "session"
