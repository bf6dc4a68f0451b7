"""The agent's essentials against each engine: Docker 20.10, 26.1 and 28.5, and rootful
Podman 4.3 and 5.4 serving Docker's API, each inside its own container, the agent on the
host speaking to it over TCP (DOCKER_HOST)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from bridge.docker.engine import DockerEngine
from tests.engines.dind import PODMAN, SUITES, Engine, running
from tests.engines.test_docker_tls import doctor
from tests.integration.conftest import TEST_LABEL, Bridge, bridge_world, build_image, wait_for
from tests.integration.world import invariant, store_allocations

NO_CHECK = {"check": "none"}


@pytest.fixture(scope="module", params=[*SUITES, *PODMAN])
def engine(request: pytest.FixtureRequest, docker_client: docker.DockerClient) -> Iterator[Engine]:
    suite = request.param
    build_image(suite if suite in PODMAN else "dind" if suite == "bookworm" else f"dind-{suite}")
    with running(suite, docker_client) as started:
        yield started


@pytest.fixture
def world(engine: Engine, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Bridge]:
    assert engine.client is not None
    # No periodic relist within a test (the integration world's is 2 s): what the agent
    # gets right here, it gets from the engine's events, parsed. The agent still relists
    # at start-up and on every reconnect to the engine (the restart test's recovery).
    env = {"DOCKER_HOST": engine.url, "BRIDGE_STALE_AFTER": "1s", "BRIDGE_RESYNC_INTERVAL": "10m"}
    with bridge_world(engine.client, tmp_path, request, env) as bridge:
        bridge.agent.start()
        yield bridge


def run(world: Bridge, name: str, **labels: Any) -> Any:
    merged = {"enable": "true", "port": "8080", **NO_CHECK, **labels}
    return world.run(name, labels=world.labels(**merged))


def test_register_stop_start_rename_and_remove(world: Bridge) -> None:
    container = run(world, "a")
    port = wait_for("registered", lambda: world.service("a"))["Port"]
    container.stop(timeout=1)
    wait_for("deregistered on stop", lambda: world.service("a") is None)
    assert store_allocations(world)[world.tag + "a"]["state"] == "held"
    container.start()
    assert wait_for("back", lambda: world.service("a"))["Port"] == port  # sticky
    container.rename(world.tag + "b")
    wait_for("the new name", lambda: world.service("b"))
    wait_for("not the old", lambda: world.service("a") is None)
    container.remove(force=True)
    wait_for("deregistered on remove", lambda: world.service("b") is None)
    assert store_allocations(world)[world.tag + "b"]["state"] == "orphaned"
    # A removed container's port is freed by the first full pass after BRIDGE_STALE_AFTER
    # (1 s here); with no periodic relist, a restart's is that pass.
    time.sleep(1.5)
    world.agent.stop()
    world.agent.start()
    wait_for(
        "its port freed after BRIDGE_STALE_AFTER",
        lambda: world.tag + "b" not in store_allocations(world),
    )


@pytest.mark.bridge_env({"BRIDGE_RESYNC_INTERVAL": "1s"})
def test_a_container_managed_by_its_name_alone_stays_registered_through_full_passes(
    world: Bridge,
) -> None:
    """No label at all, a name the name pattern matches and a port it only exposes: what
    Podman's listing leaves out, full passes (every second here) must still see."""
    api = world.docker.api
    made = api.create_container(
        "mcp-bridge/busybox:local", ["httpd", "-f", "-p", "8080"], name=world.tag + "named",
        ports=[8080], labels={TEST_LABEL: "1"},
    )  # fmt: skip
    api.start(made["Id"])
    service = wait_for("registered", lambda: world.service("named"))
    assert service["Meta"]["container_port"] == "8080"
    time.sleep(3.5)  # three full passes
    assert world.service("named") is not None
    assert not world.agent.status()["skipped"]


def test_network_connect_and_disconnect(world: Bridge) -> None:
    net = world.docker.networks.create(world.tag + "net")
    container = run(world, "netted", expose="internal", network=net.name)
    wait_for("skipped: not on that network", lambda: world.agent.status()["skipped"])
    net.connect(container)
    service = wait_for("registered", lambda: world.service("netted"))
    container.reload()
    assert (
        service["Address"] == container.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
    )
    net.disconnect(container)
    wait_for("deregistered", lambda: world.service("netted") is None)


