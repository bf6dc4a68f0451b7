"""One container's Consul registration, built from its spec: pure, no I/O.

Endpoint (address and port per expose mode), checks, meta and a fingerprint of all of it,
so that a pass re-registers a service only when something it controls has changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.core.durations import format_duration
from bridge.core.model import (
    MANAGED_BY,
    CheckKind,
    ExposeMode,
    Registration,
    ServiceSpec,
    Transport,
    check_id,
    published_binding,
    service_id,
)
from bridge.core.net import url_host

FINGERPRINT = "bridge_fingerprint"
# What the bridge's own MCP check learns and puts in meta; not part of the fingerprint
# (a probe must not look like a change of the container), compared on their own.
PROBE_META = (
    "mcp_server_name",
    "mcp_server_version",
    "mcp_protocol_version",
    "mcp_tools",
    "mcp_tools_hash",
    "mcp_auth",  # required: behind MCP authorization
)
# The meta keys the bridge writes itself are listed in labels.BRIDGE_META_KEYS, which
# refuses them in labels.
_UNSPECIFIED_IPS = ("", "0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    host_port: int | None


class EndpointError(Exception):
    pass


def resolve_endpoint(spec: ServiceSpec, pool_port: int | None, advertise: str) -> Endpoint:
    if spec.expose is ExposeMode.PUBLISHED:
        binding = published_binding(spec)
        if binding is None:
            raise EndpointError(f"container does not publish port {spec.port}")
        host_ip, host_port = binding
        address = advertise if host_ip in _UNSPECIFIED_IPS else host_ip
        return Endpoint(address, host_port, host_port)
    if spec.expose is ExposeMode.PROXY:
        if pool_port is None:
            raise EndpointError("no pool port yet")
        return Endpoint(advertise, pool_port, pool_port)
    if not spec.address:
        raise EndpointError(f"container has no address on network {spec.network}")
    return Endpoint(spec.address, spec.port, None)


def build_checks(spec: ServiceSpec, sid: str, endpoint: Endpoint) -> tuple[dict[str, object], ...]:
    check = spec.check
    if check.kind is CheckKind.NONE:
        return ()
    common: dict[str, object] = {
        "CheckID": check_id(sid, check.kind),
        "DeregisterCriticalServiceAfter": format_duration(check.deregister_after),
    }
    if check.kind in (CheckKind.HTTP, CheckKind.TCP):
        where = f"{url_host(endpoint.address)}:{endpoint.port}"
        native: dict[str, object] = (
            {"Name": f"HTTP {check.path}", "HTTP": f"http://{where}{check.path}"}
            if check.kind is CheckKind.HTTP
            else {"Name": "TCP connect", "TCP": where}
        )
        return (
            {
                **common,
                **native,
                "Interval": format_duration(check.interval),
                "Timeout": format_duration(check.timeout),
            },
        )
    # mcp and docker: the bridge reports. The TTL outlives a few missed reports, so one
    # slow probe or a short bridge restart does not flap the service.
    name = "MCP" if check.kind is CheckKind.MCP else "Docker HEALTHCHECK"
    return (
        {
            **common,
            "Name": name,
            "TTL": format_duration(check.interval * 3 + check.timeout),
            "Status": "critical",
            "Notes": f"reported by mcp-bridge every {format_duration(check.interval)}",
        },
    )


def _fingerprint(reg: Registration) -> str:
    body = {
        "name": reg.name,
        "address": reg.address,
        "port": reg.port,
        "tags": list(reg.tags),
        "meta": {k: v for k, v in reg.meta.items() if k != FINGERPRINT and k not in PROBE_META},
        "checks": list(reg.checks),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def build_registration(
    spec: ServiceSpec,
    endpoint: Endpoint,
    node_id: str,
    probe_meta: Mapping[str, str] | None = None,
) -> Registration:
    container = spec.container
    sid = service_id(node_id, container.name)
    meta: dict[str, str] = dict(spec.meta)
    meta.update(
        {
            "managed_by": MANAGED_BY,
            "bridge_node": node_id,
            "container_id": container.id,
            "container_name": container.name,
            "image": container.image[:512],
            "container_port": str(spec.port),
            "expose": spec.expose.value,
            "transport": spec.transport.value,
            "path": spec.path,
        }
    )
    if spec.transport is Transport.STDIO:
        # Clients speak Streamable HTTP to the registered address (the bridge serves the
        # process); what the container itself speaks is kept apart.
        del meta["container_port"]
        meta["transport"] = Transport.STREAMABLE_HTTP.value
        meta["container_transport"] = Transport.STDIO.value
    if endpoint.host_port is not None:
        meta["host_port"] = str(endpoint.host_port)
    tags: tuple[str, ...] = ("mcp", *spec.tags)
    if spec.tier:
        meta["port_tier"] = spec.tier
        tags = (*tags, f"tier-{spec.tier}")
    if spec.expose is ExposeMode.PROXY:  # enforced by the forwarder; for the Consul UI
        meta.update(spec.access.meta())
    meta.update({k: v for k, v in (probe_meta or {}).items() if k in PROBE_META})
    reg = Registration(
        service_id=sid,
        name=spec.name,
        address=endpoint.address,
        port=endpoint.port,
        tags=tags,
        meta=meta,
        checks=build_checks(spec, sid, endpoint),
    )
    return Registration(
        reg.service_id,
        reg.name,
        reg.address,
        reg.port,
        reg.tags,
        {**meta, FINGERPRINT: _fingerprint(reg)},
        reg.checks,
    )


def differs(desired: Registration, actual: Registration | None) -> bool:
    """Whether Consul must be told: compares what we control, not what Consul adds."""
    if actual is None:
        return True
    keys = (FINGERPRINT, *PROBE_META)
    return any(desired.meta.get(k) != actual.meta.get(k) for k in keys)
