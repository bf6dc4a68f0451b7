"""bench_proxy's child processes: the target server (`--serve-target`: blocking threads
with 1 MiB recv_into buffers for bulk, one epoll thread for echo, one for the connection
rate) and the forwarder under test (`--serve-forwarder`: a child asyncio loop; the client
never shares it). Both exit when the parent closes their stdin."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import itertools
import os
import select
import signal
import socket
import sys
import threading
from types import ModuleType

from benchkit.proxy_wire import (
    CHUNK,
    COUNT,
    LOOPBACK,
    MODE_ECHO,
    MODE_SINK,
    MODE_SOURCE,
    nodelay,
    recv_exact,
)


def exit_on_stdin_eof() -> None:
    """Children read stdin until the parent closes it (or dies), then exit."""
    with contextlib.suppress(OSError):
        while os.read(sys.stdin.fileno(), 4096):
            pass
    os._exit(0)


# --- the target server (child process) -------------------------------------------------


class EchoLoop:
    """One epoll thread that echoes every registered connection."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.conns: dict[int, socket.socket] = {}

    def add(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        self.conns[conn.fileno()] = conn
        self.epoll.register(conn.fileno(), select.EPOLLIN)

    def drop(self, fd: int) -> None:
        conn = self.conns.pop(fd, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                self.epoll.unregister(fd)
            conn.close()

    def run(self) -> None:
        conns = self.conns
        while True:
            for fd, _ in self.epoll.poll():
                conn = conns.get(fd)
                if conn is None:
                    continue
                try:
                    data = conn.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    self.drop(fd)
                    continue
                if not data:
                    self.drop(fd)
                    continue
                try:
                    sent = conn.send(data)
                    if sent < len(data):  # never with ping-pong; stay correct anyway
                        conn.setblocking(True)
                        conn.sendall(data[sent:])
                        conn.setblocking(False)
                except OSError:
                    self.drop(fd)


def handle_target_connection(conn: socket.socket, echo: EchoLoop, zeros: memoryview) -> None:
    try:
        nodelay(conn)
        mode = recv_exact(conn, 1)
        if mode == MODE_ECHO:
            echo.add(conn)
            return
        if mode == MODE_SINK:
            view = memoryview(bytearray(CHUNK))
            total = 0
            while n := conn.recv_into(view):
                total += n
            conn.sendall(COUNT.pack(total))
        elif mode == MODE_SOURCE:
            (remaining,) = COUNT.unpack(recv_exact(conn, COUNT.size))
            while remaining:
                n = min(remaining, CHUNK)
                conn.sendall(zeros[:n])
                remaining -= n
        conn.close()  # also a probe connection that sent nothing
    except OSError:
        conn.close()


def serve_connects(listener: socket.socket) -> None:
    """The connection-rate target: accept, echo one byte, close; one epoll loop, so the
    target costs every path the same and little."""
    listener.setblocking(False)
    epoll = select.epoll()
    epoll.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    while True:
        for fd, _ in epoll.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conns[conn.fileno()] = conn
                    epoll.register(conn.fileno(), select.EPOLLIN)
                continue
            conn = conns.pop(fd)
            epoll.unregister(fd)
            with contextlib.suppress(OSError):
                data = conn.recv(64)
                if data:
                    conn.send(data)
            conn.close()


def serve_target(port: int) -> int:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LOOPBACK, port))
    listener.listen(1024)
    connects = socket.create_server((LOOPBACK, 0), backlog=4096)
    echo = EchoLoop()
    zeros = memoryview(bytes(CHUNK))
    threading.Thread(target=echo.run, daemon=True).start()
    threading.Thread(target=serve_connects, args=(connects,), daemon=True).start()
    threading.Thread(target=exit_on_stdin_eof, daemon=True).start()
    print(listener.getsockname()[1], connects.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(
            target=handle_target_connection, args=(conn, echo, zeros), daemon=True
        ).start()


# --- the forwarder under test (child process) -----------------------------------------


def load_forwarder(path: str | None) -> ModuleType:
    """bridge.forwarder, or a modified copy of it loaded from a file (for experiments)."""
    if path is None:
        return importlib.import_module("bridge.forward.listeners")
    spec = importlib.util.spec_from_file_location("bench_forwarder_variant", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def allow_list(count: int) -> tuple[str, ...]:
    """`count` networks of every prefix length from /8 to /32, none holding 127/8, then the
    client's network as a /8: the decision tries the longest prefixes first, so a client
    matched only by the shortest one pays for a lookup at every length (the worst case)."""
    import ipaddress
    import random

    rng = random.Random(1000)
    nets: dict[str, None] = {}  # ordered, no duplicates
    for attempt in itertools.count():
        if len(nets) >= count - 1:
            break
        plen = 8 + attempt % 25
        first = rng.choice([10, 100, 172, 192, 198, 203]) << 24
        net = ipaddress.ip_network((first | rng.getrandbits(24), plen), strict=False)
        nets[str(net)] = None
    return (*nets, "127.0.0.0/8")


async def run_forwarder(
    module: ModuleType, listen_port: int, target_port: int, allow: int = 0
) -> None:
    from bridge.core.access import Access
    from bridge.core.model import ForwardTarget

    access = Access(allow=allow_list(allow)) if allow else Access()
    target = ForwardTarget(listen_port, LOOPBACK, target_port, access)
    forwarder = module.Forwarder("bench", LOOPBACK, target)
    await forwarder.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:
        try:
            data = os.read(stdin, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(stdin)
            stop.set()

    loop.add_reader(stdin, on_stdin)
    print("ready", flush=True)
    await stop.wait()
    await forwarder.close()


def serve_forwarder(
    listen_port: int,
    target_port: int,
    profile: str | None,
    forwarder_module: str | None,
    allow: int = 0,
) -> int:
    module = load_forwarder(forwarder_module)
    if profile is None:
        asyncio.run(run_forwarder(module, listen_port, target_port, allow))
        return 0
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(run_forwarder(module, listen_port, target_port))
    finally:
        profiler.disable()
        profiler.dump_stats(profile)
    return 0
