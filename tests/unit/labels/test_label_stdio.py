"""Which containers are stdio servers, and the label errors of those that cannot be served.

`mcp.transport=stdio`, or no transport label with open stdin and no port at all; the
stdin settings come from the container's inspect (model.Stdin), and a stdio server is
always proxy, on a pool port, with no port, network or expose of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.core.model import CheckKind, Container, ExposeMode, Stdin, Transport
from bridge.core.registration import Endpoint, build_registration
from bridge.labels.parse import needs_stdin
from tests.builders import make_container, make_settings
from tests.label_cases import SETTINGS, error, spec

PIPE = Stdin(open=True, tty=False, once=False)


def stdio(labels: dict[str, str] | None = None, **kw: Any) -> Container:
    kw.setdefault("exposed", ())
    kw.setdefault("stdin", PIPE)
    return make_container(labels=labels, **kw)


def test_open_stdin_and_no_port_is_stdio_without_a_label() -> None:
    s = spec(stdio())
    assert s.transport is Transport.STDIO
    assert s.expose is ExposeMode.PROXY and s.port == 0
    assert s.network is None and s.address is None
    assert s.path == "/mcp" and s.check.kind is CheckKind.MCP


@pytest.mark.parametrize(
    "kw",
    [
        {"exposed": (8080,)},  # an exposed port: an HTTP server that also keeps stdin open
        {"labels": {"mcp.port": "8080"}},
        {"labels": {"mcp.transport": "streamable-http", "mcp.port": "8080"}},
    ],
)
def test_a_port_or_another_transport_keeps_it_http(kw: dict[str, Any]) -> None:
    assert spec(stdio(**kw)).transport is not Transport.STDIO


def test_open_stdin_on_the_hosts_network_is_not_taken_as_stdio() -> None:
    # There the listing shows no ports even for an HTTP server.
    host = Stdin(open=True, tty=False, once=False, host_network=True)
    assert error(stdio(stdin=host)).label == "mcp.port"
    assert spec(stdio({"mcp.transport": "stdio"}, stdin=host)).transport is Transport.STDIO


def test_the_label_makes_stdio_even_with_an_exposed_port() -> None:
    s = spec(stdio({"mcp.transport": "stdio"}, exposed=(8080,)))
    assert s.transport is Transport.STDIO and s.port == 0


@pytest.mark.parametrize("value", ["proxy", "auto"])
def test_expose_proxy_is_what_a_stdio_server_is_anyway(value: str) -> None:
    assert spec(stdio({"mcp.expose": value})).expose is ExposeMode.PROXY


def test_stdio_ignores_bridge_expose() -> None:
    settings = make_settings(port_range="11100-11999", expose="internal")
    assert spec(stdio(), settings).expose is ExposeMode.PROXY


@pytest.mark.parametrize(
    ("stdin", "words"),
    [
        (Stdin(open=False, tty=False, once=False), "docker run -d -i"),
        (Stdin(open=True, tty=True, once=False), "TTY"),
        (Stdin(open=True, tty=False, once=True), "StdinOnce"),
    ],
)
def test_a_stdio_container_that_cannot_be_served_says_what_to_add(stdin: Stdin, words: str) -> None:
    e = error(stdio({"mcp.transport": "stdio"}, stdin=stdin))
    assert e.label == "mcp.transport" and e.value == "stdio"
    assert words in e.reason


def test_closed_stdin_without_a_label_is_the_missing_port_with_a_hint() -> None:
    e = error(stdio(stdin=Stdin(open=False, tty=False, once=False)))
    assert e.label == "mcp.port"
    assert e.reason == "no exposed TCP port: set mcp.port (a stdio server: start it with -i)"


def test_a_tty_without_a_label_is_taken_as_stdio_and_refused_for_the_tty() -> None:
    e = error(stdio(stdin=Stdin(open=True, tty=True, once=False)))
    assert e.label == "mcp.transport" and "TTY" in e.reason


@pytest.mark.parametrize(
    ("label", "value"),
    [("port", "8080"), ("expose", "published"), ("expose", "internal"), ("network", "bridge")],
)
def test_labels_about_the_containers_own_port_mean_nothing_for_stdio(
    label: str, value: str
) -> None:
    e = error(stdio({"mcp.transport": "stdio", f"mcp.{label}": value}))
    assert e.label == f"mcp.{label}"
    assert "means nothing for a stdio server" in e.reason


@pytest.mark.parametrize("kind", ["http", "tcp"])
def test_native_checks_have_nothing_to_check_on_stdio(kind: str) -> None:
    e = error(stdio({"mcp.check": kind}))
    assert e.label == "mcp.check" and "no port of its own" in e.reason


@pytest.mark.parametrize("kind", ["mcp", "docker", "none"])
def test_the_checks_a_stdio_server_can_have(kind: str) -> None:
    assert spec(stdio({"mcp.check": kind})).check.kind is CheckKind(kind)


def test_proxy_labels_apply_to_stdio() -> None:
    s = spec(
        stdio(
            {
                "mcp.host_port": "11200",
                "mcp.allow": "10.0.0.0/8",
                "mcp.max_connections": "5",
                "mcp.path": "/rpc",
            }
        )
    )
    assert s.host_port == 11200 and s.path == "/rpc"
    assert s.access.allow == ("10.0.0.0/8",) and s.access.max_connections == 5


def test_unread_stdin_settings_are_not_judged_as_closed() -> None:
    e = error(stdio({"mcp.transport": "stdio"}, stdin=None))
    assert "could not be read yet" in e.reason


@pytest.mark.parametrize(
    ("kw", "needed"),
    [
        ({}, True),  # no port: maybe stdio
        ({"labels": {"mcp.transport": "stdio"}, "exposed": (8080,)}, True),
        ({"exposed": (8080,)}, False),  # an exposed port and no label: HTTP
        ({"labels": {"mcp.port": "8080"}}, False),
        ({"labels": {"mcp.transport": "sse"}}, False),
        ({"state": "exited"}, False),  # not judged before it runs
        ({"name": "web", "labels": {}}, False),  # not managed
    ],
)
def test_which_containers_need_an_inspect(kw: dict[str, Any], needed: bool) -> None:
    container = stdio(**{**kw, "stdin": None})
    assert needs_stdin(container, SETTINGS) is needed


def test_the_registration_says_what_clients_and_the_container_speak() -> None:
    reg = build_registration(spec(stdio()), Endpoint("10.0.0.5", 11200, 11200), "n1")
    assert reg.port == 11200 and reg.address == "10.0.0.5"
    assert reg.meta["transport"] == "streamable-http"
    assert reg.meta["container_transport"] == "stdio"
    assert reg.meta["expose"] == "proxy" and reg.meta["host_port"] == "11200"
    assert "container_port" not in reg.meta


def test_container_transport_cannot_be_forged_by_a_label() -> None:
    e = error(stdio({"mcp.meta.container_transport": "http"}))
    assert "written by the bridge itself" in e.reason


def test_a_served_endpoint_behind_tls_says_https_and_a_label_cannot_forge_it() -> None:
    tls = make_settings(serve_tls_cert=Path("/c.pem"), serve_tls_key=Path("/k.pem"))
    reg = build_registration(spec(stdio(), tls), Endpoint("10.0.0.5", 11200, 11200), "n1")
    assert reg.meta["scheme"] == "https"
    plain = build_registration(spec(stdio()), Endpoint("10.0.0.5", 11200, 11200), "n1")
    assert "scheme" not in plain.meta
    assert "written by the bridge itself" in error(stdio({"mcp.meta.scheme": "https"})).reason
    # an HTTP server may say so itself (it serves TLS); the catalog then gives https URLs
    http = spec(
        make_container(
            labels={"mcp.enable": "true", "mcp.port": "8080", "mcp.meta.scheme": "https"}
        )
    )
    assert ("scheme", "https") in http.meta
