"""The Docker adapter against what real engines said: events and listings recorded from
Engine 20.10 (bookworm), 26.1 (trixie) and 28.5 (sid), and from Podman 4.3 (bookworm) and
5.4 (trixie) serving Docker's API, by tests/engines/record.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.core.model import ContainerEvent, ServiceSpec
from bridge.core.registration import resolve_endpoint
from bridge.docker.parse import parse_event, parse_row, parse_version
from bridge.labels.parse import parse_labels
from bridge.loop.triggers import Pending, Triggers
from tests.builders import make_container, make_settings

RECORDINGS = Path(__file__).parents[2] / "fixtures" / "engines"
SUITES = ("bookworm", "trixie", "sid")
PODMAN = ("podman-bookworm", "podman-trixie")


def recording(suite: str) -> dict[str, Any]:
    return dict(json.loads((RECORDINGS / f"{suite}.json").read_text()))


def events(raw: list[dict[str, Any]]) -> list[ContainerEvent]:
    return [e for e in map(parse_event, raw) if e is not None]


def story(parsed: list[ContainerEvent]) -> set[tuple[str, str | None, str | None]]:
    """What happened to the first container, without ids, times, order or the HEALTHCHECK's
    execs (their count depends on timing): (action, name, old name)."""
    web = next(e.container_id for e in parsed if e.name == "rec-web")
    return {
        (e.action, e.name, e.old_name)
        for e in parsed
        if e.container_id == web and not e.action.startswith("exec_")
    }


@pytest.mark.parametrize("suite", SUITES)
def test_every_engine_tells_the_same_story(suite: str) -> None:
    told = story(events(recording(suite)["events"]))
    assert told == story(events(recording("bookworm")["events"]))
    assert ("rename", "rec-renamed", "rec-web") in told
    assert ("health_status: unhealthy", "rec-web", None) in told  # with its suffix
    assert ("network_connect", None, None) in told  # names the container by id only


@pytest.mark.parametrize("suite", SUITES)
def test_the_fields_api_1_52_drops_are_not_needed(suite: str) -> None:
    # /events of API 1.52 (Engine 29) no longer carries status, id and from.
    raw = recording(suite)["events"]
    stripped = [{k: v for k, v in e.items() if k not in ("status", "id", "from")} for e in raw]
    assert events(stripped) == events(raw)


async def test_which_recorded_events_make_the_agent_look_again() -> None:
    triggers = Triggers()
    parsed = events(recording("sid")["events"])
    web = next(e.container_id for e in parsed if e.action == "start")
    triggers.seen([make_container("rec-web", cid=web)], Pending(full=True))
    taken = {e.action for e in parsed if triggers.on_event(e)}
    assert taken >= {"start", "die", "destroy", "rename", "stop", "kill", "network_connect"}
    assert {a for a in taken if a.startswith("health_status")} == {
        "health_status: healthy",
        "health_status: unhealthy",
    }
    assert not {a for a in taken if a.startswith("exec_") or a == "create"}


@pytest.mark.parametrize("suite", SUITES)
def test_a_port_published_on_both_families_is_one_endpoint(suite: str) -> None:
    row = recording(suite)["containers"]["published_healthy"]
    container = parse_row(row)
    families = {b.host_ip for b in container.published[8080]}
    assert families == {"0.0.0.0", "::"}  # listed twice, one port (26+ by design)
    assert container.health == "healthy"
    spec = parse_labels(container, make_settings())
    assert isinstance(spec, ServiceSpec)
    endpoint = resolve_endpoint(spec, None, "10.0.0.5")
    assert (endpoint.address, endpoint.port) == ("10.0.0.5", container.published[8080][0].host_port)
    unhealthy = parse_row(recording(suite)["containers"]["unhealthy"])
    assert unhealthy.health == "unhealthy"


@pytest.mark.parametrize("suite", PODMAN)
def test_podman_tells_the_story_in_its_own_words(suite: str) -> None:
    parsed = events(recording(suite)["events"])
    web = next(e.container_id for e in parsed if e.name == "rec-web")
    told = story(parsed)
    # no oldName on a rename, no status after health_status, `remove` for destroy, no
    # stop or kill before die; the network events' actor is the container itself
    assert ("rename", "rec-renamed", None) in told
    assert ("health_status", "rec-web", None) in told
    assert {("remove", "rec-renamed", None), ("die", "rec-renamed", None)} <= told
    assert {("network_connect", None, None), ("network_disconnect", None, None)} <= told
    assert not {a for a, _, _ in told if a in ("destroy", "stop", "kill")}
    connects = [e for e in parsed if e.action == "network_connect"]
    assert [e.container_id for e in connects] == [web]
    assert parse_version(recording(suite)["version"]).podman


@pytest.mark.parametrize("suite", PODMAN)
async def test_which_of_podmans_events_make_the_agent_look_again(suite: str) -> None:
    triggers = Triggers()
    parsed = events(recording(suite)["events"])
    web = next(e.container_id for e in parsed if e.action == "start")
    triggers.seen([make_container("rec-web", cid=web)], Pending(full=True))
    taken = {e.action for e in parsed if triggers.on_event(e)}
    assert taken >= {"start", "die", "remove", "rename", "health_status", "network_connect"}
    assert not taken & {"create", "init", "cleanup", "exec", "exec_died"}


@pytest.mark.parametrize("suite", PODMAN)
def test_podman_lists_a_port_published_on_every_address_once_and_no_health(suite: str) -> None:
    rows = recording(suite)["containers"]
    container = parse_row(rows["published_healthy"])
    [binding] = container.published[8080]
    assert binding.host_ip == ""  # every address, IPv4 and IPv6, in one row
    assert container.health is None  # "Up …": the adapter asks the inspect (test_podman.py)
    spec = parse_labels(container, make_settings())
    assert isinstance(spec, ServiceSpec)
    endpoint = resolve_endpoint(spec, None, "10.0.0.5")
    assert (endpoint.address, endpoint.port) == ("10.0.0.5", binding.host_port)


@pytest.mark.parametrize("suite", SUITES + PODMAN)
def test_an_ipv6_only_binding_registers_that_address(suite: str) -> None:
    row = recording(suite)["containers"]["ipv6_only"]
    container = parse_row(row)
    labelled = dataclasses.replace(container, labels={"mcp.port": "8080"})
    spec = parse_labels(labelled, make_settings(name_pattern="^rec-"))
    assert isinstance(spec, ServiceSpec), spec
    endpoint = resolve_endpoint(spec, None, "10.0.0.5")
    assert endpoint.address == "::1"
    assert endpoint.port == row["Ports"][0]["PublicPort"]


@pytest.mark.parametrize("suite", SUITES + PODMAN)
def test_every_engine_lists_its_states_at_its_own_api_version(suite: str) -> None:
    recorded = recording(suite)
    assert recorded["client_api"] == recorded["api"]  # not an old client's view of it
    rows = recorded["containers"]
    assert parse_row(rows["published_healthy"]).running
    stopped = parse_row(rows["stopped"])
    assert not stopped.running and stopped.name == "rec-renamed"
    two = parse_row(rows["two_networks"])
    assert "rec-net" in two.networks
