"""The rows of `mcp-bridge ports` and /v1/ports: one per allocation, and the use of each
tier. The CLI builds them from a snapshot of the store, the agent's API from its pool."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from bridge.core.model import Allocation, AllocState
from bridge.pool.tiers import UNTIERED, TierLayout, tier_label


def tier_rows(
    layout: TierLayout, reserved: frozenset[int], held: Iterable[int]
) -> list[dict[str, Any]]:
    """Use per tier, for `mcp-bridge ports` and /v1/ports: each named tier in the order
    configured, then the untiered rest (when the tiers leave any); none without tiers."""
    if not layout.names():
        return []
    taken = Counter(layout.of(port) for port in held if port not in reserved)
    rows = []
    for name in [*layout.names(), UNTIERED]:
        tier = layout[name]
        if not tier.spans:
            continue
        size = len(tier) - sum(1 for port in reserved if port in tier)
        rows.append(
            {
                "tier": tier_label(name),
                "ports": str(tier),
                "size": size,
                "used": taken[name],
                "free": size - taken[name],
            }
        )
    return rows


def _tier_of(port: int, layout: TierLayout | None) -> str | None:
    tier = layout.of(port) if layout is not None else None
    return None if tier is None else tier_label(tier)  # None: outside the range


def allocation_row(
    a: Allocation, now: float, stale_after: float, layout: TierLayout | None = None
) -> dict[str, Any]:
    """One allocation as `mcp-bridge ports --json` and the agent's /v1/ports show it."""
    row: dict[str, Any] = {
        "port": a.port,
        "tier": _tier_of(a.port, layout),
        "owner": a.owner,
        "state": a.state.value,
        "kind": a.kind.value,
        "age_s": round(now - a.allocated_at, 3),
        "allocated_at": a.allocated_at,
        "updated_at": a.updated_at,
        "missing_since": a.missing_since,
    }
    if a.state is AllocState.ORPHANED and a.missing_since is not None:
        row["released_in_s"] = round(max(0.0, a.missing_since + stale_after - now), 3)
    return row
