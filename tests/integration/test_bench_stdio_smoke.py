"""The stdio benchmark runs all five paths and reports its summary (figures not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "scripts" / "bench_stdio.py"


def test_bench_stdio_quick_prints_a_json_summary_last(
    services: dict[str, str], mcp_server_npm_image: str
) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--rounds", "1", "--sessions", "50"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary["raw"]) == {"pipe", "attach", "mcp-bridge", "supergateway", "mcp-proxy"}
    for path, figures in summary["raw"].items():
        for c in ("1", "16", "64"):
            assert figures[c]["calls_per_s"] > 0, (path, c)
            assert 0 < figures[c]["p50_ms"] <= figures[c]["p99_ms"], (path, c)
    assert summary["run_to_first_answer_s"] > 0
    assert summary["sessions_added_mb"] is not None
    assert any("mcp-bridge" in line for line in lines[:-1])  # the table came first
