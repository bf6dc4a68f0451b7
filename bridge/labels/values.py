"""The rules for the values of the labels that do not decide the endpoint: transport,
path, tags, meta and the check. Pure; labels/parse.py calls them in the contract's order.

Each broken rule raises Bad, which labels.parse_labels turns into a LabelError naming the
label, the value and the rule.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Mapping
from typing import TypeVar

from bridge.core.config import Settings
from bridge.core.durations import DurationError, parse_duration
from bridge.core.model import (
    DEFAULT_CHECK_INTERVAL,
    DEFAULT_CHECK_PATH,
    DEFAULT_CHECK_TIMEOUT,
    CheckKind,
    CheckSpec,
    Transport,
)

E = TypeVar("E", bound=enum.Enum)

MAX_PATH_CHARS = 256
MAX_TAGS = 32
MAX_META_KEYS = 48  # Consul allows 64 meta keys; the bridge's own take the rest
MAX_META_VALUE_CHARS = 512
MIN_INTERVAL = 1.0
MAX_INTERVAL = 24 * 3600.0
MIN_DEREGISTER_AFTER = 60.0  # Consul's own minimum for DeregisterCriticalServiceAfter
DEFAULT_PATH = "/mcp"
META = "meta."

HTTPS = (("scheme", "https"),)  # a served stdio endpoint behind TLS (no key: http)

# Meta keys the registration code writes itself; a label must not be able to forge them.
BRIDGE_META_KEYS = frozenset(
    {
        "managed_by",
        "bridge_node",
        "container_id",
        "container_name",
        "image",
        "container_port",
        "host_port",
        "expose",
        "transport",
        "container_transport",
        "path",
        "mcp_server_name",
        "mcp_server_version",
        "mcp_protocol_version",
        "mcp_tools",
        "mcp_tools_hash",
        "mcp_auth",
        "bridge_fingerprint",
        "port_tier",
        "access_allow",
        "access_max_connections",
    }
)

_TAG = re.compile(r"[A-Za-z0-9_.:/=-]{1,128}")
_META_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_PATH = re.compile(r"/[\x21-\x7e]*")  # printable ASCII, no space, no control characters
_TAG_WHITESPACE = " \t\r\n"
# Control characters, lone surrogates (not encodable as UTF-8, so not as JSON for Consul)
# and line/paragraph separators (they split log lines as well as a newline does).
_BAD_META_VALUE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})

_PATH_RULE = (
    f"must start with '/', be at most {MAX_PATH_CHARS} characters of printable ASCII "
    "without spaces, and not contain '..'"
)
_TAG_RULE = "1-128 characters of letters, digits and _ . : / = -"
_META_KEY_RULE = "1-128 characters of letters, digits, '_' and '-'"
_SCRIPT_LIKE = frozenset({"script", "args", "exec", "shell", "cmd", "command"})


class Bad(Exception):
    """One broken rule; parse_labels turns it into a LabelError."""

    def __init__(self, suffix: str, value: str, reason: str) -> None:
        super().__init__(reason)
        self.suffix = suffix
        self.value = value
        self.reason = reason


def show(text: str, limit: int = 40) -> str:
    """A value quoted for a reason: repr() so control characters stay visible, and short."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def choice(suffix: str, raw: str, kind: type[E], hint: str = "") -> E:
    """`raw` as one of the enum's values, or Bad listing them."""
    try:
        return kind(raw)
    except ValueError:
        choices = ", ".join(str(member.value) for member in kind)
        raise Bad(suffix, raw, f"must be one of {choices}{hint}") from None


def tools(own: Mapping[str, str]) -> bool:
    raw = own.get("tools")
    if raw is not None and raw not in ("true", "false"):
        raise Bad("tools", raw, "must be 'true' or 'false'")
    return raw != "false"


def transport(own: Mapping[str, str]) -> Transport:
    raw = own.get("transport")
    return Transport.STREAMABLE_HTTP if raw is None else choice("transport", raw, Transport)


