"""The reconciler's pure core: what Docker says should exist, against what Consul and the
pool hold, into a plan of actions. No I/O; loop/passes.py gathers the inputs and applies.

Level-triggered: the same inputs always give the same plan, and applying a plan twice
changes nothing the second time, so replayed events and repeated passes are harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TypeVar

from bridge.core.config import Settings
from bridge.core.model import (
    CheckKind,
    CheckTarget,
    Container,
    ExposeMode,
    ForwardTarget,
    LabelError,
    Registration,
    ServiceSpec,
    StdioTarget,
    Transport,
    check_id,
    parse_service_id,
    service_id,
)
from bridge.core.net import url_host
from bridge.core.registration import (
    Endpoint,
    EndpointError,
    build_registration,
    differs,
    resolve_endpoint,
)
from bridge.labels.parse import parse_labels
from bridge.pool.allocator import PoolExhausted
from bridge.pool.tiers import TierLayout
from bridge.pool.work import PoolOutcome

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Scope:
    """The containers one pass speaks for: every one (a full pass), or these names.

    Whatever a pass did not look at, it must not change: its plan, its forwarder and
    check updates and its status bookkeeping are all bounded by its scope.
    """

    node_id: str
    names: frozenset[str] | None = None  # None: everything

    @property
    def full(self) -> bool:
        return self.names is None

    @property
    def services(self) -> frozenset[str] | None:
        """The service ids in scope (None: all)."""
        if self.names is None:
            return None
        return frozenset(service_id(self.node_id, n) for n in self.names)

    def covers(self, name: str) -> bool:
        return self.names is None or name in self.names

    def covers_service(self, sid: str) -> bool:
        return self.names is None or parse_service_id(sid)[1] in self.names

    def merge_into(self, target: MutableMapping[str, V], fresh: Mapping[str, V]) -> None:
        """Replace what `target` says about the containers in scope with `fresh`."""
        if self.names is None:
            target.clear()
        else:
            for name in self.names:
                target.pop(name, None)
        target.update(fresh)


@dataclass(frozen=True, slots=True)
class ManagedService:
    spec: ServiceSpec
    registration: Registration
    # Something to tell the operator about a service that is registered all the same: a
    # port kept outside its tier since BRIDGE_PORT_TIERS changed.
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Waiting:
    """Why a managed container has no service yet."""

    reason: str
    kind: str | None = None  # the metrics error kind, when waiting is an error


@dataclass(slots=True)
class Desired:
    """What a pass wants: services by container name, and who waits for what."""

    services: dict[str, ManagedService] = field(default_factory=dict)
    waiting: dict[str, Waiting] = field(default_factory=dict)

    @property
    def registrations(self) -> dict[str, Registration]:
        return {m.registration.service_id: m.registration for m in self.services.values()}

    def hold_back(self, failed: Mapping[str, str], kind: str) -> None:
        """Services whose forwarder failed (service id -> why) wait instead of registering:
        Consul must never advertise a port nothing listens on."""
        for sid, reason in failed.items():
            name = parse_service_id(sid)[1]
            self.services.pop(name, None)
            self.waiting[name] = Waiting(reason, kind)


def read_labels(
    containers: Iterable[Container], settings: Settings
) -> tuple[dict[str, ServiceSpec], dict[str, LabelError]]:
    """Specs and label errors of the running containers, by container name."""
    specs: dict[str, ServiceSpec] = {}
    skipped: dict[str, LabelError] = {}
    for container in containers:
        if not container.running:
            # No service without a running container; and before it runs, Docker reports
            # neither its address nor its ports, so its labels can't be judged.
            continue
        result = parse_labels(container, settings)
        if isinstance(result, LabelError):
            skipped[container.name] = result
        elif result is not None:
            specs[container.name] = result
    return specs, skipped


def desired_services(
    specs: Mapping[str, ServiceSpec],
    pool: PoolOutcome,
    *,
    advertise: str,
    node_id: str,
    probe_meta: Mapping[str, Mapping[str, str]],
    tiers: TierLayout | None = None,
) -> Desired:
    desired = Desired()
    for name, spec in specs.items():
        error = pool.errors.get(name)
        if error is not None:
            kind = "pool_exhausted" if isinstance(error, PoolExhausted) else None
            desired.waiting[name] = Waiting(str(error), kind)
            continue
        try:
            endpoint = resolve_endpoint(spec, pool.ports.get(name), advertise)
        except EndpointError as exc:
            desired.waiting[name] = Waiting(str(exc))
            continue
        sid = service_id(node_id, name)
        reg = build_registration(spec, endpoint, node_id, probe_meta.get(sid))
        desired.services[name] = ManagedService(spec, reg, _tier_note(spec, endpoint, tiers))
    return desired


def _tier_note(spec: ServiceSpec, endpoint: Endpoint, tiers: TierLayout | None) -> str | None:
    """A pool port kept though it is no longer in the container's tier: sticky ports are
    never moved behind a running service's back, but the operator should know."""
    port = endpoint.host_port
    if tiers is None or spec.expose is not ExposeMode.PROXY or port is None:
        return None
    if port in tiers[spec.tier]:
        return None
    now_in = tiers.of(port)
    return (
        f"port {port} is outside {tiers[spec.tier].describe()}"
        + (f" (it is in tier {now_in})" if now_in else "")
        + ": a container keeps its port when the tiers (or its mcp.tier) change; to move it,"
        " set mcp.host_port to a free port of the tier"
    )


