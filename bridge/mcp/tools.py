"""A server's tools: listing them, their digest, their Consul KV record, and hearing that
they changed.

The list goes to Consul KV at `<prefix>/<node id>/<service id>/tools` as one JSON record
(each tool's whole definition: name, title, description, input and output schemas,
annotations, `_meta`; the gateway offers them as they are), written only when its digest
changes and kept under Consul's value size limit: a list too large is cut, with a marker
that says so, rather than failing anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bridge.mcp.wire import ACCEPT, ProbeFailed, modern_request, sse_events

MAX_PAGES = 100  # a cursor loop that never ends is a broken server, not a big one
# Consul refuses values over 512 KiB (kv_max_value_size); stay well below it.
KV_VALUE_LIMIT = 400 * 1024

Call = Callable[[str, dict[str, Any] | None], Awaitable[dict[str, Any]]]


def _entry(tool: Any) -> dict[str, Any] | None:
    """A tool as its server defined it (nothing cut: the gateway offers it as it is)."""
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        return None
    return dict(tool)


async def list_tools(call: Call) -> list[dict[str, Any]]:
    """Every tool, following pagination cursors; sorted by name."""
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await call("tools/list", {"cursor": cursor} if cursor else None)
        listed = page.get("tools")
        if not isinstance(listed, list):
            raise ProbeFailed("tools/list answered without a list of tools")
        tools.extend(e for e in map(_entry, listed) if e is not None)
        cursor = page.get("nextCursor") if isinstance(page.get("nextCursor"), str) else None
        if not cursor:
            return sorted(tools, key=lambda t: str(t["name"]))
    raise ProbeFailed(f"tools/list still had a next page after {MAX_PAGES} pages")


def digest(tools: list[dict[str, Any]]) -> str:
    text = json.dumps(tools, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def kv_record(tools: list[dict[str, Any]], **about: Any) -> bytes:
    """The KV value: `about` (service, protocol, ...), the digest, the tools. Over the
    limit, tools are left out from the end and `truncated` says how many."""
    whole = {**about, "count": len(tools), "hash": digest(tools), "truncated": 0}
    value = _encode({**whole, "tools": tools})
    if len(value) <= KV_VALUE_LIMIT:
        return value
    kept: list[dict[str, Any]] = []
    size = len(_encode({**whole, "truncated": len(tools), "tools": []}))
    for tool in tools:
        cost = len(_encode(tool)) + 1
        if size + cost > KV_VALUE_LIMIT:
            break
        kept.append(tool)
        size += cost
    return _encode({**whole, "truncated": len(tools) - len(kept), "tools": kept})


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


async def listen_for_changes(
    http: aiohttp.ClientSession, url: str, version: str, on_change: Callable[[], None]
) -> None:
    """Hold a modern `subscriptions/listen` stream asking for tool list changes; call
    `on_change` for each. Returns when the server ends the stream; raises when it cannot
    be opened (the caller retries)."""
    body, headers = modern_request(
        "subscriptions/listen", version, 1, {"notifications": {"toolsListChanged": True}}
    )
    sent = {"Accept": ACCEPT, "Content-Type": "application/json", **headers}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with http.post(url, data=json.dumps(body), headers=sent, timeout=timeout) as response:
        if response.status != 200:
            raise ProbeFailed(f"subscriptions/listen at {url}: HTTP {response.status}")
        async for _, data in sse_events(response, limit=None):
            try:
                message = json.loads(data)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("method") == (
                "notifications/tools/list_changed"
            ):
                on_change()
