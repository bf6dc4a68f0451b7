"""Debian's HAProxy run with compose/haproxy/haproxy.cfg as it is (the recipe in
docs/deployment.md), its servers from Consul DNS; what it holds, read from its runtime API."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.conftest import COMPOSE_DIR, wait_for
from tests.integration.conftest import free_tcp_port

CONFIG = COMPOSE_DIR / "haproxy" / "haproxy.cfg"


@dataclass(frozen=True)
class Slot:
    name: str  # mcp1..mcp16, the server-template's slots
    address: str  # ip:port, as the SRV records gave it
    status: str  # UP, DOWN, MAINT (no record for it)
    requests: int  # stot: streams sent to it so far


@dataclass
class HAProxy:
    url: str
    socket_path: Path

    def slots(self) -> list[Slot]:
        """The backend's servers that have an address."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].removeprefix("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return [
            Slot(r["svname"], r["addr"], r["status"].split()[0], int(r["stot"] or 0))
            for r in rows
            if r["pxname"] == "mcp" and r["svname"] not in ("FRONTEND", "BACKEND")
            if r.get("addr") and not r["addr"].startswith(("0.0.0.0", "-"))
        ]

    def up(self) -> set[str]:
        return {s.address for s in self.slots() if s.status == "UP"}


def binary() -> str:
    """Debian's haproxy, installed when missing (CI runs as root)."""
    found = shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy")
    if found is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "haproxy"]
        if subprocess.run(install, capture_output=True, env=env, check=False).returncode:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=True)
            subprocess.run(install, capture_output=True, env=env, check=True)
        found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    return found


@contextlib.contextmanager
def haproxy(consul_dns: str, service: str, workdir: Path) -> Iterator[HAProxy]:
    port, sock = free_tcp_port(), workdir / "haproxy.sock"
    env = {
        **os.environ,
        "CONSUL_DNS": consul_dns,
        "MCP_SERVICE": service,
        "LISTEN": f"127.0.0.1:{port}",
        "STATS_SOCKET": str(sock),
    }
    log = (workdir / "haproxy.log").open("ab")
    proc = subprocess.Popen([binary(), "-db", "-f", str(CONFIG)], env=env, stdout=log, stderr=log)
    log.close()
    try:
        found = HAProxy(f"http://127.0.0.1:{port}/mcp", sock)

        def answering() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"haproxy exited: {(workdir / 'haproxy.log').read_text()}")
            return isinstance(found.slots(), list)

        wait_for("HAProxy's runtime API", answering)
        yield found
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
