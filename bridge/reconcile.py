"""The reconciler's pure core: what Docker says should exist, against what Consul and the
pool hold, into a plan of actions. No I/O; the agent gathers inputs and applies plans.

Level-triggered: the same inputs always give the same plan, and applying a plan twice
changes nothing the second time, so replayed events and repeated passes are harmless.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from bridge.durations import format_duration
from bridge.model import (
    Allocation,
    CheckKind,
    Container,
    ExposeMode,
    LabelError,
    Registration,
    ServiceSpec,
)
from bridge.ports import BindTest, PoolError, PoolState

MANAGED_BY = "mcp-bridge"
FINGERPRINT = "bridge_fingerprint"
PROBE_META = ("mcp_server_name", "mcp_server_version", "mcp_protocol_version")
# The meta keys the bridge writes itself are listed in labels.BRIDGE_META_KEYS, which
# refuses them in labels.
_UNSPECIFIED_IPS = ("", "0.0.0.0", "::")


def service_id(node_id: str, container_name: str) -> str:
    # Keyed on the name, not the id: a re-created container keeps its service id.
    return f"{node_id}:{container_name}"


def check_id(sid: str, kind: CheckKind) -> str:
    return f"{sid}:{kind.value}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    host_port: int | None


class EndpointError(Exception):
    pass


def published_binding(spec: ServiceSpec) -> tuple[str, int] | None:
    """The host address and port Docker publishes the MCP port on, if it does."""
    bindings = spec.container.published.get(spec.port, ())
    if not bindings:
        return None
    # Prefer an all-interfaces IPv4 binding: that is what `-p 8080:80` gives.
    best = sorted(bindings, key=lambda b: (b.host_ip not in ("", "0.0.0.0"), ":" in b.host_ip))[0]
    return best.host_ip, best.host_port


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
    if check.kind is CheckKind.HTTP:
        host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
        return (
            {
                **common,
                "Name": f"HTTP {check.path}",
                "HTTP": f"http://{host}:{endpoint.port}{check.path}",
                "Interval": format_duration(check.interval),
                "Timeout": format_duration(check.timeout),
            },
        )
    if check.kind is CheckKind.TCP:
        host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
        return (
            {
                **common,
                "Name": "TCP connect",
                "TCP": f"{host}:{endpoint.port}",
                "Interval": format_duration(check.interval),
                "Timeout": format_duration(check.timeout),
            },
        )
    # mcp and docker: the bridge reports. The TTL outlives a few missed reports, so one
    # slow probe or a short bridge restart does not flap the service.
    name = "MCP initialize" if check.kind is CheckKind.MCP else "Docker HEALTHCHECK"
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
    if endpoint.host_port is not None:
        meta["host_port"] = str(endpoint.host_port)
    meta.update({k: v for k, v in (probe_meta or {}).items() if k in PROBE_META})
    reg = Registration(
        service_id=sid,
        name=spec.name,
        address=endpoint.address,
        port=endpoint.port,
        tags=("mcp", *spec.tags),
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


@dataclass(frozen=True, slots=True)
class Plan:
    register: tuple[Registration, ...] = ()
    deregister: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.register or self.deregister)


def plan(
    desired: Mapping[str, Registration],
    actual: Mapping[str, Registration],
    *,
    scope: AbstractSet[str] | None,
    listing_complete: bool,
) -> Plan:
    """Register what is desired and differs; deregister what is ours and not desired.

    `scope`: the service ids this pass looked at (None: everything). `listing_complete`:
    whether a full Docker listing has ever succeeded; before that, an own service we do
    not know about may belong to a container we simply have not seen yet, so it stays.
    """

    def in_scope(sid: str) -> bool:
        return scope is None or sid in scope

    register = tuple(
        d for sid, d in sorted(desired.items()) if in_scope(sid) and differs(d, actual.get(sid))
    )
    deregister = (
        tuple(sid for sid in sorted(actual) if in_scope(sid) and sid not in desired)
        if listing_complete
        else ()
    )
    return Plan(register, deregister)


# ---- the pool's part of a pass ---------------------------------------------------------


@dataclass(slots=True)
class PoolWork:
    """What one pass asks of the pool, applied in one durable transaction."""

    observe: dict[str, bool | None] = field(default_factory=dict)  # name -> running/gone
    present: dict[str, bool] | None = None  # a complete listing: owners not in it are gone
    claims: list[tuple[str, int]] = field(default_factory=list)  # published host ports
    allocations: list[tuple[str, int | None]] = field(default_factory=list)  # name, preferred
    sweep: bool = False


@dataclass(slots=True)
class PoolOutcome:
    ports: dict[str, int] = field(default_factory=dict)
    errors: dict[str, PoolError] = field(default_factory=dict)
    released: list[Allocation] = field(default_factory=list)


def pool_work(
    containers: Sequence[Container],
    specs: Mapping[str, ServiceSpec],
    *,
    complete: bool,
    gone: Iterable[str] = (),
    sweep: bool = False,
) -> PoolWork:
    work = PoolWork(sweep=sweep)
    if complete:
        work.present = {c.name: c.running for c in containers}
    else:
        work.observe = {c.name: c.running for c in containers}
        work.observe.update({name: None for name in gone})
    for name, spec in sorted(specs.items()):
        if not spec.container.running:
            continue
        if spec.expose is ExposeMode.PUBLISHED:
            binding = published_binding(spec)
            if binding is not None:
                work.claims.append((name, binding[1]))
        elif spec.expose is ExposeMode.PROXY:
            work.allocations.append((name, spec.host_port))
    return work


def apply_pool_work(
    state: PoolState,
    work: PoolWork,
    *,
    now: float,
    stale_after: float,
    is_free: BindTest,
) -> PoolOutcome:
    """Runs inside one pool transaction (AsyncPortPool.run): pure over PoolState."""
    out = PoolOutcome()
    if work.present is not None:
        state.observe_all(work.present, now=now)
    for name, running in work.observe.items():
        state.observe(name, running, now=now)
    if work.sweep:
        out.released = state.sweep(now=now, stale_after=stale_after)
    for name, port in work.claims:
        state.claim_external(name, port, now=now)
    for name, preferred in work.allocations:
        try:
            out.ports[name] = state.allocate(
                name, now=now, preferred=preferred, is_free=is_free
            ).port
        except PoolError as exc:
            out.errors[name] = exc
    return out


def skipped_report(errors: Mapping[str, LabelError]) -> list[dict[str, str]]:
    return [
        {"container": e.container, "label": e.label, "value": e.value[:200], "reason": e.reason}
        for _, e in sorted(errors.items())
    ]
