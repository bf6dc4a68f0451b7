"""Addresses and ports on this host: the few socket facts several modules need.

One place for them, so IPv4 and IPv6 are handled the same way everywhere.
"""

from __future__ import annotations

import socket
from collections.abc import Callable


def is_ipv6(address: str) -> bool:
    return ":" in address


def url_host(address: str) -> str:
    """The address as it stands in a URL or host:port: IPv6 in brackets."""
    return f"[{address}]" if is_ipv6(address) else address


def family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if is_ipv6(address) else socket.AF_INET


def bind_test(host: str) -> Callable[[int], bool]:
    """True when `port` can be bound and listened on at `host` right now.

    SO_REUSEADDR makes a port in TIME_WAIT count as free, as it is for our own listener.
    """
    address_family = family(host)

    def can_bind(port: int) -> bool:
        with socket.socket(address_family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
                sock.listen(1)
            except OSError:
                return False
            return True

    return can_bind


def detect_advertise_address() -> str:
    """The address of the interface with the default route; 127.0.0.1 without one.

    A UDP connect sends nothing: it only asks the kernel which source address it would use.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1, never routed anywhere real
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
