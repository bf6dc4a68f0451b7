"""bench_proxy's measurements, from the client (this process): bulk transfer, echo
latency, new connections per second and the access decision alone, each with the proxy's
CPU share; and the interleaved rounds that run them over every path."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from benchkit.common import percentile
from benchkit.proxy_processes import start_servers
from benchkit.proxy_servers import allow_list
from benchkit.proxy_wire import (
    CHUNK,
    CONNECT_PATHS,
    COUNT,
    DOWNLOAD,
    IO_TIMEOUT,
    LOOPBACK,
    MODE_ECHO,
    MODE_SINK,
    MODE_SOURCE,
    PATHS,
    UPLOAD,
    nodelay,
    recv_exact,
)


def cpu_seconds(pid: int | None) -> float:
    """CPU time of a whole process (all its live threads), in ns resolution from schedstat.

    /proc/PID/stat counts in clock ticks (10 ms), too coarse for runs this short.
    """
    if pid is None:
        return 0.0
    total_ns = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with (
                contextlib.suppress(FileNotFoundError),
                open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as stat,
            ):
                total_ns += int(stat.read().split()[0])
    except OSError:
        return float("nan")
    return total_ns / 1e9


def connect(port: int) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=IO_TIMEOUT)
    nodelay(sock)
    return sock


def run_threads(workers: Sequence[Callable[[], None]], barrier: threading.Barrier) -> float:
    """Start workers, release them together, and return the seconds until all finished."""
    errors: list[BaseException] = []

    def wrap(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as exc:
                errors.append(exc)
                barrier.abort()

        return run

    threads = [threading.Thread(target=wrap(w)) for w in workers]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a worker failed: join, report
        barrier.wait(timeout=IO_TIMEOUT)
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"bulk stream failed: {errors[0]!r}") from errors[0]
    return elapsed


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def bulk_once(port: int, total: int, streams: int, direction: str) -> float:
    """Move `total` bytes over `streams` connections; returns MiB/s."""
    payload = memoryview(bytes(CHUNK))
    barrier = threading.Barrier(streams + 1)
    socks = [connect(port) for _ in range(streams)]

    def upload(sock: socket.socket, size: int) -> Callable[[], None]:
        def work() -> None:
            barrier.wait()
            sock.sendall(MODE_SINK)
            remaining = size
            while remaining:
                n = min(remaining, CHUNK)
                sock.sendall(payload[:n])
                remaining -= n
            sock.shutdown(socket.SHUT_WR)
            (got,) = COUNT.unpack(recv_exact(sock, COUNT.size))
            if got != size:
                raise RuntimeError(f"target received {got} bytes, sent {size}")

        return work

    def download(sock: socket.socket, size: int) -> Callable[[], None]:
        def work() -> None:
            view = memoryview(bytearray(CHUNK))
            barrier.wait()
            sock.sendall(MODE_SOURCE + COUNT.pack(size))
            got = 0
            while n := sock.recv_into(view):
                got += n
            if got != size:
                raise RuntimeError(f"received {got} bytes, target sent {size}")

        return work

    make = upload if direction == UPLOAD else download
    try:
        elapsed = run_threads(
            [make(s, n) for s, n in zip(socks, split(total, streams), strict=True)], barrier
        )
    finally:
        for sock in socks:
            sock.close()
    return total / (1024 * 1024) / elapsed


def latency_once(port: int, conns: int, per_conn: int, size: int) -> tuple[list[int], float]:
    """Ping-pong `per_conn` times on each of `conns` connections at once.

    Returns the round-trip times in nanoseconds and the wall time in seconds. One epoll loop
    drives every connection; a sample runs from the send to the moment the whole reply is in.
    """
    payload = b"x" * size
    socks = [connect(port) for _ in range(conns)]
    try:
        for sock in socks:  # the whole path is up before timing starts
            sock.sendall(MODE_ECHO + payload)
            if len(recv_exact(sock, size)) != size:
                raise RuntimeError("echo connection closed during warm-up")
        epoll = select.epoll()
        index = {}
        for i, sock in enumerate(socks):
            sock.setblocking(False)
            epoll.register(sock.fileno(), select.EPOLLIN)
            index[sock.fileno()] = i
        remaining = [per_conn] * conns
        pending = [0] * conns  # reply bytes still to come
        sent_at = [0] * conns
        samples: list[int] = []
        buf = bytearray(max(65536, size))
        active = conns
        clock = time.perf_counter_ns
        gc_was_enabled = gc.isenabled()
        gc.disable()
        start = time.perf_counter()
        try:
            for i, sock in enumerate(socks):
                pending[i] = size
                sent_at[i] = clock()
                sock.send(payload)
            while active:
                events = epoll.poll(IO_TIMEOUT)
                if not events:
                    raise RuntimeError("no echo reply within the timeout")
                for fd, _ in events:
                    i = index[fd]
                    sock = socks[i]
                    try:
                        n = sock.recv_into(buf)
                    except BlockingIOError:
                        continue
                    if n == 0:
                        raise RuntimeError("echo connection closed")
                    pending[i] -= n
                    if pending[i] > 0:
                        continue
                    samples.append(clock() - sent_at[i])
                    remaining[i] -= 1
                    if remaining[i]:
                        pending[i] = size
                        sent_at[i] = clock()
                        if sock.send(payload) != size:
                            raise RuntimeError("short send of a small message")
                    else:
                        active -= 1
            elapsed = time.perf_counter() - start
        finally:
            if gc_was_enabled:
                gc.enable()
            epoll.close()
    finally:
        for sock in socks:
            sock.close()
    return samples, elapsed


def connects_once(port: int, total: int, threads: int) -> float:
    """`total` new connections over `threads` clients at once, each: connect, one byte
    there and back, close. Returns connections per second."""
    barrier = threading.Barrier(threads + 1)

    def client(count: int) -> Callable[[], None]:
        def run() -> None:
            barrier.wait(timeout=IO_TIMEOUT)
            for _ in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.settimeout(IO_TIMEOUT)
                    sock.connect((LOOPBACK, port))
                    sock.sendall(b"x")
                    if sock.recv(1) != b"x":
                        raise RuntimeError("no echo on a new connection")
                finally:
                    sock.close()

        return run

    elapsed = run_threads([client(n) for n in split(total, threads)], barrier)
    return total / elapsed


def decision_times(count: int, cidrs: int) -> dict[str, float]:
    """Access.refuse against `cidrs` networks, one call at a time, for addresses inside
    the list (its networks' first addresses) and outside it (in 11/8, a first octet the
    list never uses): microseconds."""
    import ipaddress

    from bridge.core.access import Access

    listed = allow_list(cidrs)
    access = Access(allow=listed)
    inside = [str(ipaddress.ip_network(n).network_address) for n in listed]
    outside = [f"11.1.{i // 250}.{i % 250 + 1}" for i in range(len(inside))]
    samples: dict[str, list[int]] = {"inside": [], "outside": []}
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(count):
            for kind, pool in (("inside", inside), ("outside", outside)):
                address = pool[i % len(pool)]
                t0 = clock()
                access.refuse(address, 0)
                samples[kind].append(clock() - t0)
    finally:
        gc.enable()
    allowed = sum(access.refuse(a, 0) is None for a in inside)
    refused = sum(access.refuse(a, 0) == "address" for a in outside)
    if (allowed, refused) != (len(inside), len(outside)):
        raise RuntimeError(f"decisions wrong: {allowed} allowed, {refused} refused")
    figures = {}
    for kind, values in samples.items():
        figures[f"{kind}_p50"] = percentile(values, 50) / 1000.0
        figures[f"{kind}_p99"] = percentile(values, 99) / 1000.0
    return figures


@dataclass(slots=True)
class Measured:
    """Every run of one measurement on one path."""

    values: list[float] = field(default_factory=list)  # MiB/s or round trips/s per run
    samples_ns: list[int] = field(default_factory=list)  # latency only, pooled
    round_p99_us: list[float] = field(default_factory=list)
    cpu_pct: list[float] = field(default_factory=list)  # proxy CPU, % of one core


def measure(pid: int | None, into: Measured, run: Callable[[], float]) -> None:
    """Run one measurement; `run` returns its figure (MiB/s, round trips/s).

    The proxy's CPU share is taken over the whole call, connection setup included.
    """
    cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
    into.values.append(run())
    if pid is not None:
        wall = time.perf_counter() - wall0
        into.cpu_pct.append(100.0 * (cpu_seconds(pid) - cpu0) / wall)


@dataclass(slots=True)
class Rounds:
    """Every measurement of one run, by direction, concurrency and path."""

    directions: list[str]
    bulk: dict[tuple[str, str], Measured]
    lat: dict[tuple[int, str], Measured]
    conn: dict[str, Measured]
    decision: dict[str, float]


def run_rounds(args: argparse.Namespace) -> Rounds:
    """A warm-up, then `--rounds` interleaved rounds over every path (A, B, C, A, ...);
    the decision times last, with the servers stopped."""
    total = args.bulk_mib * 1024 * 1024
    directions = [UPLOAD] if args.no_download else [UPLOAD, DOWNLOAD]
    bulk: dict[tuple[str, str], Measured] = {(d, p): Measured() for d in directions for p in PATHS}
    lat: dict[tuple[int, str], Measured] = {
        (c, p): Measured() for c, _ in args.levels for p in PATHS
    }
    conn: dict[str, Measured] = {p: Measured() for p in CONNECT_PATHS}

    with start_servers(args) as servers:
        ports, pids = servers.ports, servers.pids
        for path in PATHS:  # warm-up, not counted: first connections, page faults, caches
            bulk_once(ports[path], min(total, 64 * 1024 * 1024), args.streams, UPLOAD)
            latency_once(ports[path], 8, 50, args.msg_size)
        for path in CONNECT_PATHS:
            connects_once(servers.connect_ports[path], 200, args.connect_threads)
        for _ in range(args.rounds):
            for direction in directions:
                for path in PATHS:  # interleaved: A, B, C, A, B, C, ...

                    def move(p: str = path, d: str = direction) -> float:
                        return bulk_once(ports[p], total, args.streams, d)

                    measure(pids[path], bulk[direction, path], move)
            for conns, per_conn in args.levels:
                for path in PATHS:
                    m = lat[conns, path]

                    def run(
                        p: str = path, c: int = conns, n: int = per_conn, m: Measured = m
                    ) -> float:
                        samples, elapsed = latency_once(ports[p], c, n, args.msg_size)
                        m.samples_ns.extend(samples)
                        m.round_p99_us.append(percentile(samples, 99) / 1000.0)
                        return len(samples) / elapsed

                    measure(pids[path], m, run)
            for path in CONNECT_PATHS:

                def open_many(p: str = path) -> float:
                    return connects_once(
                        servers.connect_ports[p], args.connects, args.connect_threads
                    )

                measure(servers.connect_pids[path], conn[path], open_many)
    decision = decision_times(2000 if args.quick else 50_000, args.allow_cidrs)
    return Rounds(directions, bulk, lat, conn, decision)
