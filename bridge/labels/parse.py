"""Container labels -> ServiceSpec, or one LabelError naming the label that is wrong.

Pure functions over model data: no Docker, no Consul, no clock. Label values are hostile
input (anyone who can start a container writes them), so every value is checked against a
closed rule before it can reach a Consul payload, and the first rule broken is reported in a
fixed order so the same container always gets the same error. This module decides which
containers are managed and the labels that decide the endpoint (name, port, host port,
expose mode, network); labels/values.py holds the rules of the others.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from bridge.core.config import Settings
from bridge.core.model import Container, ExposeMode, LabelError, ServiceSpec, Transport
from bridge.labels import proxy, stdio, values
from bridge.labels.values import BRIDGE_META_KEYS, META, Bad, choice, show

__all__ = [
    "BRIDGE_META_KEYS",
    "KNOWN_LABELS",
    "MAX_VALUE_CHARS",
    "is_managed",
    "needs_stdin",
    "parse_labels",
]

MAX_VALUE_CHARS = 4096

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
    "tools",
    "tier",
    "allow",
    "max_connections",
)
_BEFORE_META = KNOWN_LABELS[: KNOWN_LABELS.index("tags") + 1]
_AFTER_META = KNOWN_LABELS[len(_BEFORE_META) :]

_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_DNS_RULE = (
    "must be a DNS label: lower-case letters, digits and '-', 1-63 characters, "
    "not starting or ending with '-'"
)
_PORT_RULE = "must be a port number 1-65535, digits only, no leading zeros or spaces"


def is_managed(container: Container, settings: Settings) -> bool:
    """Whether the bridge should look after this container at all.

    Any `enable` value other than `false` counts as asking to be managed: a malformed
    `enable` then surfaces as a LabelError in parse_labels instead of vanishing.
    """
    enable = container.labels.get(settings.label_prefix + "enable")
    if enable is not None:
        return enable != "false"
    return settings.name_pattern.search(container.name) is not None


def needs_stdin(container: Container, settings: Settings) -> bool:
    """Whether the pass must read this container's stdin settings (one inspect per
    container) before its labels can be judged: managed and maybe a stdio server."""
    return (
        container.running
        and container.stdin is None
        and is_managed(container, settings)
        and stdio.needs_stdin(container, settings.label_prefix)
    )


def parse_labels(container: Container, settings: Settings) -> ServiceSpec | LabelError | None:
    """None when unmanaged, else the validated spec or the first LabelError found."""
    if not is_managed(container, settings):
        return None
    try:
        return _parse(container, settings)
    except Bad as bad:
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
        raise Bad("enable", enable, "must be 'true' or 'false'")
    for suffix in ordered:
        value = own[suffix]
        if len(value) > MAX_VALUE_CHARS:
            raise Bad(suffix, value, f"value is {len(value)} characters; at most {MAX_VALUE_CHARS}")
    # Typos first: `mcp.prot` silently ignored would surface as a misleading port error.
    for suffix in ordered:
        if suffix not in KNOWN_LABELS and not suffix.startswith(META):
            raise Bad(suffix, own[suffix], _unknown_reason(suffix, prefix))

    name = _name(container, own, prefix)
    if stdio.wants_stdio(container, own):
        return _parse_stdio(container, own, ordered, settings, name)
    port = _port(container, own, prefix)
    host_port = _host_port(own, settings)
    expose = _expose(container, own, settings, port, prefix)
    if host_port is not None and expose is not ExposeMode.PROXY:
        raise Bad(
            "host_port",
            own["host_port"],
            f"applies only to expose=proxy, and expose is {expose.value} here: "
            f"remove {prefix}host_port or set {prefix}expose=proxy",
        )
    network, address = _network(container, own, settings, expose, prefix)
    transport = values.transport(own)
    path = values.path("path", own, values.DEFAULT_PATH)
    tags = values.tags(own)
    meta = values.meta(own, ordered, prefix)
    check = values.check(own, settings)
    tools = values.tools(own)
    tier = proxy.tier(own, settings, expose, host_port, prefix)
    access = proxy.access(own, settings, expose, prefix)
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
        tools=tools,
        tier=tier,
        access=access,
    )


def _parse_stdio(
    container: Container,
    own: Mapping[str, str],
    ordered: list[str],
    settings: Settings,
    name: str,
) -> ServiceSpec:
    """A stdio server: served by the bridge on a pool port, so always proxy (whatever
    BRIDGE_EXPOSE says), with no port or network of its own."""
    prefix = settings.label_prefix
    stdio.check(container, own, prefix)
    if "meta.scheme" in own:  # an HTTP server may say it serves TLS; this one is the bridge's
        raise Bad("meta.scheme", own["meta.scheme"], "for a stdio server it is written by the "
                  "bridge itself (https when BRIDGE_SERVE_TLS_CERT is set)")  # fmt: skip
    host_port = _host_port(own, settings)
    expose = ExposeMode.PROXY
    return ServiceSpec(
        container=container,
        name=name,
        port=0,
        expose=expose,
        host_port=host_port,
        network=None,
        address=None,
        transport=Transport.STDIO,
        path=values.path("path", own, values.DEFAULT_PATH),
        tags=values.tags(own),
        # served over HTTPS (BRIDGE_SERVE_TLS_*): said in Consul, where clients look it up
        meta=values.meta(own, ordered, prefix) + (values.HTTPS if settings.serve_tls_cert else ()),
        check=values.check(own, settings),
        tools=values.tools(own),
        tier=proxy.tier(own, settings, expose, host_port, prefix),
        access=proxy.access(own, settings, expose, prefix),
    )


def _check_order(own: Mapping[str, str]) -> list[str]:
    """The present label suffixes: known ones in contract order, meta sorted, unknown last."""
    before = [s for s in _BEFORE_META if s in own]
    meta = sorted(s for s in own if s.startswith(META))
    after = [s for s in _AFTER_META if s in own]
    unknown = sorted(s for s in own if s not in KNOWN_LABELS and not s.startswith(META))
    return before + meta + after + unknown


def _unknown_reason(suffix: str, prefix: str) -> str:
    known = [*KNOWN_LABELS[:9], "meta.<key>", *KNOWN_LABELS[9:]]
    hint = ""
    if len(suffix) <= 64:  # difflib is quadratic; hostile keys can be long
        close = difflib.get_close_matches(suffix, KNOWN_LABELS, n=1)
        if close:
            hint = f" (did you mean {prefix}{close[0]}?)"
    return f"unknown label{hint}; known: " + ", ".join(prefix + k for k in known)


def _parse_port(text: str) -> int | None:
    if not _PORT.fullmatch(text):
        return None
    port = int(text)
    return port if port <= 65535 else None


def _name(container: Container, own: Mapping[str, str], prefix: str) -> str:
    raw = own.get("name")
    if raw is not None:
        if not _DNS_LABEL.fullmatch(raw):
            raise Bad("name", raw, _DNS_RULE)
        return raw
    derived = container.name.removeprefix("mcp-").lower()
    if not _DNS_LABEL.fullmatch(derived):
        raise Bad(
            "name",
            derived,
            f"container name {show(container.name)} does not give a valid service name "
            f"({_DNS_RULE}): set {prefix}name",
        )
    return derived


def _port(container: Container, own: Mapping[str, str], prefix: str) -> int:
    raw = own.get("port")
    if raw is not None:
        port = _parse_port(raw)
        if port is None:
            raise Bad("port", raw, _PORT_RULE)
        return port
    exposed = sorted(p for p in container.exposed_tcp if 1 <= p <= 65535)
    if not exposed:
        hint = ""
        if container.stdin is not None and not container.stdin.open:
            hint = " (a stdio server: start it with -i)"
        raise Bad("port", "", f"no exposed TCP port: set {prefix}port{hint}")
    if len(exposed) > 1:
        shown = ", ".join(str(p) for p in exposed[:10]) + (", ..." if len(exposed) > 10 else "")
        raise Bad("port", "", f"several exposed TCP ports ({shown}): set {prefix}port")
    return exposed[0]


def _host_port(own: Mapping[str, str], settings: Settings) -> int | None:
    raw = own.get("host_port")
    if raw is None:
        return None
    port = _parse_port(raw)
    if port is None:
        raise Bad("host_port", raw, _PORT_RULE)
    if port not in settings.port_range:
        raise Bad(
            "host_port",
            raw,
            f"must be inside the port pool BRIDGE_PORT_RANGE {settings.port_range}",
        )
    if port in settings.reserved_ports:
        raise Bad("host_port", raw, f"port {port} is reserved (BRIDGE_RESERVED_PORTS)")
    return port


def _expose(
    container: Container, own: Mapping[str, str], settings: Settings, port: int, prefix: str
) -> ExposeMode:
    raw = own.get("expose")
    mode = settings.expose if raw is None else choice("expose", raw, ExposeMode)
    publishes = any(b.host_port > 0 for b in container.published.get(port, ()))
    if mode is ExposeMode.AUTO:
        return ExposeMode.PUBLISHED if publishes else ExposeMode.PROXY
    if mode is ExposeMode.PUBLISHED and not publishes:
        reason = f"container does not publish port {port}"
        if raw is None:
            reason += f" (expose=published comes from BRIDGE_EXPOSE): set {prefix}expose"
        raise Bad("expose", raw or "", reason)
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
            raise Bad(
                "network", raw, f"container is not on network {show(raw)}; its networks: {choices}"
            )
        network = raw
    elif settings.network is not None:
        if settings.network not in networks:
            if not needed:
                return None, None
            raise Bad(
                "network",
                "",
                f"container is not on network {show(settings.network)} (BRIDGE_NETWORK); "
                f"its networks: {choices}: set {prefix}network",
            )
        network = settings.network
    elif len(networks) == 1:
        network = next(iter(networks))
    else:
        if not needed:
            return None, None
        if not networks:
            raise Bad("network", "", "container is on no network")
        raise Bad(
            "network", "", f"container is on several networks ({choices}): set {prefix}network"
        )
    address = networks[network]
    if not address:
        if needed:
            raise Bad(
                "network",
                raw or "",
                f"container has no IP address on network {show(network)} "
                f"(needed for expose={expose.value})",
            )
        return network, None
    return network, address
