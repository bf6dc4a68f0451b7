"""The HTTP headers a 2026-07-28 request mirrors from its body, which servers check
against it: `Mcp-Name` (the tool's or prompt's name, the resource's uri) and, for a tool
whose input schema marks an argument with `x-mcp-header`, `Mcp-Param-<token>` with that
argument's value. An intermediary that rewrites a body (the gateway renames tools) must
send them anew. A value that would not survive as a header field (not printable ASCII,
edge whitespace) goes as `=?base64?...?=`, as the revision says.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping
from typing import Any

NAME_BEARING = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
PARAM_PREFIX = "Mcp-Param-"
_SAFE = re.compile(r"^[\x20-\x7E]*$")
_SENTINEL = re.compile(r"^=\?base64\?.*\?=$")


def encode(value: str) -> str:
    if _SAFE.fullmatch(value) and value == value.strip() and not _SENTINEL.fullmatch(value):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode('ascii')}?="


def mirrored(method: str, params: Mapping[str, Any], input_schema: Any = None) -> dict[str, str]:
    """The headers that mirror this request's body."""
    headers: dict[str, str] = {}
    key = NAME_BEARING.get(method)
    if key is not None and isinstance(params.get(key), str):
        headers["Mcp-Name"] = encode(params[key])
    arguments = params.get("arguments")
    if method == "tools/call" and isinstance(arguments, Mapping):
        for path, token in _annotated(input_schema):
            value = _at(arguments, path)
            rendered = _render(value)
            if rendered is not None:
                headers[PARAM_PREFIX + token] = encode(rendered)
    return headers


def _annotated(schema: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path, token) of each argument marked `x-mcp-header`, down `properties` only (an
    annotation anywhere else is not statically reachable, and is not mirrored)."""
    if not isinstance(schema, Mapping):
        return
    token = schema.get("x-mcp-header")
    if path and isinstance(token, str):
        yield path, token
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for name, sub in properties.items():
            yield from _annotated(sub, (*path, str(name)))


def _at(arguments: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = arguments
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _render(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    return None
