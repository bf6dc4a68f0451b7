"""Container labels -> ServiceSpec, or one LabelError naming the label that is wrong.

Pure functions over model data: no Docker, no Consul, no clock. Label values are hostile
input (anyone who can start a container writes them), so every value is checked against a
closed rule before it can reach a Consul payload, and the first rule broken is reported in a
fixed order so the same container always gets the same error.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping

from bridge.config import Settings
from bridge.durations import DurationError, parse_duration
from bridge.model import (
    CheckKind,
    CheckSpec,
    Container,
    ExposeMode,
    LabelError,
    ServiceSpec,
    Transport,
)

__all__ = [
    "BRIDGE_META_KEYS",
    "KNOWN_LABELS",
    "MAX_VALUE_CHARS",
    "is_managed",
    "parse_labels",
]

MAX_VALUE_CHARS = 4096
MAX_PATH_CHARS = 256
MAX_TAGS = 32
MAX_META_KEYS = 48  # Consul allows 64 meta keys; the bridge's own take the rest
MAX_META_VALUE_CHARS = 512
MIN_INTERVAL = 1.0
MAX_INTERVAL = 24 * 3600.0
MIN_DEREGISTER_AFTER = 60.0  # Consul's own minimum for DeregisterCriticalServiceAfter
DEFAULT_PATH = "/mcp"
DEFAULT_CHECK_PATH = "/health"
DEFAULT_INTERVAL = 10.0
DEFAULT_TIMEOUT = 2.0

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
        "path",
        "mcp_server_name",
        "mcp_server_version",
        "mcp_protocol_version",
        "bridge_fingerprint",
    }
)

# Label suffixes (after the prefix) in the order they are checked; `meta.*` sits after tags.
KNOWN_LABELS = (
    "enable",
    "name",
    "port",
    "host_port",
    "expose",
    "network",
    "transport",
    "path",
    "tags",
    "check",
    "check.path",
    "check.interval",
    "check.timeout",
    "check.deregister_after",
)
_META = "meta."
_BEFORE_META = KNOWN_LABELS[: KNOWN_LABELS.index("tags") + 1]
_AFTER_META = KNOWN_LABELS[len(_BEFORE_META) :]

_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_TAG = re.compile(r"[A-Za-z0-9_.:/=-]{1,128}")
_META_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_PATH = re.compile(r"/[\x21-\x7e]*")  # printable ASCII, no space, no control characters
_TAG_WHITESPACE = " \t\r\n"
# Control characters, lone surrogates (not encodable as UTF-8, so not as JSON for Consul)
# and line/paragraph separators (they split log lines as well as a newline does).
_BAD_META_VALUE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})

_DNS_RULE = (
    "must be a DNS label: lower-case letters, digits and '-', 1-63 characters, "
    "not starting or ending with '-'"
)
_PORT_RULE = "must be a port number 1-65535, digits only, no leading zeros or spaces"
_PATH_RULE = (
    f"must start with '/', be at most {MAX_PATH_CHARS} characters of printable ASCII "
    "without spaces, and not contain '..'"
)
_TAG_RULE = "1-128 characters of letters, digits and _ . : / = -"
_META_KEY_RULE = "1-128 characters of letters, digits, '_' and '-'"
_SCRIPT_LIKE = frozenset({"script", "args", "exec", "shell", "cmd", "command"})


class _Bad(Exception):
    """One broken rule; parse_labels turns it into a LabelError."""

    def __init__(self, suffix: str, value: str, reason: str) -> None:
        super().__init__(reason)
        self.suffix = suffix
        self.value = value
        self.reason = reason


def is_managed(container: Container, settings: Settings) -> bool:
    """Whether the bridge should look after this container at all.

    Any `enable` value other than `false` counts as asking to be managed: a malformed
    `enable` then surfaces as a LabelError in parse_labels instead of vanishing.
    """
    enable = container.labels.get(settings.label_prefix + "enable")
    if enable is not None:
        return enable != "false"
    return settings.name_pattern.search(container.name) is not None


def parse_labels(container: Container, settings: Settings) -> ServiceSpec | LabelError | None:
    """None when unmanaged, else the validated spec or the first LabelError found."""
    if not is_managed(container, settings):
        return None
    try:
        return _parse(container, settings)
    except _Bad as bad:
        return LabelError(
            container=container.name,
            label=settings.label_prefix + bad.suffix,
            value=bad.value,
            reason=bad.reason,
        )


def _parse(container: Container, settings: Settings) -> ServiceSpec:
    prefix = settings.label_prefix
    own = {
        key[len(prefix) :]: value
        for key, value in container.labels.items()
        if key.startswith(prefix)
    }
    ordered = _check_order(own)

    enable = own.get("enable")
    if enable is not None and enable not in ("true", "false"):
        raise _Bad("enable", enable, "must be 'true' or 'false'")
    for suffix in ordered:
        value = own[suffix]
        if len(value) > MAX_VALUE_CHARS:
            raise _Bad(
                suffix, value, f"value is {len(value)} characters; at most {MAX_VALUE_CHARS}"
            )
    # Typos first: `mcp.prot` silently ignored would surface as a misleading port error.
    for suffix in ordered:
        if suffix not in KNOWN_LABELS and not suffix.startswith(_META):
            raise _Bad(suffix, own[suffix], _unknown_reason(suffix, prefix))

    name = _name(container, own, prefix)
    port = _port(container, own, prefix)
    host_port = _host_port(own, settings)
    expose = _expose(container, own, settings, port, prefix)
    if host_port is not None and expose is not ExposeMode.PROXY:
        raise _Bad(
            "host_port",
            own["host_port"],
            f"applies only to expose=proxy, and expose is {expose.value} here: "
            f"remove {prefix}host_port or set {prefix}expose=proxy",
        )
    network, address = _network(container, own, settings, expose, prefix)
    transport = _transport(own)
    path = _path("path", own, DEFAULT_PATH)
    tags = _tags(own)
    meta = _meta(own, ordered, prefix)
    check = _check(own, settings)
    return ServiceSpec(
        container=container,
        name=name,
        port=port,
        expose=expose,
        host_port=host_port,
        network=network,
        address=address,
        transport=transport,
        path=path,
        tags=tags,
        meta=meta,
        check=check,
    )


def _check_order(own: Mapping[str, str]) -> list[str]:
    """The present label suffixes: known ones in contract order, meta sorted, unknown last."""
    before = [s for s in _BEFORE_META if s in own]
    meta = sorted(s for s in own if s.startswith(_META))
    after = [s for s in _AFTER_META if s in own]
    unknown = sorted(s for s in own if s not in KNOWN_LABELS and not s.startswith(_META))
    return before + meta + after + unknown


def _unknown_reason(suffix: str, prefix: str) -> str:
    known = [*KNOWN_LABELS[:9], "meta.<key>", *KNOWN_LABELS[9:]]
    hint = ""
    if len(suffix) <= 64:  # difflib is quadratic; hostile keys can be long
        close = difflib.get_close_matches(suffix, KNOWN_LABELS, n=1)
        if close:
            hint = f" (did you mean {prefix}{close[0]}?)"
    return f"unknown label{hint}; known: " + ", ".join(prefix + k for k in known)


def _show(text: str, limit: int = 40) -> str:
    """A value quoted for a reason: repr() so control characters stay visible, and short."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _parse_port(text: str) -> int | None:
    if not _PORT.fullmatch(text):
        return None
    port = int(text)
    return port if port <= 65535 else None


