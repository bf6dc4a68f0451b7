"""One stdio server process, many clients: JSON-RPC ids and progress tokens that never
collide on the shared stdin, and every answer given to the client that asked.

Pure: no I/O and no clock of its own. The endpoint hands it what a client sent or a line the
server wrote, and gets back what to write to the server and what to deliver to which
client. This is where the faults of the tools that went before are prevented:

- Fixed or client-chosen ids on a shared stdin let two clients' answers cross. Every
  request is written with an id of the bridge's own, `<nonce>.<n>`, and its answer is given
  back under the client's id to that client only.
- The nonce is new for every attach, so an answer a still-running process writes for an id
  sent before the bridge restarted (or before a re-attach) matches nothing: it is dropped
  and counted (`stray`), never delivered to whoever now holds the same number.
- A client whose request is pending when the process ends gets a JSON-RPC error at once,
  not silence (`end`).
- Progress tokens are per connection in MCP, so they are rewritten the same way, and a
  server's progress goes to the one client whose request carried the token.
- A server request (sampling, elicitation, roots) goes to a client only when the bridge can
  tell which client it concerns and that client said it can answer; otherwise the server
  gets a JSON-RPC error at once instead of waiting on nobody.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge.mcp.wire import SUBSCRIPTION_ID_KEY

ClientKey = Hashable  # a session, or one request's stream: whatever the endpoint keys by
JsonId = str | int

# The JSON-RPC error the bridge answers with when it, not the server, ends a request.
PROCESS_ENDED = -32000
NOT_ROUTABLE = -32001
TIMED_OUT = -32002
OVERLOADED = -32005  # the server is not reading its input (process.OUTBOX_LIMIT)
CANCELLED = -32800  # the client cancelled it: what its own still-open request is told
INVALID_REQUEST = -32600

# Requests answered only when their stream ends (2026-07-28's listen): no timeout applies.
LONG_LIVED = frozenset({"subscriptions/listen"})

# The bridge's own requests (its one handshake, the health round trip): the only client
# that may send `initialize`, and never one a server request is for.
BRIDGE_KEY = ("mcp-bridge", "own requests")

# Server-to-client requests, and the client capability each needs.
CLIENT_CAPABILITY = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message for one client."""

    client: ClientKey
    message: dict[str, Any]


@dataclass(slots=True)
class Outcome:
    """What one input makes happen: lines for the server's stdin, messages for clients."""

    to_server: list[dict[str, Any]] = field(default_factory=list)
    to_clients: list[Delivery] = field(default_factory=list)
    done: list[ClientKey] = field(default_factory=list)  # clients whose request was answered

    def extend(self, other: Outcome) -> None:
        self.to_server += other.to_server
        self.to_clients += other.to_clients
        self.done += other.done


@dataclass(frozen=True, slots=True)
class Pending:
    client: ClientKey
    client_id: JsonId
    method: str
    progress: Any = None  # the client's own progress token, when it gave one
    our_token: str | None = None  # the token the server was given instead
    sent_at: float = 0.0


@dataclass(slots=True)
class Client:
    capabilities: frozenset[str] = frozenset()  # of sampling, elicitation, roots
    listens: bool = False  # takes notifications meant for every client (list changes)
    refusal: str | None = None  # why no server request can reach it, whatever it declared


