"""Container labels -> ServiceSpec or LabelError: one test per contract rule, hostile input."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import Settings
from bridge.labels import BRIDGE_META_KEYS, KNOWN_LABELS, is_managed, parse_labels
from bridge.model import (
    CheckKind,
    Container,
    ExposeMode,
    LabelError,
    PortBinding,
    ServiceSpec,
    Transport,
)
from tests.builders import make_container, make_settings

DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
TAG = re.compile(r"[A-Za-z0-9_.:/=-]{1,128}")
META_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
INJECTION = 'x","Check":{"Args":["rm"]}'


SETTINGS = make_settings(port_range="11100-11999", reserved_ports="11111")


def spec(container: Container, s: Settings = SETTINGS) -> ServiceSpec:
    result = parse_labels(container, s)
    assert isinstance(result, ServiceSpec), result
    return result


def error(container: Container, s: Settings = SETTINGS) -> LabelError:
    result = parse_labels(container, s)
    assert isinstance(result, LabelError), result
    assert result.container == container.name
    return result


def labelled(**labels: str) -> Container:
    """A managed container with `mcp.<key>` labels; `__` in a key stands for `.`."""
    return make_container(labels={"mcp." + k.replace("__", "."): v for k, v in labels.items()})


# --- which containers ------------------------------------------------------------------


def test_name_pattern_decides_without_enable() -> None:
    assert is_managed(make_container("mcp-a"), SETTINGS)
    assert not is_managed(make_container("web"), SETTINGS)
    assert parse_labels(make_container("web"), SETTINGS) is None
    assert not is_managed(make_container("x-mcp-a"), SETTINGS)  # pattern is anchored


def test_enable_true_manages_any_name() -> None:
    c = make_container("web", labels={"mcp.enable": "true"})
    assert is_managed(c, SETTINGS)
    assert spec(c).name == "web"


def test_enable_false_always_excludes_even_with_bad_labels() -> None:
    c = make_container("mcp-a", labels={"mcp.enable": "false", "mcp.port": "nope", "mcp.x": "y"})
    assert not is_managed(c, SETTINGS)
    assert parse_labels(c, SETTINGS) is None


@pytest.mark.parametrize("value", ["yes", "True", "FALSE", "1", "", " true", "true\n", "x" * 5000])
def test_enable_other_values_are_an_error(value: str) -> None:
    c = make_container("web", labels={"mcp.enable": value, "mcp.port": "bad"})
    assert is_managed(c, SETTINGS)  # it asked; the error must show in status
    e = error(c)
    assert e.label == "mcp.enable" and e.value == value
    assert "true" in e.reason and "false" in e.reason


def test_custom_prefix_and_pattern() -> None:
    s = make_settings(label_prefix="io.mcp.", name_pattern="^srv-")
    c = make_container("srv-a", labels={"io.mcp.port": "9000", "mcp.port": "garbage"})
    assert spec(c, s).port == 9000  # `mcp.` is outside this prefix: ignored
    assert parse_labels(make_container("mcp-a"), s) is None
    e = error(make_container("srv-a", labels={"io.mcp.prot": "1"}), s)
    assert e.label == "io.mcp.prot"


def test_labels_outside_the_prefix_are_ignored() -> None:
    c = make_container(labels={"com.docker.compose.project": "x", "MCP.port": "1", "mcpport": "?"})
    assert spec(c).port == 8080


# --- defaults ----------------------------------------------------------------------------


def test_defaults() -> None:
    s = spec(make_container("mcp-Search"))
    assert s.name == "search"
    assert s.port == 8080
    assert s.expose is ExposeMode.PROXY
    assert s.host_port is None
    assert (s.network, s.address) == ("bridge", "172.17.0.2")
    assert s.transport is Transport.STREAMABLE_HTTP
    assert s.path == "/mcp"
    assert s.tags == () and s.meta == ()
    assert s.check.kind is CheckKind.MCP
    assert s.check.path == "/health"
    assert (s.check.interval, s.check.timeout, s.check.deregister_after) == (10.0, 2.0, 600.0)
    assert s.container.name == "mcp-Search"


def test_everything_set() -> None:
    c = make_container(
        "mcp-a",
        labels={
            "mcp.name": "files",
            "mcp.port": "3000",
            "mcp.host_port": "11150",
            "mcp.expose": "proxy",
            "mcp.network": "back",
            "mcp.transport": "sse",
            "mcp.path": "/sse",
            "mcp.tags": "a, b,,b , team=x",
            "mcp.meta.owner": "ops",
            "mcp.meta.Zone": "eu-1",
            "mcp.check": "http",
            "mcp.check.path": "/healthz",
            "mcp.check.interval": "30s",
            "mcp.check.timeout": "1500ms",
            "mcp.check.deregister_after": "1h",
        },
        exposed={3000, 9090},
        networks={"bridge": "172.17.0.2", "back": "10.0.0.5"},
    )
    s = spec(c)
    assert (s.name, s.port, s.host_port, s.expose) == ("files", 3000, 11150, ExposeMode.PROXY)
    assert (s.network, s.address) == ("back", "10.0.0.5")
    assert (s.transport, s.path) == (Transport.SSE, "/sse")
    assert s.tags == ("a", "b", "team=x")
    assert s.meta == (("Zone", "eu-1"), ("owner", "ops"))
    assert s.check.kind is CheckKind.HTTP and s.check.path == "/healthz"
    assert (s.check.interval, s.check.timeout, s.check.deregister_after) == (30.0, 1.5, 3600.0)


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

TWO_NETWORKS = {"front": "10.0.1.2", "back": "10.0.2.2"}


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


# --- transport and path -------------------------------------------------------------------


def test_transport() -> None:
    assert spec(labelled(transport="sse")).transport is Transport.SSE
    assert spec(labelled(transport="streamable-http")).transport is Transport.STREAMABLE_HTTP
    for bad in ["", "http", "SSE", "stdio", "sse\n"]:
        e = error(labelled(transport=bad))
        assert (e.label, e.value) == ("mcp.transport", bad)


@pytest.mark.parametrize("value", ["/", "/mcp", "/a/b-c_d.e~f", "/x?y=1", "/" + "a" * 255])
def test_path_valid(value: str) -> None:
    assert spec(labelled(path=value)).path == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "mcp",
        "/a b",
        "/a\tb",
        "/a\nHost: evil",
        "/a\r\n",
        "/a\x00",
        "/a\x7f",
        "/../etc/passwd",
        "/a/..",
        "/é",
        "/" + "a" * 256,
        "http://x/mcp",
    ],
)
def test_path_invalid(value: str) -> None:
    e = error(labelled(path=value))
    assert (e.label, e.value) == ("mcp.path", value)


# --- tags ----------------------------------------------------------------------------------


def test_tags_split_strip_dedupe() -> None:
    assert spec(labelled(tags=" a ,b,, a,c ,")).tags == ("a", "b", "c")
    assert spec(labelled(tags="")).tags == ()
    assert spec(labelled(tags=" , ,")).tags == ()
    assert spec(labelled(tags="k=v,ns:x,path/y,x.y,_-")).tags == (
        "k=v",
        "ns:x",
        "path/y",
        "x.y",
        "_-",
    )
    assert spec(labelled(tags="a,\n b\t")).tags == ("a", "b")


def test_tags_mcp_is_not_repeated() -> None:
    assert spec(labelled(tags="mcp,a,mcp")).tags == ("a",)


@pytest.mark.parametrize(
    "value",
    [
        "a b",
        'a"b',
        "a'b",
        INJECTION,
        "ok,café",
        "a\x00b",
        "a\nb",
        "a;rm -rf /",
        "x" * 129,
        "a,\x1fb",
        "a\u2028b",
    ],
)
def test_tags_invalid(value: str) -> None:
    e = error(labelled(tags=value))
    assert (e.label, e.value) == ("mcp.tags", value)
    assert "tag" in e.reason


def test_tags_count() -> None:
    assert len(spec(labelled(tags=",".join(f"t{i}" for i in range(32)))).tags) == 32
    # Duplicates and "mcp" do not count against the limit.
    assert len(spec(labelled(tags=",".join(["mcp", *(f"t{i}" for i in range(32)), "t0"]))).tags)
    e = error(labelled(tags=",".join(f"t{i}" for i in range(33))))
    assert e.label == "mcp.tags" and "at most 32" in e.reason


# --- meta ----------------------------------------------------------------------------------


def test_meta_sorted_by_key() -> None:
    s = spec(labelled(meta__b="2", meta__a="1", meta__C_x="é ünïcode ok", meta__e=""))
    assert s.meta == (("C_x", "é ünïcode ok"), ("a", "1"), ("b", "2"), ("e", ""))


@pytest.mark.parametrize(
    "key",
    ["", "a.b", "a b", "a:b", "é", "x" * 129, 'x"', "a\nb", "a\x00", 'x","Check":{"Args":["rm"]}'],
)
def test_meta_key_invalid(key: str) -> None:
    e = error(make_container(labels={"mcp.meta." + key: "v"}))
    assert (e.label, e.value) == ("mcp.meta." + key, "v")


@pytest.mark.parametrize("key", ["consul-x", "consul-", "Consul-version"])
def test_meta_key_consul_reserved(key: str) -> None:
    e = error(make_container(labels={"mcp.meta." + key: "v"}))
    assert e.label == "mcp.meta." + key and "consul-" in e.reason


@pytest.mark.parametrize("key", sorted(BRIDGE_META_KEYS))
def test_meta_key_cannot_forge_bridge_meta(key: str) -> None:
    e = error(make_container(labels={"mcp.meta." + key: "other-bridge"}))
    assert e.label == "mcp.meta." + key and "bridge" in e.reason


def test_meta_value_length() -> None:
    assert spec(labelled(meta__k="v" * 512)).meta == (("k", "v" * 512),)
    e = error(labelled(meta__k="v" * 513))
    assert e.label == "mcp.meta.k" and "512" in e.reason


@pytest.mark.parametrize(
    "value", ["a\nb", "a\x00", "\r", "\x1b[31m", "a\x7f", "\x85", "\u2028", "\ud800"]
)
def test_meta_value_control_characters(value: str) -> None:
    e = error(labelled(meta__k=value))
    assert (e.label, e.value) == ("mcp.meta.k", value)


def test_meta_value_injection_is_kept_verbatim() -> None:
    # Quotes are fine in a meta value: it travels as a JSON string, never as JSON text.
    assert spec(labelled(meta__k=INJECTION)).meta == (("k", INJECTION),)


def test_meta_count() -> None:
    ok = {f"mcp.meta.k{i:02d}": "v" for i in range(48)}
    assert len(spec(make_container(labels=ok)).meta) == 48
    too_many = {f"mcp.meta.k{i:02d}": "v" for i in range(49)}
    e = error(make_container(labels=too_many))
    assert e.label == "mcp.meta.k48" and "at most 48" in e.reason


# --- check ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mcp", "http", "tcp", "docker", "none"])
def test_check_kinds(kind: str) -> None:
    assert spec(labelled(check=kind)).check.kind is CheckKind(kind)


@pytest.mark.parametrize("value", ["script", "Script", "args", "shell"])
def test_check_script_refused(value: str) -> None:
    e = error(labelled(check=value))
    assert (e.label, e.value) == ("mcp.check", value)
    assert "may not make Consul run commands" in e.reason


@pytest.mark.parametrize("value", ["grpc", "", "HTTP", "ttl", INJECTION])
def test_check_other_refused(value: str) -> None:
    e = error(labelled(check=value))
    assert (e.label, e.value) == ("mcp.check", value)
    assert "mcp, http, tcp, docker, none" in e.reason


def test_check_path() -> None:
    assert spec(labelled(check="http", check__path="/ready")).check.path == "/ready"
    for bad in ["ready", "/a b", "/..", "/a\n", ""]:
        e = error(labelled(check="http", check__path=bad))
        assert (e.label, e.value) == ("mcp.check.path", bad)


@pytest.mark.parametrize(("value", "seconds"), [("1s", 1.0), ("1m30s", 90.0), ("24h", 86400.0)])
def test_check_interval_valid(value: str, seconds: float) -> None:
    assert spec(labelled(check__interval=value)).check.interval == seconds


@pytest.mark.parametrize("value", ["", "10", "999ms", "0", "24h1s", "-1s", "1d", "ten", "1 s"])
def test_check_interval_invalid(value: str) -> None:
    e = error(labelled(check__interval=value))
    assert (e.label, e.value) == ("mcp.check.interval", value)


def test_check_timeout() -> None:
    assert spec(labelled(check__timeout="5s")).check.timeout == 5.0
    assert spec(labelled(check__interval="5s", check__timeout="5s")).check.timeout == 5.0
    # A short interval brings the default timeout down with it.
    assert spec(labelled(check__interval="1s")).check.timeout == 1.0
    for bad in ["0", "0s", "11s", "x", ""]:
        e = error(labelled(check__timeout=bad))
        assert (e.label, e.value) == ("mcp.check.timeout", bad)
    e = error(labelled(check__interval="3s", check__timeout="4s"))
    assert e.label == "mcp.check.timeout" and "interval" in e.reason


def test_check_deregister_after() -> None:
    assert spec(labelled(check__deregister_after="1m")).check.deregister_after == 60.0
    assert spec(make_container(), make_settings(deregister_after=7200)).check.deregister_after == (
        7200.0
    )
    for bad in ["59s", "0", "30s", "soon", ""]:
        e = error(labelled(check__deregister_after=bad))
        assert (e.label, e.value) == ("mcp.check.deregister_after", bad)


# --- size, unknown labels, order ----------------------------------------------------------


def test_value_size_limit_up_front() -> None:
    e = error(labelled(meta__k="v" * 4097, port="bad"))
    assert e.label == "mcp.meta.k" and e.reason == "value is 4097 characters; at most 4096"
    huge = error(labelled(tags="a," * 500_000))
    assert huge.label == "mcp.tags" and "1000000 characters" in huge.reason
    assert isinstance(parse_labels(labelled(tags="a" + ",a" * 2047), SETTINGS), ServiceSpec)


@pytest.mark.parametrize("label", ["mcp.prot", "mcp.check.script", "mcp.", "mcp.Name", "mcp.meta"])
def test_unknown_labels_are_errors(label: str) -> None:
    e = error(make_container(labels={label: "8080"}))
    assert (e.label, e.value) == (label, "8080")
    assert "unknown label" in e.reason and "mcp.port" in e.reason


def test_unknown_label_suggests_the_known_one() -> None:
    assert "did you mean mcp.port?" in error(labelled(prot="80")).reason


def test_unknown_label_hostile_name_does_not_hang() -> None:
    key = "mcp." + "é\n\x00" * 20_000
    e = error(make_container(labels={key: "x"}))
    assert e.label == key


def test_unknown_label_reported_before_the_error_it_causes() -> None:
    # `mcp.prot` ignored would have produced a misleading "several exposed ports" error.
    e = error(make_container(labels={"mcp.prot": "80"}, exposed={80, 443}))
    assert e.label == "mcp.prot"


def test_first_error_in_contract_order() -> None:
    every_label_bad = {
        "name": "A",
        "port": "x",
        "host_port": "x",
        "expose": "x",
        "network": "x",
        "transport": "x",
        "path": "x",
        "tags": "a b",
        "meta.consul-x": "v",
        "check": "x",
        "check.path": "x",
        "check.interval": "x",
        "check.timeout": "x",
        "check.deregister_after": "x",
        "tools": "x",
        "tier": "x",
        "allow": "x",
        "max_connections": "x",
    }
    order = [*KNOWN_LABELS[1:9], "meta.consul-x", *KNOWN_LABELS[9:]]
    assert list(every_label_bad) == order
    labels = {"mcp." + k: v for k, v in every_label_bad.items()}
    for suffix in order:
        e = error(make_container(labels=labels))
        assert e.label == "mcp." + suffix
        del labels["mcp." + suffix]
    assert isinstance(parse_labels(make_container(labels=labels), SETTINGS), ServiceSpec)


def test_error_message_is_one_line_and_bounded() -> None:
    e = error(labelled(name="a\n" * 2000))
    text = str(e)
    assert "\n" not in text and len(text) < 400


def test_parse_is_deterministic() -> None:
    c = make_container(labels={"mcp.meta.b": "\x00", "mcp.meta.a": "\x00", "mcp.zzz": "1"})
    assert parse_labels(c, SETTINGS) == parse_labels(c, SETTINGS)
    assert error(c).label == "mcp.zzz"  # unknown labels come before any value rule
    c = make_container(labels={"mcp.meta.b": "\x00", "mcp.meta.a": "\x00", "mcp.tags": "a b"})
    assert error(c).label == "mcp.tags"
    c = make_container(labels={"mcp.meta.b": "\x00", "mcp.meta.a": "\x00", "mcp.check": "x"})
    assert error(c).label == "mcp.meta.a"


# --- property ------------------------------------------------------------------------------

_HOSTILE = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="abcAB-_,/.:=0123456789smh \n\x00\u2028é", max_size=20),
    st.sampled_from(
        [
            *[INJECTION, "script", "grpc", "0", "+80", "080", "..", "/../x", "a\nb"],
            *["11111", "12000", "back", "host", "500ms", "25h", "0s", "30s", "59s"],
        ]
    ),
)
_PATH_OK = st.from_regex(r"/[\x21-\x7e]{0,20}", fullmatch=True)
_TAG_OK = st.from_regex(r"[A-Za-z0-9_.:/=-]{1,10}", fullmatch=True)
# Per known label: a value that should pass on its own, else anything at all.
_VALID: dict[str, st.SearchStrategy[str]] = {
    "enable": st.sampled_from(["true", "false"]),
    "name": st.from_regex(DNS_LABEL, fullmatch=True),
    "port": st.integers(1, 65535).map(str),
    "host_port": st.sampled_from(["11100", "11500", "11999"]),
    "expose": st.sampled_from([m.value for m in ExposeMode]),
    "network": st.sampled_from(["bridge", "bridge", "front"]),
    "transport": st.sampled_from([t.value for t in Transport]),
    "path": _PATH_OK,
    "tags": st.lists(st.one_of(_TAG_OK, st.just("mcp"), st.just(" ")), max_size=40).map(",".join),
    "check": st.sampled_from([k.value for k in CheckKind]),
    "check.path": _PATH_OK,
    "check.interval": st.sampled_from(["1s", "10s", "1m30s", "24h"]),
    "check.timeout": st.sampled_from(["1s", "100ms", "1.5s"]),
    "check.deregister_after": st.sampled_from(["1m", "10m", "90s"]),
}


@st.composite
def _label_sets(draw: st.DrawFn) -> dict[str, str]:
    labels: dict[str, str] = {}
    for suffix, valid in _VALID.items():
        # Mostly absent, often valid, sometimes hostile: enough specs get through for the
        # spec-side assertions to mean something.
        choice = draw(st.sampled_from(["absent"] * 5 + ["valid"] * 4 + ["hostile"]))
        if suffix == "enable" and choice != "hostile":
            choice = draw(st.sampled_from(["absent"] * 5 + ["valid"]))
        if choice == "valid":
            labels["mcp." + suffix] = draw(valid)
        elif choice == "hostile":
            labels["mcp." + suffix] = draw(_HOSTILE)
    meta = draw(
        st.dictionaries(
            st.one_of(
                st.from_regex(META_KEY, fullmatch=True), st.sampled_from(["image", "consul-x"])
            ),
            st.one_of(
                st.text(alphabet="abc =é", max_size=20),
                st.text(max_size=20),
                st.text(alphabet="abc =", min_size=500, max_size=520),
            ),
            max_size=4,
        )
    )
    labels.update({"mcp.meta." + k: v for k, v in meta.items()})
    if draw(st.integers(0, 9)) == 0:  # anything under the prefix, known or not
        extra = draw(st.dictionaries(st.text(max_size=15), _HOSTILE, max_size=3))
        labels.update({"mcp." + k: v for k, v in extra.items()})
    return labels


def _well_formed(path: str) -> bool:
    return (
        len(path) <= 256
        and path.startswith("/")
        and ".." not in path
        and all("\x21" <= ch <= "\x7e" for ch in path)
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    all_labels=_label_sets(),
    name=st.sampled_from(["mcp-a", "mcp-files", "mcp-Files", "mcp-b", "mcp-A_b", "web", "mcp-"]),
    exposed=st.one_of(
        st.integers(1, 65535).map(lambda p: frozenset({p})),
        st.frozensets(st.integers(1, 65535), max_size=3),
    ),
    publish=st.booleans(),
    networks=st.sampled_from(
        [{"bridge": "172.17.0.2"}, {"bridge": "172.17.0.2"}, {}, {"host": ""}, TWO_NETWORKS]
    ),
)
def test_property_never_raises_and_specs_obey_the_rules(
    all_labels: dict[str, str],
    name: str,
    exposed: frozenset[int],
    publish: bool,
    networks: dict[str, str],
) -> None:
    published = {p: (PortBinding("0.0.0.0", 18000),) for p in exposed} if publish else {}
    c = make_container(name, all_labels, exposed=exposed, published=published, networks=networks)

    result = parse_labels(c, SETTINGS)

    assert result is None or isinstance(result, ServiceSpec | LabelError)
    if result is None:
        assert not is_managed(c, SETTINGS)
        return
    assert is_managed(c, SETTINGS)
    if isinstance(result, LabelError):
        assert result.container == name
        assert result.label.startswith("mcp.") and result.reason
        assert result.label in all_labels or result.value == "" or result.label == "mcp.name"
        return
    s = result
    assert s.container is c
    assert DNS_LABEL.fullmatch(s.name)
    assert 1 <= s.port <= 65535
    assert s.host_port is None or (s.host_port in SETTINGS.port_range and s.host_port != 11111)
    assert s.expose is not ExposeMode.AUTO
    if s.expose is ExposeMode.PUBLISHED:
        assert c.published.get(s.port)
    else:
        assert s.host_port is None or s.expose is ExposeMode.PROXY
        assert s.network in c.networks and s.address
    assert isinstance(s.transport, Transport)
    assert _well_formed(s.path) and _well_formed(s.check.path)
    assert len(s.tags) <= 32 and len(set(s.tags)) == len(s.tags) and "mcp" not in s.tags
    assert all(TAG.fullmatch(t) for t in s.tags)
    keys = [k for k, _ in s.meta]
    assert keys == sorted(keys) and len(keys) <= 48
    for key, value in s.meta:
        assert META_KEY.fullmatch(key) and not key.lower().startswith("consul-")
        assert key not in BRIDGE_META_KEYS
        assert len(value) <= 512 and not any(
            ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value
        )
    assert s.check.kind in set(CheckKind) and s.check.kind.value != "script"
    assert 1 <= s.check.interval <= 86400 and 0 < s.check.timeout <= s.check.interval
    assert s.check.deregister_after >= 60
    for key in all_labels:
        assert key.removeprefix("mcp.") in KNOWN_LABELS or key.startswith("mcp.meta.")


def test_tools_label_turns_the_inventory_off_and_nothing_else_goes() -> None:
    assert spec(make_container()).tools is True
    assert spec(labelled(tools="true")).tools is True
    assert spec(labelled(tools="false")).tools is False
    e = error(labelled(tools="no"))
    assert (e.label, e.reason) == ("mcp.tools", "must be 'true' or 'false'")
