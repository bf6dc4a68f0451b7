"""Which instance of a service gets a call.

Among the instances Consul has healthy whose breaker lets a call through: the fewest calls
in flight; ties spread in turn (round robin per service), so one client's calls in fresh
sessions do not all land on the first instance. A handshake-era client session sticks to
the instance that began it for as long as that instance can take calls (the server may
keep state per session); a 2026-07-28 retry carrying `requestState` goes back to the
instance that issued it, or fails, since no other could read it.

Pure, with the state it keeps (calls in flight, breakers, turns); the clock is passed in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from bridge.gateway.breaker import BASE_EJECTION, Breaker


class NoInstance(Exception):
    """No instance can take the call; the message says why."""


@dataclass(slots=True)
class Balancer:
    ejection: float = BASE_EJECTION  # an instance's first time out (breaker.py)
    in_flight: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    breakers: defaultdict[str, Breaker] = field(init=False)
    _turn: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))

    def __post_init__(self) -> None:
        self.breakers = defaultdict(lambda: Breaker(base=self.ejection))

    def choose(
        self,
        service: str,
        instances: Sequence[str],
        now: float,
        *,
        sticky: str | None = None,
        exclude: Collection[str] = (),
    ) -> str:
        """An instance id of `instances` (the service's healthy ones, in a stable order),
        its call counted as started; `exclude`: tried already for this call."""
        open_ = [i for i in instances if i not in exclude and self.breakers[i].allows(now)]
        if not open_:
            raise NoInstance(self._why(service, instances, exclude, now))
        if sticky in open_:
            chosen = sticky
        else:
            fewest = min(self.in_flight.get(i, 0) for i in open_)
            tied = [i for i in open_ if self.in_flight.get(i, 0) == fewest]
            chosen = tied[self._turn[service] % len(tied)]
            self._turn[service] += 1
        self.in_flight[chosen] += 1
        self.breakers[chosen].started()
        return chosen

    def pinned(self, instance: str, instances: Sequence[str], now: float) -> str:
        """The one instance a call must go to (it issued the `requestState` it carries)."""
        if instance not in instances:
            raise NoInstance(f"instance {instance} that began this request is gone")
        self.in_flight[instance] += 1
        self.breakers[instance].started()
        return instance

    def done(self, instance: str, now: float, *, ok: bool) -> bool:
        """The call ended; `ok`: not a transport failure. True when the instance was
        ejected by it."""
        self.in_flight[instance] = max(0, self.in_flight[instance] - 1)
        if not self.in_flight[instance]:
            del self.in_flight[instance]
        breaker = self.breakers[instance]
        if ok:
            breaker.succeeded()
            return False
        return breaker.failed(now)

    def release(self, instance: str) -> None:
        """The call ended neither well nor badly (the client cancelled or left): counted
        out, and a half-open trial given back, the breaker otherwise as it was."""
        self.in_flight[instance] = max(0, self.in_flight[instance] - 1)
        if not self.in_flight[instance]:
            del self.in_flight[instance]
        self.breakers[instance].trial = False

    def forget(self, keep: Collection[str]) -> None:
        """Instances Consul no longer lists lose their breakers (a new one starts afresh)."""
        for instance in [i for i in self.breakers if i not in keep]:
            del self.breakers[instance]

    def _why(
        self, service: str, instances: Sequence[str], exclude: Collection[str], now: float
    ) -> str:
        if not instances:
            return f"no healthy instance of {service} in Consul"
        left = [i for i in instances if i not in exclude]
        if not left:
            return f"every instance of {service} failed to take the call: {', '.join(exclude)}"
        soonest = min(self.breakers[i].open_until for i in left) - now
        return (
            f"every instance of {service} is ejected after failing calls"
            f" (the next is tried again in {max(soonest, 0):.0f}s)"
        )
