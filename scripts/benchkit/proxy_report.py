"""bench_proxy's report: the tables, the ratios against docker-proxy and the goals, and
the JSON summary."""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
from collections.abc import Sequence
from typing import Any

from benchkit.common import fmt_table, percentile
from benchkit.proxy_rounds import Rounds
from benchkit.proxy_wire import CONNECT_PATHS, DOCKER, LOOPBACK, OURS, OURS_ALLOW, PATHS

GOAL_CONNECT_RATE = 10_000.0
DECISION_BUDGET_US = 20_000.0
GOAL_THROUGHPUT_RATIO = 0.8
GOAL_P99_RATIO = 1.2


def ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs > 0 else float("nan")


def rounded(value: float, digits: int = 3) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def median_or_nan(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(args: argparse.Namespace, rounds: Rounds) -> dict[str, Any]:
    directions, bulk, lat, conn = rounds.directions, rounds.bulk, rounds.lat, rounds.conn
    decision = rounds.decision
    mib_s = {key: median_or_nan(m.values) for key, m in bulk.items()}
    bulk_rows = []
    for direction in directions:
        for path in PATHS:
            m = bulk[direction, path]
            bulk_rows.append(
                (
                    f"{direction} {path}",
                    f"{mib_s[direction, path]:,.0f}",
                    " ".join(f"{v:,.0f}" for v in m.values),
                    f"{median_or_nan(m.cpu_pct):.0f}" if m.cpu_pct else "-",
                )
            )
    lat_us: dict[tuple[int, str], dict[str, float]] = {}
    lat_rows = []
    for (conns, path), m in lat.items():
        us = [s / 1000.0 for s in m.samples_ns]
        figures = {
            "p50": percentile(us, 50),
            "p99": percentile(us, 99),
            "p999": percentile(us, 99.9),
            "rtt_per_s": median_or_nan(m.values),
        }
        lat_us[conns, path] = figures
        lat_rows.append(
            (
                f"c={conns} {path}",
                f"{figures['p50']:,.0f}",
                f"{figures['p99']:,.0f}",
                f"{figures['p999']:,.0f}",
                " ".join(f"{v:,.0f}" for v in m.round_p99_us),
                f"{figures['rtt_per_s']:,.0f}",
                f"{median_or_nan(m.cpu_pct):.0f}" if m.cpu_pct else "-",
            )
        )

    tput_ratios = {d: ratio(mib_s[d, OURS], mib_s[d, DOCKER]) for d in directions}
    tput_ratio = min(tput_ratios.values())
    p99_ratios = {
        c: ratio(lat_us[c, OURS]["p99"], lat_us[c, DOCKER]["p99"]) for c, _ in args.levels
    }
    p99_ratio = max(p99_ratios.values())
    # The same, from the median over rounds of each round's p99: one noisy round (the
    # host, not the proxy) cannot decide it. Reported beside the pooled figure, not instead.
    p99_ratios_rounds = {
        c: ratio(
            median_or_nan(lat[c, OURS].round_p99_us), median_or_nan(lat[c, DOCKER].round_p99_us)
        )
        for c, _ in args.levels
    }
    per_s = {p: median_or_nan(m.values) for p, m in conn.items()}
    connect_ratios = {p: ratio(per_s[p], per_s[DOCKER]) for p in (OURS, OURS_ALLOW)}
    connect_ratio = min(connect_ratios.values())
    connect_met = connect_ratio >= 1.0 and min(per_s[OURS], per_s[OURS_ALLOW]) >= GOAL_CONNECT_RATE
    conn_rows = [
        (
            path,
            f"{per_s[path]:,.0f}",
            " ".join(f"{v:,.0f}" for v in conn[path].values),
            f"{median_or_nan(conn[path].cpu_pct):.0f}" if conn[path].cpu_pct else "-",
        )
        for path in CONNECT_PATHS
    ]
    tput_met = tput_ratio >= GOAL_THROUGHPUT_RATIO
    p99_met = p99_ratio <= GOAL_P99_RATIO

    print(
        f"proxy benchmark on {LOOPBACK}: {os.cpu_count()} CPUs, python"
        f" {platform.python_version()}, kernel {platform.release()}, docker-proxy"
        f" {args.docker_proxy}, {args.rounds} interleaved round(s)"
    )
    print()
    print(
        f"bulk: {args.bulk_mib} MiB per run over {args.streams} streams, median of rounds;"
        " proxy CPU = % of one core"
    )
    print(fmt_table(("path", "MiB/s", "runs MiB/s", "proxy CPU %"), bulk_rows))
    print()
    levels = ", ".join(f"c={c} x{n}" for c, n in args.levels)
    print(
        f"latency: {args.msg_size}-byte echo, round trips per connection {levels};"
        " percentiles over all rounds, in microseconds"
    )
    print(
        fmt_table(
            ("path", "p50 us", "p99 us", "p99.9 us", "p99 per round", "RTT/s", "proxy CPU %"),
            lat_rows,
        )
    )
    print()
    print(
        "throughput ratio mcp-bridge / docker-proxy: "
        + ", ".join(f"{d} {r:.2f}" for d, r in tput_ratios.items())
        + f"; worst {tput_ratio:.2f} (goal >= {GOAL_THROUGHPUT_RATIO}):"
        f" {'met' if tput_met else 'NOT met'}"
    )
    print(
        "p99 ratio mcp-bridge / docker-proxy: "
        + ", ".join(f"c={c} {r:.2f}" for c, r in p99_ratios.items())
        + f"; worst {p99_ratio:.2f} (goal <= {GOAL_P99_RATIO}): {'met' if p99_met else 'NOT met'}"
    )
    print(
        "  (median-of-rounds p99 ratio: "
        + ", ".join(f"c={c} {r:.2f}" for c, r in p99_ratios_rounds.items())
        + f"; worst {max(p99_ratios_rounds.values()):.2f})"
    )

    print()
    print(
        f"new connections: {args.connects} per round over {args.connect_threads} clients"
        f" (connect, 1 byte there and back, close); {OURS_ALLOW}: {args.allow_cidrs} CIDRs"
    )
    print(fmt_table(("path", "conn/s", "runs conn/s", "proxy CPU %"), conn_rows))
    print(
        "connection-rate ratio mcp-bridge / docker-proxy: "
        + ", ".join(f"{p} {r:.2f}" for p, r in connect_ratios.items())
        + f"; worst {connect_ratio:.2f} (goal >= 1.0 and >= {GOAL_CONNECT_RATE:,.0f}/s):"
        f" {'met' if connect_met else 'NOT met'}"
    )
    print(
        f"access decision, {args.allow_cidrs} CIDRs: inside the list p50"
        f" {decision['inside_p50']:.2f} us, p99 {decision['inside_p99']:.2f} us; outside p50"
        f" {decision['outside_p50']:.2f} us, p99 {decision['outside_p99']:.2f} us"
        f" (budget {DECISION_BUDGET_US:,.0f} us: worst p99 is"
        f" {max(decision['inside_p99'], decision['outside_p99']) / DECISION_BUDGET_US:.5f} of it)"
    )

    return {
        "throughput_ratio_vs_docker_proxy": rounded(tput_ratio),
        "throughput_ratio_by_direction": {d: rounded(r) for d, r in tput_ratios.items()},
        "p99_ratio_vs_docker_proxy": rounded(p99_ratio),
        "p99_ratio_by_concurrency": {str(c): rounded(r) for c, r in p99_ratios.items()},
        "p99_ratio_median_of_rounds": rounded(max(p99_ratios_rounds.values())),
        "p99_ratio_median_of_rounds_by_concurrency": {
            str(c): rounded(r) for c, r in p99_ratios_rounds.items()
        },
        "goal_throughput_met": tput_met,
        "goal_p99_met": p99_met,
        "throughput_mib_s": {d: {p: rounded(mib_s[d, p], 1) for p in PATHS} for d in directions},
        "throughput_mib_s_runs": {
            d: {p: [round(v, 1) for v in bulk[d, p].values] for p in PATHS} for d in directions
        },
        "throughput_proxy_cpu_pct": {
            d: {p: rounded(median_or_nan(bulk[d, p].cpu_pct), 1) for p in (DOCKER, OURS)}
            for d in directions
        },
        "latency_us": {
            str(c): {p: {k: rounded(v, 1) for k, v in lat_us[c, p].items()} for p in PATHS}
            for c, _ in args.levels
        },
        "latency_p99_us_per_round": {
            str(c): {p: [round(v, 1) for v in lat[c, p].round_p99_us] for p in PATHS}
            for c, _ in args.levels
        },
        "latency_proxy_cpu_pct": {
            str(c): {p: rounded(median_or_nan(lat[c, p].cpu_pct), 1) for p in (DOCKER, OURS)}
            for c, _ in args.levels
        },
        "connect_per_s": {p: rounded(v, 0) for p, v in per_s.items()},
        "connect_per_s_runs": {p: [round(v) for v in m.values] for p, m in conn.items()},
        "connect_proxy_cpu_pct": {
            p: rounded(median_or_nan(conn[p].cpu_pct), 1) for p in (DOCKER, OURS, OURS_ALLOW)
        },
        "connect_ratio_vs_docker_proxy": rounded(connect_ratio),
        "connect_ratio_by_path": {p: rounded(r) for p, r in connect_ratios.items()},
        "goal_connect_met": connect_met,
        "decision_us": {k: round(v, 2) for k, v in decision.items()},
        "decision_budget_ratio": rounded(
            max(decision["inside_p99"], decision["outside_p99"]) / DECISION_BUDGET_US, 6
        ),
        "allow_cidrs": args.allow_cidrs,
        "connects": args.connects,
        "connect_threads": args.connect_threads,
        "bulk_mib": args.bulk_mib,
        "streams": args.streams,
        "latency_levels": {str(c): n for c, n in args.levels},
        "msg_size": args.msg_size,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "forwarder_module": args.forwarder_module or "bridge.forward.listeners",
        "quick": bool(args.quick),
    }
