"""Benchmark the proxy-mode TCP forwarder (bridge.forwarder) against docker-proxy, on loopback.

One run, three paths to the same local target server, all on 127.0.0.1:

- direct        client -> target
- docker-proxy  client -> /usr/sbin/docker-proxy (Debian's docker.io, a Go process) -> target
- mcp-bridge    client -> bridge.forward.listeners.Forwarder in its own Python process -> target

Every server runs in a process of its own: the target (`--serve-target`: blocking threads
with 1 MiB recv_into buffers for bulk, one epoll thread for echo), docker-proxy, and the
forwarder (`--serve-forwarder`: a child asyncio loop; the client never shares it). The
client is this process: plain blocking sockets in threads for bulk, one non-blocking epoll
loop over all connections for latency, the same code for all three paths.

Measures, in interleaved rounds (direct, docker-proxy, mcp-bridge, direct, ...):

1. bulk      - `--bulk-mib` MiB (1 GiB) over `--streams` parallel connections, client ->
               server (upload), then server -> client (download); MiB/s, median of rounds.
2. latency   - persistent connections doing 64-byte ping-pong at concurrency 1, 8, 64 for a
               fixed count of round trips each (5000, 1000, 200 per connection); p50/p99
               in microseconds over all rounds' samples pooled, and p99 per round.
3. connect   - new connections per second: `--connect-threads` clients each open a
               connection, send one byte, read the echo and close, `--connects` times in
               all per round, against a target that answers from one epoll loop. A fourth
               path, `mcp-bridge+allow`, is a forwarder whose allow list holds
               `--allow-cidrs` (1000) networks of every prefix length, the client's last,
               so every connection pays for the whole decision.
4. decision  - the access decision alone (bridge.core.access.Access.refuse) against the same
               list, for addresses inside and outside it: p50/p99 in microseconds.

Connection-rate goals: >= 10,000 per second and >= docker-proxy's rate, with and without
the allow list (`connect_ratio_vs_docker_proxy`, the worse of the two); the decision is set
against the 20 ms budget of a security check.

Ratios: `throughput_ratio_vs_docker_proxy` is ours / docker-proxy MiB/s, the worse of the
two directions; `p99_ratio_vs_docker_proxy` is ours / docker-proxy p99, the worst over the
concurrencies (per-concurrency ratios are in the JSON too; so is the same ratio taken from
the median of the per-round p99s, which one noisy round cannot move). Goals: >= 0.8 and
<= 1.2. The proxies' CPU use (all threads, % of one core, from /proc/PID/task/*/schedstat,
connection setup included) is shown for each measurement.

The table goes to stdout, followed by exactly one JSON object as the last line; structlog
is filtered at WARNING (stderr).

    .venv/bin/python scripts/bench_proxy.py            # full run (under a minute)
    .venv/bin/python scripts/bench_proxy.py --quick    # smoke run for tests
    .venv/bin/python scripts/bench_proxy.py --profile-forwarder /tmp/fwd.prof  # cProfile
    .venv/bin/python scripts/bench_proxy.py --forwarder-module /tmp/forwarder_copy.py  # variant
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from benchkit.common import silence_structlog
from benchkit.proxy_report import report
from benchkit.proxy_rounds import run_rounds
from benchkit.proxy_servers import serve_forwarder, serve_target

DOCKER_PROXY = "/usr/sbin/docker-proxy"


def parse_latency(spec: str) -> list[tuple[int, int]]:
    """'1:2000,8:1000,64:200' -> [(connections, round trips per connection), ...]."""
    levels: list[tuple[int, int]] = []
    for item in spec.split(","):
        conns, _, count = item.partition(":")
        levels.append((int(conns), int(count)))
        if levels[-1][0] < 1 or levels[-1][1] < 1:
            raise ValueError(item)
    return levels


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bulk-mib", type=int, default=1024, help="MiB per bulk run")
    parser.add_argument("--streams", type=int, default=4, help="parallel bulk connections")
    parser.add_argument("--no-download", action="store_true", help="skip server -> client")
    parser.add_argument(
        "--latency",
        default="1:5000,8:1000,64:200",
        metavar="C:N,...",
        help="concurrency:round-trips-per-connection levels",
    )
    parser.add_argument("--msg-size", type=int, default=64, help="request = reply bytes")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per path")
    parser.add_argument("--connects", type=int, default=6000, help="connections per round")
    parser.add_argument("--connect-threads", type=int, default=8, help="connecting clients")
    parser.add_argument("--allow-cidrs", type=int, default=1000, help="allow list length")
    parser.add_argument("--docker-proxy", default=DOCKER_PROXY, metavar="PATH")
    parser.add_argument("--profile-forwarder", metavar="FILE", help="cProfile the forwarder")
    parser.add_argument(
        "--forwarder-module", metavar="FILE", help="a modified copy of bridge/forward/listeners.py"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    # Child-process modes, used by the benchmark itself.
    parser.add_argument("--serve-target", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-forwarder", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--listen-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--target-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.bulk_mib, args.streams, args.rounds = 16, 2, 1
        args.latency = "1:50,8:20,64:5"
        args.connects = 300
    try:
        args.levels = parse_latency(args.latency)
    except ValueError:
        parser.error(f"--latency: expected C:N[,C:N...] with positive numbers: {args.latency}")
    for name in ("bulk_mib", "streams", "rounds", "msg_size", "connects", "connect_threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    silence_structlog()
    if args.serve_target:
        return serve_target(args.target_port)
    if args.serve_forwarder:
        return serve_forwarder(
            args.listen_port,
            args.target_port,
            args.profile_forwarder,
            args.forwarder_module,
            args.allow_cidrs,
        )
    result = report(args, run_rounds(args))
    print(json.dumps(result, sort_keys=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
