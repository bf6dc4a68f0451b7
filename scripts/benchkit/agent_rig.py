"""bench.py's rig: a watch on Consul's catalog, Docker's start events of the run's
containers, the agent as a process, and the run's plumbing (its containers, labels and a
raw registrar that does the least any registrar must)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import functools
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import requests

from benchkit.common import free_port

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "mcp-bridge/busybox:local"
HOME = Path(os.environ.get("MCP_BRIDGE_HOME", "/opt/mcp-bridge"))
CONCURRENCY = 32  # bridge.consul.apply.APPLY_CONCURRENCY
PORT_BASE = 28000  # pool for the bench's agent: below the ephemeral range, above the tests'


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Catalog:
    """Watches Consul's catalog with blocking queries; records when each name appears."""

    def __init__(self, url: str, prefixes: tuple[str, ...]) -> None:
        self.url, self.prefixes = url, prefixes
        self.seen: dict[str, float] = {}
        self.changed = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        session = requests.Session()
        index = "0"
        while not self._stop:
            try:
                r = session.get(
                    f"{self.url}/v1/catalog/services",
                    params={"index": index, "wait": "2s"},
                    timeout=10,
                )
                r.raise_for_status()
                listing = r.json()
            except (requests.RequestException, ValueError) as exc:
                log(f"catalog watch: {exc}; again")
                time.sleep(0.2)
                continue
            now = time.time()
            index = r.headers.get("X-Consul-Index", index)
            names = {n for n in listing if n.startswith(self.prefixes)}
            with self.changed:
                for name in names - self.seen.keys():
                    self.seen[name] = now
                for name in set(self.seen) - names:
                    del self.seen[name]
                self.changed.notify_all()

    def wait(self, predicate: Callable[..., bool], timeout: float = 600) -> float:
        """Block until predicate(seen) holds; returns the wall time it first held."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.seen):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"catalog: gave up after {timeout} s with {len(self.seen)} seen"
                    )
                self.changed.wait(left)
            return time.time()

    def count(self) -> int:
        with self.changed:
            return len(self.seen)

    def close(self) -> None:
        self._stop = True


class StartEvents:
    """Docker `start` events of our containers, with Docker's own timestamps."""

    def __init__(self, client: docker.DockerClient, label: str) -> None:
        self.times: dict[str, float] = {}
        self.arrived = threading.Condition()
        self._stream = client.api.events(
            decode=True, filters={"type": "container", "event": "start", "label": label}
        )
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            for event in self._stream:
                name = (event.get("Actor", {}).get("Attributes") or {}).get("name", "")
                with self.arrived:
                    self.times[name] = event["timeNano"] / 1e9
                    self.arrived.notify_all()

    def wait(self, name: str, timeout: float = 60) -> float:
        with self.arrived:
            if not self.arrived.wait_for(lambda: name in self.times, timeout):
                raise TimeoutError(f"no start event for {name}")
            return self.times[name]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()


def cached_venv(name: str, fill: Callable[[Path], None]) -> Path:
    """A venv under $MCP_BRIDGE_HOME/cache/NAME, made once and filled by `fill`; under a
    lock, since another bench may be making it right now; `ready` marks it whole."""
    venv = HOME / "cache" / name
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / "ready").exists():
            log(f"making {venv}")
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            fill(venv)
            (venv / "ready").touch()
    return venv


def pip_install(venv: Path, *args: str) -> None:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", *args],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"pip install into {venv} failed:\n{done.stderr}")


