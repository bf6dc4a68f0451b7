"""The gateway benchmark's parts: MCP servers (the SDK fixture, both eras) as local
processes registered in Consul by hand (no bridge: the gateway is what is measured),
`mcp-bridge gateway`, HAProxy forwarding HTTP to one of them, and the clients: one
2026-07-28 `tools/call` at a time per worker, on a kept-alive connection of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
VERSION = "2026-07-28"


def consul_url() -> str:
    return os.environ.get("BRIDGE_CONSUL_URL", "http://127.0.0.1:8500")


def consul(method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    # Consul's own URL, http or https: nothing taken from outside
    request = urllib.request.Request(consul_url() + path, data=data, method=method)  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        text = response.read()
        return json.loads(text) if text else None


def wait(what: str, ready: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if ready():
                return
        time.sleep(0.1)
    raise SystemExit(f"bench_gateway: gave up waiting for {what}")


@dataclass
class Instance:
    sid: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


def start_instance(service: str, sid: str, port: int) -> Instance:
    env = {**os.environ, "MCP_PORT": str(port), "MCP_HOST": "127.0.0.1", "MCP_SERVER_NAME": sid}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fixtures" / "mcp_server.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    instance = Instance(sid, port, proc)
    wait(f"{sid} listening", lambda: _answers(instance.url))
    meta = {"mcp_protocol_version": VERSION, "path": "/mcp"}
    consul(
        "PUT",
        "/v1/agent/service/register",
        {
            "ID": sid,
            "Name": service,
            "Tags": ["mcp"],
            "Address": "127.0.0.1",
            "Port": port,
            "Meta": meta,
        },
    )
    return instance


def _answers(url: str) -> bool:
    request = urllib.request.Request(url, method="GET")  # noqa: S310 - our own loopback
    try:
        urllib.request.urlopen(request, timeout=1)  # noqa: S310
    except urllib.error.HTTPError:
        return True  # it answered
    return True


@dataclass
class Gateway:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base + "/v1/status", timeout=5) as response:  # noqa: S310
            return dict(json.load(response))

    def attempts(self, sid: str) -> int:
        for service in self.status()["services"]:
            for row in service["instances"]:
                if row["id"] == sid:
                    return sum(row["calls"].values())
        return 0


def start_gateway(service: str, port: int, log: Path) -> Gateway:
    env = {
        **os.environ,
        "BRIDGE_GATEWAY_ADDR": f"127.0.0.1:{port}",
        "BRIDGE_GATEWAY_SERVICES": service,
        "BRIDGE_LOG_LEVEL": "warning",
        "BRIDGE_LOG_FORMAT": "json",
        "BRIDGE_CONSUL_URL": consul_url(),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "gateway"],
        env=env,
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    gateway = Gateway(port, proc)
    wait("the gateway's union", lambda: gateway.status()["tools"] >= 1)
    return gateway


@contextlib.contextmanager
def serving(what: str, command: list[str], port: int) -> Iterator[str]:
    """A proxy process on 127.0.0.1:port, its /mcp URL once it answers; stopped after."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        wait(what, lambda: _answers(url))
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def least_proxy(port: int, target: str) -> contextlib.AbstractContextManager[str]:
    """The floor: the least a Python proxy can be (least_proxy.py)."""
    script = str(Path(__file__).with_name("least_proxy.py"))
    return serving("the least proxy", [sys.executable, script, str(port), target], port)


def haproxy_binary() -> str:
    """Debian's haproxy, installed when missing (root)."""
    found = shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy")
    if found is None:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "haproxy"],
            check=True,
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    return found


def haproxy(port: int, target: int, workdir: Path) -> contextlib.AbstractContextManager[str]:
    """HAProxy in HTTP mode, keep-alive on both sides, one server: the cost of a proxy."""
    config = workdir / "haproxy.cfg"
    config.write_text(f"""
global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind 127.0.0.1:{port}
    default_backend mcp
backend mcp
    server one 127.0.0.1:{target}
""")
    return serving("haproxy", [haproxy_binary(), "-f", str(config), "-db"], port)


def call_body(tool: str, n: int) -> tuple[bytes, dict[str, str]]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    params = {"name": tool, "arguments": {"text": "x" * 64}, "_meta": meta}
    body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params}
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": VERSION,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    return json.dumps(body).encode(), headers


@dataclass
class Outcomes:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stamps: list[tuple[float, str]] = field(default_factory=list)  # (when, "ok" | error)


async def worker(
    url: str, tool: str, calls: int | None, out: Outcomes, stop: asyncio.Event | None = None
) -> None:
    """One client, one call at a time: `calls` of them, or until `stop`."""
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        n = 0
        while (calls is None or n < calls) and not (stop is not None and stop.is_set()):
            n += 1
            body, headers = call_body(tool, n)
            started = time.perf_counter()
            try:
                async with http.post(url, data=body, headers=headers) as response:
                    said = await response.json(content_type=None)
                if not isinstance(said, dict):
                    what = f"HTTP {response.status}: not a JSON-RPC answer"
                else:
                    what = "ok" if "result" in said else str(said.get("error", {}).get("message"))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                what = f"{type(exc).__name__}: {exc}"
            out.latencies.append(time.perf_counter() - started)
            out.stamps.append((time.monotonic(), what))
            if what != "ok":
                out.errors.append(what)
