"""The agent against the real Docker engine and the real Consul agent."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.integration.conftest import (
    TEST_LABEL,
    Bridge,
    consul_get,
    consul_put,
    http_status,
    wait_for,
)


def test_container_appears_in_consul_exactly_as_the_contract_says(bridge: Bridge) -> None:
    bridge.agent.start()
    labels = bridge.labels(
        {
            "check": "tcp",
            "tags": "beta, eu ,beta",
            "meta.team": "search",
            "check.interval": "3s",
            "check.timeout": "1s",
            "check.deregister_after": "5m",
        },
        enable="true",
        port="8080",
        name="weather",
    )
    container = bridge.run("weather", labels=labels)
    svc = wait_for("service in Consul", lambda: bridge.service("weather"))
    sid = f"{bridge.agent.node_id}:{bridge.tag}weather"
    assert svc["ID"] == sid
    assert svc["Service"] == "weather"
    assert svc["Address"] == "127.0.0.1"
    assert svc["Tags"] == ["mcp", "beta", "eu"]
    meta = svc["Meta"]
    assert meta["managed_by"] == "mcp-bridge"
    assert meta["bridge_node"] == bridge.agent.node_id
    assert meta["container_id"] == container.id
    assert meta["container_name"] == f"{bridge.tag}weather"
    assert meta["image"] == "mcp-bridge/busybox:local"
    assert meta["container_port"] == "8080"
    assert meta["expose"] == "proxy"  # auto, and it publishes nothing
    assert meta["host_port"] == str(svc["Port"])
    assert meta["transport"] == "streamable-http" and meta["path"] == "/mcp"
    assert meta["team"] == "search"
    lo, hi = (int(p) for p in bridge.agent.env["BRIDGE_PORT_RANGE"].split("-"))
    assert lo <= svc["Port"] <= hi
    # Consul 1.8 does not echo check definitions back; it does say id, type and owner.
    checks = {k: c for k, c in consul_get("/v1/agent/checks").items() if c["ServiceID"] == sid}
    assert list(checks) == [f"{sid}:tcp"]
    assert checks[f"{sid}:tcp"]["Type"] == "tcp"


def test_published_and_internal_modes_register_what_answers(bridge: Bridge) -> None:
    bridge.agent.start()
    bridge.run(
        "pub",
        labels=bridge.labels(enable="true", port="8080", check="none"),
        ports={"8080/tcp": ("127.0.0.1", None)},
    )
    bridge.run(
        "int",
        labels=bridge.labels(enable="true", port="8080", check="none", expose="internal"),
    )
    pub = wait_for("published service", lambda: bridge.service("pub"))
    internal = wait_for("internal service", lambda: bridge.service("int"))
    published_port = bridge.docker.containers.get(bridge.tag + "pub").ports["8080/tcp"][0]
    assert pub["Meta"]["expose"] == "published"
    assert pub["Port"] == int(published_port["HostPort"])
    assert pub["Address"] == "127.0.0.1"
    ip = bridge.docker.containers.get(bridge.tag + "int").attrs["NetworkSettings"]["IPAddress"]
    assert (internal["Address"], internal["Port"]) == (ip, 8080)
    assert "host_port" not in internal["Meta"]
    # Both answer where Consul says (busybox httpd serves 404 for /: an answer).
    for svc in (pub, internal):
        assert http_status(svc["Address"], svc["Port"]) in (200, 404)


def test_a_published_pool_port_is_recorded_and_never_handed_out(bridge: Bridge) -> None:
    bridge.agent.start()
    low = int(bridge.agent.env["BRIDGE_PORT_RANGE"].split("-")[0])
    bridge.run(
        "pub",
        labels=bridge.labels(enable="true", port="8080", check="none"),
        ports={"8080/tcp": ("127.0.0.1", low)},  # the port the cursor would hand out next
    )
    assert wait_for("published", lambda: bridge.service("pub"))["Port"] == low
    bridge.run("proxied")
    proxied = wait_for("proxied", lambda: bridge.service("proxied"))
    assert proxied["Port"] != low
    pool = json.loads(_cli(bridge, "ports", "--json"))
    kinds = {
        a["owner"].removeprefix(bridge.tag): (a["port"], a["kind"]) for a in pool["allocations"]
    }
    assert kinds["pub"] == (low, "external")
    assert kinds["proxied"] == (proxied["Port"], "pool")


def _cli(bridge: Bridge, *args: str) -> str:
    import os

    result = subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **bridge.agent.env},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_stop_keeps_the_port_start_gets_it_back_remove_frees_it(bridge: Bridge) -> None:
    bridge.agent.start()
    container = bridge.run("cycle")
    port = wait_for("registered", lambda: bridge.service("cycle"))["Port"]
    container.stop(timeout=1)
    wait_for("deregistered on stop", lambda: bridge.service("cycle") is None)
    pool = json.loads(_cli(bridge, "ports", "--json"))
    (held,) = [a for a in pool["allocations"] if a["owner"] == bridge.tag + "cycle"]
    assert (held["port"], held["state"]) == (port, "held")
    container.start()
    again = wait_for("registered again", lambda: bridge.service("cycle"))
    assert again["Port"] == port
    container.remove(force=True)
    wait_for("deregistered on remove", lambda: bridge.service("cycle") is None)
    wait_for(
        "port released after stale_after",
        lambda: not json.loads(_cli(bridge, "ports", "--json"))["allocations"],
    )


def test_recreated_container_keeps_service_id_and_port(bridge: Bridge) -> None:
    bridge.agent.start()
    first = bridge.run("same")
    before = wait_for("registered", lambda: bridge.service("same"))
    first.remove(force=True)
    second = bridge.run("same")
    after = wait_for(
        "re-registered for the new container",
        lambda: (s := bridge.service("same")) and s["Meta"]["container_id"] == second.id and s,
    )
    assert after["ID"] == before["ID"] and after["Port"] == before["Port"]


def test_hostile_labels_skip_that_container_only_and_say_why(bridge: Bridge) -> None:
    bridge.agent.start()
    hostile: dict[str, dict[str, str]] = {
        "badname": {"name": "Bad_Name!"},
        "badport": {"port": "99999"},
        "script": {"check": "script"},
        "inject": {"tags": 'x","Check":{"Args":["rm","-rf","/"]}'},
        "huge": {"meta.blob": "x" * 100_000},
        "unicode": {"name": "wéather"},
        "typo": {"prot": "8080"},
        "badexpose": {"expose": "public"},
        "badinterval": {"check.interval": "forever"},
    }
    for name, extra in hostile.items():
        base = {"enable": "true", "port": "8080"}
        bridge.run(name, labels=bridge.labels({**base, **extra}))
    bridge.run("good")
    wait_for("good container registered", lambda: bridge.service("good"))
    status = wait_for(
        "every hostile container reported",
        lambda: (s := bridge.agent.status()) and len(s["skipped"]) == len(hostile) and s,
    )
    assert set(bridge.services()) == {f"{bridge.agent.node_id}:{bridge.tag}good"}
    reasons = {s["container"].removeprefix(bridge.tag): s for s in status["skipped"]}
    assert reasons["script"]["label"].endswith("check")
    assert "command" in reasons["script"]["reason"]
    assert reasons["badport"]["label"].endswith("port") and reasons["badport"]["value"] == "99999"
    assert reasons["typo"]["label"].endswith("prot")
    # The CLI shows the same, by name and reason.
    table = _cli(bridge, "status")
    assert f"skipped  {bridge.tag}badport" in table
    # Logged once per container, not on every resync.
    wait_for("two more resyncs", lambda: bridge.agent.status()["passes"] >= status["passes"] + 2)
    logged = [e["container"] for e in bridge.agent.events("container_skipped")]
    assert sorted(logged) == sorted(bridge.tag + n for n in hostile)


def test_services_of_others_are_never_touched(bridge: Bridge) -> None:
    foreign = [
        {"ID": "someone-else", "Name": "someone-else", "Port": 1234},
        {
            "ID": f"other-node:{bridge.tag}x",
            "Name": "x",
            "Port": 1235,
            "Meta": {"managed_by": "mcp-bridge", "bridge_node": "other-node"},
        },
        {
            "ID": f"{bridge.agent.node_id}:not-ours",
            "Name": "y",
            "Port": 1236,
            "Meta": {"bridge_node": bridge.agent.node_id},  # no managed_by
        },
    ]
    for svc in foreign:
        consul_put("/v1/agent/service/register", svc)
    try:
        bridge.agent.start()
        bridge.run("mine")
        wait_for("ours registered", lambda: bridge.service("mine"))
        passes = bridge.agent.status()["passes"]
        wait_for("two full resyncs", lambda: bridge.agent.status()["passes"] >= passes + 2)
        present = consul_get("/v1/agent/services")
        for svc in foreign:
            assert svc["ID"] in present, f"{svc['ID']} was touched"
            assert present[svc["ID"]]["Port"] == svc["Port"]
    finally:
        for svc in foreign:
            consul_put(f"/v1/agent/service/deregister/{svc['ID']}")


def test_probation_keeps_own_services_while_docker_was_never_listed(bridge: Bridge) -> None:
    bridge.agent.start()  # a first run makes the store; the restart below has one
    bridge.agent.stop()
    sid = f"{bridge.agent.node_id}:{bridge.tag}from-before"
    consul_put(
        "/v1/agent/service/register",
        {
            "ID": sid,
            "Name": "from-before",
            "Port": 4242,
            "Meta": {"managed_by": "mcp-bridge", "bridge_node": bridge.agent.node_id},
        },
    )
    bridge.agent.env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    bridge.agent.start(wait_ready=False)
    wait_for("docker unreachable logged", lambda: bridge.agent.events("docker_unreachable"))
    wait_for("two resync intervals", lambda: len(bridge.agent.events("docker_unreachable")) >= 3)
    assert sid in consul_get("/v1/agent/services"), "deleted before any Docker listing"
    assert not bridge.agent.status()["ready"]
    bridge.agent.stop()
    # With Docker back, the first complete listing shows no such container: now it goes.
    del bridge.agent.env["DOCKER_HOST"]
    bridge.agent.start()
    wait_for("stale own service removed", lambda: sid not in consul_get("/v1/agent/services"))


def test_restarts_and_replays_change_nothing(bridge: Bridge) -> None:
    bridge.agent.start()
    for i in range(3):
        bridge.run(f"r{i}")
    wait_for("all registered", lambda: len(bridge.services()) == 3)

    def snapshot() -> dict[str, Any]:
        return {
            sid: (s["Port"], s["Meta"]["bridge_fingerprint"])
            for sid, s in bridge.services().items()
        }

    def modify_indexes() -> dict[str, int]:
        out = {}
        for sid, svc in bridge.services().items():
            for entry in consul_get(f"/v1/catalog/service/{svc['Service']}"):
                if entry["ServiceID"] == sid:
                    out[sid] = entry["ModifyIndex"]
        return out

    before, indexes = snapshot(), modify_indexes()
    registered = len(bridge.agent.events("service_registered"))
    assert registered == 3
    for _ in range(3):
        bridge.agent.stop()
        bridge.agent.start()
        passes = bridge.agent.status()["passes"]
        wait_for("a few passes", lambda p=passes: bridge.agent.status()["passes"] >= p + 2)
    # Replay: events for containers that did not change (SIGWINCH is ignored by httpd;
    # an update of the restart policy changes nothing that is registered).
    events_before = len(bridge.agent.events("reconcile_done"))
    for _ in range(3):
        for c in bridge.docker.containers.list(filters={"name": bridge.tag}):
            c.kill(signal="SIGWINCH")
            c.update(restart_policy={"Name": "no"})
    wait_for(
        "the replayed events looked at",
        lambda: len(bridge.agent.events("reconcile_done")) > events_before + 1,
    )
    assert snapshot() == before
    # Nothing was registered again: no event says so, and Consul's ModifyIndex is unmoved.
    assert len(bridge.agent.events("service_registered")) == registered
    assert modify_indexes() == indexes


# No resync during the test: only the network event can bring the change.
@pytest.mark.bridge_env({"BRIDGE_RESYNC_INTERVAL": "300s"})
def test_network_connect_of_a_running_container_is_seen_at_once(bridge: Bridge) -> None:
    network = bridge.docker.networks.create(bridge.tag + "net", labels={TEST_LABEL: "1"})
    try:
        bridge.agent.start()
        labels = bridge.labels(enable="true", port="8080", expose="internal", network=network.name)
        container = bridge.run("netted", labels=labels)
        # On the default bridge only, the label names a network it is not on: skipped.
        wait_for("skipped", lambda: bridge.agent.status()["skipped"])
        network.connect(container)
        service = wait_for("registered", lambda: bridge.service("netted"))
        container.reload()
        address = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        assert service["Address"] == address
        assert bridge.agent.events("container_skipped")  # the first look really skipped it
    finally:
        for c in bridge.docker.containers.list(all=True, filters={"name": bridge.tag}):
            c.remove(force=True)
        network.remove()
