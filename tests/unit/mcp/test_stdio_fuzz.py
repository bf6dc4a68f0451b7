"""Hostile HTTP against a served stdio endpoint, generated: any method, headers and body.
Every answer is a status the endpoint means (never a 500, never a hang), nothing the
server receives is other than a JSON-RPC object, and afterwards a well-formed client is
served as if nothing had happened."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.unit.mcp.test_stdio_endpoint import JSON_ONLY, call, initialize, serving
from tests.unit.mcp.test_stdio_process import echo_server

MEANT = {200, 202, 400, 401, 403, 404, 405, 406, 409, 413, 415, 503}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
messages = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0", 2]), "method": st.text(max_size=30)},
    optional={
        "id": st.one_of(st.integers(), st.text(max_size=10), st.none(), st.floats()),
        "params": json_values,
        "result": json_values,
    },
)
bodies = st.one_of(
    messages.map(json.dumps),
    json_values.map(json.dumps),
    st.binary(max_size=200),
    st.just("[" * 5000),  # deep nesting
)
header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
) | st.sampled_from(["application/json", "text/event-stream", "2025-06-18", "2026-07-28"])
headers = st.dictionaries(
    st.sampled_from(
        ["Content-Type", "Accept", "Mcp-Session-Id", "MCP-Protocol-Version", "Origin", "Mcp-Method"]
    ),
    header_values,
    max_size=6,
)
requests = st.tuples(st.sampled_from(["POST", "GET", "DELETE", "PUT"]), headers, bodies)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, min_size=1, max_size=12))
# An empty POST: aiohttp 3.14 made readexactly(0) raise, which answered 500.
@example([("POST", {"Content-Type": "application/json"}, b"")])
def test_hostile_requests_get_a_meant_status_and_disturb_nothing(
    sent: list[tuple[str, dict[str, str], Any]],
) -> None:
    asyncio.run(_run(sent))


async def _run(sent: list[tuple[str, dict[str, str], Any]]) -> None:
    async with serving(echo_server) as (client, endpoint):
        for method, head, body in sent:
            # GET streams stay open: read the head only, then let go.
            async with asyncio.timeout(10):
                response = await client.request(method, "/mcp", data=body, headers=head)
                assert response.status in MEANT, (method, head, body, response.status)
                response.close()
        server = endpoint.server
        assert server is not None
        # A well-formed client, after all that, is served as ever.
        status = await client.post("/mcp", json=initialize(), headers=JSON_ONLY)
        assert status.status == 200
        session = status.headers["Mcp-Session-Id"]
        answer = await client.post(
            "/mcp", json=call(7, x=1), headers={**JSON_ONLY, "Mcp-Session-Id": session}
        )
        assert (await answer.json())["result"] == {"x": 1}
        assert not server.mux.pending
        seen = server._stream.seen  # type: ignore[attr-defined]  # the in-memory process
        assert all(isinstance(m, dict) and m.get("jsonrpc") == "2.0" for m in seen), seen