def forward_targets(services: Iterable[ManagedService]) -> dict[str, ForwardTarget]:
    return {
        m.registration.service_id: ForwardTarget(
            m.registration.port, m.spec.address or "", m.spec.port, m.spec.access
        )
        for m in services
        if m.spec.expose is ExposeMode.PROXY and m.spec.transport is not Transport.STDIO
    }


def stdio_targets(services: Iterable[ManagedService]) -> dict[str, StdioTarget]:
    """The stdio servers to serve, each on its pool port."""
    return {
        m.registration.service_id: StdioTarget(
            m.registration.port,
            m.spec.container.id,
            m.spec.container.name,
            m.spec.path,
            m.spec.access,
        )
        for m in services
        if m.spec.transport is Transport.STDIO
    }


def _probe_url(m: ManagedService) -> str:
    reg, spec = m.registration, m.spec
    if spec.expose is ExposeMode.PROXY and spec.access.restricts and spec.address:
        # Straight to the container, as the forwarder itself connects: an allow list that
        # leaves out the bridge's own address, or a full connection limit, must not make
        # the service critical, and a probe must not take a client's connection slot.
        return f"http://{url_host(spec.address)}:{spec.port}{spec.path}"
    # Through the registered address and port: the whole path is tested.
    return f"http://{url_host(reg.address)}:{reg.port}{spec.path}"


def check_targets(
    services: Iterable[tuple[str, ManagedService]], registered: AbstractSet[str]
) -> dict[str, CheckTarget]:
    """The checks the bridge reports itself, for services Consul holds."""
    targets = {}
    for name, m in services:
        reg, spec = m.registration, m.spec
        kind = spec.check.kind
        if kind not in (CheckKind.MCP, CheckKind.DOCKER) or reg.service_id not in registered:
            continue
        targets[reg.service_id] = CheckTarget(
            service_id=reg.service_id,
            service=reg.name,
            container=name,
            check_id=check_id(reg.service_id, kind),
            kind=kind,
            url=_probe_url(m),
            transport=reg.meta.get("transport", spec.transport.value),
            interval=spec.check.interval,
            timeout=spec.check.timeout,
            tools=spec.tools,
            stdio=spec.transport is Transport.STDIO,
        )
    return targets


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
    first_full_pass_done: bool,
) -> Plan:
    """Register what is desired and differs; deregister what is ours and not desired.

    `scope`: the service ids this pass looked at (None: everything). Before the first full
    pass (a complete Docker listing), an own service we do not know about may belong to a
    container we simply have not seen yet, so it stays (probation).
    """

    def in_scope(sid: str) -> bool:
        return scope is None or sid in scope

    register = tuple(
        d for sid, d in sorted(desired.items()) if in_scope(sid) and differs(d, actual.get(sid))
    )
    deregister = (
        tuple(sid for sid in sorted(actual) if in_scope(sid) and sid not in desired)
        if first_full_pass_done
        else ()
    )
    return Plan(register, deregister)


def gone_names(
    listed: Sequence[Container], known: Mapping[str, AbstractSet[str]]
) -> frozenset[str]:
    """Names the looked-at container ids were known by that no listed container holds now:
    destroyed containers, and the old names of renamed ones."""
    holding = {c.name for c in listed}
    return frozenset(n for names in known.values() for n in names) - holding


def records_to_forget(
    base: str,
    *,
    withdrawn: Iterable[str],
    listed: Iterable[str] | None,
    keep: AbstractSet[str],
) -> tuple[str, ...]:
    """Own tool records to delete: those of withdrawn services, and, when a full pass
    listed the keys under `base` (`<prefix>/<node id>/`), any whose service does not keep
    a tool inventory (a crash between deregistering and deleting leaves such a key)."""
    forget = {f"{base}{sid}/tools" for sid in withdrawn}
    for key in listed or ():
        sid, _, leaf = key.removeprefix(base).partition("/")
        # Only tool records: `<base>owner` is the node id's lock (consul/ownership.py).
        if key.startswith(base) and leaf == "tools" and sid not in keep:
            forget.add(key)
    return tuple(sorted(forget))
