"""The pool benchmark runs and reports what the README quotes (figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "scripts" / "bench_pool.py"


def test_bench_pool_quick_prints_a_json_summary_last() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "single_allocs_per_s",
        "burst_allocs_per_s",
        "p99_ms",
        "scaling_ratio_10000_vs_100",
    ):
        assert isinstance(summary[key], int | float) and summary[key] > 0, key
