"""Container labels -> ServiceSpec or LabelError: the labels that decide the endpoint.

Covers `mcp.name`, `mcp.port`, `mcp.host_port`, `mcp.expose` and `mcp.network`: which
values are accepted, the defaults derived from the container, and the errors (with their
reasons) for each hostile or inconsistent value; one test per contract rule.
"""

from __future__ import annotations

import pytest

from bridge.core.model import ExposeMode, PortBinding
from tests.builders import make_container, make_settings
from tests.label_cases import INJECTION, TWO_NETWORKS, error, labelled, spec

# --- name ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "a-b", "0", "x" * 63, "mcp-files", "a1-2b"])
def test_name_valid(value: str) -> None:
    assert spec(labelled(name=value)).name == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "-a",
        "a-",
        "A",
        "a_b",
        "a.b",
        "x" * 64,
        "café",
        "\uff41",  # fullwidth a
        "a\n",
        "a\x00",
        " a",
        INJECTION,
        "a/../b",
    ],
)
def test_name_invalid(value: str) -> None:
    e = error(labelled(name=value))
    assert (e.label, e.value) == ("mcp.name", value)
    assert "DNS label" in e.reason


@pytest.mark.parametrize(
    ("container_name", "derived"),
    [
        ("mcp-files", "files"),
        ("mcp-Files-2", "files-2"),
        ("Tools", "tools"),
        ("mcp-mcp-a", "mcp-a"),
    ],
)
def test_name_default_from_container(container_name: str, derived: str) -> None:
    c = make_container(container_name, labels={"mcp.enable": "true"})
    assert spec(c).name == derived


@pytest.mark.parametrize(
    ("container_name", "derived"),
    [
        ("mcp-my_server", "my_server"),
        ("mcp-a.b", "a.b"),
        ("mcp-", ""),
        ("mcp-" + "x" * 64, "x" * 64),
    ],
)
def test_name_default_invalid_asks_for_the_label(container_name: str, derived: str) -> None:
    e = error(make_container(container_name))
    assert (e.label, e.value) == ("mcp.name", derived)
    assert "container name" in e.reason and "set mcp.name" in e.reason


def test_name_label_overrides_an_unusable_container_name() -> None:
    assert spec(make_container("mcp-my_server", labels={"mcp.name": "my-server"})).name == (
        "my-server"
    )


# --- port ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "port"), [("1", 1), ("80", 80), ("65535", 65535)])
def test_port_valid(value: str, port: int) -> None:
    assert spec(labelled(port=value)).port == port


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0",
        "65536",
        "99999",
        "080",
        "+80",
        "-80",
        " 80",
        "80 ",
        "80\n",
        "8e3",
        "0x50",
        "٨٠",
        "\uff18\uff10",  # fullwidth digits
    ],
)
def test_port_invalid(value: str) -> None:
    e = error(labelled(port=value))
    assert (e.label, e.value) == ("mcp.port", value)
    assert "1-65535" in e.reason


def test_port_need_not_be_exposed() -> None:
    assert spec(make_container(labels={"mcp.port": "9000"}, exposed=set())).port == 9000


def test_port_default_none_exposed() -> None:
    e = error(make_container(exposed=set()))
    assert (e.label, e.value) == ("mcp.port", "")
    assert e.reason == "no exposed TCP port: set mcp.port"


def test_port_default_several_exposed() -> None:
    e = error(make_container(exposed={443, 80}))
    assert (e.label, e.value) == ("mcp.port", "")
    assert e.reason == "several exposed TCP ports (80, 443): set mcp.port"


def test_port_default_many_exposed_keeps_the_reason_short() -> None:
    e = error(make_container(exposed=set(range(8000, 9000))))
    assert len(e.reason) < 200


# --- host_port -----------------------------------------------------------------------------


def test_host_port_valid() -> None:
    assert spec(labelled(host_port="11100")).host_port == 11100
    assert spec(labelled(host_port="11999")).host_port == 11999


@pytest.mark.parametrize("value", ["", "011150", "+11150", "11150 ", "abc", "0", "70000"])
def test_host_port_syntax(value: str) -> None:
    e = error(labelled(host_port=value))
    assert (e.label, e.value) == ("mcp.host_port", value)


@pytest.mark.parametrize("value", ["11099", "12000", "80", "65535"])
def test_host_port_outside_pool(value: str) -> None:
    e = error(labelled(host_port=value))
    assert e.label == "mcp.host_port" and "11100-11999" in e.reason


def test_host_port_reserved() -> None:
    e = error(labelled(host_port="11111"))
    assert e.label == "mcp.host_port" and "reserved" in e.reason


@pytest.mark.parametrize("expose", ["internal", "published"])
def test_host_port_only_with_proxy(expose: str) -> None:
    c = make_container(
        labels={"mcp.host_port": "11150", "mcp.expose": expose},
        published={8080: (PortBinding("0.0.0.0", 8080),)},
    )
    e = error(c)
    assert e.label == "mcp.host_port" and "expose=proxy" in e.reason


