"""bench.py's report: the table against the limit with the goals, the breakdowns, the
summary's ratios, and the plot of latency and RSS against services registered."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def report(r: dict[str, Any]) -> dict[str, Any]:
    lim, ev, burst, rec, rss = r["limit"], r["event"], r["burst"], r["reconcile"], r["rss"]
    reconcile_limit = lim["list_s"] + lim["concurrent_n_s"]
    summary = {
        "event_p50_ratio": round(ev["p50_ms"] / lim["sequential_p50_ms"], 3),
        "event_p99_ratio": round(ev["p99_ms"] / lim["sequential_p99_ms"], 3),
        "burst_ratio": round(burst["per_s"] / burst["raw_per_s"], 3),
        "reconcile_ratio": round(rec["from_spawn_s"] / reconcile_limit, 3),
        "reconcile_ratio_after_start": (
            round(rec["from_agent_started_s"] / reconcile_limit, 3)
            if rec["from_agent_started_s"] is not None
            else None
        ),
        "rss_mb": round(rss["at_n_mb"], 1),
        "rss_per_service_kb": round(rss["per_service_kb"], 2),
    }
    # The cost of an event against the services held: p50 at N over p50 near 100.
    flat = min(r["steps"], key=lambda st: abs(st["services"] - 100))
    # The last step with a whole window of samples (the very last may hold only a few).
    top = max(
        r["steps"], key=lambda st: (st.get("samples", 0) >= flat.get("samples", 0), st["services"])
    )
    summary["event_p50_flatness"] = round(top["p50_ms"] / flat["p50_ms"], 3)
    n = r["containers"]
    rows = [
        (
            "event → registered p50",
            f"{ev['p50_ms']:.1f} ms",
            f"{lim['sequential_p50_ms']:.1f} ms",
            summary["event_p50_ratio"],
            "≤ 1.15",
        ),
        (
            "event → registered p99",
            f"{ev['p99_ms']:.1f} ms",
            f"{lim['sequential_p99_ms']:.1f} ms",
            summary["event_p99_ratio"],
            "≤ 1.5",
        ),
        (
            "burst registrations/s",
            f"{burst['per_s']:.0f}",
            f"{burst['raw_per_s']:.0f}",
            summary["burst_ratio"],
            "≥ 0.95",
        ),
        (
            f"cold reconcile, {n} running",
            f"{rec['from_spawn_s']:.2f} s",
            f"{reconcile_limit:.2f} s",
            summary["reconcile_ratio"],
            "≤ 1.5",
        ),
        (f"agent RSS at {n} services", f"{rss['at_n_mb']:.1f} MB", "", "", "≤ 48 MB at 1,000"),
        (
            f"event p50 at {top['services']} / at {flat['services']}",
            f"{top['p50_ms']:.1f} ms",
            f"{flat['p50_ms']:.1f} ms",
            summary["event_p50_flatness"],
            "≤ 1.1",
        ),
        ("RSS per service (N/4 → N)", f"{rss['per_service_kb']:.1f} KB", "", "", ""),
    ]
    print(
        f"mcp-bridge bench: {n} containers, {os.cpu_count()} CPUs, python {sys.version.split()[0]}"
    )
    print(f"{'measurement':<30} {'mcp-bridge':>12} {'limit':>12} {'ratio':>7}  goal")
    for what, ours, limit, ratio, goal in rows:
        print(f"{what:<30} {ours:>12} {limit:>12} {ratio!s:>7}  {goal}")
    if rec["from_agent_started_s"] is not None:
        print(
            f"  cold reconcile after the agent's start-up (imports, store open): "
            f"{rec['from_agent_started_s']:.2f} s, ratio {summary['reconcile_ratio_after_start']}"
        )
    print(
        f"  burst waves of {burst['wave']}: " + ", ".join(f"{x:.0f}/s" for x in burst["wave_rates"])
    )
    breakdown = r.get("event_breakdown_ms") or {}
    if breakdown:
        print(
            f"  one event, median of {r['event_breakdown_samples']} (ms): "
            + ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items())
        )
    imports = r.get("imports") or {}
    if imports:
        print(
            f"  start-up: importing the agent takes {imports['total_ms']:.0f} ms: "
            + ", ".join(f"{k} {v:.0f}" for k, v in imports["by_package_ms"].items())
        )
        print(
            f"  memory: {imports['rss_base_mb']:.1f} MB for the interpreter, then by import: "
            + ", ".join(f"{k} +{v:.1f}" for k, v in imports["rss_by_step_mb"].items())
            + f" (MB); {imports['rss_all_mb']:.1f} MB with every module loaded"
        )
    print(
        "  by services registered: "
        + "; ".join(
            f"{s['services']}: p50 {s['p50_ms']:.1f} ms, RSS {s['rss_mb']:.1f} MB"
            for s in r["steps"]
        )
    )
    return summary


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = r["steps"]
    x = [s["services"] for s in steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(x, [s["p50_ms"] for s in steps], "o-", label="agent p50")
    left.plot(x, [s["p99_ms"] for s in steps], "s--", label="agent p99")
    left.plot(x, [s["limit_p50_ms"] for s in steps], "^-", color="grey", label="limit p50")
    left.set_xlabel("services registered")
    left.set_ylabel("Docker start event → in Consul (ms)")
    left.set_ylim(bottom=0)
    left.legend()
    left.grid(alpha=0.3)
    right.plot(x, [s["rss_mb"] for s in steps], "o-", color="tab:red")
    right.axhline(48, color="grey", lw=1, ls=":", label="goal at 1,000: 48 MB")
    right.set_xlabel("services registered")
    right.set_ylabel("agent RSS (MB)")
    right.set_ylim(bottom=0)
    right.legend()
    right.grid(alpha=0.3)
    fig.suptitle(f"mcp-bridge, {r['containers']} containers, {os.cpu_count()} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