def _name(container: Container, own: Mapping[str, str], prefix: str) -> str:
    raw = own.get("name")
    if raw is not None:
        if not _DNS_LABEL.fullmatch(raw):
            raise _Bad("name", raw, _DNS_RULE)
        return raw
    derived = container.name.removeprefix("mcp-").lower()
    if not _DNS_LABEL.fullmatch(derived):
        raise _Bad(
            "name",
            derived,
            f"container name {_show(container.name)} does not give a valid service name "
            f"({_DNS_RULE}): set {prefix}name",
        )
    return derived


def _port(container: Container, own: Mapping[str, str], prefix: str) -> int:
    raw = own.get("port")
    if raw is not None:
        port = _parse_port(raw)
        if port is None:
            raise _Bad("port", raw, _PORT_RULE)
        return port
    exposed = sorted(p for p in container.exposed_tcp if 1 <= p <= 65535)
    if not exposed:
        raise _Bad("port", "", f"no exposed TCP port: set {prefix}port")
    if len(exposed) > 1:
        shown = ", ".join(str(p) for p in exposed[:10]) + (", ..." if len(exposed) > 10 else "")
        raise _Bad("port", "", f"several exposed TCP ports ({shown}): set {prefix}port")
    return exposed[0]


def _host_port(own: Mapping[str, str], settings: Settings) -> int | None:
    raw = own.get("host_port")
    if raw is None:
        return None
    port = _parse_port(raw)
    if port is None:
        raise _Bad("host_port", raw, _PORT_RULE)
    if port not in settings.port_range:
        raise _Bad(
            "host_port",
            raw,
            f"must be inside the port pool BRIDGE_PORT_RANGE {settings.port_range}",
        )
    if port in settings.reserved_ports:
        raise _Bad("host_port", raw, f"port {port} is reserved (BRIDGE_RESERVED_PORTS)")
    return port


