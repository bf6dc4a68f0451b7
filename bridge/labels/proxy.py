"""The labels that only mean something for a proxy-mode port, where the bridge owns the
port and every connection passes through its forwarder: `tier` (which block of the pool
the port comes from) and `allow` / `max_connections` (who may connect, how many at once).

In `published` and `internal` modes the container's own port is registered and clients
reach it without the bridge, so these labels there are an error that says why, never a
silent no-op. Pure; labels/parse.py calls them after the expose mode is known.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge.core.access import MAX_CONNECTIONS_LIMIT, Access, parse_networks
from bridge.core.config import Settings
from bridge.core.model import ExposeMode
from bridge.labels.values import Bad
from bridge.pool.tiers import UNTIERED

_UNENFORCEABLE = (
    "the bridge cannot enforce it: connections reach the container without passing through"
    " the bridge"
)
_WHY_NOT = {
    "tier": "a tier picks the pool block a proxy port comes from",
    "allow": _UNENFORCEABLE,
    "max_connections": _UNENFORCEABLE,
}


def _proxy_only(suffix: str, raw: str, expose: ExposeMode, prefix: str) -> None:
    if expose is not ExposeMode.PROXY:
        raise Bad(
            suffix,
            raw,
            f"applies only to expose=proxy, and expose is {expose.value} here"
            f" ({_WHY_NOT[suffix]}): remove {prefix}{suffix} or set {prefix}expose=proxy",
        )


def tier(
    own: Mapping[str, str],
    settings: Settings,
    expose: ExposeMode,
    host_port: int | None,
    prefix: str,
) -> str:
    """The tier's name; UNTIERED without the label."""
    raw = own.get("tier")
    layout = settings.tier_layout
    if raw is not None:
        _proxy_only("tier", raw, expose, prefix)
        if raw not in layout.names():
            known = ", ".join(layout.names())
            raise Bad(
                "tier",
                raw,
                f"unknown tier; known: {known}"
                if known
                else "no tiers are configured (BRIDGE_PORT_TIERS)",
            )
    name = raw if raw is not None else UNTIERED
    if host_port is not None and host_port not in layout[name]:
        holder = layout.of(host_port)
        where = f" (it is in tier {holder}: set {prefix}tier={holder})" if holder else ""
        raise Bad("host_port", own["host_port"], f"must be inside {layout[name].describe()}{where}")
    return name


def access(own: Mapping[str, str], settings: Settings, expose: ExposeMode, prefix: str) -> Access:
    """The rules for who may connect; the defaults (BRIDGE_ALLOW, BRIDGE_MAX_CONNECTIONS)
    where the labels say nothing."""
    allow = settings.allow
    raw = own.get("allow")
    if raw is not None:
        _proxy_only("allow", raw, expose, prefix)
        try:
            networks = parse_networks(raw)
        except ValueError as exc:
            reason = f"{exc}; expected addresses and CIDRs, comma-separated"
            raise Bad("allow", raw, reason) from None
        if not networks:
            raise Bad("allow", raw, "names no address; leave the label out to allow everyone")
        allow = tuple(str(n) for n in networks)
    limit = settings.max_connections
    raw = own.get("max_connections")
    if raw is not None:
        _proxy_only("max_connections", raw, expose, prefix)
        if not (raw.isascii() and raw.isdigit() and raw[0] != "0"):
            raise Bad("max_connections", raw, "must be a whole number above 0, digits only")
        limit = int(raw)
        if limit > MAX_CONNECTIONS_LIMIT:
            raise Bad("max_connections", raw, f"must be at most {MAX_CONNECTIONS_LIMIT}")
    return Access(allow, limit)
