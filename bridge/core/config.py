"""Settings from the environment (and optionally an env file), validated once at start-up.

A bad value stops the program with one line per bad variable that names it, shows the
value and says what was expected: operators read it in a container log, not a traceback.
"""

from __future__ import annotations

import enum
import re
import socket
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BeforeValidator,
    ByteSize,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bridge.core.access import parse_networks
from bridge.core.durations import DurationError, parse_duration
from bridge.core.model import ExposeMode, PortRange, parse_port, parse_port_range
from bridge.pool.tiers import TierLayout, check_tiers, layout_for, parse_tiers

ENV_PREFIX = "BRIDGE_"


class PortScope(enum.StrEnum):
    NODE = "node"  # the pool is this host's
    CLUSTER = "cluster"  # one port per service name across the fleet (Consul KV)


class LogFormat(enum.StrEnum):
    CONSOLE = "console"
    JSON = "json"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def parse_port_set(value: Any) -> frozenset[int]:
    """`11111,11200-11210` -> the ports it names; empty text -> none."""
    if isinstance(value, frozenset | set):
        return frozenset(value)
    ports: set[int] = set()
    for item in str(value).split(","):
        item = item.strip()
        if not item:
            continue
        if "-" in item:
            span = parse_port_range(item)
            ports.update(range(span.low, span.high + 1))
        else:
            ports.add(parse_port(item))
    return frozenset(ports)


