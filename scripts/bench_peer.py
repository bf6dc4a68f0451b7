#!/usr/bin/env python3
"""mcp-bridge beside the lean peer, serviceregistrator, and the floor, in one run.

    scripts/bench_peer.py [--containers N...] [--runs R] [--peer CHECKOUT] [--json FILE]

Needs the local Docker engine and Consul (scripts/local-services.sh up) and the busybox
image (scripts/local-services.sh busybox-image). CHECKOUT is serviceregistrator's work
tree or git repository (it is not on PyPI); it is installed into a venv of its own under
$MCP_BRIDGE_HOME/cache. Without it, the floor and mcp-bridge alone.

Each system gets N containers of its own (busybox httpd publishing 8080 on a random host
port, no health check) and, one system after another:
- event → visible: the containers started one at a time; from Docker's `start` event
  timestamp to the service in Consul's catalog (one blocking query watching it); p50, p99;
- RSS of the system's process with N services;
- burst tail lag: all N stopped and withdrawn, then started at once (waves of 250): from
  the last `start` event to the last service visible; the median over waves;
- cold reconcile: the system stopped, its services removed, started again with N running:
  from the process's spawn to all N visible.

Containers publish fixed host ports from 29000. Each run (R of them, for each N) begins
with another system. Prints a table per run and, as the LAST line, one JSON object: each
N's runs and their figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchkit.peer_rig import PeerBench

FIGURES = (("p50_ms", "event p50 ms"), ("p99_ms", "p99 ms"), ("burst_tail_ms", "burst tail ms"),
           ("cold_s", "cold reconcile s"), ("rss_mb", "RSS MB"))  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, nargs="+", default=[100], metavar="N")
    parser.add_argument("--runs", type=int, default=1, metavar="R")
    parser.add_argument("--peer", type=Path, default=None, metavar="CHECKOUT")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    return parser.parse_args(argv)


def table(run: dict[str, dict[str, float]]) -> str:
    head = "| system | " + " | ".join(label for _, label in FIGURES) + " |"
    rule = "|---" * (len(FIGURES) + 1) + "|"
    rows = [
        f"| {name} | " + " | ".join(f"{figures[key]:.2f}" for key, _ in FIGURES) + " |"
        for name, figures in run.items()
    ]
    return "\n".join([head, rule, *rows])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result: dict[str, list[dict[str, Any]]] = {}
    for number in range(args.runs):
        for n in args.containers:
            run = PeerBench(n, args.peer, rotate=number).run()
            result.setdefault(str(n), []).append(run)
            print(f"run {number + 1} of {args.runs}, N={n}\n{table(run)}\n", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
