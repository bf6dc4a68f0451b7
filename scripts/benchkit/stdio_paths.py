"""The five ways to one stdio server that the stdio benchmark measures side by side, each an
async context manager giving a Path: how to make N clients, and the process whose memory
is the path's cost.

- pipe          the server as a child of this process, one pipe: the limit
- attach        the server in a container, this process on Docker's attach stream: the
                limit of any bridge that attaches (it pays the dockerd hop)
- mcp-bridge    the server in a container (`docker run -d -i`), the agent attached to it
                and serving it on a pool port, as a user runs both
- supergateway  npm, `--stdio CMD --outputTransport streamableHttp --stateful`: a child
                server per session, on the host (no dockerd hop)
- mcp-proxy     PyPI (sparfenyuk's), one child server shared through the SDK, on the host

The server is the MCP project's server-everything (npm) and its `echo` tool in every case:
the same code on the same Node, on the host or in mcp-bridge/mcp-server-npm:local.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import aiohttp

from benchkit.common import free_port
from benchkit.stdio_clients import ECHO, Call, HttpSession, Lines, frame_lines, pipe_lines

ROOT = FsPath(__file__).resolve().parents[2]
CACHE = FsPath(os.environ.get("MCP_BRIDGE_HOME", "/opt/mcp-bridge")) / "cache" / "bench-stdio"
IMAGE = "mcp-bridge/mcp-server-npm:local"
SERVERS = "@modelcontextprotocol/server-everything@2026.8.31"
PEERS_NPM = "supergateway@4.0.0"
PEERS_PYPI = "mcp-proxy==0.13.0"
EVERYTHING = CACHE / "node_modules/@modelcontextprotocol/server-everything/dist/index.js"


@dataclass
class Path:
    name: str
    clients: Callable[[int], Awaitable[list[Call]]]  # n clients, each one call at a time
    pid: int | None = None  # the process whose RSS is the path's cost (with its children)
    notes: dict[str, Any] = field(default_factory=dict)


def install_peers() -> None:
    """The peers and the host's server, installed once into the cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    if not (CACHE / "node_modules/supergateway").exists() or not EVERYTHING.exists():
        subprocess.run(
            ["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund",
             "--omit=dev", "--no-package-lock", PEERS_NPM, SERVERS],
            check=True, stdout=sys.stderr,
        )  # fmt: skip
    venv = CACHE / "proxy-venv"
    if not (venv / "bin" / "mcp-proxy").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", PEERS_PYPI], check=True,
            stdout=sys.stderr,
        )  # fmt: skip


def server_command() -> list[str]:
    return ["node", str(EVERYTHING), "stdio"]


@contextlib.asynccontextmanager
async def pipe() -> AsyncIterator[Path]:
    process = await asyncio.create_subprocess_exec(
        *server_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, limit=1 << 22,
    )  # fmt: skip
    assert process.stdin is not None
    stdin = process.stdin

    async def write(data: bytes) -> None:
        stdin.write(data)
        await stdin.drain()

    lines = Lines(write, pipe_lines(process))
    await lines.start()

    async def clients(n: int) -> list[Call]:
        return [lambda: lines.call("tools/call", ECHO)] * n

    try:
        yield Path("pipe", clients, process.pid)
    finally:
        lines.close()
        process.kill()
        await process.wait()


def docker_run(name: str, labels: dict[str, str] | None = None) -> str:
    args = ["docker", "run", "-d", "-i", "--name", name]
    for key, value in (labels or {}).items():
        args += ["--label", f"{key}={value}"]
    return subprocess.run([*args, IMAGE], check=True, capture_output=True, text=True).stdout.strip()


def docker_rm(name: str) -> None:
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)


@contextlib.asynccontextmanager
async def attach_path(tag: str) -> AsyncIterator[Path]:
    from bridge.docker.attach import attach
    from bridge.docker.endpoint import endpoint_from_env

    name = f"{tag}-attach"
    cid = docker_run(name)
    try:
        stream = await attach(endpoint_from_env(), cid)
        lines = Lines(stream.write, frame_lines(stream.frames()))
        await asyncio.wait_for(lines.start(), 60)

        async def clients(n: int) -> list[Call]:
            return [lambda: lines.call("tools/call", ECHO)] * n

        yield Path("attach", clients)
        lines.close()
        await stream.close()
    finally:
        docker_rm(name)


