"""Requests whose effect is per connection, made by sessions that share one connection.

A stdio server has one MCP connection, the bridge's, so `logging/setLevel` and
`resources/subscribe` would act for every session if passed through: one session's
`debug` would flood all, one session's unsubscribe would silence the others. The bridge
virtualises them:

- the server is asked for the most verbose level any session set, and each session gets
  the log messages at or above its own level only; when no session holds a level any
  more, the server is asked for `info` again;
- a resource is subscribed at the server while at least one session wants it (counted),
  and its updates go to those sessions only.

Pure: the endpoint asks what to send to the server and whom a message is for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# RFC 5424 severities, as MCP names them, least severe first.
LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
QUIET = "info"  # asked for when the last session that set a level is gone


@dataclass(slots=True)
class Shared:
    levels: dict[str, str] = field(default_factory=dict)  # session -> its level
    sent_level: str | None = None  # what the server was last asked for
    subscribers: dict[str, set[str]] = field(default_factory=dict)  # uri -> sessions

    def set_level(self, session: str, level: str) -> str | None:
        """The level to ask the server for now, or None when it stays as it is."""
        self.levels[session] = level
        return self._server_level()

    def subscribe(self, session: str, uri: str) -> bool:
        """True when the server must be asked (the first session that wants `uri`)."""
        wanting = self.subscribers.setdefault(uri, set())
        first = not wanting
        wanting.add(session)
        return first

    def unsubscribe(self, session: str, uri: str) -> bool:
        """True when the server must be told (the last session that wanted `uri` left)."""
        wanting = self.subscribers.get(uri)
        if not wanting or session not in wanting:
            return False
        wanting.discard(session)
        if wanting:
            return False
        del self.subscribers[uri]
        return True

    def forget(self, session: str) -> tuple[str | None, list[str]]:
        """A session ended: the level to ask for now (or None), the uris to unsubscribe."""
        self.levels.pop(session, None)
        released = [uri for uri in list(self.subscribers) if self.unsubscribe(session, uri)]
        return self._server_level(), released

    def wants(self, session: str, message: dict[str, Any]) -> bool:
        """Whether a notification for every listener is this session's."""
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        method = message.get("method")
        if method == "notifications/message":
            own = self.levels.get(session)
            return own is None or _rank(params.get("level")) >= _rank(own)
        if method == "notifications/resources/updated":
            return session in self.subscribers.get(str(params.get("uri")), ())
        return True

    def _server_level(self) -> str | None:
        # Once the bridge has set a level, the server keeps it: when nobody holds one any
        # more it goes back to QUIET, lest one client's `debug` outlive it for everyone.
        quiet = QUIET if self.sent_level is not None else None
        wanted = min(self.levels.values(), key=_rank, default=quiet)
        if wanted is None or wanted == self.sent_level:
            return None
        self.sent_level = wanted
        return wanted


def _rank(level: Any) -> int:
    return LEVELS.index(level) if level in LEVELS else len(LEVELS)
