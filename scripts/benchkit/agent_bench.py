"""bench.py's phases: the limit (a minimal registrar), event latency one container at a
time, one event step by step, the burst, the cold reconcile, and where start-up time and
memory go (imports); then the clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import requests

from benchkit.agent_rig import ROOT, Rig, log
from benchkit.common import nearest_rank


class Bench(Rig):
    """The phases, run in order by `run`, their figures in `results`."""

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
        samples: list[float] = []
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
                        "p99_ms": nearest_rank(window, 0.99) * 1e3,
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
            "p99_ms": nearest_rank(latencies, 0.99) * 1e3,
            "max_ms": max(latencies) * 1e3,
        }
        self.results["limit"]["sequential_p50_ms"] = statistics.median(self.raw_samples) * 1e3
        self.results["limit"]["sequential_p99_ms"] = nearest_rank(self.raw_samples, 0.99) * 1e3
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
            t0 = self.restart_frozen(wave)
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

    def restart_frozen(
        self, wave: list[str], before_thaw: Callable[[], None] = lambda: None
    ) -> float:
        """Stop `wave` until Consul no longer lists it, freeze the agent, start `wave` again
        and thaw the agent once every start event is out; returns the time of the thaw."""
        self.parallel(lambda n: self.client.api.stop(n, timeout=0), wave)
        self.catalog.wait(lambda seen: not any(n in seen for n in wave))
        self.agent.signal(signal.SIGSTOP)
        try:
            self.parallel(lambda n: self.client.api.start(n), wave)
            # Every start event is out before the agent wakes.
            for name in wave:
                self.events.wait(name)
            time.sleep(0.5)
            before_thaw()
        finally:
            thawed = time.time()
            self.agent.signal(signal.SIGCONT)
        return thawed

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
    "bridge.core.config",
    "bridge.pool.durable",
    "bridge.docker.engine",
    "bridge.consul.client",
    "bridge.loop.metrics",
    "bridge.mcp.checks",
    "bridge.surface.api",
    "bridge.loop.agent",
    "bridge.surface.cli",
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
        [sys.executable, "-X", "importtime", "-c", "import bridge.surface.cli, bridge.loop.agent"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    by_package: dict[str, float] = {}
    for line in timed.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own_us, _, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        if own_us.isdigit():
            package = name.split(".")[0]
            by_package[package] = by_package.get(package, 0.0) + int(own_us) / 1000
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
