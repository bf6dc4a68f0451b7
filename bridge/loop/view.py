"""What the agent believes: the view a pass updates, and the report of `mcp-bridge status`
and /v1/status built from it (with each check's state as Consul holds it). The ports' rows
are the surface's (surface/ports.py): they need only the pool."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from bridge.core.model import (
    EngineVersion,
    ExposeMode,
    ForwarderCounters,
    LabelError,
    Registration,
    ServiceSpec,
    StdioReading,
    Transport,
    parse_service_id,
)
from bridge.core.protocols import ConsulAPI, ConsulRejected, ConsulUnavailable
from bridge.core.reconcile import ManagedService, Waiting

if TYPE_CHECKING:
    from bridge.loop.metrics import Metrics
    from bridge.loop.passes import PassResult
    from bridge.loop.triggers import Pending

V = TypeVar("V")
log = structlog.get_logger("bridge.agent")

# Engine 28 filters packets from other hosts addressed to container IPs (and 28.2 added
# the daemon option to allow them): an `internal` registration may work from this host
# only. doctor says the same.
DIRECT_ROUTING_HINT = (
    "Engine 28+ drops traffic from other hosts to container addresses: set"
    ' "allow-direct-routing": true in daemon.json (Engine 28.2+), or create the network'
    " with -o com.docker.network.bridge.gateway_mode_ipv4=routed, or use expose=proxy or"
    " published"
)


def changed(old: Mapping[str, V], fresh: Mapping[str, V]) -> dict[str, V]:
    """The entries of `fresh` that are new or different: what to report once, not on
    every pass (a container's label error is logged when it appears, not every resync)."""
    return {k: v for k, v in fresh.items() if old.get(k) != v}


@dataclass(slots=True)
class View:
    registered: dict[str, Registration] = field(default_factory=dict)  # own, as Consul holds
    managed: dict[str, ManagedService] = field(default_factory=dict)  # by container name
    skipped: dict[str, LabelError] = field(default_factory=dict)  # container name -> why
    waiting: dict[str, Waiting] = field(default_factory=dict)  # container name -> why
    probe_meta: dict[str, dict[str, str]] = field(default_factory=dict)  # sid -> mcp_* meta
    first_full_pass_done: bool = False
    docker_connected: bool = False
    engine: EngineVersion | None = None  # the engine's version, as the watch last saw it
    consul_reachable: bool = False
    failures: int = 0  # passes failed in a row
    passes: int = 0
    last_pass: dict[str, Any] = field(default_factory=dict)  # its kind, scope and step times

    @property
    def ready(self) -> bool:
        """Docker and Consul answer, a full pass is done, and the last pass applied cleanly
        (a Consul that answers but refuses our writes leaves us not ready)."""
        return (
            self.docker_connected
            and self.consul_reachable
            and self.first_full_pass_done
            and self.failures == 0
        )

    @property
    def waits_on_consul(self) -> bool:
        """A container waits on something that clears by itself (the fleet's registry
        unreachable while Consul has no leader or this host is cut off)."""
        return any(w.kind == "consul_unavailable" for w in self.waiting.values())

    def note_probe_meta(self, sid: str, meta: dict[str, str]) -> str | None:
        """Keep what a probe learnt; the container id to look at again when it changed."""
        if self.probe_meta.get(sid) == meta:
            return None
        self.probe_meta[sid] = meta
        item = self.managed.get(parse_service_id(sid)[1])
        return item.spec.container.id if item else None

    def health_of(self, container: str) -> str | None:
        item = self.managed.get(container)
        return item.spec.container.health if item else None

    def absorb(self, result: PassResult, pending: Pending, metrics: Metrics) -> None:
        """Merge a pass's result, for the containers in its scope; report new reasons once."""
        scope = result.scope
        if result.consul_services is not None:
            self.registered = result.consul_services
            self.consul_reachable = True
        for name, error in changed(self.skipped, result.skipped).items():
            metrics.error("labels")
            log.error(
                "container_skipped",
                container=name,
                label=error.label,
                value=error.value[:200],
                reason=error.reason,
            )
        for name, waiting in changed(self.waiting, result.waiting).items():
            log.warning("container_waiting", container=name, reason=waiting.reason)
            if waiting.kind is not None:
                metrics.error(waiting.kind)
        for name, m in result.services.items():  # the pass's services only, not all held
            known = self.managed.get(name)
            if m.note and (known is None or known.note != m.note):
                log.warning("port_outside_tier", container=name, reason=m.note)
        scope.merge_into(self.skipped, result.skipped)
        scope.merge_into(self.waiting, result.waiting)
        scope.merge_into(self.managed, result.services)
        applied = result.applied
        for reg, at in applied.registered:
            self.registered[reg.service_id] = reg
            if reg.meta.get("expose") == "internal" and self.engine and self.engine.major >= 28:
                log.warning(
                    "internal_address_filtered",
                    container=reg.meta.get("container_name"),
                    service=reg.name,
                    address=f"{reg.address}:{reg.port}",
                    engine=str(self.engine),
                    hint=DIRECT_ROUTING_HINT,
                )
            metrics.registrations.inc()
            happened = pending.event_times.pop(reg.meta.get("container_name", ""), None)
            if happened is not None:
                metrics.event_to_registered.observe(max(0.0, at - happened))
        for sid in applied.deregistered:
            self.registered.pop(sid, None)
            self.probe_meta.pop(sid, None)
            metrics.deregistrations.inc()
        for _, kind in applied.failed:
            metrics.error(kind)
        if applied.reached_consul:
            self.consul_reachable = True
        if scope.full:
            self.first_full_pass_done = True
        self.passes += 1
        self.last_pass = {
            "full": scope.full,
            "containers": len(result.listed),
            "registered": len(applied.registered),
            "steps_s": dict(result.steps),
        }


def connections(counters: ForwarderCounters | None) -> dict[str, int] | None:
    return None if counters is None else dataclasses.asdict(counters)


STATUS_CHECKS_WAIT = 2.0  # seconds


def stdio_report(reading: StdioReading | None) -> dict[str, Any] | None:
    return (
        None if reading is None else {**dataclasses.asdict(reading), "stderr": list(reading.stderr)}
    )


def _suggestion(spec: ServiceSpec, checks: list[dict[str, Any]], prefix: str) -> str | None:
    """An HTTP-probed container that keeps stdin open and fails its check is most likely
    a stdio server started with -i on an image that also exposes a port."""
    stdin = spec.container.stdin
    failing = any(c["status"] == "critical" for c in checks)
    if spec.transport is Transport.STDIO or not failing or stdin is None or not stdin.open:
        return None
    return (
        "its stdin is open and its MCP check fails over HTTP: if it is a stdio server,"
        f" label it {prefix}transport=stdio"
    )


async def status_report(
    view: View,
    consul: ConsulAPI,
    *,
    advertise: str,
    forwarders: Mapping[str, ForwarderCounters],
    stdio: Mapping[str, StdioReading] | None = None,
    node_id_conflict: str | None = None,
    label_prefix: str = "mcp.",
) -> dict[str, Any]:
    """What `mcp-bridge status` shows: the view, with each check's state from Consul."""
    checks: Mapping[str, Mapping[str, Any]] = {}
    # Show what we can, at once: an agent cut from its servers can hold its local state
    # for many seconds while a sync times out, and `status` is what one asks then.
    with contextlib.suppress(ConsulUnavailable, ConsulRejected, TimeoutError):
        checks = await asyncio.wait_for(consul.checks(), STATUS_CHECKS_WAIT)
    managed = []
    for name, item in sorted(view.managed.items()):
        reg = item.registration
        states = [
            {
                "check_id": cid,
                "status": c.get("Status"),
                "output": str(c.get("Output", ""))[:300],
            }
            for cid, c in checks.items()
            if c.get("ServiceID") == reg.service_id
        ]
        managed.append(
            {
                "container": name,
                "container_id": item.spec.container.id,
                "service": reg.name,
                "service_id": reg.service_id,
                "address": reg.address,
                "port": reg.port,
                "host_port": reg.meta.get("host_port"),
                "expose": item.spec.expose.value,
                "check": item.spec.check.kind.value,
                "check_status": states[0]["status"] if states else None,
                "checks": states,
                "registered": reg.service_id in view.registered,
                "connections": connections(forwarders.get(reg.service_id)),
                "tier": item.spec.tier or None,
                "access": {
                    "allow": list(item.spec.access.allow),
                    "max_connections": item.spec.access.max_connections or None,
                }
                if item.spec.expose is ExposeMode.PROXY
                else None,
                "note": item.note,
                "stdio": stdio_report((stdio or {}).get(reg.service_id)),
                "suggestion": _suggestion(item.spec, states, label_prefix),
            }
        )
    return {
        "node_id": consul.node_id,
        "node_id_conflict": node_id_conflict,  # another bridge holds node_id: who
        "ready": view.ready and node_id_conflict is None,
        "docker_connected": view.docker_connected,
        "docker_engine": str(view.engine) if view.engine else None,
        "consul_reachable": view.consul_reachable,
        "consul_url": consul.url,
        "advertise_address": advertise,
        "passes": view.passes,
        "last_pass": view.last_pass,
        "managed": managed,
        "skipped": [
            {"container": n, "label": e.label, "value": e.value[:200], "reason": e.reason}
            for n, e in sorted(view.skipped.items())
        ],
        "waiting": [{"container": n, "reason": w.reason} for n, w in sorted(view.waiting.items())],
    }
