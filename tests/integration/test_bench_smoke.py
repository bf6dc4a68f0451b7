"""scripts/bench.py end to end at a small N: it runs, cleans up, and keeps its promises
(a table, a PNG, and the JSON line last). The real figures come from a run at 1,000."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import docker

from tests.integration.conftest import ROOT


def test_bench_runs_small_and_leaves_nothing_behind(
    services: dict[str, str], docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    plot = tmp_path / "bench.png"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench.py"),
            "--containers",
            "8",
            "--limit-samples",
            "5",
            "--wave",
            "4",
            "--plot",
            str(plot),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("event_p50_ratio", "event_p99_ratio", "burst_ratio", "reconcile_ratio", "rss_mb"):
        assert isinstance(last[key], float) and last[key] > 0, (key, last[key])
    assert last["raw"]["containers"] == 8 and len(last["raw"]["burst"]["wave_rates"]) == 2
    assert "event → registered p50" in result.stdout
    assert last["event_p50_flatness"] > 0
    breakdown = last["raw"]["event_breakdown_ms"]
    assert {"look", "pool", "apply", "total", "outside the pass"} <= set(breakdown), breakdown
    imports = last["raw"]["imports"]
    assert imports["total_ms"] > 0 and imports["rss_all_mb"] > imports["rss_base_mb"]
    assert "one event, median of" in result.stdout and "start-up: importing" in result.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")
    leftovers = [c.name for c in docker_client.containers.list(all=True) if c.name.startswith("bn")]
    assert not leftovers, leftovers
