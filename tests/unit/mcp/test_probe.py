"""The MCP probe against a local aiohttp server playing each kind of answer, era by era.

Every branch of the negotiation is a row: what the server says to `server/discover` and
to `initialize`, and what the probe must conclude, say, and send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bridge.mcp import probe as probe_module
from bridge.mcp.probe import probe
from bridge.mcp.wire import PROTOCOL_VERSION_KEY
from tests.mcp_stub import (
    MODERN,
    Fixture,
    serving,
)


@pytest.fixture
async def server() -> AsyncIterator[Fixture]:
    async with serving() as fixture:
        yield fixture


HANDSHAKE_CALLS = ["server/discover", "initialize", "notifications/initialized", "DELETE"]


@pytest.mark.parametrize(
    ("discover", "initialize", "status", "words", "calls", "protocol"),
    [
        (
            "modern",
            "ok",
            "passing",
            "MCP 2026-07-28 OK: server/discover",
            ["server/discover"],
            MODERN,
        ),
        ("modern-sse", "ok", "passing", "by modern-demo 7.0", ["server/discover"], MODERN),
        # Handshake-era servers, each way they can say they do not know server/discover.
        (
            "method-not-found",
            "ok",
            "passing",
            "(server/discover: JSON-RPC error -32601)",
            HANDSHAKE_CALLS,
            "2025-06-18",
        ),
        (
            "missing-session",
            "ok",
            "passing",
            "(server/discover: JSON-RPC error -32600)",
            HANDSHAKE_CALLS,
            "2025-06-18",
        ),
        (
            "plain-400",
            "ok",
            "passing",
            "(server/discover: HTTP 400)",
            HANDSHAKE_CALLS,
            "2025-06-18",
        ),
        (
            "initialize-like",
            "ok",
            "passing",
            "without a modern revision",
            HANDSHAKE_CALLS,
            "2025-06-18",
        ),
        ("handshake-versions", "ok", "passing", "initialize", HANDSHAKE_CALLS, "2025-06-18"),
        (
            "method-not-found",
            "sse",
            "passing",
            "by demo 4.5.6",
            ["server/discover", "initialize"],
            "2025-06-18",
        ),
        (
            "method-not-found",
            "pieces",
            "passing",
            "by demo",
            ["server/discover", "initialize"],
            "2025-06-18",
        ),
        # A -32022 naming only handshake-era revisions, or none: the handshake.
        (
            "unsupported-handshake-only",
            "ok",
            "passing",
            "(server/discover: JSON-RPC error -32022)",
            HANDSHAKE_CALLS,
            "2025-06-18",
        ),
        (
            "unsupported-no-data",
            "ok",
            "passing",
            "(server/discover: JSON-RPC error -32022)",
            HANDSHAKE_CALLS,
            "2025-06-18",
        ),
        # No Mcp-Session-Id (a stateless server): nothing to confirm, nothing to end.
        (
            "method-not-found",
            "stateless",
            "passing",
            "by demo 4.5.6",
            ["server/discover", "initialize"],
            "2025-06-18",
        ),
        # A -32022 to initialize is modern evidence: discover again.
        (
            "method-not-found",
            "modern-after-all",
            "passing",
            "server/discover",
            ["server/discover", "initialize", "server/discover"],
            MODERN,
        ),
        # Failures, each with its reason.
        (
            "method-not-found",
            "error",
            "critical",
            "initialize failed: JSON-RPC error -32602: bad params",
            ["server/discover", "initialize"],
            None,
        ),
        (
            "method-not-found",
            "odd",
            "warning",
            "lacks mcp_server_name",
            ["server/discover", "initialize"],
            "2025-11-25",
        ),
        (
            "method-not-found",
            "slow",
            "warning",
            "slow (timeout 1s)",
            ["server/discover", "initialize"],
            "2025-06-18",
        ),
        (
            "disjoint",
            "ok",
            "critical",
            "only protocol revisions this bridge does not know: 2099-01-01",
            ["server/discover"],
            None,
        ),
        # Refusing the very modern revision it names, and no handshake-era one: no
        # revision is left to try (initialize would be refused too).
        (
            "refuses-what-it-names",
            "ok",
            "critical",
            "server refused protocol revision 2026-07-28, naming only 2026-07-28",
            ["server/discover"],
            None,
        ),
        ("http500", "ok", "critical", "HTTP 500", ["server/discover"], None),
        (
            "html",
            "ok",
            "critical",
            "unexpected Content-Type 'text/html'",
            ["server/discover"],
            None,
        ),
        ("hang", "ok", "critical", "no answer to MCP within 1s", ["server/discover"], None),
        # MCP authorization: up, but closed to the bridge.
        ("unauthorized", "ok", "warning", "MCP authorization required", ["server/discover"], None),
        (
            "method-not-found",
            "unauthorized",
            "warning",
            "HTTP 401",
            ["server/discover", "initialize"],
            None,
        ),
        # A 401 without a WWW-Authenticate challenge is not MCP authorization: a failure.
        ("unauthorized-bare", "ok", "critical", "HTTP 401", ["server/discover"], None),
        (
            "method-not-found",
            "unauthorized-bare",
            "critical",
            "POST http://127.0.0.1",
            ["server/discover", "initialize"],
            None,
        ),
    ],
)
async def test_negotiation(
    server: Fixture,
    discover: str,
    initialize: str,
    status: str,
    words: str,
    calls: list[str],
    protocol: str | None,
) -> None:
    state, base, session = server
    state.discover, state.initialize = discover, initialize
    result = await probe(session, base + "/mcp", "streamable-http", 1.0)
    assert (result.status, words in result.output) == (status, True), result.output
    assert state.calls == calls
    assert result.meta.get("mcp_protocol_version") == protocol
    if status == "critical":
        assert "MCP authorization" not in result.output


DISCOVERS = ["server/discover", "server/discover"]


@pytest.mark.parametrize(
    ("retry", "initialize", "status", "words", "calls", "protocol"),
    [
        ("modern", "ok", "passing", "OK: server/discover", DISCOVERS, MODERN),
        # The retry refused too, naming no handshake-era revision: nothing left to try.
        (
            "refuse",
            "ok",
            "critical",
            "server refused protocol revision 2026-07-28, naming only 2026-07-28",
            DISCOVERS,
            None,
        ),
        # The retry says "I do not know server/discover" after all: the handshake.
        (
            "method-not-found",
            "ok",
            "passing",
            "(server/discover: JSON-RPC error -32601)",
            [*DISCOVERS, *HANDSHAKE_CALLS[1:]],
            "2025-06-18",
        ),
        # ... and a -32022 to its initialize: the one corrective discover is spent.
        (
            "method-not-found",
            "modern-after-all",
            "critical",
            "initialize failed: JSON-RPC error -32022",
            [*DISCOVERS, "initialize"],
            None,
        ),
    ],
)
async def test_an_unsupported_version_error_naming_a_known_revision_is_retried_there(
    server: Fixture,
    monkeypatch: pytest.MonkeyPatch,
    retry: str,
    initialize: str,
    status: str,
    words: str,
    calls: list[str],
    protocol: str | None,
) -> None:
    # As if the bridge knew a newer modern revision than the server.
    monkeypatch.setattr(probe_module, "LATEST_MODERN", "2027-01-01")
    monkeypatch.setattr(probe_module, "MODERN_VERSIONS", (MODERN, "2027-01-01"))
    state, base, session = server
    state.discover, state.retry, state.initialize = "only-older-modern", retry, initialize
    result = await probe(session, base + "/mcp", "streamable-http", 1.0)
    assert (result.status, words in result.output) == (status, True), result.output
    assert state.calls == calls
    discovers = [b for b in state.bodies if b["method"] == "server/discover"]
    versions = [b["params"]["_meta"][PROTOCOL_VERSION_KEY] for b in discovers]
    assert versions == ["2027-01-01", MODERN]
    assert result.meta.get("mcp_protocol_version") == protocol


async def test_modern_meta_comes_from_the_server_info_stamp(server: Fixture) -> None:
    _, base, session = server
    result = await probe(session, base + "/mcp", "streamable-http", 2.0)
    assert result.meta == {
        "mcp_server_name": "modern-demo",
        "mcp_server_version": "7.0",
        "mcp_protocol_version": MODERN,
    }
    assert result.listens  # it announces tool list changes


async def test_handshake_meta_and_the_session_is_ended(server: Fixture) -> None:
    state, base, session = server
    state.discover = "method-not-found"
    result = await probe(session, base + "/mcp", "streamable-http", 2.0)
    assert result.meta == {
        "mcp_server_name": "demo",
        "mcp_server_version": "4.5.6",
        "mcp_protocol_version": "2025-06-18",  # what the server answered, not what was asked
    }
    # After initialize: the agreed revision and the session on every request.
    for headers in state.headers[2:]:
        assert headers["MCP-Protocol-Version"] == "2025-06-18"
        assert headers["Mcp-Session-Id"] == "abc"
    assert not result.listens


@pytest.mark.parametrize("discover", ["modern", "method-not-found"])
async def test_tools_are_listed_across_pages_in_either_era(server: Fixture, discover: str) -> None:
    state, base, session = server
    state.discover = discover
    result = await probe(session, base + "/mcp", "streamable-http", 2.0, want_tools=True)
    assert result.status == "passing", result.output
    assert result.tools == [
        {"name": "a", "inputSchema": {"type": "object"}, "annotations": {"title": "First"}},
        {"name": "b", "description": "second", "inputSchema": {"type": "object"}, "extra": 1},
        {"name": "c", "title": "Third", "inputSchema": {"type": "object"}},
    ]
    assert result.output.endswith("; 3 tools")
    assert state.calls.count("tools/list") == 2
    if discover == "method-not-found":
        assert state.calls[-1] == "DELETE"  # listed inside the session, then ended


async def test_tools_are_not_listed_unless_asked(server: Fixture) -> None:
    state, base, session = server
    result = await probe(session, base + "/mcp", "streamable-http", 2.0)
    assert result.tools is None and "tools/list" not in state.calls
    assert result.tools_declared is True  # declared, though not listed


async def test_the_probe_says_whether_the_server_declares_tools(server: Fixture) -> None:
    state, base, session = server
    state.discover = "no-tools"
    result = await probe(session, base + "/mcp", "streamable-http", 2.0, want_tools=True)
    assert (result.status, result.tools_declared, result.tools) == ("passing", False, None)
    assert "tools/list" not in state.calls
    state.discover = "unauthorized"  # no answer read: no word on tools either way
    result = await probe(session, base + "/mcp", "streamable-http", 2.0, want_tools=True)
    assert (result.status, result.tools_declared) == ("warning", None)


async def test_a_cancelled_probe_ends_at_once_without_a_goodbye(server: Fixture) -> None:
    # A check being stopped is waited for by the pass: no DELETE to a server maybe gone.
    state, base, session = server
    state.discover, state.tools = "method-not-found", "hang"
    task = asyncio.create_task(
        probe(session, base + "/mcp", "streamable-http", 5.0, want_tools=True)
    )
    await asyncio.wait_for(state.tools_asked.wait(), 5)
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0
    await asyncio.sleep(0.1)
    assert "DELETE" not in state.calls


async def test_legacy_sse_transport_passes_and_lists_tools(server: Fixture) -> None:
    state, base, session = server
    result = await probe(session, base + "/sse", "sse", 2.0, want_tools=True)
    assert result.status == "passing", result.output
    assert result.meta["mcp_server_name"] == "demo"
    assert [t["name"] for t in result.tools or []] == ["a", "b", "c"]
    assert state.calls == ["initialize", "tools/list"]


@pytest.mark.parametrize(
    ("legacy", "status", "words", "calls"),
    [
        # As in streamable-http: a 401 with a challenge is a protected server ...
        ("unauthorized", "warning", "MCP authorization required at http://", []),
        ("post-unauthorized", "warning", "WWW-Authenticate: Bearer", ["initialize"]),
        # ... without one, or any other HTTP error, a failure.
        ("unauthorized-bare", "critical", "/sse: HTTP 401", []),
        ("http500", "critical", "/sse: HTTP 500", []),
    ],
)
async def test_legacy_sse_http_errors_are_judged_as_in_streamable_http(
    server: Fixture, legacy: str, status: str, words: str, calls: list[str]
) -> None:
    state, base, session = server
    state.legacy = legacy
    result = await probe(session, base + "/sse", "sse", 2.0)
    assert (result.status, words in result.output) == (status, True), result.output
    assert state.calls == calls
    # protected: said in meta, so that the gateway leaves it out (no token passthrough)
    assert (result.meta.get("mcp_auth") == "required") is (status == "warning")


async def test_nothing_listening_is_critical_with_the_reason() -> None:
    async with aiohttp.ClientSession() as session:
        result = await probe(session, "http://127.0.0.1:9/mcp", "streamable-http", 2.0)
    assert result.status == "critical"
    assert "cannot reach http://127.0.0.1:9/mcp" in result.output
