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
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import requests

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "mcp-bridge/busybox:local"
CONCURRENCY = 32  # bridge.consul_apply.APPLY_CONCURRENCY
PORT_BASE = 28000  # pool for the bench's agent: below the ephemeral range, above the tests'


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

    def wait(self, predicate: Callable[[dict[str, float]], bool], timeout: float = 600) -> float:
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


class Agent:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        started = time.time()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run"],
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


class Bench:
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

    # ---- phases ------------------------------------------------------------------

    def limit(self) -> None:
        log("limit: a minimal registrar (raw inspect + raw register), sequential and concurrent")
        # Sequential: what the agent is measured on, done by the least any registrar must
        # do: on each container's start event, one inspect and one register. Measured the
        # same way (Docker's event timestamp to visible), right after a real start.
        self.raw_samples: list[float] = []
        self.raw_sequential(self.args.limit_samples // 2)
        # Concurrent: N raw registers at the agent's concurrency, from one asyncio client
        # (keep-alive, like the agent's), until all are visible; and one raw list.
        names = [f"{self.tag}rawc{i}" for i in range(self.n)]
        t0 = time.time()
        asyncio.run(self.raw_registers(names))
        t_all = self.catalog.wait(lambda seen: all(n in seen for n in names)) - t0
        self.raw_deregister(names)
        t0 = time.time()
        self.client.api.containers(filters={"label": f"{self.prefix}enable=true"})
        t_list = time.time() - t0
        self.results["limit"] = {
            "concurrent_per_s": self.n / t_all,
            "concurrent_n_s": t_all,
            "list_s": t_list,
        }

    def raw_sequential(self, count: int) -> list[float]:
        """The limit for event latency: a minimal registrar in place of the agent. On a
        real container start it does the least any registrar must (one inspect, one
        register), measured the same way (Docker's event timestamp to visible). Taken
        at each scale step, side by side with the agent: Consul's own work per change
        grows with the services it holds, for the agent and the raw registrar alike."""
        samples = []
        for _ in range(count):
            name = f"{self.rawtag}{len(self.raw_samples) + len(samples)}"
            container = self.create(name, managed=False)
            container.start()
            happened = self.events.wait(name)
            self.raw_pair(container.id, name, 40000 + len(samples))
            samples.append(self.catalog.wait(lambda seen, n=name: n in seen) - happened)
            self.raw_deregister([name])
            container.remove(force=True)
        self.raw_samples.extend(samples)
        return samples

    def singles(self) -> None:
        log(f"event latency: {self.n} containers started one at a time")
        created = {}

        def make(name: str) -> None:
            created[name] = self.create(name)

        self.parallel(make, self.names, workers=8)
        latencies: list[float] = []
        steps: list[dict[str, float]] = []
        step = max(1, self.n // 8)
        window: list[float] = []
        for i, name in enumerate(self.names, 1):
            created[name].start()
            happened = self.events.wait(name)
            seen = self.catalog.wait(lambda s, n=name: n in s)
            latencies.append(seen - happened)
            window.append(seen - happened)
            if i % step == 0 or i == self.n:
                raw = self.raw_sequential(max(3, self.args.limit_samples // 8))
                steps.append(
                    {
                        "services": i,
                        "p50_ms": statistics.median(window) * 1e3,
                        "p99_ms": pct(window, 0.99) * 1e3,
                        "limit_p50_ms": statistics.median(raw) * 1e3,
                        "rss_mb": self.agent.rss_mb(),
                        "samples": len(window),
                    }
                )
                window = []
                log(
                    f"  {i} services: p50 {steps[-1]['p50_ms']:.1f} ms"
                    f" (limit {steps[-1]['limit_p50_ms']:.1f} ms),"
                    f" RSS {steps[-1]['rss_mb']:.1f} MB"
                )
        self.results["event"] = {
            "p50_ms": statistics.median(latencies) * 1e3,
            "p99_ms": pct(latencies, 0.99) * 1e3,
            "max_ms": max(latencies) * 1e3,
        }
        self.results["limit"]["sequential_p50_ms"] = statistics.median(self.raw_samples) * 1e3
        self.results["limit"]["sequential_p99_ms"] = pct(self.raw_samples, 0.99) * 1e3
        self.results["limit"]["sequential_samples"] = len(self.raw_samples)
        self.results["steps"] = steps

    def profile_events(self, count: int = 15) -> None:
        """Where one event's time goes: `count` more containers started one at a time, and
        for each the step times of the pass that registered it (/v1/status last_pass)."""
        log(f"one event, step by step: {count} more containers")
        names = [f"{self.tag}p{i}" for i in range(count)]
        created = {name: self.create(name) for name in names}
        rows: list[dict[str, float]] = []
        for name in names:
            created[name].start()
            happened = self.events.wait(name)
            seen = self.catalog.wait(lambda s, n=name: n in s)
            last = requests.get(f"http://127.0.0.1:{self.http}/v1/status", timeout=30).json()
            last = last.get("last_pass") or {}
            if last.get("registered") == 1 and not last.get("full"):
                steps = {k: v * 1e3 for k, v in last["steps_s"].items()}
                steps["total"] = (seen - happened) * 1e3
                steps["outside the pass"] = steps["total"] - sum(last["steps_s"].values()) * 1e3
                rows.append(steps)
        for name in names:  # gone again, so that the later figures see N containers
            self.client.api.remove_container(name, force=True)
        self.catalog.wait(lambda s: not any(n in s for n in names))
        keys = list(rows[0]) if rows else []
        self.results["event_breakdown_ms"] = {
            k: round(statistics.median(r[k] for r in rows), 3) for k in keys
        }
        self.results["event_breakdown_samples"] = len(rows)

    def burst(self) -> None:
        log(
            f"burst: {self.n} containers started at once (waves of {self.args.wave}),"
            " the agent frozen meanwhile"
        )
        rates: list[float] = []
        raw_rates: list[float] = []
        total_n, total_s, raw_total_s = 0, 0.0, 0.0
        for lo in range(0, self.n, self.args.wave):
            wave = self.names[lo : lo + self.args.wave]
            self.parallel(lambda n: self.client.api.stop(n, timeout=0), wave)
            self.catalog.wait(lambda seen, w=wave: not any(n in seen for n in w))
            self.agent.signal(signal.SIGSTOP)
            try:
                self.parallel(lambda n: self.client.api.start(n), wave)
                # Every start event is out before the agent wakes.
                for name in wave:
                    self.events.wait(name)
                time.sleep(0.5)
            finally:
                t0 = time.time()
                self.agent.signal(signal.SIGCONT)
            elapsed = self.catalog.wait(lambda seen, w=wave: all(n in seen for n in w)) - t0
            rates.append(len(wave) / elapsed)
            total_n += len(wave)
            total_s += elapsed
            # The limit side by side, at the same scale: as many raw registers at once.
            raw = [f"{self.rawtag}w{lo}-{i}" for i in range(len(wave))]
            t0 = time.time()
            asyncio.run(self.raw_registers(raw))
            raw_s = self.catalog.wait(lambda seen, r=raw: all(n in seen for n in r)) - t0
            self.raw_deregister(raw)
            raw_rates.append(len(raw) / raw_s)
            raw_total_s += raw_s
            log(f"  wave of {len(wave)}: {rates[-1]:.0f}/s, raw {raw_rates[-1]:.0f}/s")
        self.results["burst"] = {
            "per_s": total_n / total_s,
            "wave_rates": rates,
            "raw_per_s": total_n / raw_total_s,
            "raw_wave_rates": raw_rates,
            "wave": self.args.wave,
        }

    def cold_reconcile(self) -> None:
        log(f"cold reconcile: agent started with {self.n} containers running, Consul empty of them")
        self.agent.stop()
        services = [
            sid
            for sid, s in requests.get(f"{self.consul}/v1/agent/services", timeout=30)
            .json()
            .items()
            if (s.get("Meta") or {}).get("bridge_node") == self.node
        ]
        log(f"  removing the agent's {len(services)} services from Consul")
        self.deregister(services)
        self.catalog.wait(lambda seen: not seen)
        spawned = self.agent.start()
        done = self.catalog.wait(lambda seen: len(seen) >= self.n)
        started = self._agent_started_at()
        self.results["reconcile"] = {
            "from_spawn_s": done - spawned,
            "from_agent_started_s": done - started if started else None,
        }

    def _agent_started_at(self) -> float | None:
        from datetime import datetime

        last = None
        for line in self.agent.log_path.read_text(errors="replace").splitlines():
            if '"agent_started"' in line:
                stamp = json.loads(line)["timestamp"].replace("Z", "+00:00")
                last = datetime.fromisoformat(stamp).timestamp()
        return last

    def cleanup(self) -> None:
        self.agent.stop()
        self.events.close()
        names = [
            c.name
            for c in self.client.containers.list(all=True, filters={"label": self.bench_label})
        ]
        # Few at a time: dockerd 20.10 hung once here under 16 concurrent forced removals.
        self.parallel(lambda name: self.client.api.remove_container(name, force=True), names, 4)
        with contextlib.suppress(requests.RequestException):
            services = requests.get(f"{self.consul}/v1/agent/services", timeout=30).json()
            ours = [sid for sid in services if sid.startswith((f"{self.node}:", f"raw:{self.tag}"))]
            self.deregister(ours)
        self.catalog.close()

    def run(self) -> dict[str, Any]:
        try:
            self.limit()
            self.agent.start()
            self.wait_ready()
            self.singles()
            rss_n = self.agent.rss_mb()
            self.profile_events()
            quarter = next(s for s in self.results["steps"] if s["services"] >= self.n // 4)
            self.results["rss"] = {
                "at_n_mb": rss_n,
                "at_quarter_mb": quarter["rss_mb"],
                "quarter_services": quarter["services"],
                "per_service_kb": (rss_n - quarter["rss_mb"])
                * 1024
                / max(1, self.n - quarter["services"]),
            }
            self.burst()
            self.cold_reconcile()
            self.results["imports"] = import_breakdown()
        finally:
            self.cleanup()
        return self.results

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{self.http}/readyz", timeout=2).ok:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"agent not ready; log: {self.agent.log_path}")


IMPORT_STEPS = (
    "bridge.config",
    "bridge.pool.durable",
    "bridge.docker_engine",
    "bridge.consul_client",
    "bridge.metrics",
    "bridge.checks",
    "bridge.api",
    "bridge.agent",
    "bridge.cli",
)
_RSS_SCRIPT = """
import importlib, json, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1]) / 1024
out = {'base': rss()}
for name in sys.argv[1:]:
    before = rss()
    importlib.import_module(name)
    out[name] = rss() - before
out['all'] = rss()
print(json.dumps(out))
"""


def import_breakdown() -> dict[str, Any]:
    """Where start-up time and memory go before the first service: `python -X importtime`
    summed by top-level package, and RSS after each of the agent's layers is imported."""
    timed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import bridge.cli, bridge.agent"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    by_package: dict[str, float] = {}
    for line in timed.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own_us, _, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        if own_us.isdigit():
            top = name.split(".")[0]
            by_package[top] = by_package.get(top, 0.0) + int(own_us) / 1000
    memory = json.loads(
        subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, *IMPORT_STEPS],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout
    )
    top = dict(sorted(by_package.items(), key=lambda i: -i[1])[:8])
    return {
        "total_ms": round(sum(by_package.values()), 1),
        "by_package_ms": {k: round(v, 1) for k, v in top.items()},
        "rss_base_mb": round(memory["base"], 1),
        "rss_by_step_mb": {k.removeprefix("bridge."): round(memory[k], 1) for k in IMPORT_STEPS},
        "rss_all_mb": round(memory["all"], 1),
    }


def report(r: dict[str, Any]) -> dict[str, Any]:
    lim, ev, burst, rec, rss = r["limit"], r["event"], r["burst"], r["reconcile"], r["rss"]
    reconcile_limit = lim["list_s"] + lim["concurrent_n_s"]
    summary = {
        "event_p50_ratio": round(ev["p50_ms"] / lim["sequential_p50_ms"], 3),
        "event_p99_ratio": round(ev["p99_ms"] / lim["sequential_p99_ms"], 3),
        "burst_ratio": round(burst["per_s"] / burst["raw_per_s"], 3),
        "reconcile_ratio": round(rec["from_spawn_s"] / reconcile_limit, 3),
        "reconcile_ratio_after_start": (
            round(rec["from_agent_started_s"] / reconcile_limit, 3)
            if rec["from_agent_started_s"] is not None
            else None
        ),
        "rss_mb": round(rss["at_n_mb"], 1),
        "rss_per_service_kb": round(rss["per_service_kb"], 2),
    }
    # The cost of an event against the services held: p50 at N over p50 near 100.
    flat = min(r["steps"], key=lambda st: abs(st["services"] - 100))
    # The last step with a whole window of samples (the very last may hold only a few).
    top = max(
        r["steps"], key=lambda st: (st.get("samples", 0) >= flat.get("samples", 0), st["services"])
    )
    summary["event_p50_flatness"] = round(top["p50_ms"] / flat["p50_ms"], 3)
    n = r["containers"]
    rows = [
        (
            "event → registered p50",
            f"{ev['p50_ms']:.1f} ms",
            f"{lim['sequential_p50_ms']:.1f} ms",
            summary["event_p50_ratio"],
            "≤ 1.15",
        ),
        (
            "event → registered p99",
            f"{ev['p99_ms']:.1f} ms",
            f"{lim['sequential_p99_ms']:.1f} ms",
            summary["event_p99_ratio"],
            "≤ 1.5",
        ),
        (
            "burst registrations/s",
            f"{burst['per_s']:.0f}",
            f"{burst['raw_per_s']:.0f}",
            summary["burst_ratio"],
            "≥ 0.95",
        ),
        (
            f"cold reconcile, {n} running",
            f"{rec['from_spawn_s']:.2f} s",
            f"{reconcile_limit:.2f} s",
            summary["reconcile_ratio"],
            "≤ 1.5",
        ),
        (f"agent RSS at {n} services", f"{rss['at_n_mb']:.1f} MB", "", "", "≤ 48 MB at 1,000"),
        (
            f"event p50 at {top['services']} / at {flat['services']}",
            f"{top['p50_ms']:.1f} ms",
            f"{flat['p50_ms']:.1f} ms",
            summary["event_p50_flatness"],
            "≤ 1.1",
        ),
        ("RSS per service (N/4 → N)", f"{rss['per_service_kb']:.1f} KB", "", "", ""),
    ]
    print(
        f"mcp-bridge bench: {n} containers, {os.cpu_count()} CPUs, python {sys.version.split()[0]}"
    )
    print(f"{'measurement':<30} {'mcp-bridge':>12} {'limit':>12} {'ratio':>7}  goal")
    for what, ours, limit, ratio, goal in rows:
        print(f"{what:<30} {ours:>12} {limit:>12} {ratio!s:>7}  {goal}")
    if rec["from_agent_started_s"] is not None:
        print(
            f"  cold reconcile after the agent's start-up (imports, store open): "
            f"{rec['from_agent_started_s']:.2f} s, ratio {summary['reconcile_ratio_after_start']}"
        )
    print(
        f"  burst waves of {burst['wave']}: " + ", ".join(f"{x:.0f}/s" for x in burst["wave_rates"])
    )
    breakdown = r.get("event_breakdown_ms") or {}
    if breakdown:
        print(
            f"  one event, median of {r['event_breakdown_samples']} (ms): "
            + ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items())
        )
    imports = r.get("imports") or {}
    if imports:
        print(
            f"  start-up: importing the agent takes {imports['total_ms']:.0f} ms: "
            + ", ".join(f"{k} {v:.0f}" for k, v in imports["by_package_ms"].items())
        )
        print(
            f"  memory: {imports['rss_base_mb']:.1f} MB for the interpreter, then by import: "
            + ", ".join(f"{k} +{v:.1f}" for k, v in imports["rss_by_step_mb"].items())
            + f" (MB); {imports['rss_all_mb']:.1f} MB with every module loaded"
        )
    print(
        "  by services registered: "
        + "; ".join(
            f"{s['services']}: p50 {s['p50_ms']:.1f} ms, RSS {s['rss_mb']:.1f} MB"
            for s in r["steps"]
        )
    )
    return summary


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = r["steps"]
    x = [s["services"] for s in steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(x, [s["p50_ms"] for s in steps], "o-", label="agent p50")
    left.plot(x, [s["p99_ms"] for s in steps], "s--", label="agent p99")
    left.plot(x, [s["limit_p50_ms"] for s in steps], "^-", color="grey", label="limit p50")
    left.set_xlabel("services registered")
    left.set_ylabel("Docker start event → in Consul (ms)")
    left.set_ylim(bottom=0)
    left.legend()
    left.grid(alpha=0.3)
    right.plot(x, [s["rss_mb"] for s in steps], "o-", color="tab:red")
    right.axhline(48, color="grey", lw=1, ls=":", label="goal at 1,000: 48 MB")
    right.set_xlabel("services registered")
    right.set_ylabel("agent RSS (MB)")
    right.set_ylim(bottom=0)
    right.legend()
    right.grid(alpha=0.3)
    fig.suptitle(f"mcp-bridge, {r['containers']} containers, {os.cpu_count()} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


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
