"""Docker's wire shapes into model data: listing rows and event dicts, as the engine sends them.

The rows and events below follow GET /containers/json and GET /events of a real engine
(API 1.41+); the parser must also survive the fields an engine leaves out.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge.core.model import Container, ContainerEvent, PortBinding
from bridge.docker.parse import parse_event, parse_row

CID = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b"

ROW: dict[str, Any] = {
    "Id": CID,
    "Names": ["/probe-x"],
    "Image": "example/mcp-probe:1.4",
    "ImageID": "sha256:" + "ab" * 32,
    "Command": "python -m server",
    "Created": 1718000000,
    "State": "running",
    "Status": "Up 5 seconds (healthy)",
    "Ports": [
        {"IP": "127.0.0.1", "PrivatePort": 7000, "PublicPort": 32768, "Type": "tcp"},
        {"PrivatePort": 8080, "Type": "tcp"},
        {"PrivatePort": 9000, "Type": "udp"},
    ],
    "Labels": {"mcp.enable": "true", "mcp.port": "7000", "com.docker.compose.service": "x"},
    "SizeRw": 0,
    "HostConfig": {"NetworkMode": "bridge"},
    "NetworkSettings": {
        "Networks": {
            "bridge": {
                "IPAMConfig": None,
                "Links": None,
                "Aliases": None,
                "NetworkID": "n" * 64,
                "EndpointID": "e" * 64,
                "Gateway": "172.17.0.1",
                "IPAddress": "172.17.0.2",
                "IPPrefixLen": 16,
                "IPv6Gateway": "",
                "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0,
                "MacAddress": "02:42:ac:11:00:02",
            }
        }
    },
    "Mounts": [],
}


def row(**changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(ROW)
    result.update(changes)
    return result


# ---- parse_row ------------------------------------------------------------------------


def test_realistic_row() -> None:
    container = parse_row(ROW)
    assert container == Container(
        id=CID,
        name="probe-x",
        image="example/mcp-probe:1.4",
        state="running",
        labels={"mcp.enable": "true", "mcp.port": "7000", "com.docker.compose.service": "x"},
        exposed_tcp=frozenset({7000, 8080}),
        published={7000: (PortBinding("127.0.0.1", 32768),)},
        networks={"bridge": "172.17.0.2"},
        health="healthy",
    )
    assert container.running


def test_name_loses_only_the_leading_slash() -> None:
    assert parse_row(row(Names=["/mcp-weather_1"])).name == "mcp-weather_1"


def test_linked_container_keeps_its_own_name() -> None:
    # `docker run --name mcp-x ...; docker run --name app --link mcp-x ...`
    assert parse_row(row(Names=["/app/mcp-x", "/mcp-x"])).name == "mcp-x"


def test_udp_ports_are_ignored() -> None:
    container = parse_row(
        row(
            Ports=[
                {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"},
                {"PrivatePort": 9000, "Type": "udp"},
            ]
        )
    )
    assert container.exposed_tcp == frozenset()
    assert container.published == {}


def test_exposed_versus_published() -> None:
    container = parse_row(ROW)
    assert 8080 in container.exposed_tcp
    assert 8080 not in container.published  # exposed only: no host binding
    assert container.published[7000] == (PortBinding("127.0.0.1", 32768),)


def test_ipv4_and_ipv6_bindings_of_one_port() -> None:
    container = parse_row(
        row(
            Ports=[
                {"IP": "::", "PrivatePort": 8080, "PublicPort": 32769, "Type": "tcp"},
                {"IP": "0.0.0.0", "PrivatePort": 8080, "PublicPort": 32768, "Type": "tcp"},
            ]
        )
    )
    assert container.exposed_tcp == frozenset({8080})
    assert container.published == {
        8080: (PortBinding("0.0.0.0", 32768), PortBinding("::", 32769)),
    }


def test_one_port_published_twice() -> None:
    container = parse_row(
        row(
            Ports=[
                {"IP": "0.0.0.0", "PrivatePort": 8080, "PublicPort": 7001, "Type": "tcp"},
                {"IP": "0.0.0.0", "PrivatePort": 8080, "PublicPort": 7000, "Type": "tcp"},
            ]
        )
    )
    assert container.published[8080] == (
        PortBinding("0.0.0.0", 7000),
        PortBinding("0.0.0.0", 7001),
    )


def test_binding_without_ip_and_zero_public_port() -> None:
    container = parse_row(
        row(
            Ports=[
                {"PrivatePort": 8080, "PublicPort": 32768, "Type": "tcp"},
                {"IP": "", "PrivatePort": 22, "PublicPort": 0, "Type": "tcp"},
                {"PublicPort": 1234, "Type": "tcp"},  # no PrivatePort: not a port at all
            ]
        )
    )
    assert container.exposed_tcp == frozenset({8080, 22})
    assert container.published == {8080: (PortBinding("", 32768),)}


@pytest.mark.parametrize(
    ("status", "health"),
    [
        ("Up 5 seconds (healthy)", "healthy"),
        ("Up 2 minutes (unhealthy)", "unhealthy"),
        ("Up 1 second (health: starting)", "starting"),
        ("Up About an hour", None),
        ("Up 3 hours (Paused)", None),
        ("Exited (0) 5 seconds ago", None),
        ("Created", None),
        ("", None),
        (None, None),
    ],
)
def test_health_from_status(status: str | None, health: str | None) -> None:
    assert parse_row(row(Status=status)).health == health


def test_missing_status_means_no_health() -> None:
    bare = row()
    del bare["Status"]
    assert parse_row(bare).health is None


def test_none_ports_labels_and_no_network_settings() -> None:
    bare = row(Ports=None, Labels=None)
    del bare["NetworkSettings"]
    container = parse_row(bare)
    assert container.name == "probe-x"
    assert container.labels == {}
    assert container.exposed_tcp == frozenset()
    assert container.published == {}
    assert container.networks == {}


def test_minimal_row() -> None:
    container = parse_row({"Id": CID})
    assert container.id == CID
    assert container.name == CID[:12]  # no Names: fall back to the short id
    assert (container.image, container.state) == ("", "")
    assert not container.running
    assert container.labels == {}
    assert container.networks == {}
    assert container.health is None


@pytest.mark.parametrize("names", [None, []])
def test_no_names_falls_back_to_the_short_id(names: list[str] | None) -> None:
    assert parse_row(row(Names=names)).name == CID[:12]


def test_networks_with_missing_or_empty_addresses() -> None:
    container = parse_row(
        row(
            NetworkSettings={
                "Networks": {
                    "none": {"IPAddress": ""},
                    "proj_default": {"IPAddress": "172.20.0.5"},
                    "odd": None,
                    "odd2": {"IPAddress": None},
                    "odd3": {},
                }
            }
        )
    )
    assert container.networks == {
        "none": "",
        "proj_default": "172.20.0.5",
        "odd": "",
        "odd2": "",
        "odd3": "",
    }


@pytest.mark.parametrize("settings", [None, {}, {"Networks": None}])
def test_empty_network_settings(settings: dict[str, Any] | None) -> None:
    assert parse_row(row(NetworkSettings=settings)).networks == {}


def test_stopped_container_row() -> None:
    container = parse_row(
        row(State="exited", Status="Exited (137) 3 seconds ago", Ports=[], NetworkSettings={})
    )
    assert container.state == "exited"
    assert not container.running
    assert container.health is None


def test_labels_are_copied_not_shared() -> None:
    source = row()
    container = parse_row(source)
    source["Labels"]["mcp.port"] = "1"
    assert container.labels["mcp.port"] == "7000"


# ---- parse_event ---------------------------------------------------------------------


def event(action: str, **attributes: str) -> dict[str, Any]:
    """A container event as the engine sends it (both old and new field names)."""
    return {
        "status": action,
        "id": CID,
        "from": "example/mcp-probe:1.4",
        "Type": "container",
        "Action": action,
        "Actor": {
            "ID": CID,
            "Attributes": {"image": "example/mcp-probe:1.4", "name": "probe-x", **attributes},
        },
        "scope": "local",
        "time": 1718000000,
        "timeNano": 1718000000123456789,
    }


@pytest.mark.parametrize("action", ["create", "start", "die", "stop", "destroy"])
def test_lifecycle_events(action: str) -> None:
    parsed = parse_event(event(action))
    assert parsed == ContainerEvent(CID, action, "probe-x", None)
    assert parsed.time == 1718000000.1234567  # for the event-to-registered histogram


def test_rename_event_carries_both_names_without_slash() -> None:
    parsed = parse_event(event("rename", name="new", oldName="/old"))
    assert parsed == ContainerEvent(CID, "rename", "new", "old")


def test_destroy_event() -> None:
    parsed = parse_event(event("destroy", exitCode="0"))
    assert parsed is not None
    assert (parsed.action, parsed.name, parsed.old_name) == ("destroy", "probe-x", None)


def test_exec_start_event_keeps_the_full_action() -> None:
    parsed = parse_event(
        event("exec_start: /bin/sh -c curl -fs localhost:7000/health", execID="e" * 64)
    )
    assert parsed is not None
    assert parsed.action.startswith("exec_start")
    assert parsed.container_id == CID


def test_health_status_event() -> None:
    parsed = parse_event(event("health_status: healthy"))
    assert parsed is not None
    assert parsed.action == "health_status: healthy"


@pytest.mark.parametrize("action", ["connect", "disconnect"])
def test_network_connect_and_disconnect_mark_the_container(action: str) -> None:
    raw = {
        "Type": "network",
        "Action": action,
        "Actor": {"ID": "n" * 64, "Attributes": {"container": CID, "name": "bridge"}},
    }
    parsed = parse_event(raw)
    assert parsed is not None
    assert (parsed.container_id, parsed.action) == (CID, f"network_{action}")


@pytest.mark.parametrize(
    "raw",
    [
        {
            "Type": "network",
            "Action": "create",
            "Actor": {"ID": "n" * 64, "Attributes": {"name": "backend"}},
        },
        {
            "Type": "image",
            "Action": "pull",
            "Actor": {"ID": "example/mcp:1", "Attributes": {"name": "example/mcp"}},
        },
        {"Type": "volume", "Action": "create", "Actor": {"ID": "v1", "Attributes": {}}},
        {"Type": "daemon", "Action": "reload", "Actor": {"ID": "d1"}},
    ],
)
def test_non_container_events_are_ignored(raw: dict[str, Any]) -> None:
    assert parse_event(raw) is None


@pytest.mark.parametrize("raw", [None, "start", b"{}", 42, ["start"], {}])
def test_garbage_is_ignored(raw: Any) -> None:
    assert parse_event(raw) is None


def test_old_engine_event_without_type_or_actor() -> None:
    # API < 1.22 sent only status/id/from.
    parsed = parse_event({"status": "start", "id": CID, "from": "example/mcp:1"})
    assert parsed == ContainerEvent(CID, "start", None, None)


def test_event_with_null_attributes() -> None:
    raw = {"Type": "container", "Action": "start", "Actor": {"ID": CID, "Attributes": None}}
    assert parse_event(raw) == ContainerEvent(CID, "start", None, None)