def http_clients(url: str) -> Callable[[int], Awaitable[list[Call]]]:
    """n handshake-era sessions, each its own client."""
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    opened: list[HttpSession] = []

    async def clients(n: int) -> list[Call]:
        sessions = [HttpSession(http, url) for _ in range(n)]
        for s in sessions:  # one after another: some peers start a child per session
            await s.start()
        opened.extend(sessions)
        return [lambda s=s: s.call("tools/call", ECHO) for s in sessions]  # type: ignore[misc]

    clients.http = http  # type: ignore[attr-defined]
    return clients


async def wait_http(url: str, what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            async with aiohttp.ClientSession() as http:
                session = HttpSession(http, url)
                await session.start()
                return
        except (aiohttp.ClientError, RuntimeError, OSError, ValueError):
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{what} did not answer at {url}")


@contextlib.asynccontextmanager
async def peer(name: str, argv: list[str], url: str) -> AsyncIterator[Path]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await wait_http(url, name)
        clients = http_clients(url)
        yield Path(name, clients, process.pid)
        await clients.http.close()  # type: ignore[attr-defined]
    finally:
        await _end(process)


async def _end(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()


def supergateway(port: int) -> tuple[list[str], str]:
    command = " ".join(server_command())
    argv = [
        "node", str(CACHE / "node_modules/supergateway/dist/index.js"),
        "--stdio", command, "--outputTransport", "streamableHttp", "--stateful",
        "--port", str(port), "--logLevel", "none",
    ]  # fmt: skip
    return argv, f"http://127.0.0.1:{port}/mcp"


def mcp_proxy(port: int) -> tuple[list[str], str]:
    argv = [
        str(CACHE / "proxy-venv/bin/mcp-proxy"), "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "WARNING", "--", *server_command(),
    ]  # fmt: skip
    return argv, f"http://127.0.0.1:{port}/mcp"


@contextlib.asynccontextmanager
async def bridge_path(tag: str, consul_url: str) -> AsyncIterator[Path]:
    """The agent as a user runs it, then `docker run -d -i` of the server: the time from
    that to the first answer through the registered port is in the notes."""
    http_port, base = free_port(), 23400
    state = tempfile.mkdtemp(prefix="bench-stdio-")
    env = {
        **os.environ,
        "BRIDGE_NODE_ID": tag,
        "BRIDGE_STATE_FILE": f"{state}/state.db",
        "BRIDGE_PORT_RANGE": f"{base}-{base + 49}",
        "BRIDGE_LABEL_PREFIX": f"{tag}.",
        "BRIDGE_NAME_PATTERN": f"^{tag}-",
        "BRIDGE_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "BRIDGE_ADVERTISE_ADDRESS": "127.0.0.1",
        "BRIDGE_LISTEN_ADDRESS": "127.0.0.1",
        "BRIDGE_CONSUL_URL": consul_url,
        "BRIDGE_LOG_LEVEL": "warning",
        "BRIDGE_STDIO_MAX_SESSIONS": "5000",
    }
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "run", env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    name = f"{tag}-everything"
    try:
        status_url = f"http://127.0.0.1:{http_port}/v1/status"
        async with aiohttp.ClientSession() as http:

            async def status() -> dict[str, Any] | None:
                try:
                    async with http.get(status_url) as r:
                        return dict(await r.json())
                except (aiohttp.ClientError, ValueError):
                    return None

            async def port() -> int | None:
                for m in ((await status()) or {}).get("managed", []):
                    if m["container"] == name and (m.get("stdio") or {}).get("state") == "serving":
                        return int(m["port"])
                return None

            await _until(status, "the agent", 60)
            started = time.monotonic()
            await asyncio.to_thread(docker_run, name)
            served = await _until(port, "the served stdio server", 120)
        url = f"http://127.0.0.1:{served}/mcp"
        await wait_http(url, "mcp-bridge")
        first_answer = time.monotonic() - started
        clients = http_clients(url)
        yield Path("mcp-bridge", clients, agent.pid, {"run_to_first_answer_s": first_answer})
        await clients.http.close()  # type: ignore[attr-defined]
    finally:
        await asyncio.to_thread(docker_rm, name)
        await _end(agent)


async def _until(probe: Callable[[], Awaitable[Any]], what: str, within: float) -> Any:
    deadline = time.monotonic() + within
    while not (found := await probe()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {within:g}s")
        await asyncio.sleep(0.05)
    return found


def rss_mb(pid: int | None) -> float | None:
    """The process's resident memory and its children's, in MB (supergateway's children
    are its cost)."""
    if pid is None:
        return None
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return total / 1024
