"""scripts/bench_peer.py end to end at a small N, without the peer (not on PyPI; the real
figures install it from a checkout): the floor and mcp-bridge measured, every figure
there, the JSON line last, and nothing left behind in Docker or Consul."""

from __future__ import annotations

import json
import subprocess
import sys

import docker
import requests

from tests.integration.conftest import ROOT, consul_url


def test_bench_peer_runs_small_and_leaves_nothing_behind(
    services: dict[str, str], docker_client: docker.DockerClient
) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_peer.py"), "--containers", "4"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = json.loads(result.stdout.strip().splitlines()[-1])
    [run] = last["4"]
    assert set(run) == {"floor", "mcp-bridge"}
    for figures in run.values():
        assert set(figures) == {"p50_ms", "p99_ms", "burst_tail_ms", "cold_s", "rss_mb"}
        assert all(v > 0 for v in figures.values()), figures
    assert "| mcp-bridge |" in result.stdout
    assert not docker_client.containers.list(all=True, filters={"label": "mcp-bridge-bench"})
    services_now = requests.get(f"{consul_url()}/v1/agent/services", timeout=10).json()
    assert not [s for s in services_now.values() if s["Service"].startswith(("pf", "pb"))]