def error(request_id: JsonId | None, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


class Mux:
    def __init__(self, nonce: str) -> None:
        self.nonce = nonce  # new for every attach: ids of an earlier one never match
        self._next = 0
        self.pending: dict[str, Pending] = {}  # our id -> who asked
        self._progress: dict[str, str] = {}  # our progress token -> our request id
        self._asked: dict[str, tuple[ClientKey, JsonId]] = {}  # our id -> server request
        self.clients: dict[ClientKey, Client] = {}
        self.stray = 0  # answers to ids this attach never sent (dropped)

    def _mint(self, kind: str = "") -> str:
        self._next += 1
        return f"{self.nonce}.{kind}{self._next}"

    # ---- clients --------------------------------------------------------------------

    def open(
        self,
        client: ClientKey,
        capabilities: Iterable[str] = (),
        *,
        listens: bool = False,
        refusal: str | None = None,
    ) -> None:
        self.clients[client] = Client(frozenset(capabilities), listens, refusal)

    def close(self, client: ClientKey, *, cancel: bool) -> Outcome:
        """The client is gone. `cancel`: its pending requests are cancelled at the server
        (2026-07-28, where closing the stream is a cancellation); otherwise they run on and
        their answers are dropped (the handshake era: a disconnect is not a cancellation)."""
        self.clients.pop(client, None)
        out = Outcome()
        for our_id, pending in list(self.pending.items()):
            if pending.client == client:
                self._forget(our_id)
                if cancel:
                    out.to_server.append(_cancelled(our_id, "the client went away"))
        for our_id, (asker, _) in list(self._asked.items()):
            if asker == client:
                out.extend(self._refuse_asked(our_id, "the client went away"))
        return out

    def client_of(self, client_id: Any, owned: Callable[[ClientKey], bool]) -> ClientKey | None:
        """The channel of a pending request with this client id, among those `owned` (a
        session's requests each have a channel of their own)."""
        for pending in self.pending.values():
            if pending.client_id == client_id and owned(pending.client):
                return pending.client
        return None

    def in_flight(self) -> int:
        """Clients' requests the server has not answered yet (not the bridge's own, not
        listen streams, which stay open by design)."""
        return sum(
            1
            for p in self.pending.values()
            if not _bridges(p.client) and p.method not in LONG_LIVED
        )

    def asker_of(self, our_id: str) -> ClientKey | None:
        """Who was given the server request the bridge numbered `our_id`."""
        asked = self._asked.get(our_id)
        return asked[0] if asked else None

    # ---- client -> server -----------------------------------------------------------

    def request(self, client: ClientKey, message: dict[str, Any], now: float = 0.0) -> Outcome:
        """A client's request, written under an id of the bridge's own."""
        if message.get("method") == "initialize" and client != BRIDGE_KEY:
            # A live process has had its one handshake, the bridge's: a second one is
            # refused by some servers and confuses others.
            refusal = error(
                message.get("id"), INVALID_REQUEST, "the bridge did this server's handshake"
            )
            return Outcome(to_clients=[Delivery(client, refusal)], done=[client])
        our_id = self._mint()
        rewritten = dict(message, id=our_id)
        params = message.get("params")
        token = ours = None
        if isinstance(params, dict) and isinstance(params.get("_meta"), dict):
            token = params["_meta"].get("progressToken")
            if token is not None:
                ours = self._mint("p")
                self._progress[ours] = our_id
                meta = dict(params["_meta"], progressToken=ours)
                rewritten["params"] = dict(params, _meta=meta)
        method = str(message.get("method"))
        self.pending[our_id] = Pending(client, message["id"], method, token, ours, now)
        return Outcome(to_server=[rewritten])

    def notify(self, client: ClientKey, message: dict[str, Any]) -> Outcome:
        """A client's notification. A cancellation names the client's id: it is rewritten
        to ours, and dropped when that request is not (or no longer) pending."""
        if message.get("method") == "notifications/cancelled":
            params = params_of(message)
            for our_id, pending in self.pending.items():
                if pending.client == client and pending.client_id == params.get("requestId"):
                    self._forget(our_id)
                    # The server hears of it; the client's own request is told too, so
                    # whatever waits on it (an open HTTP response) ends now.
                    told = _failed(pending, CANCELLED, "cancelled by the client")
                    return Outcome(
                        to_server=[dict(message, params=dict(params, requestId=our_id))],
                        to_clients=[told],
                        done=[pending.client],
                    )
            return Outcome()
        if message.get("method") == "notifications/initialized":
            return Outcome()  # the bridge did the handshake; the server had its one
        return Outcome(to_server=[message])

    def respond(self, client: ClientKey, message: dict[str, Any]) -> Outcome:
        """A client's answer to a server request it was given."""
        asked = self._asked.get(str(message.get("id")))
        if asked is None or asked[0] != client:
            return Outcome()  # not this client's to answer
        del self._asked[str(message["id"])]
        return Outcome(to_server=[dict(message, id=asked[1])])

    # ---- server -> clients ----------------------------------------------------------

    def from_server(self, message: dict[str, Any]) -> Outcome:
        method = message.get("method")
        if method is None:
            return self._answer(message)
        if "id" in message:
            return self._server_request(message)
        return self._notification(message)

    def _answer(self, message: dict[str, Any]) -> Outcome:
        pending = self._forget(str(message.get("id")))
        if pending is None:
            self.stray += 1
            return Outcome()
        answer = dict(message, id=pending.client_id)
        return Outcome(to_clients=[Delivery(pending.client, answer)], done=[pending.client])

    def _notification(self, message: dict[str, Any]) -> Outcome:
        params = params_of(message)
        if message.get("method") == "notifications/progress":
            our_id = self._progress.get(str(params.get("progressToken")))
            pending = self.pending.get(our_id) if our_id else None
            if pending is None:
                return Outcome()  # progress of a request that is over: nobody to tell
            restored = dict(message, params=dict(params, progressToken=pending.progress))
            return Outcome(to_clients=[Delivery(pending.client, restored)])
        if message.get("method") == "notifications/cancelled":
            for our_id, (asker, server_id) in list(self._asked.items()):
                if server_id == params.get("requestId"):  # the server withdrew its request
                    del self._asked[our_id]
                    withdrawn = dict(message, params=dict(params, requestId=our_id))
                    return Outcome(to_clients=[Delivery(asker, withdrawn)])
            pending = self._forget(str(params.get("requestId")))
            if pending is None:
                return Outcome()
            reason = str(params.get("reason") or "cancelled by the server")
            return Outcome(
                to_clients=[_failed(pending, PROCESS_ENDED, reason)],
                done=[pending.client],
            )
        subscription = _subscription_of(params)
        if subscription is not None:  # 2026-07-28: news on one client's listen stream
            pending = self.pending.get(subscription)
            if pending is None:
                return Outcome()  # a listen that is over: nobody to tell
            meta = {**params["_meta"], SUBSCRIPTION_ID_KEY: pending.client_id}
            restored = dict(message, params={**params, "_meta": meta})
            return Outcome(to_clients=[Delivery(pending.client, restored)])
        # Everything else (list changes, log messages, resource updates) is for whoever
        # listens; filtering per session is the endpoint's (log levels, subscriptions).
        return Outcome(
            to_clients=[Delivery(c, message) for c, state in self.clients.items() if state.listens]
        )

    def _server_request(self, message: dict[str, Any]) -> Outcome:
        method = str(message.get("method"))
        needed = CLIENT_CAPABILITY.get(method)
        askers = {p.client for p in self.pending.values() if not _bridges(p.client)}
        if method == "ping":
            return Outcome(to_server=[{"jsonrpc": "2.0", "id": message["id"], "result": {}}])
        if needed is None:
            why = f"mcp-bridge does not route {method} to clients"
        elif len(askers) != 1:
            why = (
                f"mcp-bridge cannot tell which client {method} is for:"
                f" {len(askers)} clients have requests in flight"
            )
        else:
            (client,) = askers
            state = self.clients.get(client)
            if state is not None and state.refusal is not None:
                return Outcome(to_server=[error(message["id"], NOT_ROUTABLE, state.refusal)])
            if state is not None and needed in state.capabilities:
                our_id = self._mint("s")
                self._asked[our_id] = (client, message["id"])
                return Outcome(to_clients=[Delivery(client, dict(message, id=our_id))])
            why = f"the client this {method} is for did not declare the {needed} capability"
        return Outcome(to_server=[error(message["id"], NOT_ROUTABLE, why)])

    def _refuse_asked(self, our_id: str, why: str) -> Outcome:
        _, server_id = self._asked.pop(our_id)
        return Outcome(to_server=[error(server_id, NOT_ROUTABLE, why)])

    # ---- endings ----------------------------------------------------------------------

    def end(self, why: str) -> Outcome:
        """The process ended (or the attach was lost): every pending request is answered
        at once with an error naming why; server requests die with it."""
        out = Outcome()
        for our_id in list(self.pending):
            pending = self._forget(our_id)
            assert pending is not None
            out.to_clients.append(_failed(pending, PROCESS_ENDED, why))
            out.done.append(pending.client)
        self._asked.clear()
        return out

    def expire(self, now: float, timeout: float) -> Outcome:
        """Requests older than `timeout` (BRIDGE_STDIO_REQUEST_TIMEOUT): the client gets an
        error, the server a cancellation."""
        out = Outcome()
        for our_id, pending in list(self.pending.items()):
            if pending.method in LONG_LIVED:
                continue
            if now - pending.sent_at >= timeout:
                self._forget(our_id)
                why = f"no answer from the server within {timeout:g} s"
                out.to_server.append(_cancelled(our_id, why))
                out.to_clients.append(_failed(pending, TIMED_OUT, why))
                out.done.append(pending.client)
        return out

    def _forget(self, our_id: str) -> Pending | None:
        pending = self.pending.pop(our_id, None)
        if pending is not None and pending.our_token is not None:
            self._progress.pop(pending.our_token, None)
        return pending


def _cancelled(our_id: str, why: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": our_id, "reason": why},
    }


def _bridges(client: ClientKey) -> bool:
    """The bridge's own channels (its handshake, health check, shared requests)."""
    return isinstance(client, tuple) and client[:1] == BRIDGE_KEY[:1]


def _failed(pending: Pending, code: int, why: str) -> Delivery:
    return Delivery(pending.client, error(pending.client_id, code, why))


def _subscription_of(params: dict[str, Any]) -> str | None:
    meta = params.get("_meta")
    said = meta.get(SUBSCRIPTION_ID_KEY) if isinstance(meta, dict) else None
    return said if isinstance(said, str) else None


def params_of(message: dict[str, Any]) -> dict[str, Any]:
    params = message.get("params")
    return params if isinstance(params, dict) else {}
