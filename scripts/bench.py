#!/usr/bin/env python3
"""The agent against the limit the hardware, Docker and Consul allow, in one run.

    scripts/bench.py [--containers N] [--plot FILE]

Needs the local Docker engine and Consul (scripts/local-services.sh up) and the busybox
image (scripts/local-services.sh busybox-image). It starts N busybox containers with
`mcp.*`-style labels under a prefix of its own (so no other agent or test is disturbed),
runs one real `mcp-bridge run` process, and removes everything at the end.

What "visible" means everywhere: the service is in Consul's catalog, seen by one
blocking query on /v1/catalog/services (what other programs and DNS see).

- limit, sequential: a minimal registrar in place of the agent: on a container's Docker
  `start` event, one raw inspect and one raw Consul register of an equivalent service;
  from the event's timestamp to visible. Taken before the agent starts and at each of
  the 8 steps below, side by side with the agent (Consul's work per change grows with
  the services it holds); --limit-samples in all, about.
- limit, concurrent: N raw Consul registers at the agent's concurrency (32 in flight,
  one keep-alive asyncio client), until all visible: registrations per second, and the
  time for N.
- event latency: N containers started one at a time; for each, the Docker `start` event's
  own timestamp to the service visible. p50/p99, and ratios to the sequential limit.
  Sampled in 8 steps of N/8, with the agent's RSS, for the plot.
- burst: the N containers stopped (withdrawn), the agent frozen (SIGSTOP), all started
  again at once, the agent thawed (SIGCONT): registrations per second until all N are
  visible; after each wave, as many raw registers at once (32 in flight), at the same
  scale, are the limit. In waves of at most --wave containers: Docker
  drops events for a subscriber whose buffer (1024 events) stays full, and each start
  is two events. Freezing the agent takes Docker's own start rate out of the figure.
- cold reconcile: the agent stopped, its services removed from Consul, the agent started
  with N containers running: time from process start to all N visible, against one raw
  list plus N raw registers at 32 in flight.
- RSS of the agent at N services, and its growth from N/4 to N (cost per service).

Prints a table, writes a PNG (matplotlib) of latency and RSS against services, and as
the LAST line one JSON object with event_p50_ratio, event_p99_ratio, burst_ratio,
reconcile_ratio, rss_mb and the raw figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchkit.agent_bench import Bench
from benchkit.agent_report import plot, report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=200, metavar="N")
    parser.add_argument("--limit-samples", type=int, default=80, metavar="K")
    parser.add_argument("--wave", type=int, default=250, help="burst wave size (≤ 300)")
    parser.add_argument("--plot", type=Path, default=Path("bench.png"), metavar="FILE")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.containers < 4:
        raise SystemExit("--containers must be at least 4")
    args.wave = min(args.wave, 300)
    results = Bench(args).run()
    summary = report(results)
    plot(results, args.plot)
    print(f"  plot: {args.plot}")
    print(json.dumps({**summary, "raw": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
