"""The settings and containers unit tests build by hand: one set of defaults for all."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bridge.core.config import Settings, load_settings
from bridge.core.model import (
    MANAGED_BY,
    Container,
    PortBinding,
    Registration,
    Stdin,
    service_id,
)

NODE = "n1"
ADVERTISE = "10.0.0.5"
CONTAINER_IP = "172.17.0.2"


def make_settings(**overrides: Any) -> Settings:
    """Every field the label parser and the pass read is given, so the shell's BRIDGE_*
    cannot leak in."""
    values: dict[str, Any] = {
        "node_id": NODE,
        "advertise_address": ADVERTISE,
        "port_range": "11100-11109",
        "reserved_ports": "",
        "label_prefix": "mcp.",
        "name_pattern": "^mcp-",
        "expose": "auto",
        "network": None,
        "deregister_after": "10m",
        "stale_after": "10m",
    }
    values.update(overrides)
    return load_settings(None, **values)


def make_container(
    name: str = "mcp-x",
    labels: Mapping[str, str] | None = None,
    *,
    exposed: Iterable[int] = (8080,),
    published: Mapping[int, tuple[PortBinding, ...]] | None = None,
    networks: Mapping[str, str] | None = None,
    state: str = "running",
    cid: str = "c0ffee00c0ffee00",
    image: str = "example/mcp:1",
    health: str | None = None,
    stdin: Stdin | None = None,
) -> Container:
    return Container(
        id=cid,
        name=name,
        image=image,
        state=state,
        labels=dict(labels or {}),
        exposed_tcp=frozenset(exposed),
        published=dict(published or {}),
        networks={"bridge": CONTAINER_IP} if networks is None else dict(networks),
        health=health,
        stdin=stdin,
    )


def own_service(name: str, port: int, node: str = NODE) -> Registration:
    return Registration(
        service_id=service_id(node, name),
        name=name.removeprefix("mcp-"),
        address="127.0.0.1",
        port=port,
        tags=("mcp",),
        meta={
            "managed_by": MANAGED_BY,
            "bridge_node": node,
            "container_name": name,
            "expose": "proxy",
            "host_port": str(port),
        },
    )