def _expose(
    container: Container, own: Mapping[str, str], settings: Settings, port: int, prefix: str
) -> ExposeMode:
    raw = own.get("expose")
    if raw is None:
        mode = settings.expose
    else:
        try:
            mode = ExposeMode(raw)
        except ValueError:
            choices = ", ".join(m.value for m in ExposeMode)
            raise _Bad("expose", raw, f"must be one of {choices}") from None
    publishes = any(b.host_port > 0 for b in container.published.get(port, ()))
    if mode is ExposeMode.AUTO:
        return ExposeMode.PUBLISHED if publishes else ExposeMode.PROXY
    if mode is ExposeMode.PUBLISHED and not publishes:
        reason = f"container does not publish port {port}"
        if raw is None:
            reason += f" (expose=published comes from BRIDGE_EXPOSE): set {prefix}expose"
        raise _Bad("expose", raw or "", reason)
    return mode


def _network(
    container: Container,
    own: Mapping[str, str],
    settings: Settings,
    expose: ExposeMode,
    prefix: str,
) -> tuple[str | None, str | None]:
    networks = container.networks
    choices = ", ".join(sorted(networks)) or "none"
    needed = expose is not ExposeMode.PUBLISHED
    raw = own.get("network")
    if raw is not None:
        if raw not in networks:
            raise _Bad(
                "network", raw, f"container is not on network {_show(raw)}; its networks: {choices}"
            )
        network = raw
    elif settings.network is not None:
        if settings.network not in networks:
            if not needed:
                return None, None
            raise _Bad(
                "network",
                "",
                f"container is not on network {_show(settings.network)} (BRIDGE_NETWORK); "
                f"its networks: {choices}: set {prefix}network",
            )
        network = settings.network
    elif len(networks) == 1:
        network = next(iter(networks))
    else:
        if not needed:
            return None, None
        if not networks:
            raise _Bad("network", "", "container is on no network")
        raise _Bad(
            "network", "", f"container is on several networks ({choices}): set {prefix}network"
        )
    address = networks[network]
    if not address:
        if needed:
            raise _Bad(
                "network",
                raw or "",
                f"container has no IP address on network {_show(network)} "
                f"(needed for expose={expose.value})",
            )
        return network, None
    return network, address


def _transport(own: Mapping[str, str]) -> Transport:
    raw = own.get("transport")
    if raw is None:
        return Transport.STREAMABLE_HTTP
    try:
        return Transport(raw)
    except ValueError:
        choices = ", ".join(t.value for t in Transport)
        raise _Bad("transport", raw, f"must be one of {choices}") from None


