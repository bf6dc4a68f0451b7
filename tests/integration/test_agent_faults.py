"""Faults made for real: SIGKILL, Consul gone and back empty, dockerd restarted, a full
pool, a lost store. Each ends on the same invariant."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from tests.integration.conftest import SERVICES, Bridge, consul_get, wait_for
from tests.integration.world import invariant


def services_up(bridge: Bridge, count: int) -> bool:
    return len(bridge.services()) == count


def test_sigkill_during_a_burst_then_restart(bridge: Bridge) -> None:
    bridge.agent.start()
    names = [f"burst{i}" for i in range(30)]
    starter = threading.Thread(target=lambda: [bridge.run(n) for n in names])
    starter.start()
    wait_for("some registered", lambda: len(bridge.services()) >= 5)
    bridge.agent.kill()
    starter.join()
    bridge.agent.start()
    wait_for("all registered", lambda: services_up(bridge, len(names)))
    first = invariant(bridge)
    # Kill again, mid-flight, several times: nothing moves.
    for _ in range(3):
        bridge.agent.kill()
        bridge.agent.start()
        wait_for("all registered", lambda: services_up(bridge, len(names)))
        assert invariant(bridge) == first


def test_consul_restart_that_forgets_everything_is_repopulated(bridge: Bridge) -> None:
    bridge.agent.start()
    for i in range(3):
        bridge.run(f"c{i}")
    wait_for("registered", lambda: services_up(bridge, 3))
    before = invariant(bridge)
    subprocess.run([str(SERVICES), "consul-stop"], check=True, capture_output=True)
    try:
        wait_for("agent notices", lambda: bridge.agent.events("reconcile_failed"))
        bridge.run("while-away")  # an event while Consul is away is not lost
    finally:
        subprocess.run([str(SERVICES), "consul-start"], check=True, capture_output=True)
    wait_for("repopulated", lambda: services_up(bridge, 4))
    after = invariant(bridge)
    assert {k: v for k, v in after.items() if k in before} == before


def test_dockerd_restart_reconnects_and_relists(bridge: Bridge) -> None:
    bridge.agent.start()
    bridge.run("survivor", restart_policy={"Name": "always"})
    bridge.run("casualty")  # no restart policy: it stays down after the engine restarts
    wait_for("registered", lambda: services_up(bridge, 2))
    port = bridge.service("survivor")["Port"]  # type: ignore[index]
    subprocess.run([str(SERVICES), "dockerd-restart"], check=True, capture_output=True)
    wait_for("disconnect seen", lambda: bridge.agent.events("docker_disconnected"))
    wait_for("reconnected", lambda: len(bridge.agent.events("docker_connected")) >= 2)
    wait_for(
        "only the survivor",
        lambda: set(bridge.services()) == {f"{bridge.agent.node_id}:{bridge.tag}survivor"},
    )
    assert bridge.service("survivor")["Port"] == port  # type: ignore[index]
    bridge.run("newcomer")
    wait_for("newcomer registered", lambda: bridge.service("newcomer"))
    invariant(bridge)


@pytest.mark.bridge_env({"BRIDGE_PORT_RANGE": "21990-21991", "BRIDGE_STALE_AFTER": "1s"})
def test_exhaustion_waits_then_gets_a_port_without_restart(bridge: Bridge) -> None:
    bridge.agent.start()
    first = bridge.run("a")
    bridge.run("b")
    wait_for("two registered", lambda: services_up(bridge, 2))
    bridge.run("c")
    status = wait_for("c waits", lambda: (s := bridge.agent.status())["waiting"] and s)
    (waiting,) = status["waiting"]
    assert waiting["container"] == bridge.tag + "c"
    assert "21990-21991 exhausted" in waiting["reason"] and "2 active" in waiting["reason"]
    assert bridge.service("c") is None
    first.remove(force=True)  # frees a port after BRIDGE_STALE_AFTER
    wait_for("c registered", lambda: bridge.service("c"))
    assert not bridge.agent.status()["waiting"]
    invariant(bridge)


def test_lost_store_is_rebuilt_from_docker_and_consul(bridge: Bridge) -> None:
    bridge.agent.start()
    for i in range(4):
        bridge.run(f"s{i}")
    wait_for("registered", lambda: services_up(bridge, 4))
    before = invariant(bridge)
    bridge.agent.stop()
    store = Path(bridge.agent.env["BRIDGE_STATE_FILE"])
    for suffix in ("", "-wal", "-shm"):
        Path(str(store) + suffix).unlink(missing_ok=True)
    bridge.agent.start()
    wait_for("registered", lambda: services_up(bridge, 4))
    assert invariant(bridge) == before
    # New containers get ports after the rebuilt ones, never one of theirs.
    bridge.run("fresh")
    fresh = wait_for("fresh", lambda: bridge.service("fresh"))
    assert fresh["Port"] not in before.values()


def test_corrupt_store_is_moved_aside_and_rebuilt(bridge: Bridge) -> None:
    bridge.agent.start()
    bridge.run("keep")
    port = wait_for("registered", lambda: bridge.service("keep"))["Port"]
    bridge.agent.stop()
    store = Path(bridge.agent.env["BRIDGE_STATE_FILE"])
    store.write_bytes(b"\x00not sqlite\x00" * 1000)
    bridge.agent.start()
    assert bridge.agent.events("state_store_corrupt")
    assert list(store.parent.glob("state.db.corrupt-*"))
    assert wait_for("registered", lambda: bridge.service("keep"))["Port"] == port
    invariant(bridge)


def test_rename_moves_the_service(bridge: Bridge) -> None:
    bridge.agent.start()
    container = bridge.run("before")
    wait_for("registered", lambda: bridge.service("before"))
    container.rename(bridge.tag + "after")
    wait_for("new name registered", lambda: bridge.service("after"))
    wait_for("old name gone", lambda: bridge.service("before") is None)
    invariant(bridge)


def test_consul_catalog_has_one_instance_per_container(bridge: Bridge) -> None:
    bridge.agent.start()
    for i in range(3):
        bridge.run(f"inst{i}", labels=bridge.labels(enable="true", port="8080", name="shared"))
    wait_for("three instances", lambda: len(consul_get("/v1/catalog/service/shared")) == 3)
    entries = consul_get("/v1/catalog/service/shared")
    assert len({e["ServiceID"] for e in entries}) == 3
    assert len({e["ServicePort"] for e in entries}) == 3
