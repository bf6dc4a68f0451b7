"""bench_peer.py's systems and phases: three Docker → Consul bridges, each on containers of
its own, measured the same way in one run (event → visible, burst tail lag, cold
reconcile from process spawn, RSS at N).

Each container runs busybox httpd and publishes port 8080 on a random host port, with no
health check; each system is configured for exactly that:
- floor: benchkit/floor_registrar.py, the least a bridge can be;
- serviceregistrator: its console script from a venv of its own, the containers carrying
  SERVICE_NAME (it registers only containers that name a service and publish a port);
- mcp-bridge: `mcp-bridge run`, the containers labelled enable, port 8080, expose
  published and check none, under a label prefix of the run's own.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import requests

from benchkit.agent_rig import (
    IMAGE,
    Agent,
    Catalog,
    StartEvents,
    cached_venv,
    log,
    pip_install,
    runtime_python,
)
from benchkit.common import free_port, nearest_rank

WAVE = 250  # containers started at once in the burst
PORT_BASE = 29000  # host ports of a system's containers (and its sentinel's): N < 2,000


def peer_venv(checkout: Path) -> Path:
    """serviceregistrator installed into a venv of its own, cached by its source: a work
    tree (its pyproject.toml and package files) or a git repository (its HEAD)."""
    git = ["git", "--git-dir", str(checkout)]
    if (checkout / "pyproject.toml").exists():
        files = sorted([checkout / "pyproject.toml", *checkout.glob("serviceregistrator/*.py")])
        digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]
    else:
        head = subprocess.run(
            [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
        digest = head[:12]

    def fill(venv: Path) -> None:
        if (checkout / "pyproject.toml").exists():
            pip_install(venv, str(checkout))
            return
        with tempfile.TemporaryDirectory(prefix="serviceregistrator-") as unpacked:
            archive = subprocess.run([*git, "archive", "HEAD"], check=True, capture_output=True)
            subprocess.run(["tar", "-x", "-C", unpacked], input=archive.stdout, check=True)
            pip_install(venv, unpacked)

    return cached_venv(f"peer-serviceregistrator-{digest}", fill)


@dataclass
class System:
    name: str
    tag: str  # its containers' (and services') names begin with it
    labels: Callable[[str], dict[str, str]]
    process: Agent

    def start(self) -> float:
        return self.process.start()

    def rss_mb(self) -> float:
        return self.process.rss_mb()

    def alive(self) -> bool:
        """Raises when the process has exited: a wait on it would only time out."""
        proc = self.process.proc
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {proc.returncode}: see its log")
        return True

    def stop(self) -> None:
        self.process.stop()


def unix_socket() -> str:
    """serviceregistrator reaches Docker only through a unix socket (its -k)."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        raise SystemExit(f"serviceregistrator needs a unix:// DOCKER_HOST, not {host}")
    return host.removeprefix("unix://")


def systems(token: str, consul: str, peer: Path | None, tmp: Path) -> list[System]:
    host, _, port = consul.removeprefix("http://").partition(":")

    def system(name: str, tag: str, labels: Callable[[str], dict[str, str]],
               env: dict[str, str], command: list[str] | None = None) -> System:  # fmt: skip
        return System(name, tag, labels, Agent(env, tmp / f"{name}.log", command))

    floor_label = f"mcp-bridge-floor={token}"
    floor = [runtime_python(), str(Path(__file__).with_name("floor_registrar.py")),
             floor_label, "127.0.0.1", consul]  # fmt: skip
    found = [system("floor", f"pf{token}-", lambda _: dict([floor_label.split("=")]), {}, floor)]
    if peer is not None:
        command = [str(peer_venv(peer) / "bin" / "serviceregistrator"), "-i", "127.0.0.1",
                   "-h", host, "-p", port or "8500", "-k", unix_socket()]  # fmt: skip
        found.append(system("serviceregistrator", f"ps{token}-",
                            lambda name: {"SERVICE_NAME": name}, {}, command))  # fmt: skip
    prefix = f"pb{token}."
    found.append(
        system("mcp-bridge", f"pb{token}-",
               lambda _: {f"{prefix}enable": "true", f"{prefix}port": "8080",
                          f"{prefix}expose": "published", f"{prefix}check": "none"},
               {"BRIDGE_NODE_ID": f"peer-{token}", "BRIDGE_LABEL_PREFIX": prefix,
                "BRIDGE_NAME_PATTERN": "^$never", "BRIDGE_STATE_FILE": str(tmp / "state.db"),
                "BRIDGE_HTTP_ADDR": f"127.0.0.1:{free_port()}",
                "BRIDGE_ADVERTISE_ADDRESS": "127.0.0.1", "BRIDGE_RESYNC_INTERVAL": "300s",
                "BRIDGE_CONSUL_URL": consul}),
    )  # fmt: skip
    return found


