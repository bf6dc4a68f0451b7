"""Who may connect to a proxy-mode port: an allow list of addresses and networks
(`mcp.allow`, BRIDGE_ALLOW) and a limit of concurrent connections (`mcp.max_connections`,
BRIDGE_MAX_CONNECTIONS). The forwarder decides on accept, before anything reaches the
container; in `published` and `internal` modes connections do not pass through the bridge,
so it cannot decide there (labels/parse.py refuses the labels).

This is network access control, not authentication: who a client is, is the MCP server's
business (MCP authorization).

Deciding is a few set lookups, however long the list: networks are grouped by prefix
length, and an address is masked once per length present (at most 33 for IPv4, 129 for
IPv6) and looked up in that length's set.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_CONNECTIONS_LIMIT = 1_000_000


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.0/8, 192.0.2.7, 2001:db8::/32` -> networks (an address is its /32 or /128).
    Raises ValueError naming the first bad item."""
    networks: list[Network] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            hint = ""
            if "host bits set" in str(exc):
                hint = f" (did you mean {ipaddress.ip_network(item, strict=False)}?)"
            raise ValueError(f"{item!r} is not an address or network{hint}") from None
    return tuple(networks)


class AllowList:
    """A compiled allow list; `permits` answers for one source address."""

    def __init__(self, networks: Iterable[Network]) -> None:
        by_length: dict[tuple[int, int], set[int]] = {}
        for net in networks:
            key = (net.version, net.prefixlen)
            by_length.setdefault(key, set()).add(int(net.network_address))
        # Longest prefixes first: the usual host entries are found at once.
        self._v4 = [
            (((1 << 32) - 1) ^ ((1 << (32 - plen)) - 1), nets)
            for (version, plen), nets in sorted(by_length.items(), key=lambda i: -i[0][1])
            if version == 4
        ]
        self._v6 = [
            (((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1), nets)
            for (version, plen), nets in sorted(by_length.items(), key=lambda i: -i[0][1])
            if version == 6
        ]

    def permits(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])  # drop an IPv6 zone
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
        value = int(ip)
        table = self._v4 if ip.version == 4 else self._v6
        return any(value & mask in nets for mask, nets in table)


@functools.lru_cache(maxsize=1024)
def compile_allow(allow: tuple[str, ...]) -> AllowList | None:
    """None for an empty list: everyone may connect."""
    if not allow:
        return None
    return AllowList(ipaddress.ip_network(n) for n in allow)


@dataclass(frozen=True, slots=True)
class Access:
    """One service's rules, as its labels (or the defaults) give them."""

    allow: tuple[str, ...] = ()  # networks, normalised ("10.0.0.0/8"); empty: anyone
    max_connections: int = 0  # concurrent; 0: no limit
    # Compiled once per rule set (shared through compile_allow's cache), not per connection.
    _allowed: AllowList | None = field(init=False, default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allowed", compile_allow(self.allow))

    @property
    def restricts(self) -> bool:
        return bool(self.allow or self.max_connections)

    def refuse(self, address: str, active: int) -> str | None:
        """Why a connection from `address` is refused ("address", "limit"), or None.
        `active`: the service's connections open now, this one not counted."""
        allowed = self._allowed
        if allowed is not None and not allowed.permits(address):
            return "address"
        if self.max_connections and active >= self.max_connections:
            return "limit"
        return None

    def meta(self) -> dict[str, str]:
        """What goes to Consul meta (values are at most 512 characters there)."""
        shown = ",".join(self.allow) or "any"
        if len(shown) > 512:
            shown = f"{len(self.allow)} networks (mcp-bridge status --json lists them)"
        limit = str(self.max_connections) if self.max_connections else "unlimited"
        return {"access_allow": shown, "access_max_connections": limit}
