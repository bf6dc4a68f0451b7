"""Port tiers: named blocks of the pool's range (BRIDGE_PORT_TIERS), each its own
wrap-around pool, and the untiered rest of the range for containers without `mcp.tier`.

Pure: a layout is computed once from the settings; the allocator asks it which tier a port
is in and in what order to walk a tier's ports.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from bridge.core.model import PortRange, parse_port_range

UNTIERED = ""  # the tier name of the part of the range no tier owns
UNTIERED_LABEL = "untiered"  # how reports, metrics and tags name it
TIER_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class Tier:
    name: str  # UNTIERED for the rest of the range
    spans: tuple[PortRange, ...]  # ascending, disjoint

    def __contains__(self, port: object) -> bool:
        return any(port in span for span in self.spans)

    def __len__(self) -> int:
        return sum(len(span) for span in self.spans)

    def ports(self) -> Iterator[int]:
        for span in self.spans:
            yield from range(span.low, span.high + 1)

    def after(self, cursor: int | None) -> Iterator[int]:
        """Every port of the tier once, starting just after `cursor` (the last port handed
        out), wrapping at the top; from the bottom when the cursor is not in the tier."""
        if cursor is None or cursor not in self:
            yield from self.ports()
            return
        for span in self.spans:
            if span.high > cursor:
                yield from range(max(span.low, cursor + 1), span.high + 1)
        for span in self.spans:
            if span.low > cursor:
                break
            yield from range(span.low, min(span.high, cursor) + 1)

    def __str__(self) -> str:
        return ",".join(str(span) for span in self.spans) or "no ports"

    def describe(self) -> str:
        """How errors and logs name it."""
        if self.name == UNTIERED:
            return f"the untiered ports ({self})"
        return f"tier {self.name} ({self})"


def tier_label(name: str) -> str:
    """How reports, metrics, logs and tags name a tier ("untiered" for the rest)."""
    return name or UNTIERED_LABEL


def parse_tiers(value: object) -> tuple[tuple[str, PortRange], ...]:
    """`core=9000-9019,business=9020-9039` -> ((name, range), ...), in the order given."""
    if isinstance(value, tuple):
        return value
    tiers: list[tuple[str, PortRange]] = []
    for item in str(value).split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, span = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"expected NAME=LOW-HIGH, got {item!r} (e.g. core=9000-9019)")
        if not TIER_NAME.fullmatch(name):
            raise ValueError(f"tier name {name!r}: expected 1-32 lower-case letters, digits or '-'")
        if name == UNTIERED_LABEL:
            raise ValueError(f"tier name {name!r} is taken: it names the ports no tier owns")
        if any(name == seen for seen, _ in tiers):
            raise ValueError(f"tier {name} is named twice")
        try:
            tiers.append((name, parse_port_range(span.strip())))
        except ValueError as exc:
            raise ValueError(f"tier {name}: {exc}") from None
    return tuple(tiers)


def check_tiers(tiers: Sequence[tuple[str, PortRange]], port_range: PortRange) -> None:
    """Inside the range and apart from each other; raises ValueError naming the tier."""
    for name, span in tiers:
        if span.low not in port_range or span.high not in port_range:
            raise ValueError(f"tier {name} ({span}) is not inside BRIDGE_PORT_RANGE {port_range}")
    ordered = sorted(tiers, key=lambda t: t[1].low)
    for (a, span_a), (b, span_b) in itertools.pairwise(ordered):
        if span_b.low <= span_a.high:
            raise ValueError(f"tiers {a} ({span_a}) and {b} ({span_b}) overlap")


class TierLayout:
    """The range cut into the named tiers and the untiered rest."""

    def __init__(self, port_range: PortRange, tiers: Iterable[tuple[str, PortRange]] = ()) -> None:
        named = tuple(tiers)
        check_tiers(named, port_range)
        self.port_range = port_range
        self.tiers: dict[str, Tier] = {name: Tier(name, (span,)) for name, span in named}
        rest: list[PortRange] = []
        low = port_range.low
        for span in sorted((span for _, span in named), key=lambda s: s.low):
            if span.low > low:
                rest.append(PortRange(low, span.low - 1))
            low = span.high + 1
        if low <= port_range.high:
            rest.append(PortRange(low, port_range.high))
        self.tiers[UNTIERED] = Tier(UNTIERED, tuple(rest))

    def __getitem__(self, name: str) -> Tier:
        return self.tiers[name]

    @property
    def tiered(self) -> bool:
        """BRIDGE_PORT_TIERS names at least one tier (else all is the untiered rest)."""
        return len(self.tiers) > 1

    def names(self) -> list[str]:
        """The named tiers, in the order configured (UNTIERED not among them)."""
        return [n for n in self.tiers if n != UNTIERED]

    def of(self, port: int) -> str | None:
        """The tier a port is in; None outside the range."""
        if port not in self.port_range:
            return None
        for name, tier in self.tiers.items():
            if name != UNTIERED and port in tier:
                return name
        return UNTIERED


@functools.cache
def layout_for(port_range: PortRange, tiers: tuple[tuple[str, PortRange], ...]) -> TierLayout:
    """One layout per configuration (labels ask for it on every pass)."""
    return TierLayout(port_range, tiers)
