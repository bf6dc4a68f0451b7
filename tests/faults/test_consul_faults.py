"""Consul away for 30 s (comes back empty), Consul answering 500 for a while, and Consul
rate-limiting the bridge (429, with and without Retry-After)."""

from __future__ import annotations

import http.server
import itertools
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import SERVICES, Bridge, consul_url, wait_for
from tests.integration.world import settle, start_many


@pytest.mark.slow
def test_consul_down_for_thirty_seconds_then_back_empty(bridge: Bridge) -> None:
    bridge.agent.start()
    start_many(bridge, [f"c{i}" for i in range(6)])
    before = settle(bridge, 6)
    subprocess.run([str(SERVICES), "consul-stop"], check=True, capture_output=True)
    try:
        wait_for("agent notices", lambda: bridge.agent.events("reconcile_failed"))
        # Life goes on while Consul is away: one container comes, one goes.
        bridge.run("while-away")
        bridge.docker.containers.get(bridge.tag + "c0").remove(force=True)
        time.sleep(30)
        assert not bridge.agent.ready(), "ready while Consul is down"
    finally:
        subprocess.run([str(SERVICES), "consul-start"], check=True, capture_output=True)
    after = settle(bridge, 6, "repopulated")
    del before[bridge.tag + "c0"]
    assert {k: v for k, v in after.items() if k in before} == before
    wait_for("ready again", bridge.agent.ready)


class _Proxy(http.server.ThreadingHTTPServer):
    failing = False
    failures = 0
    limited: str | None = None  # 429s: None off, "" without Retry-After, else its value
    limited_at: dict[str, list[float]]  # request -> when each 429 was sent


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Proxy

    def _relay(self) -> None:
        if self.server.limited is not None:
            self.server.limited_at.setdefault(f"{self.command} {self.path}", []).append(
                time.monotonic()
            )
            self.send_response(429)
            if self.server.limited:
                self.send_header("Retry-After", self.server.limited)
            self.send_header("Content-Length", "17")
            self.end_headers()
            self.wfile.write(b"too many requests")
            return
        if self.server.failing:
            self.server.failures += 1
            self.send_response(500)
            self.send_header("Content-Length", "21")
            self.end_headers()
            self.wfile.write(b"injected server error")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        request = urllib.request.Request(consul_url() + self.path, data=body, method=self.command)
        for key in ("Content-Type", "X-Consul-Token"):
            if self.headers.get(key):
                request.add_header(key, self.headers[key])
        try:
            with urllib.request.urlopen(request, timeout=30) as upstream:
                status, payload, ctype = upstream.status, upstream.read(), upstream.headers
        except urllib.error.HTTPError as exc:
            status, payload, ctype = exc.code, exc.read(), exc.headers
        self.send_response(status)
        self.send_header("Content-Type", ctype.get("Content-Type", "application/json"))
        for key, value in ctype.items():  # X-Consul-Index and friends, as Consul sent them
            if key.lower().startswith("x-consul-"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = _relay

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def faulty_consul() -> Iterator[_Proxy]:
    proxy = _Proxy(("127.0.0.1", 0), _Handler)
    proxy.limited_at = {}
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


@pytest.mark.slow
def test_consul_answering_500_for_a_while(bridge: Bridge, faulty_consul: _Proxy) -> None:
    bridge.agent.env["BRIDGE_CONSUL_URL"] = f"http://127.0.0.1:{faulty_consul.server_port}"
    bridge.agent.start()
    start_many(bridge, [f"e{i}" for i in range(5)])
    before = settle(bridge, 5)
    faulty_consul.failing = True
    bridge.run("during")
    bridge.docker.containers.get(bridge.tag + "e0").remove(force=True)
    wait_for("failures seen", lambda: faulty_consul.failures >= 20)
    wait_for("not ready", lambda: not bridge.agent.ready())
    # The agent said why, and counted it.
    failed = bridge.agent.events("reconcile_failed") + bridge.agent.events("consul_register_failed")
    assert any("500" in str(e.get("error")) for e in failed), failed[-3:]
    faulty_consul.failing = False
    after = settle(bridge, 5, "recovered")
    del before[bridge.tag + "e0"]
    assert {k: v for k, v in after.items() if k in before} == before
    wait_for("ready again", bridge.agent.ready)


@pytest.mark.slow
def test_consul_rate_limiting_is_waited_out_and_nothing_is_lost(
    bridge: Bridge, faulty_consul: _Proxy
) -> None:
    bridge.agent.env["BRIDGE_CONSUL_URL"] = f"http://127.0.0.1:{faulty_consul.server_port}"
    bridge.agent.start()
    start_many(bridge, [f"r{i}" for i in range(3)])
    before = settle(bridge, 3)

    faulty_consul.limited = "2"  # 429 with Retry-After: 2
    bridge.run("limited1")
    wait_for("429s for 6 s", lambda: _limited_for(faulty_consul) >= 6, timeout=60)
    limited = sorted(t for times in faulty_consul.limited_at.values() for t in times)
    # After a 429 that said "2 s", nothing reaches Consul for 2 s (what was already on
    # its way when the 429 left aside: 0.3 s of slack).
    early = [b - a for a, b in itertools.pairwise(limited) if 0.3 < b - a < 1.9]
    assert not early, f"requests sooner than Retry-After: {early}"
    said = bridge.agent.events("reconcile_failed") + bridge.agent.events("consul_register_failed")
    assert any("rate limited by Consul" in str(e.get("error")) for e in said), said[-3:]

    faulty_consul.limited_at.clear()
    faulty_consul.limited = ""  # 429 without Retry-After: a backoff of its own
    bridge.run("limited2")
    wait_for("429s again", lambda: sum(map(len, faulty_consul.limited_at.values())) >= 5)
    faulty_consul.limited = None
    after = settle(bridge, 5, "everything registered once the limit lifts")
    assert {k: v for k, v in after.items() if k in before} == before
    wait_for("ready again", bridge.agent.ready)


def _limited_for(proxy: _Proxy) -> float:
    times = [t for ts in proxy.limited_at.values() for t in ts]
    return max(times) - min(times) if times else 0.0
