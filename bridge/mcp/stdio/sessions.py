"""Handshake-era sessions of a served stdio server: each client's own `Mcp-Session-Id`.

The server process has one MCP connection, the bridge's; each client of the handshake era
gets a session of its own from the bridge: an unguessable id (256 random bits), the
revision it was answered with, the client capabilities it declared (a server request is
routed to it only for those), and when it was last used. An unknown, ended or idle-expired
id is answered 404, as the transport says, so the client starts a new session. Pure but
for the clock it is given.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.mcp.stdio.process import Channel


@dataclass(eq=False)
class Session:
    id: str
    version: str
    capabilities: frozenset[str]
    channel: Channel
    last_used: float
    log_level: str | None = None  # what this session asked with logging/setLevel
    streams: set[Any] = field(default_factory=set)  # its open GET streams
    busy: int = 0  # its requests under way: a session in use does not expire


class SessionsFull(Exception):
    """BRIDGE_STDIO_MAX_SESSIONS sessions are open on this server."""


class Sessions:
    def __init__(self, limit: int, idle: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.idle = idle
        self._clock = clock
        self._by_id: dict[str, Session] = {}
        self.expired: list[Session] = []  # ended by `get`, their clean-up not done yet

    def __len__(self) -> int:
        return len(self._by_id)

    def new(
        self, version: str, capabilities: frozenset[str], channel_for: Callable[[str], Channel]
    ) -> Session:
        if len(self._by_id) >= self.limit:
            raise SessionsFull(f"{self.limit} sessions are open on this server")
        sid = secrets.token_urlsafe(32)
        session = Session(sid, version, capabilities, channel_for(sid), self._clock())
        self._by_id[sid] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        """The session, or None when unknown or expired (idle too long with no stream
        open: it is ended here, and waits in `expired` for its clean-up)."""
        session = self._by_id.get(sid) if sid else None
        if session is None:
            return None
        now = self._clock()
        if self._idle(session, now):
            del self._by_id[session.id]
            self.expired.append(session)
            return None
        session.last_used = now
        return session

    def _idle(self, session: Session, now: float) -> bool:
        return not session.streams and not session.busy and now - session.last_used >= self.idle

    def touch(self, session: Session) -> None:
        """Used until now: a request answered, a stream that ended."""
        session.last_used = self._clock()

    def end(self, sid: str) -> Session | None:
        return self._by_id.pop(sid, None)

    def idle_ones(self) -> list[Session]:
        """Sessions unused for `idle` seconds and with no stream open: ended here."""
        now = self._clock()
        gone = [s for s in self._by_id.values() if self._idle(s, now)]
        for session in gone:
            del self._by_id[session.id]
        return gone

    def end_all(self) -> list[Session]:
        gone, self._by_id = list(self._by_id.values()), {}
        return gone