def path(suffix: str, own: Mapping[str, str], default: str) -> str:
    raw = own.get(suffix)
    if raw is None:
        return default
    if len(raw) > MAX_PATH_CHARS or not _PATH.fullmatch(raw) or ".." in raw:
        raise Bad(suffix, raw, _PATH_RULE)
    return raw


def tags(own: Mapping[str, str]) -> tuple[str, ...]:
    raw = own.get("tags")
    if raw is None:
        return ()
    tags: list[str] = []
    for item in raw.split(","):
        tag = item.strip(_TAG_WHITESPACE)
        if not tag:
            continue
        if not _TAG.fullmatch(tag):
            raise Bad("tags", raw, f"tag {show(tag)} must be {_TAG_RULE}")
        # "mcp" is always the first tag; the registration code adds it.
        if tag != "mcp" and tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise Bad("tags", raw, f"{len(tags)} tags; at most {MAX_TAGS}")
    return tuple(tags)


def meta(own: Mapping[str, str], ordered: list[str], prefix: str) -> tuple[tuple[str, str], ...]:
    meta: list[tuple[str, str]] = []
    for suffix in ordered:
        if not suffix.startswith(META):
            continue
        key, value = suffix[len(META) :], own[suffix]
        if not _META_KEY.fullmatch(key):
            raise Bad(suffix, value, f"meta key {show(key)} must be {_META_KEY_RULE}")
        if key.lower().startswith("consul-"):
            raise Bad(suffix, value, "meta keys starting with 'consul-' are reserved by Consul")
        if key in BRIDGE_META_KEYS:
            raise Bad(suffix, value, f"meta key {key!r} is written by the bridge itself")
        if len(value) > MAX_META_VALUE_CHARS:
            raise Bad(
                suffix,
                value,
                f"meta value is {len(value)} characters; at most {MAX_META_VALUE_CHARS}",
            )
        if any(unicodedata.category(ch) in _BAD_META_VALUE_CATEGORIES for ch in value):
            raise Bad(suffix, value, "meta value must not contain control characters")
        meta.append((key, value))
    if len(meta) > MAX_META_KEYS:
        suffix = META + meta[MAX_META_KEYS][0]
        raise Bad(
            suffix,
            own[suffix],
            f"{len(meta)} {prefix}meta.* labels; at most {MAX_META_KEYS}",
        )
    return tuple(meta)  # already sorted by key: `ordered` sorts the meta labels


def _duration(suffix: str, own: Mapping[str, str]) -> float | None:
    raw = own.get(suffix)
    if raw is None:
        return None
    try:
        return parse_duration(raw)
    except DurationError as exc:
        raise Bad(suffix, raw, str(exc)) from None


def check(own: Mapping[str, str], settings: Settings) -> CheckSpec:
    raw = own.get("check")
    if raw is None:
        kind = CheckKind.MCP
    else:
        hint = ""
        if raw.strip().lower() in _SCRIPT_LIKE:
            hint = "; labels may not make Consul run commands (no script checks)"
        kind = choice("check", raw, CheckKind, hint)
    check_path = path("check.path", own, DEFAULT_CHECK_PATH)

    interval = _duration("check.interval", own)
    if interval is None:
        interval = DEFAULT_CHECK_INTERVAL
    elif not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise Bad("check.interval", own["check.interval"], "must be between 1s and 24h")

    timeout = _duration("check.timeout", own)
    if timeout is None:
        # An interval below the default timeout brings the timeout down with it.
        timeout = min(DEFAULT_CHECK_TIMEOUT, interval)
    elif not 0 < timeout <= interval:
        raise Bad(
            "check.timeout",
            own["check.timeout"],
            f"must be above 0 and at most the check interval ({interval:g}s)",
        )

    deregister_after = _duration("check.deregister_after", own)
    if deregister_after is None:
        deregister_after = settings.deregister_after
    elif deregister_after < MIN_DEREGISTER_AFTER:
        raise Bad(
            "check.deregister_after",
            own["check.deregister_after"],
            "must be at least 1m (Consul's minimum)",
        )
    return CheckSpec(
        kind=kind,
        path=check_path,
        interval=interval,
        timeout=timeout,
        deregister_after=deregister_after,
    )
