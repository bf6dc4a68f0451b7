"""`mcp-bridge` (also `python -m bridge`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from bridge.config import Settings, SettingsError, load_settings
from bridge.doctor import Level, run_checks
from bridge.model import Allocation, AllocState
from bridge.port_store import Snapshot, StoreError, read_snapshot


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _allocation_json(a: Allocation, now: float, stale_after: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "port": a.port,
        "owner": a.owner,
        "state": a.state.value,
        "kind": a.kind.value,
        "age_s": round(now - a.allocated_at, 3),
        "allocated_at": a.allocated_at,
        "updated_at": a.updated_at,
        "missing_since": a.missing_since,
    }
    if a.state is AllocState.ORPHANED and a.missing_since is not None:
        row["released_in_s"] = round(max(0.0, a.missing_since + stale_after - now), 3)
    return row


def _ports_report(settings: Settings, snap: Snapshot, now: float) -> dict[str, Any]:
    span, reserved = settings.port_range, settings.reserved_ports
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
        "allocations": [_allocation_json(a, now, settings.stale_after) for a in snap.allocations],
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
    if report["allocations"]:
        print(f"{'PORT':>5}  {'STATE':<8}  {'KIND':<8}  {'AGE':>7}  OWNER")
        for row in report["allocations"]:
            note = f"  (released in {_age(row['released_in_s'])})" if "released_in_s" in row else ""
            print(
                f"{row['port']:>5}  {row['state']:<8}  {row['kind']:<8}"
                f"  {_age(row['age_s']):>7}  {row['owner']}{note}"
            )
    return 0


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
    sub.add_parser("doctor", help="check the state file and the port range")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.env_file)
    except SettingsError as exc:
        print(f"mcp-bridge: {exc}".replace("\n", "\nmcp-bridge: "), file=sys.stderr)
        return 2
    if args.command == "ports":
        return cmd_ports(settings, args.json)
    if args.command == "doctor":
        return cmd_doctor(settings)
    raise AssertionError(args.command)