def parse_seconds(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return parse_duration(str(value))
    except DurationError as exc:
        raise ValueError(str(exc)) from None


Duration = Annotated[float, NoDecode, BeforeValidator(parse_seconds)]


def _parse_allow(value: Any) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    return tuple(str(n) for n in parse_networks(str(value)))


def _parse_names(value: Any) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    names = tuple(n.strip() for n in str(value).split(",") if n.strip())
    for name in names:
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", name):
            raise ValueError(f"{name!r} is not a service name (a DNS label)")
    return names


def _parse_origins(value: Any) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    origins = tuple(o.strip().rstrip("/") for o in str(value).split(",") if o.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            raise ValueError(f"{origin!r} is not an origin such as https://app.example.com")
    return origins


_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, populate_by_name=True
    )

    consul_url: str = "http://127.0.0.1:8500"
    # Consul's and Docker's own variables, honoured under their usual names.
    consul_http_token: str | None = Field(
        None, validation_alias=AliasChoices("CONSUL_HTTP_TOKEN", "consul_http_token")
    )
    consul_cacert: Path | None = Field(
        None, validation_alias=AliasChoices("CONSUL_CACERT", "consul_cacert")
    )
    consul_client_cert: Path | None = Field(
        None, validation_alias=AliasChoices("CONSUL_CLIENT_CERT", "consul_client_cert")
    )
    consul_client_key: Path | None = Field(
        None, validation_alias=AliasChoices("CONSUL_CLIENT_KEY", "consul_client_key")
    )
    docker_host: str | None = Field(
        None, validation_alias=AliasChoices("DOCKER_HOST", "docker_host")
    )

    node_id: str = Field(default_factory=socket.gethostname)
    advertise_address: str | None = None
    port_range: Annotated[PortRange, NoDecode, BeforeValidator(parse_port_range)] = PortRange(
        11100, 11999
    )
    reserved_ports: Annotated[frozenset[int], NoDecode, BeforeValidator(parse_port_set)] = (
        frozenset()
    )
    state_file: Path = Path("/var/lib/mcp-bridge/state.db")
    resync_interval: Duration = 30.0
    stale_after: Duration = 600.0
    deregister_after: Duration = 600.0
    expose: ExposeMode = ExposeMode.AUTO
    name_pattern: re.Pattern[str] = re.compile(r"^mcp-")
    label_prefix: str = "mcp."
    network: str | None = None
    listen_address: str = "0.0.0.0"
    http_addr: str = "127.0.0.1:9105"
    port_scope: PortScope = PortScope.NODE
    # name -> block of the range; validated against port_range below
    port_tiers: Annotated[
        tuple[tuple[str, PortRange], ...], NoDecode, BeforeValidator(parse_tiers)
    ] = ()
    # Access control for proxy-mode ports (forwarders), defaults for mcp.allow and
    # mcp.max_connections: no allow list lets every source in; 0 is no limit.
    allow: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_parse_allow)] = ()
    max_connections: int = Field(0, ge=0)
    tools_interval: Duration = 300.0
    kv_prefix: str = "mcp-bridge"
    log_format: LogFormat = LogFormat.CONSOLE
    log_level: LogLevel = LogLevel.INFO
    # Served stdio servers (mcp/stdio/): limits, and who may use the endpoints.
    stdio_max_message: ByteSize = Field(ByteSize(4 << 20), ge=1024)
    stdio_request_timeout: Duration = 300.0
    stdio_max_sessions: int = Field(1000, ge=1)
    stdio_session_idle: Duration = 1800.0
    allowed_origins: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_parse_origins)] = ()
    serve_token_file: Path | None = None
    serve_tls_cert: Path | None = None
    serve_tls_key: Path | None = None
    # The gateway (`mcp-bridge gateway`): where it serves, what, and to whom.
    gateway_addr: str = "127.0.0.1:9200"
    gateway_services: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_parse_names)] = ()
    gateway_allow: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_parse_allow)] = ()
    gateway_timeout: Duration = 300.0  # one call's longest wait for its instance
    gateway_ejection: Duration = 30.0  # an instance's first time out of balancing (Envoy's)

    @field_validator("consul_url")
    @classmethod
    def _consul_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL, e.g. http://127.0.0.1:8500")
        return value.rstrip("/")

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not _NODE_ID.fullmatch(value):
            raise ValueError("expected 1-63 characters of letters, digits, '.', '_' or '-'")
        return value

    @field_validator(
        "resync_interval",
        "tools_interval",
        "stdio_request_timeout",
        "stdio_session_idle",
        "gateway_timeout",
        "gateway_ejection",
    )
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("expected a duration above zero")
        return value

    @field_validator("label_prefix")
    @classmethod
    def _label_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", value):
            raise ValueError("expected a label prefix such as 'mcp.' (lower-case, no spaces)")
        return value

    @field_validator("kv_prefix")
    @classmethod
    def _kv_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", value):
            raise ValueError("expected a KV path such as mcp-bridge (no leading or trailing '/')")
        return value

    @field_validator("http_addr", "gateway_addr")
    @classmethod
    def _http_addr(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9105")
        parse_port(port)
        return value

    @field_validator("reserved_ports")
    @classmethod
    def _reserved_inside_range(cls, value: frozenset[int], info: Any) -> frozenset[int]:
        span: PortRange | None = info.data.get("port_range")
        if span is not None:
            outside = sorted(p for p in value if p not in span)
            if outside:
                raise ValueError(f"reserved port {outside[0]} is outside BRIDGE_PORT_RANGE {span}")
        return value

    @field_validator("port_tiers")
    @classmethod
    def _tiers_inside_range(
        cls, value: tuple[tuple[str, PortRange], ...], info: Any
    ) -> tuple[tuple[str, PortRange], ...]:
        span: PortRange | None = info.data.get("port_range")
        if span is not None:
            check_tiers(value, span)
        return value

    @model_validator(mode="after")
    def _serve_tls_pair(self) -> Settings:
        if (self.serve_tls_cert is None) != (self.serve_tls_key is None):
            raise ValueError(
                "BRIDGE_SERVE_TLS_CERT and BRIDGE_SERVE_TLS_KEY go together: set both or neither"
            )
        return self

    @property
    def tier_layout(self) -> TierLayout:
        """The range cut into BRIDGE_PORT_TIERS and the untiered rest."""
        return layout_for(self.port_range, self.port_tiers)

    @property
    def http_host_port(self) -> tuple[str, int]:
        host, _, port = self.http_addr.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def gateway_host_port(self) -> tuple[str, int]:
        host, _, port = self.gateway_addr.rpartition(":")
        return host.strip("[]"), int(port)


class SettingsError(Exception):
    """Bad settings; str() is one line per bad variable, ready to print."""


def _variable_for(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return ENV_PREFIX + field.upper()


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, an optional env file, then explicit overrides."""
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if not error["loc"]:  # a rule over several settings: the message names them
                lines.append(f"invalid settings: {message}")
                continue
            field = str(error["loc"][0])
            lines.append(
                f"invalid setting {_variable_for(field)}={error.get('input')!s:.200}: {message}"
            )
        raise SettingsError("\n".join(lines)) from None
