"""The proxy benchmark runs and reports its summary (figures are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "scripts" / "bench_proxy.py"
DOCKER_PROXY = "/usr/sbin/docker-proxy"


def test_bench_proxy_quick_prints_a_json_summary_last(services: dict[str, str]) -> None:
    # docker-proxy comes with the Docker engine that `services` installs when missing.
    assert os.access(DOCKER_PROXY, os.X_OK), f"{DOCKER_PROXY} missing"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    for key in ("throughput_ratio_vs_docker_proxy", "p99_ratio_vs_docker_proxy"):
        assert isinstance(summary[key], int | float) and summary[key] > 0, key
    assert set(summary["p99_ratio_by_concurrency"]) == {"1", "8", "64"}
    for direction in ("upload", "download"):
        figures = summary["throughput_mib_s"][direction]
        assert set(figures) == {"direct", "docker-proxy", "mcp-bridge"}
        assert all(value > 0 for value in figures.values())
    for level in summary["latency_us"].values():
        for path in ("direct", "docker-proxy", "mcp-bridge"):
            assert 0 < level[path]["p50"] <= level[path]["p99"]
    rates = summary["connect_per_s"]
    assert set(rates) == {"direct", "docker-proxy", "mcp-bridge", "mcp-bridge+allow"}
    assert all(value > 0 for value in rates.values())
    assert summary["connect_ratio_vs_docker_proxy"] > 0
    decision = summary["decision_us"]
    assert 0 < decision["inside_p50"] <= decision["inside_p99"]
    assert 0 < decision["outside_p50"] <= decision["outside_p99"]
    assert summary["allow_cidrs"] == 1000
    assert any("mcp-bridge" in line for line in lines[:-1])  # the table came first


def test_bench_proxy_reports_a_missing_docker_proxy_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "docker-proxy"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--docker-proxy", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "docker-proxy not found" in result.stderr
    assert "docker.io" in result.stderr
