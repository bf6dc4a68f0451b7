"""Container labels -> ServiceSpec or LabelError: which containers, defaults, the rest.

Covers which containers are managed at all (name pattern, `mcp.enable`, prefix), the
defaults and a fully labelled spec, size limits, unknown labels and the order errors are
reported in, the `mcp.tools` switch, and a property test throwing hostile label sets at the
parser. Single-label rules live in test_label_endpoint.py and test_label_values.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.model import CheckKind, ExposeMode, LabelError, PortBinding, ServiceSpec, Transport
from bridge.labels.parse import BRIDGE_META_KEYS, KNOWN_LABELS, is_managed, parse_labels
from tests.builders import make_container, make_settings
from tests.label_cases import (
    DNS_LABEL,
    INJECTION,
    META_KEY,
    SETTINGS,
    TAG,
    TWO_NETWORKS,
    error,
    labelled,
    spec,
)

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