def test_health_status_is_mirrored_by_the_docker_check(world: Bridge, engine: Engine) -> None:
    container = world.docker.containers.run(
        "mcp-bridge/busybox:local",
        ["sh", "-c", "touch /tmp/ok; exec httpd -f -p 8080"],
        name=world.tag + "hc",
        detach=True,
        labels=world.labels(enable="true", port="8080", check="docker"),
        healthcheck={
            "test": ["CMD", "test", "-f", "/tmp/ok"],
            "interval": 500_000_000,
            "retries": 1,
        },
    )

    def check(status: str) -> dict[str, Any] | None:
        c = world.check("hc")
        return c if c and c["Status"] == status else None

    # Podman's healthchecks run once each, as its systemd timer would run them: the one
    # event each makes must be enough (Docker runs its own every 0.5 s).
    wait_for("registered", lambda: world.check("hc"))
    engine.run_healthchecks(container.id)
    wait_for("passing", lambda: check("passing"))
    container.exec_run(["rm", "/tmp/ok"])
    engine.run_healthchecks(container.id)
    critical = wait_for("critical", lambda: check("critical"))
    assert "unhealthy" in critical["Output"]


def test_published_on_both_families_is_one_registration_and_ipv6_only_its_address(
    world: Bridge, engine: Engine
) -> None:
    both = world.docker.containers.run(
        "mcp-bridge/busybox:local",
        ["httpd", "-f", "-p", "8080"],
        name=world.tag + "both",
        detach=True,
        labels=world.labels(enable="true", port="8080", check="none"),
        ports={"8080/tcp": None},
    )
    world.docker.containers.run(
        "mcp-bridge/busybox:local",
        ["httpd", "-f", "-p", "8080"],
        name=world.tag + "v6",
        detach=True,
        labels=world.labels(enable="true", port="8080", check="none"),
        ports={"8080/tcp": ("::1", None)},
    )
    svc = wait_for("registered", lambda: world.service("both"))
    both.reload()
    bindings = both.attrs["NetworkSettings"]["Ports"]["8080/tcp"]
    listed = world.docker.api.containers(filters={"id": both.id})[0]["Ports"]
    if engine.podman:
        # Podman publishes one binding, in its inspect and in its listing alike: on every
        # address with no address named (4.3), or on 0.0.0.0 (5.4).
        assert len(bindings) == 1 and bindings[0]["HostIp"] in ("", "0.0.0.0"), bindings
        assert len([p for p in listed if p.get("PrivatePort") == 8080]) == 1, listed
        v4 = bindings[0]
    else:
        # The engine published it on both families, as its inspect (an event's look) and
        # its listing (a full pass) say: else one registration would prove nothing.
        assert families(b["HostIp"] for b in bindings) == {4, 6}, bindings
        assert families(p["IP"] for p in listed if p.get("PrivatePort") == 8080) == {4, 6}
        v4 = next(b for b in bindings if b["HostIp"] == "0.0.0.0")
    assert (svc["Meta"]["expose"], svc["Port"]) == ("published", int(v4["HostPort"]))
    assert (
        len([s for s in world.services().values() if s["Meta"]["container_name"] == both.name]) == 1
    )
    v6 = wait_for("IPv6-only registered", lambda: world.service("v6"))
    assert v6["Address"] == "::1"


def host_ports(container: Any) -> dict[int, list[int]]:
    return {p: [b.host_port for b in bindings] for p, bindings in container.published.items()}


def families(addresses: Iterable[str]) -> set[int]:
    return {ipaddress.ip_address(a).version for a in addresses if a}


def test_engine_restart_in_the_middle_of_a_burst(world: Bridge, engine: Engine) -> None:
    names = [f"burst{i}" for i in range(12)]

    def start_all() -> None:
        for i, name in enumerate(names):
            restart = {"Name": "always"} if i % 2 == 0 else None
            # The engine may go away under one of these: that is the fault being made.
            with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
                world.run(name, labels=world.labels(enable="true", port="8080", check="none"),
                          restart_policy=restart)  # fmt: skip

    starter = threading.Thread(target=start_all)
    starter.start()
    wait_for("burst under way", lambda: len(world.services()) >= 3)
    engine.restart()
    starter.join()
    engine.wait_up()
    wait_for("reconnected", lambda: len(world.agent.events("docker_connected")) >= 2)

    def settled() -> dict[str, int] | None:
        try:
            return invariant(world)
        except AssertionError:
            return None

    ports = wait_for("every running container registered once", settled, timeout=120)
    assert ports, "nothing runs after the restart: the fault proved nothing"


