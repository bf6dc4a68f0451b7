"""What the Docker adapter does differently for Podman's Docker-compatible API: how it knows
the engine, and the health its listings leave out. What Podman's events and rows look like
is pinned by its recordings (test_engine_recordings.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from bridge.core.model import Container, EngineVersion
from bridge.docker.engine import DockerEngine
from bridge.docker.parse import parse_inspect, parse_version
from tests.unit.docker.test_docker_parse import ROW

PODMAN_VERSION = {
    "Platform": {"Name": "linux/amd64/debian-12"},
    "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}],
    "Version": "4.3.1",
    "ApiVersion": "1.41",
}
DOCKER_VERSION = {
    "Platform": {"Name": ""},
    "Components": [{"Name": "Engine", "Version": "28.5.2"}, {"Name": "containerd"}],
    "Version": "28.5.2",
    "ApiVersion": "1.51",
}


def test_the_engine_is_named_from_its_components() -> None:
    podman, docker = parse_version(PODMAN_VERSION), parse_version(DOCKER_VERSION)
    assert podman == EngineVersion("4.3.1", "1.41", "Podman") and podman.podman
    assert str(podman) == "Podman 4.3.1 (API 1.41)"
    assert str(docker) == "Docker Engine 28.5.2 (API 1.51)" and not docker.podman
    # Docker's version rules (Engine 28's filtered internal addresses) are not Podman's
    assert (docker.major, podman.major) == (28, 0)
    assert parse_version({}) == EngineVersion("", "", "Docker Engine")


class FakeAPI:
    """The engine's HTTP session (bridge.docker.http.EngineHTTP), as much as `list` uses."""

    def __init__(self, version: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        self._version, self.rows = version, rows
        self.calls: list[str] = []
        self.inspected: list[str] = []

    async def get(self, path: str) -> dict[str, Any]:
        assert path == "/version"
        self.calls.append("version")
        return self._version

    async def containers(self, filters: Any) -> list[dict[str, Any]]:
        self.calls.append("containers")
        return copy.deepcopy(self.rows)

    async def inspect(self, cid: str) -> dict[str, Any]:
        self.inspected.append(cid)
        return {
            "Id": cid,
            "Name": "/x",
            "Config": {"Labels": {}, "OpenStdin": True},
            "State": {"Status": "running", "Running": True, "Health": {"Status": "unhealthy"}},
            # exposed, not published: what Podman's row leaves out
            "NetworkSettings": {"Ports": {"7000/tcp": None, "9000/tcp": None}},
        }


def by_label(container: Container) -> bool:
    return any(k.startswith("mcp.") for k in container.labels)


def engine_over(api: FakeAPI, may_manage: Callable[[Container], bool] = by_label) -> DockerEngine:
    engine = DockerEngine("tcp://127.0.0.1:1", may_manage=may_manage)
    engine._api = lambda: api  # type: ignore[method-assign]
    return engine


def rows() -> list[dict[str, Any]]:
    # Podman's row of a running container with a HEALTHCHECK: "Up 2 seconds", no "(…)"
    running = {**copy.deepcopy(ROW), "Id": "a" * 64, "Status": "Up 2 seconds"}
    unlabelled = {**copy.deepcopy(ROW), "Id": "b" * 64, "Status": "Up 2 seconds", "Labels": {}}
    stopped = {**copy.deepcopy(ROW), "Id": "c" * 64, "State": "exited", "Status": "Exited (0)"}
    told = {**copy.deepcopy(ROW), "Id": "d" * 64}  # "(healthy)" in its Status
    return [running, unlabelled, stopped, told]


async def test_podmans_listing_takes_the_containers_it_may_manage_from_their_inspects() -> None:
    api = FakeAPI(PODMAN_VERSION, rows())
    engine = engine_over(api)
    listed = {c.id[0]: c for c in await engine.list()}
    assert api.inspected == ["a" * 64, "d" * 64]  # running, and managed
    a = listed["a"]
    assert (a.health, a.exposed_tcp, a.name) == ("unhealthy", frozenset({7000, 9000}), "x")
    assert a.stdin is not None and a.stdin.open  # kept: the pass need not inspect again
    assert (listed["b"].health, listed["c"].health) == (None, None)  # as listed
    assert listed["b"].exposed_tcp == frozenset({7000, 8080})  # the row's
    assert not listed["c"].published  # a stopped container has no ports, as on Docker
    await engine.list()
    assert api.calls == ["version", "containers", "containers"]  # asked once
    await engine.close()  # the next session may reach another engine: asked again
    await engine.list()
    assert api.calls[-2:] == ["version", "containers"]


async def test_podmans_look_at_many_ids_is_their_inspects_alone() -> None:
    api = FakeAPI(PODMAN_VERSION, rows())
    ids = [c * 64 for c in "abcdef"]  # more than INSPECT_AT_MOST
    found = await engine_over(api).list(ids)
    assert "containers" not in api.calls and api.inspected == ids and len(found) == 6


async def test_dockers_listing_is_one_call() -> None:
    api = FakeAPI(DOCKER_VERSION, rows())
    listed = await engine_over(api).list()
    assert api.inspected == [] and [c.health for c in listed] == [None, None, None, "healthy"]
    await engine_over(api).list([c * 64 for c in "abcdef"])
    assert api.calls[-1] == "containers" and api.inspected == []  # one filtered listing


@pytest.mark.parametrize(
    ("status", "ports"),
    [
        ("running", True),
        ("paused", True),
        ("restarting", True),
        ("exited", False),
        ("created", False),
    ],
)
def test_an_inspect_has_ports_only_while_its_container_may_use_them(
    status: str, ports: bool
) -> None:
    # Podman keeps a stopped container's ports, and says Running=false when paused
    inspected = parse_inspect(
        {
            "Id": "a" * 64,
            "State": {"Status": status, "Running": status == "running"},
            "NetworkSettings": {"Ports": {"8080/tcp": [{"HostIp": "", "HostPort": "40000"}]}},
        }
    )
    assert bool(inspected.published) is ports and bool(inspected.exposed_tcp) is ports
