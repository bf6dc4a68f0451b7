"""Tiers and access control with a real agent, real containers and real sockets: two
loopback addresses, 127.0.0.2 and 127.0.0.3, are the two clients."""

from __future__ import annotations

import socket
import urllib.request

from tests.integration.conftest import Bridge, wait_for

ALLOWED, REFUSED = "127.0.0.2", "127.0.0.3"


def answers(source: str, port: int) -> bool:
    """An HTTP request from `source` gets an answer (True) or the connection is closed
    before any byte comes back (False)."""
    with socket.socket() as s:
        s.bind((source, 0))
        s.settimeout(10)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.")
        except ConnectionResetError:
            return False


def hold(source: str, port: int) -> socket.socket:
    """A connection that stays open, and that the container accepted."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # unfinished: httpd waits for the rest
    return s


def metric(bridge: Bridge, line_start: str) -> float:
    with urllib.request.urlopen(bridge.agent.http + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {line_start} in /metrics")


def start(bridge: Bridge) -> tuple[int, int]:
    low = int(bridge.agent.env["BRIDGE_PORT_RANGE"].split("-")[0])
    bridge.agent.env["BRIDGE_PORT_TIERS"] = f"core={low}-{low + 9},dev={low + 10}-{low + 19}"
    bridge.agent.start()
    return low, low + 49


def test_tiers_put_each_service_in_its_block(bridge: Bridge) -> None:
    low, high = start(bridge)
    bridge.run("core", labels=bridge.labels(enable="true", port="8080", tier="core"))
    bridge.run("plain")
    core = wait_for("core registered", lambda: bridge.service("core"))
    plain = wait_for("plain registered", lambda: bridge.service("plain"))
    assert low <= core["Port"] <= low + 9
    assert low + 20 <= plain["Port"] <= high, "without mcp.tier: the untiered rest"
    assert core["Meta"]["port_tier"] == "core" and "tier-core" in core["Tags"]
    assert "port_tier" not in plain["Meta"]
    # An unknown tier is a label error naming the known ones.
    bridge.run("lost", labels=bridge.labels(enable="true", port="8080", tier="prod"))
    skipped = wait_for(
        "unknown tier skipped",
        lambda: [s for s in bridge.agent.status()["skipped"] if s["container"].endswith("lost")],
    )
    assert "unknown tier; known: core, dev" in skipped[0]["reason"]
    ports = {r["tier"]: r for r in bridge.agent.status_ports()["tiers"]}
    assert (ports["core"]["used"], ports["dev"]["used"], ports["untiered"]["used"]) == (1, 0, 1)
    assert metric(bridge, 'mcp_bridge_tier_used{tier="core"}') == 1


def test_allow_list_and_limit_on_real_connections(bridge: Bridge) -> None:
    start(bridge)
    labels = bridge.labels(enable="true", port="8080", allow=ALLOWED, max_connections="1")
    bridge.run("guarded", labels=labels)
    svc = wait_for("guarded registered", lambda: bridge.service("guarded"))
    port = svc["Port"]
    assert svc["Meta"]["access_allow"] == f"{ALLOWED}/32"
    assert svc["Meta"]["access_max_connections"] == "1"
    wait_for("listener open", lambda: answers(ALLOWED, port))
    assert not answers(REFUSED, port)
    assert not answers(REFUSED, port)
    held = hold(ALLOWED, port)
    assert not answers(ALLOWED, port), "the limit of 1 is taken by the held connection"
    held.close()
    wait_for("limit freed", lambda: answers(ALLOWED, port))
    sid = svc["ID"]
    refused = 'mcp_bridge_forwarder_refused_total{{reason="{}",service_id="{}"}}'
    assert metric(bridge, refused.format("address", sid)) == 2
    assert metric(bridge, refused.format("limit", sid)) >= 1  # and while the close lands
    events = bridge.agent.events("connection_refused")
    # Rate-limited: the second refusal by address within 10 s is counted, not logged.
    assert [e["reason"] for e in events].count("not in the allow list") == 1
    assert events[0]["container"] == f"{bridge.tag}guarded" and events[0]["port"] == port

    # New labels need a new container; the new rules apply to it at once, same port.
    bridge.docker.containers.get(f"{bridge.tag}guarded").remove(force=True)
    bridge.run("guarded", labels=bridge.labels(enable="true", port="8080", allow=REFUSED))
    wait_for(
        "new rules in Consul",
        lambda: (s := bridge.service("guarded")) and s["Meta"]["access_allow"] == f"{REFUSED}/32",
    )
    assert bridge.service("guarded")["Port"] == port  # type: ignore[index]
    wait_for("new rules enforced", lambda: answers(REFUSED, port))
    assert not answers(ALLOWED, port)


def test_access_labels_outside_proxy_mode_are_an_error(bridge: Bridge) -> None:
    start(bridge)
    labels = bridge.labels(enable="true", port="8080", expose="internal", allow=ALLOWED)
    bridge.run("open", labels=labels)
    skipped = wait_for(
        "skipped",
        lambda: [s for s in bridge.agent.status()["skipped"] if s["container"].endswith("open")],
    )
    assert "the bridge cannot enforce it" in skipped[0]["reason"]
    assert bridge.service("open") is None
