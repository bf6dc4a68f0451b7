"""What Consul holds about MCP services in the whole datacenter, for people and clients:
`mcp-bridge services` and `mcp-bridge client-config`.

Read from the catalog's health API (every node, every bridge, anything tagged `mcp`),
with each instance's tool list from the KV record its bridge keeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from bridge.consul.client import ConsulClient
from bridge.core.model import tools_key
from bridge.core.net import url_host
from bridge.core.protocols import ConsulRejected, ConsulUnavailable

MCP_TAG = "mcp"
_RANK = {"passing": 0, "warning": 1, "critical": 2}


@dataclass(slots=True)
class Instance:
    service: str
    service_id: str
    node: str
    address: str
    port: int
    health: str  # passing | warning | critical: the worst of its checks
    transport: str
    path: str
    protocol: str
    tools: int | None
    bridge_node: str | None
    url: str
    tool_names: list[str] | None = field(default=None)
    served: bool = False  # a stdio server the bridge serves (container_transport=stdio)
    protected: bool = False  # behind MCP authorization (mcp_auth=required)

    @property
    def healthy(self) -> bool:
        """As Consul DNS sees it: every instance but a critical one."""
        return self.health != "critical"


def instance_of(entry: Mapping[str, Any]) -> Instance:
    """One /v1/health/service entry (Node, Service, Checks) as an Instance."""
    node = entry.get("Node") or {}
    svc = entry.get("Service") or {}
    meta = svc.get("Meta") or {}
    statuses = [str(c.get("Status")) for c in entry.get("Checks") or ()]
    health = max(statuses, key=lambda s: _RANK.get(s, 2), default="passing")
    address = str(svc.get("Address") or node.get("Address") or "")
    port = int(svc.get("Port") or 0)
    path = str(meta.get("path") or "/mcp")
    tools = meta.get("mcp_tools")
    return Instance(
        service=str(svc.get("Service", "")),
        service_id=str(svc.get("ID", "")),
        node=str(node.get("Node", "")),
        address=address,
        port=port,
        health=health if health in _RANK else "critical",
        transport=str(meta.get("transport") or "streamable-http"),
        path=path,
        protocol=str(meta.get("mcp_protocol_version") or ""),
        tools=int(tools) if isinstance(tools, str) and tools.isdigit() else None,
        bridge_node=meta.get("bridge_node"),
        url=f"{'https' if meta.get('scheme') == 'https' else 'http'}://{url_host(address)}:{port}{path}",
        served=meta.get("container_transport") == "stdio",
        protected=meta.get("mcp_auth") == "required",
    )


async def read_instances(
    consul: ConsulClient, names: Iterable[str] = (), *, with_tools: bool = False
) -> list[Instance]:
    """Every instance of every MCP service (or of `names`), sorted by service and node."""
    wanted = set(names)
    services = await consul.catalog_services()
    instances: list[Instance] = []
    for name, tags in sorted(services.items()):
        if MCP_TAG not in tags or (wanted and name not in wanted):
            continue
        instances.extend(instance_of(e) for e in await consul.health_service(name))
    if with_tools:
        for instance in instances:
            instance.tool_names = await _tool_names(consul, instance)
    return sorted(instances, key=lambda i: (i.service, i.node, i.service_id))


async def _tool_names(consul: ConsulClient, instance: Instance) -> list[str] | None:
    if not instance.bridge_node:
        return None
    key = tools_key(consul.kv_prefix, instance.bridge_node, instance.service_id)
    try:
        raw = await consul.kv_get(key)
    except (ConsulUnavailable, ConsulRejected):
        return None
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return [str(t.get("name")) for t in record.get("tools") or () if isinstance(t, dict)]


def rows(instances: Iterable[Instance]) -> list[dict[str, Any]]:
    return [asdict(i) for i in instances]


def client_config(
    instances: Iterable[Instance], *, per_instance: bool = False, token: str | None = None
) -> dict[str, Any]:
    """The `mcpServers` JSON MCP clients read: one entry per service (its healthiest
    instance), or with `per_instance` one per instance, for healthy instances only.
    `token`: BRIDGE_SERVE_TOKEN_FILE's, sent to the stdio servers bridges serve."""
    healthy = sorted(
        (i for i in instances if i.healthy),
        key=lambda i: (i.service, _RANK[i.health], i.node, i.service_id),
    )
    servers: dict[str, dict[str, Any]] = {}
    for instance in healthy:
        name = instance.service
        if per_instance:
            name = f"{instance.service}@{instance.node}"
            n = 2
            while name in servers:
                name, n = f"{instance.service}@{instance.node}-{n}", n + 1
        elif name in servers:
            continue
        kind = "sse" if instance.transport == "sse" else "http"
        servers[name] = {"type": kind, "url": instance.url}
        if token is not None and instance.served:
            servers[name]["headers"] = {"Authorization": f"Bearer {token}"}
    return {"mcpServers": servers}