class PeerBench:
    def __init__(self, n: int, peer: Path | None, rotate: int = 0) -> None:
        self.n = n
        self.consul = os.environ.get("BRIDGE_CONSUL_URL", "http://127.0.0.1:8500").rstrip("/")
        token = secrets.token_hex(3)
        self.bench_label = f"mcp-bridge-bench={token}"
        self.tmp = Path(tempfile.mkdtemp(prefix="mcp-bridge-peer-"))
        found = systems(token, self.consul, peer, self.tmp)
        # each run begins with another system: none always measured first or last
        self.systems = found[rotate % len(found) :] + found[: rotate % len(found)]
        self.client = docker.from_env(timeout=120)
        self.catalog = Catalog(self.consul, tuple(s.tag for s in self.systems))
        self.events = StartEvents(self.client, self.bench_label)
        self.http = requests.Session()

    def parallel(self, fn: Callable[[Any], Any], items: list[Any], workers: int = 16) -> list[Any]:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, items))

    def create(self, system: System, name: str, index: int) -> Any:
        """A fixed host port each: with a random one (`-p 8080`) serviceregistrator cannot
        tell the port of a stopped container and never withdraws its service."""
        key, _, value = self.bench_label.partition("=")
        return self.client.containers.create(
            IMAGE, ["httpd", "-f", "-p", "8080"], name=name, detach=True,
            labels={key: value, **system.labels(name)}, ports={"8080/tcp": PORT_BASE + index},
        )  # fmt: skip

    def visible(self, system: System, names: list[str]) -> float:
        """When the last of these became visible, as the catalog watch saw it."""
        self.catalog.wait(lambda seen: system.alive() and all(n in seen for n in names))
        with self.catalog.changed:
            return max(self.catalog.seen[n] for n in names)

    def gone(self, system: System, names: list[str]) -> None:
        self.catalog.wait(lambda seen: system.alive() and not any(n in seen for n in names))

    def start_ready(self, system: System) -> float:
        """Start the system and wait until it registers a first container of its own."""
        spawned = system.start()
        sentinel = self.create(system, f"{system.tag}ready", self.n)
        sentinel.start()
        self.visible(system, [f"{system.tag}ready"])
        sentinel.remove(force=True)
        self.gone(system, [f"{system.tag}ready"])
        return spawned

    def measure(self, system: System) -> dict[str, Any]:
        names = [f"{system.tag}{i}" for i in range(self.n)]
        log(f"{system.name}: {self.n} containers")
        made = self.parallel(lambda i: self.create(system, names[i], i), list(range(self.n)))
        containers = dict(zip(names, made, strict=True))
        self.start_ready(system)
        latencies = []
        for name in names:  # one at a time: event → visible
            containers[name].start()
            happened = self.events.wait(name)
            latencies.append(self.visible(system, [name]) - happened)
        figures: dict[str, Any] = {
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": nearest_rank(latencies, 0.99) * 1000,
        }
        figures["rss_mb"] = system.rss_mb()
        # burst: all stopped (withdrawn), then started at once, in waves of at most WAVE
        # (Docker drops events for a subscriber whose buffer stays full)
        self.parallel(lambda c: c.stop(timeout=0), list(containers.values()), 32)
        self.gone(system, names)
        tails = []
        for at in range(0, self.n, WAVE):
            wave = names[at : at + WAVE]
            with self.events.arrived:
                self.events.times.clear()
            self.parallel(lambda n: containers[n].start(), wave, 32)
            visible = self.visible(system, wave)
            tails.append(visible - max(self.events.wait(n) for n in wave))
        figures["burst_tail_ms"] = statistics.median(tails) * 1000
        # cold reconcile: the system stopped, its services removed, started with N running
        system.stop()
        self.deregister(system)
        self.catalog.wait(lambda seen: not any(n in seen for n in names))
        spawned = system.start()
        figures["cold_s"] = self.visible(system, names) - spawned
        system.stop()
        self.deregister(system)
        self.parallel(lambda c: c.remove(force=True), list(containers.values()), 32)
        log(f"{system.name}: {figures}")
        return figures

    def deregister(self, system: System) -> None:
        services = self.http.get(f"{self.consul}/v1/agent/services", timeout=30).json()
        mine = [sid for sid, s in services.items() if s["Service"].startswith(system.tag)]
        for sid in mine:
            self.http.put(f"{self.consul}/v1/agent/service/deregister/{sid}", timeout=30)

    def run(self) -> dict[str, Any]:
        log(f"logs in {self.tmp}")
        try:
            return {s.name: self.measure(s) for s in self.systems}
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        for system in self.systems:
            system.stop()
            with contextlib.suppress(requests.RequestException):
                self.deregister(system)
        key, _, value = self.bench_label.partition("=")
        for c in self.client.containers.list(all=True, filters={"label": f"{key}={value}"}):
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)
        self.catalog.close()
        self.events.close()