@functools.cache
def runtime_python() -> str:
    """The interpreter of a venv holding only mcp-bridge's runtime dependencies (its
    pyproject's `dependencies`) at the test venv's versions, as a user's install or the
    image has; cached by those, and the Python version. The test venv also holds rich
    (import-linter needs it), which structlog imports when it is there: about 4 MB and
    50 ms the agent does not carry when installed. The Docker SDK is there too, for the
    bench's floor registrar (floor_registrar.py); the agent never imports it."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        wanted = sorted([*tomllib.load(fh)["project"]["dependencies"], "docker"])
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze"], check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    pinned = sorted(line for line in frozen.splitlines() if "==" in line)  # no `-e` checkout
    key = "\n".join([sys.version, *wanted, *pinned]).encode()

    def fill(venv: Path) -> None:
        (venv / "constraints.txt").write_text("\n".join(pinned) + "\n")
        pip_install(venv, "-c", str(venv / "constraints.txt"), *wanted)

    venv = cached_venv(f"runtime-venv-{hashlib.sha256(key).hexdigest()[:12]}", fill)
    return str(venv / "bin" / "python")


@functools.cache
def compiled_checkout() -> None:
    """The checkout's bytecode written, as `pip install` writes an installed package's: an
    agent run from the checkout under PYTHONDONTWRITEBYTECODE (set on the project's CI
    machine) otherwise compiles its ~100 modules at every start, which the peer, installed
    into its venv, never does (0.1-0.2 s of a cold start at N=100)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([runtime_python(), "-m", "compileall", "-q", str(ROOT / "bridge")],
                   env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip


class Agent:
    """The agent as a process (or, with `command`, another registrar the same way): run
    from the checkout (cwd) by the runtime venv's interpreter, its bytecode written."""

    def __init__(
        self, env: dict[str, str], log_path: Path, command: list[str] | None = None
    ) -> None:
        self.env, self.log_path = env, log_path
        if command is None:
            compiled_checkout()
        self.command = command or [runtime_python(), "-m", "bridge", "run"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        started = time.time()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        return started

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Rig:
    """One run: its names and labels under a prefix of its own, the agent (not yet
    started), the watches, and what the phases do with Docker and Consul."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.n: int = args.containers
        self.args = args
        self.consul = os.environ.get("BRIDGE_CONSUL_URL", "http://127.0.0.1:8500").rstrip("/")
        token = secrets.token_hex(3)
        self.prefix = f"bn{token}."  # label prefix
        self.tag = f"bn{token}-"  # the agent's containers and services
        self.rawtag = f"br{token}-"  # the raw registrar's: the agent ignores them
        self.bench_label = f"mcp-bridge-bench={token}"  # on every container of this run
        self.node = f"bench-{token}"
        self.client = docker.from_env(timeout=120)
        self.tmp = Path(tempfile.mkdtemp(prefix="mcp-bridge-bench-"))
        self.http = free_port()
        self.agent = Agent(
            {
                "BRIDGE_NODE_ID": self.node,
                "BRIDGE_LABEL_PREFIX": self.prefix,
                "BRIDGE_NAME_PATTERN": f"^{self.tag}",
                "BRIDGE_STATE_FILE": str(self.tmp / "state.db"),
                "BRIDGE_PORT_RANGE": f"{PORT_BASE}-{PORT_BASE + max(2 * self.n, 100)}",
                "BRIDGE_HTTP_ADDR": f"127.0.0.1:{self.http}",
                "BRIDGE_ADVERTISE_ADDRESS": "127.0.0.1",
                "BRIDGE_RESYNC_INTERVAL": "300s",  # no full pass in the middle of a figure
                "BRIDGE_LOG_FORMAT": "json",
                "BRIDGE_LOG_LEVEL": "info",  # the default: one event per registration
                "BRIDGE_CONSUL_URL": self.consul,
            },
            self.tmp / "agent.log",
        )
        self.catalog = Catalog(self.consul, (self.tag, self.rawtag))
        self.events = StartEvents(self.client, self.bench_label)
        self.names = [f"{self.tag}{i}" for i in range(self.n)]
        self.local = threading.local()
        self.results: dict[str, Any] = {"containers": self.n}

    # ---- plumbing ----------------------------------------------------------------

    def labels(self) -> dict[str, str]:
        # check=none: the figures are about registration, not about probing servers.
        return {
            f"{self.prefix}enable": "true",
            f"{self.prefix}port": "8080",
            f"{self.prefix}check": "none",
        }

    def create(self, name: str, managed: bool = True) -> Any:
        key, _, value = self.bench_label.partition("=")
        labels = {key: value, **(self.labels() if managed else {})}
        return self.client.containers.create(
            IMAGE, ["sleep", "86400"], name=name, labels=labels, detach=True
        )

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.docker = docker.from_env(timeout=60).api
        session: requests.Session = self.local.session
        return session

    def raw_pair(self, container_id: str, service: str, port: int) -> None:
        """What any registrar must do for one container: look at it, register it."""
        session = self.session()
        info = self.local.docker.inspect_container(container_id)
        body = self.raw_body(service, port, info["Name"].lstrip("/"), info["Id"])
        r = session.put(f"{self.consul}/v1/agent/service/register", json=body, timeout=30)
        r.raise_for_status()

    @staticmethod
    def raw_body(
        service: str, port: int, container: str = "", container_id: str = "0" * 64
    ) -> dict[str, Any]:
        """A registration the size of the agent's (same meta keys, no checks)."""
        return {
            "ID": f"raw:{service}",
            "Name": service,
            "Address": "127.0.0.1",
            "Port": port,
            "Tags": ["mcp"],
            "Meta": {
                "managed_by": "raw-bench",
                "container_name": container or service,
                "container_id": container_id,
                "container_port": "8080",
                "image": IMAGE,
                "expose": "proxy",
                "host_port": str(port),
                "transport": "streamable-http",
                "path": "/mcp",
                "bridge_node": "raw",
                "bridge_fingerprint": "0" * 16,
            },
        }

    async def raw_registers(self, names: list[str]) -> None:
        import aiohttp

        limit = asyncio.Semaphore(CONCURRENCY)
        async with aiohttp.ClientSession() as session:

            async def one(i: int, name: str) -> None:
                async with limit:
                    body = {**self.raw_body(name, 40000 + i), "ID": f"raw:{name}"}
                    url = f"{self.consul}/v1/agent/service/register"
                    async with session.put(url, json=body) as r:
                        r.raise_for_status()

            await asyncio.gather(*(one(i, n) for i, n in enumerate(names)))

    def deregister(self, service_ids: list[str]) -> None:
        """Through one keep-alive session per thread: Consul refuses a client more than
        200 connections at a time (http_max_conns_per_client)."""

        def one(sid: str) -> None:
            for attempt in range(5):
                try:
                    r = self.session().put(
                        f"{self.consul}/v1/agent/service/deregister/{sid}", timeout=30
                    )
                    r.raise_for_status()
                    return
                except requests.RequestException:
                    if attempt == 4:
                        raise
                    time.sleep(0.2 * (attempt + 1))

        self.parallel(one, service_ids)

    def raw_deregister(self, services: list[str]) -> None:
        self.deregister([f"raw:{s}" for s in services])
        self.catalog.wait(lambda seen: not any(s in seen for s in services))

    def parallel(
        self, fn: Callable[[str], Any], items: list[str], workers: int = CONCURRENCY
    ) -> None:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fn, items))