def test_host_port_with_auto_resolving_to_published_is_an_error() -> None:
    c = make_container(
        labels={"mcp.host_port": "11150"}, published={8080: (PortBinding("0.0.0.0", 18080),)}
    )
    assert error(c).label == "mcp.host_port"


# --- expose --------------------------------------------------------------------------------


def test_expose_auto_resolves() -> None:
    assert spec(make_container()).expose is ExposeMode.PROXY
    published = make_container(published={8080: (PortBinding("0.0.0.0", 18080),)})
    assert spec(published).expose is ExposeMode.PUBLISHED
    other_port = make_container(published={9090: (PortBinding("0.0.0.0", 19090),)})
    assert spec(other_port).expose is ExposeMode.PROXY
    assert spec(labelled(expose="auto")).expose is ExposeMode.PROXY


def test_expose_explicit_modes() -> None:
    assert spec(labelled(expose="proxy")).expose is ExposeMode.PROXY
    internal = spec(labelled(expose="internal"))
    assert (internal.expose, internal.address) == (ExposeMode.INTERNAL, "172.17.0.2")
    c = make_container(
        labels={"mcp.expose": "published"}, published={8080: (PortBinding("", 18080),)}
    )
    assert spec(c).expose is ExposeMode.PUBLISHED


def test_expose_published_requires_a_published_port() -> None:
    e = error(labelled(expose="published"))
    assert (e.label, e.value) == ("mcp.expose", "published")
    assert e.reason == "container does not publish port 8080"


def test_expose_default_from_settings() -> None:
    assert spec(make_container(), make_settings(expose="internal")).expose is ExposeMode.INTERNAL
    e = error(make_container(), make_settings(expose="published"))
    assert (e.label, e.value) == ("mcp.expose", "")
    assert "BRIDGE_EXPOSE" in e.reason


@pytest.mark.parametrize("value", ["", "Proxy", "host", "public", "proxy ", INJECTION])
def test_expose_invalid(value: str) -> None:
    e = error(labelled(expose=value))
    assert (e.label, e.value) == ("mcp.expose", value)
    assert "auto, proxy, published, internal" in e.reason


# --- network -------------------------------------------------------------------------------


def test_network_only_one() -> None:
    c = make_container(networks={"app_default": "172.20.0.3"})
    assert (spec(c).network, spec(c).address) == ("app_default", "172.20.0.3")


def test_network_several_needs_a_choice() -> None:
    e = error(make_container(networks=TWO_NETWORKS))
    assert (e.label, e.value) == ("mcp.network", "")
    assert e.reason == "container is on several networks (back, front): set mcp.network"


def test_network_label_chooses() -> None:
    c = make_container(labels={"mcp.network": "back"}, networks=TWO_NETWORKS)
    assert (spec(c).network, spec(c).address) == ("back", "10.0.2.2")


def test_network_label_unknown_lists_the_choices() -> None:
    c = make_container(labels={"mcp.network": "bakc"}, networks=TWO_NETWORKS)
    e = error(c)
    assert (e.label, e.value) == ("mcp.network", "bakc")
    assert "back, front" in e.reason


def test_network_from_settings() -> None:
    s = make_settings(network="back")
    assert spec(make_container(networks=TWO_NETWORKS), s).network == "back"
    e = error(make_container(networks={"front": "10.0.1.2"}), s)
    assert e.label == "mcp.network" and "BRIDGE_NETWORK" in e.reason and "front" in e.reason


def test_network_label_beats_settings() -> None:
    c = make_container(labels={"mcp.network": "front"}, networks=TWO_NETWORKS)
    assert spec(c, make_settings(network="back")).network == "front"


@pytest.mark.parametrize("expose", ["proxy", "internal"])
@pytest.mark.parametrize("networks", [{"host": ""}, {"none": ""}])
def test_network_without_address(expose: str, networks: dict[str, str]) -> None:
    e = error(make_container(labels={"mcp.expose": expose}, networks=networks))
    assert e.label == "mcp.network" and "no IP address" in e.reason


def test_network_none_at_all() -> None:
    e = error(make_container(networks={}))
    assert e.label == "mcp.network" and "no network" in e.reason


def test_network_not_needed_for_published() -> None:
    binding = {8080: (PortBinding("0.0.0.0", 18080),)}
    nowhere = spec(make_container(published=binding, networks={}))
    assert (nowhere.expose, nowhere.network, nowhere.address) == (ExposeMode.PUBLISHED, None, None)
    host = spec(make_container(published=binding, networks={"host": ""}))
    assert (host.network, host.address) == ("host", None)
    several = spec(make_container(published=binding, networks=TWO_NETWORKS))
    assert (several.network, several.address) == (None, None)
    # A named network is still checked: a typo must not pass silently.
    typo = make_container(labels={"mcp.network": "nope"}, published=binding)
    assert error(typo).label == "mcp.network"
