"""`mcp-bridge` (also `python -m bridge`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from bridge.core.config import Settings, SettingsError, load_settings
from bridge.core.findings import Level
from bridge.loop.metrics import POOL_WARN_RATIO
from bridge.pool.store import StoreError, StoreSnapshot, read_snapshot
from bridge.pool.tiers import tier_label
from bridge.surface.doctor import run_checks
from bridge.surface.gateway import (
    cmd_gateway,
    cmd_gateway_status,
    gateway_entry,
)
from bridge.surface.ports import allocation_row, tier_rows
from bridge.surface.status import cmd_status


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _ports_report(settings: Settings, snap: StoreSnapshot, now: float) -> dict[str, Any]:
    span, reserved, layout = settings.port_range, settings.reserved_ports, settings.tier_layout
    used = sum(1 for a in snap.allocations if a.port in span and a.port not in reserved)
    return {
        "state_file": str(snap.path),
        "exists": snap.exists,
        "schema_version": snap.schema_version,
        "range": str(span),
        "reserved": sorted(reserved),
        "size": len(span) - len(reserved),
        "used": used,
        "free": len(span) - len(reserved) - used,
        "cursor": snap.cursor,
        "cursors": {tier_label(t): port for t, port in snap.cursors.items()},
        "tiers": tier_rows(layout, reserved, (a.port for a in snap.allocations)),
        "allocations": [
            allocation_row(a, now, settings.stale_after, layout) for a in snap.allocations
        ],
    }


def cmd_ports(settings: Settings, as_json: bool) -> int:
    try:
        snap = read_snapshot(settings.state_file)
    except StoreError as exc:
        print(
            f"mcp-bridge: state file {settings.state_file} is unreadable: {exc}"
            " (the agent moves it aside and rebuilds the pool at start-up)",
            file=sys.stderr,
        )
        return 1
    report = _ports_report(settings, snap, time.time())
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"pool {report['range']}: {report['used']} used, {report['free']} free"
        f" of {report['size']}  ({report['state_file']}"
        f"{'' if snap.exists else ', not created yet'})"
    )
    for tier in report["tiers"]:
        warn = "  (over 90 % used)" if tier["used"] > POOL_WARN_RATIO * tier["size"] else ""
        warn = "  (no usable port)" if not tier["size"] else warn
        print(
            f"  tier {tier['tier']} {tier['ports']}: {tier['used']} used,"
            f" {tier['free']} free of {tier['size']}{warn}"
        )
    tiered = bool(report["tiers"])
    if report["allocations"]:
        tier_head = f"  {'TIER':<10}" if tiered else ""
        print(f"{'PORT':>5}{tier_head}  {'STATE':<8}  {'KIND':<8}  {'AGE':>7}  OWNER")
        for row in report["allocations"]:
            note = f"  (released in {_age(row['released_in_s'])})" if "released_in_s" in row else ""
            tier_col = f"  {row['tier'] or '-':<10}" if tiered else ""
            print(
                f"{row['port']:>5}{tier_col}  {row['state']:<8}  {row['kind']:<8}"
                f"  {_age(row['age_s']):>7}  {row['owner']}{note}"
            )
    return 0


def cmd_fleet_ports(settings: Settings, as_json: bool) -> int:
    """The fleet's registry (cluster scope): every service's port, who uses it."""
    from bridge.consul.client import ConsulClient
    from bridge.consul.session import ConsulSession
    from bridge.core.protocols import ConsulRejected, ConsulUnavailable
    from bridge.pool.fleet import FleetPorts

    async def read() -> Any:
        consul = ConsulClient.from_settings(settings, timeout=10, attempts=2)
        try:
            # Reading takes no lock: the session is never made.
            session = ConsulSession(consul, f"mcp-bridge {settings.node_id}")
            fleet = FleetPorts(
                consul,
                node_id=settings.node_id,
                port_range=settings.port_range,
                clock=time.time,
                session=session,
            )
            return await fleet.read()
        finally:
            await consul.close()

    try:
        registry = asyncio.run(read())
    except (ConsulUnavailable, ConsulRejected) as exc:
        print(f"mcp-bridge: {exc}", file=sys.stderr)
        return 1
    rows = [
        {
            "service": name,
            "port": port,
            "hosts": sorted(registry.users.get(name, {})),
            "idle_since": idle_since,
        }
        for name, (port, idle_since, _) in sorted(registry.services.items(), key=lambda i: i[1][0])
    ]
    if as_json:
        print(json.dumps({"prefix": f"{settings.kv_prefix}/ports/", "services": rows}, indent=2))
        return 0
    print(f"fleet port registry under {settings.kv_prefix}/ports/: {len(rows)} services")
    if rows:
        print(f"{'PORT':>5}  {'SERVICE':<24}  HOSTS")
        for row in rows:
            idle = (
                f"  (idle for {_age(time.time() - row['idle_since'])})" if row["idle_since"] else ""
            )
            print(f"{row['port']:>5}  {row['service']:<24}  {', '.join(row['hosts']) or '-'}{idle}")
    return 0


def cmd_run(settings: Settings) -> int:
    # Imported here: `ports` and `doctor` must work without the agent's dependencies loaded.
    from bridge.loop.agent import Agent
    from bridge.surface.api import serve
    from bridge.surface.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)

    async def main() -> None:
        agent = Agent(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        host, port = settings.http_host_port
        runner = await serve(agent, host, port)
        try:
            await agent.run()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except StoreError as exc:
        print(f"mcp-bridge: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"mcp-bridge: {exc}", file=sys.stderr)
        return 1
    return 0


def _read_catalog(settings: Settings, names: Sequence[str], with_tools: bool) -> list[Any] | None:
    """Every MCP instance in the datacenter, or None (the reason printed) without Consul."""
    from bridge.consul.catalog import read_instances
    from bridge.consul.client import ConsulClient
    from bridge.core.protocols import ConsulRejected, ConsulUnavailable

    async def read() -> list[Any]:
        consul = ConsulClient.from_settings(settings, timeout=10, attempts=2)
        try:
            return await read_instances(consul, names, with_tools=with_tools)
        finally:
            await consul.close()

    try:
        return asyncio.run(read())
    except (ConsulUnavailable, ConsulRejected) as exc:
        print(f"mcp-bridge: {exc}", file=sys.stderr)
        return None


def cmd_services(settings: Settings, as_json: bool, with_tools: bool) -> int:
    from bridge.consul.catalog import rows

    instances = _read_catalog(settings, (), with_tools)
    if instances is None:
        return 1
    if as_json:
        print(json.dumps(rows(instances), indent=2))
        return 0
    if not instances:
        print(f"no MCP services in the datacenter of {settings.consul_url}")
        return 0
    print(
        f"{'SERVICE':<20} {'NODE':<16} {'ADDRESS':<24} {'HEALTH':<9} {'TRANSPORT':<16}"
        f" {'PROTOCOL':<11} {'TOOLS':>5}  PATH"
    )
    for i in instances:
        where = f"{i.address}:{i.port}"
        tools = "-" if i.tools is None else str(i.tools)
        print(
            f"{i.service:<20} {i.node:<16} {where:<24} {i.health:<9} {i.transport:<16}"
            f" {i.protocol or '-':<11} {tools:>5}  {i.path}"
        )
        if i.tool_names is not None:
            print(f"{'':<20} tools: {', '.join(i.tool_names) or '(none)'}")
    return 0


def cmd_client_config(
    settings: Settings,
    names: Sequence[str],
    per_instance: bool,
    gateway: bool = False,
    fmt: str = "mcp-json",
) -> int:
    from bridge.consul.catalog import client_config
    from bridge.surface.client_formats import render

    if gateway:  # the one entry: every healthy server through the gateway
        print(json.dumps(render(gateway_entry(settings), fmt), indent=2))
        return 0

    instances = _read_catalog(settings, names, False)
    if instances is None:
        return 1
    token = None
    if settings.serve_token_file is not None:  # what the served stdio endpoints require
        token = settings.serve_token_file.read_text().strip() or None
    config = client_config(instances, per_instance=per_instance, token=token)
    missing = sorted(set(names) - {i.service for i in instances if i.healthy})
    for name in missing:
        print(f"mcp-bridge: no healthy instance of service {name!r}", file=sys.stderr)
    print(json.dumps(render(config, fmt), indent=2))
    return 1 if missing else 0


def cmd_doctor(settings: Settings) -> int:
    findings = run_checks(settings)
    for finding in findings:
        print(f"{finding.level.value:<4}  {finding.what}: {finding.detail}")
    return 1 if any(f.level is Level.FAIL for f in findings) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-bridge",
        description="Register MCP-server containers as Consul services, with sticky host ports.",
    )
    parser.add_argument(
        "--env-file", help="read settings from this file too (the environment wins)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ports = sub.add_parser("ports", help="the port pool: each allocation, owner, state, age")
    ports.add_argument("--json", action="store_true", help="machine-readable output")
    ports.add_argument(
        "--cluster", action="store_true", help="the fleet's registry (cluster port scope)"
    )
    sub.add_parser("run", help="run the agent (SIGTERM/SIGINT stop it cleanly)")
    status = sub.add_parser("status", help="managed containers, their services, skipped ones")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("doctor", help="check the state file and the port range")
    services = sub.add_parser(
        "services", help="every MCP service in the Consul datacenter, all nodes, with health"
    )
    services.add_argument("--json", action="store_true", help="machine-readable output")
    services.add_argument("--tools", action="store_true", help="add each instance's tool names")
    config = sub.add_parser(
        "client-config", help="an mcpServers JSON for MCP clients: every healthy MCP service"
    )
    config.add_argument(
        "--service", action="append", default=[], metavar="NAME", help="only this service"
    )
    config.add_argument(
        "--per-instance", action="store_true", help="one entry per instance, not per service"
    )
    config.add_argument(
        "--gateway", action="store_true", help="the one entry of `mcp-bridge gateway`"
    )
    config.add_argument(
        "--format",
        choices=["mcp-json", "vscode", "claude-desktop"],
        default="mcp-json",
        help="mcp-json: .mcp.json, Cursor (default); vscode: .vscode/mcp.json;"
        " claude-desktop: stdio commands through mcp-remote",
    )
    gateway = sub.add_parser(
        "gateway", help="one MCP endpoint for every healthy MCP server in the datacenter"
    )
    gateway.add_argument(
        "action", nargs="?", choices=["status"], help="status: its instances, breakers, traffic"
    )
    gateway.add_argument("--json", action="store_true", help="machine-readable status")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.env_file)
    except SettingsError as exc:
        print(f"mcp-bridge: {exc}".replace("\n", "\nmcp-bridge: "), file=sys.stderr)
        return 2
    if args.command == "ports":
        if args.cluster:
            return cmd_fleet_ports(settings, args.json)
        return cmd_ports(settings, args.json)
    if args.command == "doctor":
        return cmd_doctor(settings)
    if args.command == "run":
        return cmd_run(settings)
    if args.command == "status":
        return cmd_status(settings, args.json)
    if args.command == "services":
        return cmd_services(settings, args.json, args.tools)
    if args.command == "client-config":
        return cmd_client_config(
            settings, args.service, args.per_instance, args.gateway, args.format
        )
    if args.command == "gateway":
        if args.action == "status":
            return cmd_gateway_status(settings, args.json)
        return cmd_gateway(settings)
    raise AssertionError(args.command)