def _path(suffix: str, own: Mapping[str, str], default: str) -> str:
    raw = own.get(suffix)
    if raw is None:
        return default
    if len(raw) > MAX_PATH_CHARS or not _PATH.fullmatch(raw) or ".." in raw:
        raise _Bad(suffix, raw, _PATH_RULE)
    return raw


def _tags(own: Mapping[str, str]) -> tuple[str, ...]:
    raw = own.get("tags")
    if raw is None:
        return ()
    tags: list[str] = []
    for item in raw.split(","):
        tag = item.strip(_TAG_WHITESPACE)
        if not tag:
            continue
        if not _TAG.fullmatch(tag):
            raise _Bad("tags", raw, f"tag {_show(tag)} must be {_TAG_RULE}")
        # "mcp" is always the first tag; the registration code adds it.
        if tag != "mcp" and tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise _Bad("tags", raw, f"{len(tags)} tags; at most {MAX_TAGS}")
    return tuple(tags)


def _meta(own: Mapping[str, str], ordered: list[str], prefix: str) -> tuple[tuple[str, str], ...]:
    meta: list[tuple[str, str]] = []
    for suffix in ordered:
        if not suffix.startswith(_META):
            continue
        key, value = suffix[len(_META) :], own[suffix]
        if not _META_KEY.fullmatch(key):
            raise _Bad(suffix, value, f"meta key {_show(key)} must be {_META_KEY_RULE}")
        if key.lower().startswith("consul-"):
            raise _Bad(suffix, value, "meta keys starting with 'consul-' are reserved by Consul")
        if key in BRIDGE_META_KEYS:
            raise _Bad(suffix, value, f"meta key {key!r} is written by the bridge itself")
        if len(value) > MAX_META_VALUE_CHARS:
            raise _Bad(
                suffix,
                value,
                f"meta value is {len(value)} characters; at most {MAX_META_VALUE_CHARS}",
            )
        if any(unicodedata.category(ch) in _BAD_META_VALUE_CATEGORIES for ch in value):
            raise _Bad(suffix, value, "meta value must not contain control characters")
        meta.append((key, value))
    if len(meta) > MAX_META_KEYS:
        suffix = _META + meta[MAX_META_KEYS][0]
        raise _Bad(
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
        raise _Bad(suffix, raw, str(exc)) from None


def _check(own: Mapping[str, str], settings: Settings) -> CheckSpec:
    raw = own.get("check")
    if raw is None:
        kind = CheckKind.MCP
    else:
        try:
            kind = CheckKind(raw)
        except ValueError:
            choices = ", ".join(k.value for k in CheckKind)
            reason = f"must be one of {choices}"
            if raw.strip().lower() in _SCRIPT_LIKE:
                reason += "; labels may not make Consul run commands (no script checks)"
            raise _Bad("check", raw, reason) from None
    path = _path("check.path", own, DEFAULT_CHECK_PATH)

    interval = _duration("check.interval", own)
    if interval is None:
        interval = DEFAULT_INTERVAL
    elif not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise _Bad("check.interval", own["check.interval"], "must be between 1s and 24h")

    timeout = _duration("check.timeout", own)
    if timeout is None:
        # An interval below the default timeout brings the timeout down with it.
        timeout = min(DEFAULT_TIMEOUT, interval)
    elif not 0 < timeout <= interval:
        raise _Bad(
            "check.timeout",
            own["check.timeout"],
            f"must be above 0 and at most the check interval ({interval:g}s)",
        )

    deregister_after = _duration("check.deregister_after", own)
    if deregister_after is None:
        deregister_after = settings.deregister_after
    elif deregister_after < MIN_DEREGISTER_AFTER:
        raise _Bad(
            "check.deregister_after",
            own["check.deregister_after"],
            "must be at least 1m (Consul's minimum)",
        )
    return CheckSpec(
        kind=kind,
        path=path,
        interval=interval,
        timeout=timeout,
        deregister_after=deregister_after,
    )
