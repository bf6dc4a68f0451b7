"""bench_proxy's parent side of the servers: starting the target, docker-proxy (the way
dockerd starts it) and the forwarders as processes of their own, and stopping them."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchkit.common import free_port
from benchkit.proxy_wire import DIRECT, DOCKER, LOOPBACK, OURS, OURS_ALLOW, START_TIMEOUT

# The entry point: the children are this script in its `--serve-target` and
# `--serve-forwarder` modes.
ENTRY = Path(__file__).resolve().parents[1] / "bench_proxy.py"


def read_line(proc: subprocess.Popen[str], what: str) -> str:
    """The child's first stdout line, or an error if it dies or stays silent."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        raise RuntimeError(f"{what} did not start (exit code {proc.wait()})")
    return line.strip()


def start_docker_proxy(
    docker_proxy: str, port: int, target_port: int, errors: IO[bytes]
) -> subprocess.Popen[str]:
    """docker-proxy, started the way dockerd starts it.

    docker-proxy reports readiness by writing "0\n" (or "1\n<error>") to fd 3, then closes
    fd 3; if fd 3 is not open, its listener gets fd 3 and that close kills it. So fd 3 is
    pointed at our stdout pipe (`3>&1` in a shell that then execs docker-proxy).
    """
    command = [docker_proxy, "-proto", "tcp", "-host-ip", LOOPBACK, "-host-port", str(port)]
    command += ["-container-ip", LOOPBACK, "-container-port", str(target_port)]
    proc = subprocess.Popen(
        ["/bin/sh", "-c", 'exec "$0" "$@" 3>&1', *command],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    status = proc.stdout.readline() if ready else ""
    if status.strip() != "0":
        if status.strip() == "1":  # it exits after writing the error and closing fd 3
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=START_TIMEOUT)
            status = proc.stdout.read() if proc.poll() is not None else ""
        proc.kill()
        proc.wait()
        errors.seek(0)
        detail = status.strip() or errors.read().decode(errors="replace")
        raise RuntimeError(f"docker-proxy did not start: {detail.strip() or 'no output'}")
    return proc


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the Python children exit on stdin EOF
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def stop_processes(procs: list[subprocess.Popen[Any]]) -> None:
    for proc in reversed(procs):
        stop_process(proc)


@dataclass(slots=True)
class Servers:
    target_port: int
    ports: dict[str, int]
    pids: dict[str, int | None]
    connect_ports: dict[str, int]
    connect_pids: dict[str, int | None]


@contextlib.contextmanager
def start_servers(args: argparse.Namespace) -> Iterator[Servers]:
    script = str(ENTRY)
    docker_proxy = args.docker_proxy
    if not (os.path.isfile(docker_proxy) and os.access(docker_proxy, os.X_OK)):
        raise SystemExit(
            f"bench_proxy: docker-proxy not found at {docker_proxy}; it comes with Debian's"
            " docker.io package (apt-get install docker.io), or pass --docker-proxy PATH"
        )
    procs: list[subprocess.Popen[Any]] = []
    with contextlib.ExitStack() as stack:
        docker_errors = stack.enter_context(tempfile.TemporaryFile())
        stack.callback(stop_processes, procs)
        target = subprocess.Popen(
            [sys.executable, script, "--serve-target"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(target)
        target_port, connect_port = (int(p) for p in read_line(target, "target").split())

        def forwarder(target: int, allow: int = 0) -> tuple[int, subprocess.Popen[str]]:
            port = free_port()
            command = [sys.executable, script, "--serve-forwarder"]
            command += ["--listen-port", str(port), "--target-port", str(target)]
            command += ["--allow-cidrs", str(allow)]
            if args.profile_forwarder and not allow and target == target_port:
                command += ["--profile-forwarder", args.profile_forwarder]
            if args.forwarder_module:
                command += ["--forwarder-module", args.forwarder_module]
            proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            procs.append(proc)
            if read_line(proc, "forwarder") != "ready":
                raise RuntimeError("forwarder did not report ready")
            return port, proc

        def docker_proxy_to(target: int) -> tuple[int, subprocess.Popen[str]]:
            port = free_port()
            proc = start_docker_proxy(docker_proxy, port, target, docker_errors)
            procs.append(proc)
            return port, proc

        docker_port, docker = docker_proxy_to(target_port)
        ours_port, ours = forwarder(target_port)
        # The connection-rate round has proxies of its own, in front of its own target.
        c_docker_port, c_docker = docker_proxy_to(connect_port)
        c_ours_port, c_ours = forwarder(connect_port)
        c_allow_port, c_allow = forwarder(connect_port, args.allow_cidrs)
        print(
            f"bench_proxy: pids target={target.pid} docker-proxy={docker.pid}"
            f" mcp-bridge={ours.pid}",
            file=sys.stderr,
            flush=True,
        )
        yield Servers(
            target_port=target_port,
            ports={DIRECT: target_port, DOCKER: docker_port, OURS: ours_port},
            pids={DIRECT: None, DOCKER: docker.pid, OURS: ours.pid},
            connect_ports={
                DIRECT: connect_port,
                DOCKER: c_docker_port,
                OURS: c_ours_port,
                OURS_ALLOW: c_allow_port,
            },
            connect_pids={
                DIRECT: None,
                DOCKER: c_docker.pid,
                OURS: c_ours.pid,
                OURS_ALLOW: c_allow.pid,
            },
        )
