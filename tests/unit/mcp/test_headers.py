"""The headers a 2026-07-28 request mirrors from its body (bridge/mcp/headers.py), checked
against the official SDK's own server-side validation of them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp.shared.inbound import decode_header_value, validate_mcp_param_headers

from bridge.mcp.headers import encode, mirrored

SCHEMA = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "limit": {"type": "integer", "x-mcp-header": "Limit"},
        "deep": {
            "type": "object",
            "properties": {"flag": {"type": "boolean", "x-mcp-header": "Flag"}},
        },
        "plain": {"type": "string"},
    },
}


@given(st.text())
def test_any_value_survives_as_a_header_and_back(value: str) -> None:
    encoded = encode(value)
    assert encoded.isascii() and decode_header_value(encoded) == value


@pytest.mark.parametrize(
    "arguments",
    [
        {"region": "eu-west", "limit": 5, "deep": {"flag": True}, "plain": "x"},
        {"region": " spaced ü ", "limit": -1},
        {},
    ],
)
def test_the_sdks_server_accepts_what_is_mirrored(arguments: dict[str, Any]) -> None:
    params = {"name": "tool ü", "arguments": arguments}
    headers = mirrored("tools/call", params, SCHEMA)
    assert decode_header_value(headers["Mcp-Name"]) == "tool ü"
    assert validate_mcp_param_headers(SCHEMA, arguments, headers) is None


def test_only_name_bearing_methods_carry_a_name() -> None:
    assert mirrored("resources/read", {"uri": "file:///a"}) == {"Mcp-Name": "file:///a"}
    assert mirrored("tools/list", {"cursor": "c"}) == {}
