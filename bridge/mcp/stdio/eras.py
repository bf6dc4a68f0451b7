"""Between the protocol eras: what a client of one era is told about a server of the other.

- A handshake-era client's `initialize` is answered from what the bridge learnt in its own
  one handshake (the version the server negotiated), or, for a server that speaks
  2026-07-28, from its `server/discover` result, at the revision the client asked for. Its
  later requests reach a modern server wrapped in the modern envelope.
- A 2026-07-28 client's `server/discover` is answered for a handshake-only server from the
  handshake, and its requests reach that server without the envelope (the server never
  negotiated it); their results get the fields 2026-07-28 requires (`resultType`, and the
  cache fields of listings), filled in by the SDK's own models (mcp-types), over the raw
  result, so nothing the server said is lost.

Pure. Everything the bridge does not need to understand passes through as the raw JSON it
was, so fields newer than the bridge survive.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.mcp.stdio.handshake import Handshake
from bridge.mcp.stdio.mux import error
from bridge.mcp.wire import (
    CLIENT_CAPABILITIES_KEY,
    CLIENT_INFO,
    CLIENT_INFO_KEY,
    HANDSHAKE_VERSIONS,
    LATEST_MODERN,
    LOG_LEVEL_KEY,
    MODERN_VERSIONS,
    PROTOCOL_VERSION_KEY,
    SERVER_INFO_KEY,
)

UNSUPPORTED_PROTOCOL_VERSION = -32022
HEADER_MISMATCH = -32020
INVALID_PARAMS = -32602
# What 2026-07-28 carries in `_meta` and a handshake-only server never negotiated (the
# log level is the bridge's to honour for such a server: connection.py).
ENVELOPE = (PROTOCOL_VERSION_KEY, CLIENT_INFO_KEY, CLIENT_CAPABILITIES_KEY, LOG_LEVEL_KEY)


class Unsupported(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def answer(self, rid: Any) -> dict[str, Any]:
        """The JSON-RPC error answer, with its data (the supported versions) when any."""
        body = error(rid, self.code, self.message)
        if self.data is not None:
            body["error"]["data"] = self.data
        return body


def initialize_result(shook: Handshake, requested: Any) -> dict[str, Any]:
    """The answer to a handshake-era client's `initialize`."""
    if shook.era == "handshake" and not (shook.any_version and requested in HANDSHAKE_VERSIONS):
        return dict(shook.result)
    if shook.era == "handshake":
        return dict(shook.result, protocolVersion=requested)
    # The server hears this client's requests in the modern envelope (to_modern_server),
    # so any handshake revision the client asks for can be served; its own list matters not.
    version = requested if requested in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[-1]
    result: dict[str, Any] = {
        "protocolVersion": version,
        "capabilities": shook.capabilities,
        "serverInfo": shook.server_info or {"name": "unknown", "version": "0"},
    }
    if isinstance(shook.result.get("instructions"), str):
        result["instructions"] = shook.result["instructions"]
    return result


def discover_result(shook: Handshake) -> dict[str, Any]:
    """The answer to a 2026-07-28 client's `server/discover` for a handshake-only server."""
    result: dict[str, Any] = {
        "supportedVersions": list(MODERN_VERSIONS),
        "capabilities": shook.capabilities,
        "ttlMs": 0,
        "cacheScope": "private",
        "resultType": "complete",
        "_meta": {SERVER_INFO_KEY: shook.server_info},
    }
    if isinstance(shook.result.get("instructions"), str):
        result["instructions"] = shook.result["instructions"]
    return result


CHECKED_HEADERS = ("mcp-protocol-version", "mcp-method")  # what check_modern reads


def check_modern(message: dict[str, Any], headers: Mapping[str, str | None]) -> str:
    """The modern envelope as the revision says (the SDK's inbound ladder): the version in
    `params._meta` and in the header agree, `Mcp-Method` names the body's method, and the
    version is one the bridge serves. The version, or Unsupported."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict) or PROTOCOL_VERSION_KEY not in meta:
        raise Unsupported(INVALID_PARAMS, f"params._meta must carry {PROTOCOL_VERSION_KEY!r}")
    version = meta[PROTOCOL_VERSION_KEY]
    if headers.get("mcp-protocol-version") != version:
        raise Unsupported(
            HEADER_MISMATCH, "MCP-Protocol-Version header does not match params._meta"
        )
    if headers.get("mcp-method") != message.get("method"):
        raise Unsupported(HEADER_MISMATCH, "Mcp-Method header does not match the body's method")
    if version not in MODERN_VERSIONS:
        raise Unsupported(
            UNSUPPORTED_PROTOCOL_VERSION,
            f"unsupported protocol version {version!r}",
            {"supported": [*MODERN_VERSIONS, *HANDSHAKE_VERSIONS], "requested": version},
        )
    return str(version)


def to_modern_server(message: dict[str, Any], capabilities: dict[str, Any]) -> dict[str, Any]:
    """A handshake-era client's request, as a server speaking 2026-07-28 expects it."""
    params = message.get("params")
    params = dict(params) if isinstance(params, dict) else {}
    meta = dict(params.get("_meta") or {})
    meta.setdefault(PROTOCOL_VERSION_KEY, LATEST_MODERN)
    meta.setdefault(CLIENT_CAPABILITIES_KEY, capabilities)
    meta.setdefault(CLIENT_INFO_KEY, CLIENT_INFO)  # the client named itself to the bridge
    params["_meta"] = meta
    return dict(message, params=params)


def to_handshake_server(message: dict[str, Any]) -> dict[str, Any]:
    """A 2026-07-28 client's request, as a handshake-only server expects it: the envelope
    (which it never negotiated) taken out of `_meta`; a progress token stays."""
    params = message.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("_meta"), dict):
        return message
    meta = {k: v for k, v in params["_meta"].items() if k not in ENVELOPE}
    params = {k: v for k, v in params.items() if k != "_meta"}
    if meta:
        params["_meta"] = meta
    return dict(message, params=params)


def to_modern_result(method: str, server_version: str, answer: dict[str, Any]) -> dict[str, Any]:
    """A handshake-only server's answer as a 2026-07-28 client must get it."""
    result = answer.get("result")
    if not isinstance(result, dict):
        return answer  # an error passes as it is
    if "resultType" in result:  # already one of 2026-07-28 (the gateway's modern upstreams)
        return answer
    try:
        # Imported here: only a served stdio server needs the SDK's models (memory).
        from mcp_types.methods import parse_server_result

        model = parse_server_result(method, server_version, result)
        filled = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    except Exception:  # a method the models do not know, or a result they refuse
        filled = {}
    filled.setdefault("resultType", "complete")
    return dict(answer, result={**filled, **result})
