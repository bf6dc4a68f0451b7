"""The `mcp-bridge` command as a user runs it: a real process, real output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bridge.core.model import PortRange
from bridge.pool.durable import DurablePool
from bridge.pool.tiers import TierLayout, parse_tiers


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_ports_json_on_an_empty_store(tmp_path: Path) -> None:
    env = {"BRIDGE_STATE_FILE": str(tmp_path / "none" / "state.db")}
    result = run("ports", "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["exists"] is False
    assert report["allocations"] == []
    assert (report["size"], report["used"], report["free"]) == (900, 0, 900)
    assert not (tmp_path / "none").exists(), "reading must not create the store"


def test_ports_on_a_full_store_json_and_table(tmp_path: Path) -> None:
    store = tmp_path / "state.db"
    pool = DurablePool.open(store, PortRange(12000, 12009), reserved=[12005])
    with pool.transaction() as s:
        for i in range(9):
            s.allocate(f"mcp-{i}", now=1.0)
        s.observe("mcp-3", False, now=2.0)
        s.observe("mcp-4", None, now=2.0)
    env = {
        "BRIDGE_STATE_FILE": str(store),
        "BRIDGE_PORT_RANGE": "12000-12009",
        "BRIDGE_RESERVED_PORTS": "12005",
    }
    # While the agent (this process) holds the store open and locked.
    result = run("ports", "--json", env=env)
    pool.close()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["size"], report["used"], report["free"]) == (9, 9, 0)
    rows = {r["owner"]: r for r in report["allocations"]}
    assert rows["mcp-3"]["state"] == "held"
    assert rows["mcp-4"]["state"] == "orphaned" and "released_in_s" in rows["mcp-4"]
    assert {r["port"] for r in report["allocations"]} == set(range(12000, 12010)) - {12005}
    table = run("ports", env=env)
    assert table.returncode == 0
    assert "9 used, 0 free of 9" in table.stdout
    assert "mcp-3" in table.stdout and "held" in table.stdout


def test_bad_setting_exits_2_with_one_line_and_no_traceback() -> None:
    result = run("ports", env={"BRIDGE_PORT_RANGE": "9000-100"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "BRIDGE_PORT_RANGE=9000-100" in result.stderr
    assert "Traceback" not in result.stderr


def test_ports_on_a_corrupt_store_says_so(tmp_path: Path) -> None:
    store = tmp_path / "state.db"
    store.write_bytes(b"not a database" * 100)
    result = run("ports", env={"BRIDGE_STATE_FILE": str(store)})
    assert result.returncode == 1
    assert "unreadable" in result.stderr and "rebuilds" in result.stderr


NOWHERE = {"DOCKER_HOST": "unix:///nonexistent.sock", "BRIDGE_CONSUL_URL": "http://127.0.0.1:9"}


def test_doctor_checks_the_pool_and_names_unreachable_services(tmp_path: Path) -> None:
    result = run("doctor", env={"BRIDGE_STATE_FILE": str(tmp_path / "state.db"), **NOWHERE})
    assert result.returncode == 1, result.stdout
    assert "ok    state file" in result.stdout and "ok    port range" in result.stdout
    assert "FAIL  docker: cannot reach Docker at unix:///nonexistent.sock" in result.stdout
    assert "FAIL  consul: cannot use Consul at http://127.0.0.1:9" in result.stdout


def test_doctor_warns_when_the_range_overlaps_the_ephemeral_ports(tmp_path: Path) -> None:
    _, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    env = {
        "BRIDGE_STATE_FILE": str(tmp_path / "state.db"),
        "BRIDGE_PORT_RANGE": f"{high - 50}-{high + 50}",
        **NOWHERE,
    }
    result = run("doctor", env=env)
    assert "WARN  ephemeral range" in result.stdout
    assert f"({high - 50}-{high})" in result.stdout


def test_doctor_fails_on_a_corrupt_store(tmp_path: Path) -> None:
    store = tmp_path / "state.db"
    store.write_bytes(b"\x00garbage" * 512)
    result = run("doctor", env={"BRIDGE_STATE_FILE": str(store), **NOWHERE})
    assert result.returncode == 1
    assert "FAIL  state file" in result.stdout


def test_ports_shows_use_per_tier(tmp_path: Path) -> None:
    store = tmp_path / "state.db"
    layout = TierLayout(PortRange(12000, 12019), parse_tiers("core=12000-12009,dev=12010-12014"))
    pool = DurablePool.open(store, layout.port_range, reserved=[12001], tiers=layout)
    with pool.transaction() as s:
        for i in range(9):
            s.allocate(f"mcp-core-{i}", now=1.0, tier="core")
        s.allocate("mcp-dev", now=1.0, tier="dev")
        s.allocate("mcp-plain", now=1.0)
    pool.close()
    env = {
        "BRIDGE_STATE_FILE": str(store),
        "BRIDGE_PORT_RANGE": "12000-12019",
        "BRIDGE_RESERVED_PORTS": "12001",
        "BRIDGE_PORT_TIERS": "core=12000-12009,dev=12010-12014",
    }
    report = json.loads(run("ports", "--json", env=env).stdout)
    assert report["tiers"] == [
        {"tier": "core", "ports": "12000-12009", "size": 9, "used": 9, "free": 0},
        {"tier": "dev", "ports": "12010-12014", "size": 5, "used": 1, "free": 4},
        {"tier": "untiered", "ports": "12015-12019", "size": 5, "used": 1, "free": 4},
    ]
    assert report["cursors"] == {"core": 12009, "dev": 12010, "untiered": 12015}
    rows = {r["owner"]: r["tier"] for r in report["allocations"]}
    assert (rows["mcp-core-0"], rows["mcp-dev"], rows["mcp-plain"]) == ("core", "dev", "untiered")
    table = run("ports", env=env).stdout
    assert "tier core 12000-12009: 9 used, 0 free of 9  (over 90 % used)" in table
    assert "tier dev 12010-12014: 1 used, 4 free of 5\n" in table
    assert "TIER" in table and "12010  dev" in table


def test_status_says_why_a_check_is_not_passing() -> None:
    from bridge.surface.status import status_lines

    def managed(name: str, status: str, output: str) -> dict[str, object]:
        return {
            "container": name,
            "service": name.removeprefix("mcp-"),
            "address": "192.0.2.2",
            "port": 11100,
            "expose": "proxy",
            "check": "mcp",
            "check_status": status,
            "checks": [{"check_id": f"c-{name}", "status": status, "output": output}],
        }

    report = {
        "ready": True,
        "docker_connected": True,
        "consul_reachable": True,
        "node_id": "n1",
        "consul_url": "http://127.0.0.1:8500",
        "managed": [
            managed("mcp-ok", "passing", "MCP 2026-07-28 OK"),
            managed("mcp-nomcp", "critical", "POST http://192.0.2.2:11101/mcp: HTTP 501\n<HTML>"),
        ],
        "waiting": [],
        "skipped": [],
    }
    lines = status_lines(report)
    assert "check    mcp-nomcp: critical: POST http://192.0.2.2:11101/mcp: HTTP 501 <HTML>" in lines
    assert not any(line.startswith("check    mcp-ok") for line in lines)