def test_inspect_and_listing_describe_a_container_alike(world: Bridge, engine: Engine) -> None:
    """A scoped look inspects a few containers one by one, a full pass lists them: both
    must give the same Container, whatever the engine version."""
    api, image = world.docker.api, "mcp-bridge/busybox:local"
    network = world.docker.networks.create(world.tag + "net")
    ids = []

    def start(name: str, **create: Any) -> str:
        host_config = create.pop("host_config", {})
        made = api.create_container(
            image, ["httpd", "-f", "-p", "8080"], name=world.tag + name,
            host_config=api.create_host_config(**host_config), **create,
        )  # fmt: skip
        api.start(made["Id"])
        ids.append(made["Id"])
        return str(made["Id"])

    try:
        start("exposed", ports=[8080, 9090], labels={"a": "1", "b": ""})
        start("both", ports=[8080], host_config={"port_bindings": {8080: None}})
        start("v6", ports=[8080], host_config={"port_bindings": {8080: ("::1", None)}})
        start(
            "health", ports=[8080],
            healthcheck={"test": ["CMD", "true"], "interval": 60 * 10**9},
        )  # fmt: skip
        two = start("two-networks", ports=[8080])
        network.connect(two)
        stopped = start("stopped", ports=[8080])
        api.stop(stopped, timeout=0)
        # Podman lists and inspects a stopped container's ports; Docker neither
        was_published = start(
            "stopped-published", ports=[8080], host_config={"port_bindings": {8080: None}}
        )
        api.stop(was_published, timeout=0)
        gone = start("gone")
        api.remove_container(gone, force=True)

        async def both_ways() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            adapter = DockerEngine(engine.url)
            bare = DockerEngine(engine.url, may_manage=lambda _: False)  # rows as listed
            try:
                inspected = await adapter._call(lambda h: adapter._inspect_each(h, ids))
                listed = await adapter.list()
                rows = await bare.list()
            finally:
                await adapter.close()
                await bare.close()
            return (
                {c.id: c for c in inspected},
                {c.id: c for c in listed if c.id in ids},
                {c.id: c for c in rows if c.id in ids},
            )

        inspected, listed, rows = asyncio.run(both_ways())
        assert gone not in inspected, "a removed container is left out, as a listing would"
        assert set(inspected) == set(listed) == set(rows) == set(ids) - {gone}
        for cid, container in listed.items():
            row, looked = rows[cid], inspected[cid]
            # Alike but for the stdin settings, which only an inspect carries, and on
            # Podman what its rows leave out: the adapter took those from the inspect.
            assert row.stdin is None and looked.stdin is not None
            if engine.podman:
                # the same host ports, though 5.4's row names no address where its
                # inspect says 0.0.0.0 (both mean every address)
                assert host_ports(looked) == host_ports(row), row.name
                told = {"exposed_tcp": row.exposed_tcp, "health": row.health}
                told["published"] = row.published
                assert dataclasses.replace(looked, stdin=None, **told) == row, row.name
                assert container == (looked if container.running else row), row.name
            else:
                assert dataclasses.replace(looked, stdin=None) == row == container, row.name
        assert listed[stopped].state == "exited"
        assert not listed[was_published].published and not inspected[was_published].published
        assert inspected[ids[3]].health == "starting"
    finally:
        for cid in ids:
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_container(cid, force=True)
        network.remove()


def test_doctor_and_the_agent_name_the_engine(world: Bridge, engine: Engine) -> None:
    version = engine.version["Version"]
    name = "Podman" if engine.podman else "Docker Engine"
    said = doctor(world)
    assert f" answers: {name} {version} (API " in said.stdout, said.stdout + said.stderr
    connected = wait_for("connected", lambda: world.agent.events("docker_connected"))
    assert connected[0]["engine"].startswith(f"{name} {version} (API ")
