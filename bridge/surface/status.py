"""`mcp-bridge status`: asks the running agent, and says what it holds as text."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

from bridge.core.config import Settings

__all__ = ["cmd_status", "status_lines"]


def cmd_status(settings: Settings, as_json: bool) -> int:
    host, port = settings.http_host_port
    url = f"http://{host if host not in ('0.0.0.0', '::', '') else '127.0.0.1'}:{port}/v1/status"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            report = json.load(response)
    except (urllib.error.URLError, OSError) as exc:
        print(
            f"mcp-bridge: no agent answers at {url} ({exc}); is `mcp-bridge run` running"
            " with the same BRIDGE_HTTP_ADDR?",
            file=sys.stderr,
        )
        return 1
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    print("\n".join(status_lines(report)))
    return 0


def status_lines(report: dict[str, Any]) -> list[str]:
    """`mcp-bridge status` as text: the table, then why anything is not as it should be."""
    ready = "ready" if report["ready"] else "NOT ready"
    docker_state = "up" if report["docker_connected"] else "DOWN"
    consul_state = "up" if report["consul_reachable"] else "DOWN"
    lines = [
        f"node {report['node_id']}: {ready} (docker {docker_state},"
        f" consul {consul_state} at {report['consul_url']})"
    ]
    if report.get("node_id_conflict"):
        lines.append(
            f"CONFLICT  node id {report['node_id']} is held by another bridge:"
            f" {report['node_id_conflict']}; this one touches nothing in Consul"
        )
    if report["managed"]:
        lines.append(f"{'CONTAINER':<28} {'SERVICE':<20} {'ADDRESS':<22} {'EXPOSE':<9} CHECK")
        for m in report["managed"]:
            where = f"{m['address']}:{m['port']}"
            check = f"{m['check']}: {m['check_status'] or '-'}"
            lines.append(
                f"{m['container']:<28} {m['service']:<20} {where:<22} {m['expose']:<9} {check}"
            )
    for m in report["managed"]:
        # The reason a check is not passing: Consul's catalog (and so its UI) may not
        # show it yet (check_update_interval), so say it here where people look first.
        for c in m.get("checks") or []:
            if c.get("status") not in (None, "passing") and c.get("output"):
                said = " ".join(str(c["output"]).split())  # one line, even for an HTML body
                lines.append(f"check    {m['container']}: {c['status']}: {said[:200]}")
        if m.get("note"):
            lines.append(f"note     {m['container']}: {m['note']}")
        if m.get("suggestion"):
            lines.append(f"hint     {m['container']}: {m['suggestion']}")
        stdio = m.get("stdio")
        if stdio:
            lines.append(
                f"stdio    {m['container']}: {stdio['state']}; {stdio['sessions']} sessions,"
                f" {stdio['in_flight']} in flight, {stdio['answered']} answered,"
                f" {stdio['failed']} failed, {stdio['refused']} refused,"
                f" {stdio['processes']} processes, {stdio['skipped_lines']} lines skipped"
            )
            if stdio["state"] != "serving" and stdio["stderr"]:
                last = " | ".join(stdio["stderr"])
                lines.append(f"stderr   {m['container']}: {last[:300]}")
    lines += [f"waiting  {w['container']}: {w['reason']}" for w in report["waiting"]]
    lines += [
        f"skipped  {s['container']}: label {s['label']}={s['value']!r}: {s['reason']}"
        for s in report["skipped"]
    ]
    return lines
