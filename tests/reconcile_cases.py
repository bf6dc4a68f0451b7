"""What the reconciler tests share: a fixed clock and staleness, probe meta, settings, and
the builders that turn hand-made containers into specs and registrations via the real
label parser and endpoint resolution.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.core.config import Settings
from bridge.core.model import Container, PortBinding, Registration, ServiceSpec
from bridge.core.registration import build_registration, resolve_endpoint
from bridge.labels.parse import parse_labels
from tests.builders import ADVERTISE, NODE, make_container, make_settings

NOW = 1_000_000.0
STALE_AFTER = 600.0
PROBE = {
    "mcp_server_name": "probe-server",
    "mcp_server_version": "1.2.3",
    "mcp_protocol_version": "2025-03-26",
}
SETTINGS = make_settings()


def make_spec(container: Container, settings: Settings = SETTINGS) -> ServiceSpec:
    result = parse_labels(container, settings)
    assert isinstance(result, ServiceSpec), result
    return result


def spec_for(name: str = "mcp-x", **kwargs: Any) -> ServiceSpec:
    return make_spec(make_container(name, **kwargs))


def proxy_spec(name: str = "mcp-x", **labels: str) -> ServiceSpec:
    return spec_for(name, labels={"mcp.expose": "proxy", **labels})


def published_spec(
    *bindings: PortBinding, name: str = "mcp-x", labels: Mapping[str, str] | None = None
) -> ServiceSpec:
    return spec_for(name, labels=labels, published={8080: bindings})


def register(spec: ServiceSpec, pool_port: int | None = 11100, **kw: Any) -> Registration:
    return build_registration(spec, resolve_endpoint(spec, pool_port, ADVERTISE), NODE, **kw)
