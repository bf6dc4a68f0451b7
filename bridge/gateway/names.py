"""The gateway's tool names, and the union of every service's tools under them.

A tool is offered as `<service>__<tool>`: the service's Consul name, two underscores, the
tool's own name. Service names are DNS labels (`mcp.name`: lower-case letters, digits and
`-`, no `_`), so the first `_` of an offered name ends the service's name and no two
services' tools can ever share one, whatever the tools are called. The name stays within
the 128 characters MCP allows a tool name: when service and tool together would be longer,
the tool's name is cut and ends with `-` and the first 8 hex digits of the SHA-256 of its
whole name, so the shortened name is stable (the same on every gateway, across restarts)
and still tells tools apart.

Pure: instances and their tools in, the union and where each name goes out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SEPARATOR = "__"
MAX_NAME = 128  # the spec's limit on a tool name
HASH_CHARS = 8


def offered_name(service: str, tool: str) -> str:
    name = f"{service}{SEPARATOR}{tool}"
    if len(name) <= MAX_NAME:
        return name
    mark = "-" + hashlib.sha256(tool.encode()).hexdigest()[:HASH_CHARS]
    keep = MAX_NAME - len(service) - len(SEPARATOR) - len(mark)
    return f"{service}{SEPARATOR}{tool[: max(keep, 0)]}{mark}"[:MAX_NAME]


@dataclass(frozen=True, slots=True)
class Offered:
    """A tool of the union: the service that has it, and its own name there."""

    service: str
    tool: str
    definition: Mapping[str, Any]  # the tool as its server lists it, under its own name


def union(tools_by_service: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, Offered]:
    """Offered name -> tool, for every service's tools. A service's instances may list
    different tools (one is being upgraded): the caller passes one list per service, the
    tools its healthy instances share or the newest; here only names are decided."""
    offered: dict[str, Offered] = {}
    for service in sorted(tools_by_service):
        for definition in tools_by_service[service]:
            tool = definition.get("name")
            if not isinstance(tool, str) or not tool:
                continue
            name = offered_name(service, tool)
            if name not in offered:  # the same tool twice in one list: the first wins
                offered[name] = Offered(service, tool, definition)
    return offered


def listing(offered: Mapping[str, Offered]) -> list[dict[str, Any]]:
    """`tools/list`'s tools: each definition whole (title, description, schemas,
    annotations, `_meta`), under its offered name."""
    return [{**offered[name].definition, "name": name} for name in sorted(offered)]
