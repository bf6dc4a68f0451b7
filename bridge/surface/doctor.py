"""`mcp-bridge doctor`: checks that say what is wrong and how to fix it.

Each check returns Findings; any FAIL makes the command exit non-zero. WARN is for things
that work today but will bite (a pool range the kernel also uses for outgoing ports).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

from bridge.consul.ownership import describe, holder_of
from bridge.core.config import Settings
from bridge.core.findings import Finding, Level, check_ephemeral
from bridge.core.net import bind_test
from bridge.core.protocols import ConsulAPI, ConsulRejected, ConsulUnavailable
from bridge.pool.store import StoreError, read_snapshot


def check_pool(settings: Settings, ours: frozenset[int] = frozenset()) -> Iterator[Finding]:
    """`ours`: ports the store says the pool holds (our forwarders bind them)."""
    span, reserved = settings.port_range, settings.reserved_ports
    usable = len(span) - len(reserved)
    if usable <= 0:
        yield Finding(Level.FAIL, "port range", f"{span} has no port left after reservations")
    else:
        yield Finding(
            Level.OK, "port range", f"{span}: {usable} usable ports ({len(reserved)} reserved)"
        )
    yield check_ephemeral(span)
    can_bind = bind_test(settings.listen_address)
    foreign = [
        p
        for p in range(span.low, span.high + 1)
        if p not in reserved and p not in ours and not can_bind(p)
    ]
    if foreign:
        shown = ", ".join(map(str, foreign[:10])) + (" ..." if len(foreign) > 10 else "")
        yield Finding(
            Level.WARN if len(foreign) < usable else Level.FAIL,
            "port range",
            f"{len(foreign)} pool ports are held by other processes on"
            f" {settings.listen_address}; the pool skips them: {shown}",
        )


def check_state_file(path: Path) -> Finding:
    try:
        snap = read_snapshot(path)
    except StoreError as exc:
        return Finding(
            Level.FAIL,
            "state file",
            f"{path} is unreadable ({exc}); the agent moves it aside at start-up and"
            " rebuilds the pool from Docker and Consul",
        )
    if not snap.exists:
        parent = next((p for p in path.parents if p.exists()), Path("/"))
        if not os.access(parent, os.W_OK):
            return Finding(Level.FAIL, "state file", f"{path} is missing and {parent} is read-only")
        return Finding(Level.OK, "state file", f"{path} does not exist yet; the agent creates it")
    return Finding(
        Level.OK,
        "state file",
        f"{path}: schema {snap.schema_version}, {len(snap.allocations)} allocations, sound",
    )


async def check_services(settings: Settings) -> list[Finding]:
    """Can we reach Docker and Consul, with the settings the agent would use?"""
    # Imported here: the pool checks above must work without Docker's SDK loaded.
    from bridge.consul.client import ConsulClient
    from bridge.docker.engine import DockerEngine
    from bridge.loop.view import DIRECT_ROUTING_HINT

    findings = []
    # A plain listing, counted: no inspects, even on Podman
    docker = DockerEngine(settings.docker_host, timeout=5, may_manage=lambda _: False)
    where = settings.docker_host or "the local socket (DOCKER_HOST unset)"
    try:
        engine = await asyncio.wait_for(docker.version(), 10)
        containers = await asyncio.wait_for(docker.list(), 10)
        findings.append(
            Finding(
                Level.OK,
                "docker",
                f"{where} answers: {engine}, {len(containers)} containers",
            )
        )
        if engine.major >= 28:
            findings.append(Finding(Level.WARN, "internal mode", DIRECT_ROUTING_HINT))
    except Exception as exc:
        findings.append(Finding(Level.FAIL, "docker", f"cannot reach Docker at {where}: {exc}"))
    finally:
        await docker.close()
    consul = ConsulClient.from_settings(settings, timeout=5, attempts=1)
    try:
        leader = await consul.leader()
        own = await consul.own_services()
        if not leader:
            findings.append(Finding(Level.FAIL, "consul", f"{settings.consul_url} has no leader"))
        else:
            findings.append(
                Finding(
                    Level.OK,
                    "consul",
                    f"{settings.consul_url} answers, leader {leader},"
                    f" {len(own)} services of node {settings.node_id}",
                )
            )
    except Exception as exc:
        findings.append(
            Finding(Level.FAIL, "consul", f"cannot use Consul at {settings.consul_url}: {exc}")
        )
    else:
        findings.append(await check_node_id(consul, settings.state_file))
    finally:
        await consul.close()
    return findings


async def check_node_id(consul: ConsulAPI, state_file: Path) -> Finding:
    """Does another bridge hold this node id? Told apart from this host's own bridge by the
    state store's instance id."""
    try:
        holder = await holder_of(consul)
    except (ConsulUnavailable, ConsulRejected) as exc:
        return Finding(Level.WARN, "node id", f"cannot read who holds {consul.node_id}: {exc}")
    if holder is None:
        return Finding(Level.OK, "node id", f"{consul.node_id} is free; the agent claims it")
    try:
        mine = read_snapshot(state_file).instance_id
    except StoreError:
        mine = None
    who = describe(holder[0])
    if holder[0].get("instance") == mine:
        return Finding(Level.OK, "node id", f"{consul.node_id} is held by this bridge: {who}")
    level = Level.FAIL if mine else Level.WARN  # no state here: it may be this host's bridge
    return Finding(
        level,
        "node id",
        f"{consul.node_id} is held by another bridge ({who}); two bridges with one"
        " BRIDGE_NODE_ID would undo each other's work: give each its own",
    )


def run_checks(settings: Settings, *, services: bool = True) -> list[Finding]:
    state = check_state_file(settings.state_file)
    try:
        ours = frozenset(a.port for a in read_snapshot(settings.state_file).allocations)
    except StoreError:
        ours = frozenset()
    findings = [state, *check_pool(settings, ours)]
    if services:
        findings += asyncio.run(check_services(settings))
    return findings
