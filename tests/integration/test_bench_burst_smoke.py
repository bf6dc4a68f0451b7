"""scripts/bench_burst.py end to end at a small N, without py-spy (the real figures sample
with it): every wave measured, the summary last, and nothing left behind in Docker or
Consul."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import docker
import requests

from tests.integration.conftest import ROOT, consul_url


def test_bench_burst_runs_small_and_leaves_nothing_behind(
    services: dict[str, str], docker_client: docker.DockerClient
) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_burst.py"),
         "--containers", "6", "--wave", "4", "--reps", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    *waves, summary = lines
    assert len(waves) == 2 and not any(w["sampled"] for w in waves)
    for wave in waves:
        assert wave["agent_s"] > 0 and wave["raw_s"] > 0
        assert set(wave["agent_cpu_ms_per_reg"]) == {"agent", "consul", "dockerd"}
    assert summary["containers"] == 6 and summary["ratio_median"] > 0
    assert "agent_samples" not in summary
    assert not docker_client.containers.list(all=True, filters={"label": "mcp-bridge-bench"})
    services_now = requests.get(f"{consul_url()}/v1/agent/services", timeout=10).json()
    assert not [s for s in services_now.values() if s["Service"].startswith(("bn", "br"))]


def test_bench_burst_sums_py_spy_stacks(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_burst", ROOT / "scripts/bench_burst.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    run = "run (asyncio/runners.py:190);step (bridge/loop/agent.py:228)"
    (tmp_path / "spy-0.txt").write_text(
        f'process 1:"python";{run};list (bridge/docker/engine.py:100);get (aiohttp/client.py:9) 3\n'
        f"{run};select (selectors.py:468) 1\n"
    )
    got = module.summarise([tmp_path / "spy-0.txt"])
    assert got["samples"] == 4
    assert got["own_pct"]["loop/agent.py:step"] == 100.0
    assert got["own_pct"]["docker/engine.py:list"] == 75.0
    assert got["self_pct_by_library"] == {"aiohttp": 75.0, "selectors.py": 25.0}
