"""Container labels -> ServiceSpec or LabelError: the values registered with the service.

Covers `mcp.transport`, `mcp.path`, `mcp.tags`, `mcp.meta.*` and the `mcp.check*` labels:
what passes, how tags and meta are normalised, and how hostile values (injection, control
characters, reserved keys, script checks, out-of-range durations) are refused.
"""

from __future__ import annotations

import pytest

from bridge.core.model import CheckKind, Transport
from bridge.labels.parse import BRIDGE_META_KEYS
from tests.builders import make_container, make_settings
from tests.label_cases import INJECTION, error, labelled, spec

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
