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


# A request the agent sent before it read a 429 was already on its way: it may reach the
# proxy this long after the 429 left it.
IN_FLIGHT = 0.5
RETRY_AFTER = 2.0


@pytest.mark.slow
def test_consul_rate_limiting_is_waited_out_and_nothing_is_lost(
    bridge: Bridge, faulty_consul: _Proxy
) -> None:
    bridge.agent.env["BRIDGE_CONSUL_URL"] = f"http://127.0.0.1:{faulty_consul.server_port}"
    bridge.agent.start()
    start_many(bridge, [f"r{i}" for i in range(3)])
    before = settle(bridge, 3)

    faulty_consul.limited = f"{RETRY_AFTER:g}"  # 429 with Retry-After: 2
    bridge.run("limited1")
    wait_for("429s for 6 s", lambda: _limited_for(faulty_consul) >= 6, timeout=60)
    limited = sorted(t for times in list(faulty_consul.limited_at.values()) for t in times)
    # After a 429 that said "2 s", nothing reaches Consul for 2 s but what was already on
    # its way. Every pair is looked at, not only neighbours: retries sooner than 2 s, at
    # whatever pace, would put two 429s more than IN_FLIGHT and less than 2 s apart.
    early = [
        (round(a - limited[0], 2), round(b - a, 2))
        for a, b in itertools.combinations(limited, 2)
        if IN_FLIGHT < b - a < RETRY_AFTER - 0.1
    ]
    assert not early, f"requests sooner than Retry-After (at, then after): {early[:10]}"
    said = bridge.agent.events("reconcile_failed") + bridge.agent.events("consul_register_failed")
    assert any("rate limited by Consul" in str(e.get("error")) for e in said), said[-3:]

    faulty_consul.limited_at.clear()
    faulty_consul.limited = ""  # 429 without Retry-After: a backoff of its own
    bridge.run("limited2")
    # Only full passes ask for the agent's services, one pass at a time: 7 of them are a
    # pass's three tries and a few more.
    wait_for(
        "passes limited again",
        lambda: len(_by_request(faulty_consul).get("GET /v1/agent/services", ())) >= 7,
    )
    # Each request is tried three times, 0.1 s and then 0.2 s apart, and each of them
    # comes from one task that sends it again only after the last try ended (a pass, a
    # service's check reporter, the node-id claim): any four 429s of one request in a row
    # span both waits. Immediate retries would not.
    hurried = {
        request: [round(b - a, 3) for a, b in itertools.pairwise(times)]
        for request, times in _by_request(faulty_consul).items()
        if any(d - a < 0.25 for a, d in zip(times, times[3:], strict=False))
    }
    assert not hurried, f"retried without backing off (gaps in s): {hurried}"
    faulty_consul.limited = None
    after = settle(bridge, 5, "everything registered once the limit lifts")
    assert {k: v for k, v in after.items() if k in before} == before
    wait_for("ready again", bridge.agent.ready)


def _limited_for(proxy: _Proxy) -> float:
    times = [t for ts in list(proxy.limited_at.values()) for t in ts]
    return max(times) - min(times) if times else 0.0


def _by_request(proxy: _Proxy) -> dict[str, list[float]]:
    """When each request got its 429s, by method and path (a check's note, in the query,
    changes with its output)."""
    out: dict[str, list[float]] = {}
    for request, times in list(proxy.limited_at.items()):
        out.setdefault(request.partition("?")[0], []).extend(times)
    return {request: sorted(times) for request, times in out.items()}
