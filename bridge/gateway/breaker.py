"""Outlier detection per upstream instance, as Envoy does it, on the gateway's own calls.

Consul's checks run every few seconds at best; an instance that starts failing calls now
should stop getting them now. So each instance has a breaker:

- **closed**: calls go to it. A call that fails for the transport's reasons (refused, reset,
  timed out, HTTP 5xx: not a JSON-RPC error, which is the server answering) counts; a
  success resets the count. `CONSECUTIVE` failures in a row eject it.
- **open** (ejected): no call goes to it for the base ejection time (Envoy's
  `base_ejection_time`, BRIDGE_GATEWAY_EJECTION, 30 s by default) times the number of
  times it has been ejected, at most ten times the base (Envoy's 30 s and 300 s): an
  instance that keeps failing stays out longer each time.
- **half-open**: the time is up; exactly one trial call goes to it. Success closes the
  breaker; failure ejects it again, for longer. `CONSECUTIVE` successes in a row while
  closed forget past ejections.

Pure: the gateway tells it what happened and asks whether a call may go; the clock is
passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

CONSECUTIVE = 5  # Envoy's consecutive_5xx and consecutive_gateway_failure default
BASE_EJECTION = 30.0  # Envoy's base_ejection_time
LONGEST = 10  # times the base: Envoy's max_ejection_time (300 s) over its base


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(slots=True)
class Breaker:
    failures: int = 0  # in a row, while closed
    successes: int = 0  # in a row, while closed
    ejections: int = 0  # times ejected (the ejection time's multiplier)
    open_until: float = 0.0
    trial: bool = False  # the half-open trial call is under way
    state: State = State.CLOSED
    base: float = BASE_EJECTION  # seconds out for a first ejection

    def allows(self, now: float) -> bool:
        """May a new call go to this instance now (claims the half-open trial)?"""
        if self.state is State.OPEN and now >= self.open_until:
            self.state, self.trial = State.HALF_OPEN, False
        return self.state is State.CLOSED or (self.state is State.HALF_OPEN and not self.trial)

    def started(self) -> None:
        if self.state is State.HALF_OPEN:
            self.trial = True

    def succeeded(self) -> None:
        if self.state is State.HALF_OPEN:
            self.state, self.trial, self.failures, self.successes = State.CLOSED, False, 0, 0
            return
        self.failures = 0
        self.successes += 1
        if self.successes >= CONSECUTIVE:
            self.ejections = 0

    def failed(self, now: float) -> bool:
        """A call failed; True when this ejected the instance."""
        self.successes = 0
        if self.state is State.HALF_OPEN or (
            self.state is State.CLOSED and self.failures + 1 >= CONSECUTIVE
        ):
            self.ejections += 1
            self.state, self.trial, self.failures = State.OPEN, False, 0
            self.open_until = now + self.base * min(self.ejections, LONGEST)
            return True
        if self.state is State.CLOSED:
            self.failures += 1
        return False

    def shown(self, now: float) -> str:
        """For status: the state, and for how long it stays open."""
        if self.state is State.OPEN and now < self.open_until:
            return f"open ({self.open_until - now:.0f}s left)"
        if self.state is State.OPEN:
            return State.HALF_OPEN.value
        return self.state.value
