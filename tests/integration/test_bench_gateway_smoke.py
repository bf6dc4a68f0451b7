"""The gateway benchmark runs all four paths and the kill under load, and reports its
summary (figures not asserted; what a kill must leave behind is)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "scripts" / "bench_gateway.py"


def test_bench_gateway_quick_prints_a_json_summary_last(services: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary["raw"]) == {"direct", "haproxy", "least-python", "gateway"}
    for path, figures in summary["raw"].items():
        for c in ("1", "16", "64"):
            assert figures[c]["calls_per_s"] > 0, (path, c)
            assert 0 < figures[c]["p50_ms"] <= figures[c]["p99_ms"], (path, c)
    kill = summary["kill"]
    assert kill["hanging_clients"] == 0 and kill["ok"] > 0
    assert kill["errors"] == kill["errors_naming_the_dead"]  # none lost, none elsewhere
    assert any("gateway @16" in line for line in lines[:-1])  # the table came first
