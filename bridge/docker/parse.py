"""Docker's wire shapes into model data: listing rows, inspects, events and /version, as
Docker Engine and Podman's compatible API send them. Pure: no calls, no client."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bridge.core.model import PODMAN, Container, ContainerEvent, EngineVersion, PortBinding, Stdin

_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def _in_order(published: Mapping[int, list[PortBinding]]) -> dict[int, tuple[PortBinding, ...]]:
    return {
        p: tuple(sorted(b, key=lambda x: (x.host_ip, x.host_port))) for p, b in published.items()
    }


def _networks(settings: Mapping[str, Any] | None) -> dict[str, str]:
    """NetworkSettings.Networks, which a listing row and an inspect share: name -> address."""
    networks = (settings or {}).get("Networks") or {}
    return {net: (info or {}).get("IPAddress") or "" for net, info in networks.items()}


# States whose ports are the container's: a stopped one has none, as Docker lists and
# inspects it (Podman's listing and inspect both keep a stopped container's ports).
PORTS_WHEN = frozenset({"running", "paused", "restarting"})


def parse_row(row: Mapping[str, Any]) -> Container:
    """One row of GET /containers/json into a Container. Tolerates missing fields."""
    names = [str(n) for n in row.get("Names") or []]
    # A container that others --link to also carries "/<linker>/<alias>" names, and the
    # engine may list one of those first: its own name is the one with no inner "/".
    own = [n for n in names if "/" not in n.lstrip("/")]
    name = (own[0] if own else names[0] if names else str(row.get("Id", ""))[:12]).lstrip("/")
    exposed: set[int] = set()
    published: dict[int, list[PortBinding]] = {}
    for port in (row.get("Ports") or []) if row.get("State") in PORTS_WHEN else []:
        if port.get("Type") != "tcp" or not isinstance(port.get("PrivatePort"), int):
            continue
        private = port["PrivatePort"]
        exposed.add(private)
        public = port.get("PublicPort")
        if isinstance(public, int) and public > 0:
            published.setdefault(private, []).append(PortBinding(port.get("IP") or "", public))
    health = _HEALTH.search(str(row.get("Status") or ""))
    return Container(
        id=str(row.get("Id", "")),
        name=name,
        image=str(row.get("Image", "")),
        state=str(row.get("State", "")),
        labels=dict(row.get("Labels") or {}),
        exposed_tcp=frozenset(exposed),
        published=_in_order(published),
        networks=_networks(row.get("NetworkSettings")),
        health=None if health is None else health.group(1).removeprefix("health: "),
    )


def parse_inspect(obj: Mapping[str, Any]) -> Container:
    """GET /containers/{id}/json into the same Container its listing row gives."""
    config = obj.get("Config") or {}
    settings = obj.get("NetworkSettings") or {}
    state = obj.get("State") or {}
    exposed: set[int] = set()
    published: dict[int, list[PortBinding]] = {}
    # The ports of the running container, as the listing shows them (not Config's).
    ports = (settings.get("Ports") or {}) if state.get("Status") in PORTS_WHEN else {}
    for key in ports:
        number, _, proto = str(key).partition("/")
        if proto == "tcp" and number.isdigit():
            exposed.add(int(number))
    for key, bindings in ports.items():
        number, _, proto = str(key).partition("/")
        if proto != "tcp" or not number.isdigit():
            continue
        for b in bindings or []:
            host_port = str(b.get("HostPort") or "")
            if host_port.isdigit() and int(host_port) > 0:
                published.setdefault(int(number), []).append(
                    PortBinding(b.get("HostIp") or "", int(host_port))
                )
    health = (state.get("Health") or {}).get("Status")
    return Container(
        id=str(obj.get("Id", "")),
        name=str(obj.get("Name", "")).lstrip("/"),
        image=str(config.get("Image", "")),
        state=str(state.get("Status", "")),
        labels=dict(config.get("Labels") or {}),
        exposed_tcp=frozenset(exposed),
        published=_in_order(published),
        networks=_networks(settings),
        health=health if health in ("healthy", "unhealthy", "starting") else None,
        stdin=parse_stdin(config, obj.get("HostConfig") or {}),
    )


def parse_version(info: Mapping[str, Any]) -> EngineVersion:
    """GET /version: Podman names itself among the components ("Podman Engine")."""
    components = info.get("Components") or []
    podman = any(str((c or {}).get("Name", "")).startswith(PODMAN) for c in components)
    return EngineVersion(
        str(info.get("Version", "")),
        str(info.get("ApiVersion", "")),
        PODMAN if podman else "Docker Engine",
    )


def parse_stdin(config: Mapping[str, Any], host_config: Mapping[str, Any]) -> Stdin:
    return Stdin(
        open=bool(config.get("OpenStdin")),
        tty=bool(config.get("Tty")),
        once=bool(config.get("StdinOnce")),
        host_network=host_config.get("NetworkMode") == "host",
    )


def parse_event(raw: Any) -> ContainerEvent | None:
    if not isinstance(raw, dict):
        return None
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    if raw.get("Type") == "network":
        # connect/disconnect change a container's address: look at that container again.
        # Docker names the container in the attributes (the actor is the network); Podman
        # names none there: its actor is the container.
        container = attributes.get("container") or actor.get("ID")
        action = str(raw.get("Action") or "")
        if action not in ("connect", "disconnect") or not container:
            return None
        return ContainerEvent(container_id=str(container), action=f"network_{action}", name=None)
    if raw.get("Type", "container") != "container":
        return None
    container_id = actor.get("ID") or raw.get("id")
    if not container_id:
        return None
    action = str(raw.get("Action") or raw.get("status") or "")
    old_name = attributes.get("oldName")
    nanos = raw.get("timeNano")
    return ContainerEvent(
        container_id=str(container_id),
        action=action,
        name=attributes.get("name"),
        old_name=old_name.lstrip("/") if isinstance(old_name, str) else None,
        time=nanos / 1e9 if isinstance(nanos, int) else None,
    )
