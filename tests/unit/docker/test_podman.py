"""What the Docker adapter does differently for Podman's Docker-compatible API: how it knows
the engine, and the health its listings leave out. What Podman's events and rows look like
is pinned by its recordings (test_engine_recordings.py)."""

from __future__ import annotations

import copy
from typing import Any

from bridge.core.model import EngineVersion
from bridge.docker.engine import DockerEngine, parse_version
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
    """The SDK's low-level client, as much of it as `list` uses."""

    def __init__(self, version: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        self._version, self.rows = version, rows
        self.inspected: list[str] = []

    def version(self) -> dict[str, Any]:
        return self._version

    def containers(self, all: bool, filters: Any) -> list[dict[str, Any]]:
        return copy.deepcopy(self.rows)

    def inspect_container(self, cid: str) -> dict[str, Any]:
        self.inspected.append(cid)
        return {
            "Id": cid,
            "Name": "/x",
            "Config": {"Labels": {}},
            "State": {"Status": "running", "Health": {"Status": "unhealthy"}},
        }


def engine_over(api: FakeAPI, label_prefix: str | None = "mcp.") -> DockerEngine:
    engine = DockerEngine("tcp://127.0.0.1:1", label_prefix=label_prefix)
    engine._api = lambda: api  # type: ignore[method-assign]
    return engine


def rows() -> list[dict[str, Any]]:
    # Podman's row of a running container with a HEALTHCHECK: "Up 2 seconds", no "(…)"
    running = {**copy.deepcopy(ROW), "Id": "a" * 64, "Status": "Up 2 seconds"}
    unlabelled = {**copy.deepcopy(ROW), "Id": "b" * 64, "Status": "Up 2 seconds", "Labels": {}}
    stopped = {**copy.deepcopy(ROW), "Id": "c" * 64, "State": "exited", "Status": "Exited (0)"}
    told = {**copy.deepcopy(ROW), "Id": "d" * 64}  # "(healthy)" in its Status
    return [running, unlabelled, stopped, told]


async def test_podmans_listing_takes_running_labelled_containers_from_their_inspects() -> None:
    api = FakeAPI(PODMAN_VERSION, rows())
    listed = {c.id[0]: c for c in await engine_over(api).list()}
    assert api.inspected == ["a" * 64, "d" * 64]
    # the inspect's view: its health, its exposed ports; no stdin, as a listing has none
    assert (listed["a"].health, listed["a"].name, listed["a"].stdin) == ("unhealthy", "x", None)
    assert (listed["b"].health, listed["c"].health) == (None, None)  # as listed
    # without a prefix, every running container
    api = FakeAPI(PODMAN_VERSION, rows())
    await engine_over(api, label_prefix=None).list()
    assert api.inspected == ["a" * 64, "b" * 64, "d" * 64]


async def test_dockers_listing_is_one_call() -> None:
    api = FakeAPI(DOCKER_VERSION, rows())
    listed = await engine_over(api).list()
    assert api.inspected == [] and [c.health for c in listed] == [None, None, None, "healthy"]
