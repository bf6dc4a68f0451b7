"""The many-hosts stack (compose/cluster) seen from outside: Consul's HTTP API on a
server, Consul DNS, each host's Docker engine, and the invariant every fault test ends on.

Every host's engine is driven with `docker exec <host> docker ...`, which works even while
the host is cut from the stack's network."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.resolver

from tests.e2e.conftest import MCP_SERVER_IMAGE, ComposeStack, http_json, run
from tests.integration.conftest import mcp_initialize

HOSTS = {"host-a": 21, "host-b": 22}  # compose service (= node id) -> last octet
SERVERS = {"consul-server-1": 11, "consul-server-2": 12, "consul-server-3": 13}
PREFIX = "mcp-bridge"


@dataclass
class Cluster:
    stack: ComposeStack
    net: str  # the first three octets of the stack's /24

    def ip(self, service: str) -> str:
        return f"{self.net}.{({**HOSTS, **SERVERS})[service]}"

    # ---- Consul, through a server that is up -----------------------------------------

    def consul(self, path: str, server: str = "consul-server-1") -> Any:
        return http_json(f"http://{self.ip(server)}:8500{path}", timeout=5)

    def leader(self, ask: str = "consul-server-1") -> str | None:
        """The leader's compose service, or None while there is none."""
        found = self.consul("/v1/status/leader", ask)
        address = str(found).rpartition(":")[0]
        return next((s for s in SERVERS if self.ip(s) == address), None)

    def healthy(self, name: str, server: str = "consul-server-1") -> dict[str, int]:
        """Node -> port of the service's instances that pass every check."""
        entries = self.consul(f"/v1/health/service/{name}?passing", server)
        return {e["Node"]["Node"]: e["Service"]["Port"] for e in entries}

    def dns_srv(self, name: str, server: str = "consul-server-2") -> set[tuple[str, int]]:
        """address:port pairs of `<name>.service.consul` SRV, with a real resolver."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = [self.ip(server)], 8600
        answer = resolver.resolve(f"{name}.service.consul", "SRV", lifetime=5)
        addresses = {
            rrset.name.to_text(): rrset[0].address
            for rrset in answer.response.additional
            if rrset.rdtype == dns.rdatatype.A
        }
        return {(addresses[rr.target.to_text()], rr.port) for rr in answer}

    def kv(self, prefix: str) -> dict[str, tuple[Any, str | None]]:
        """Key -> (JSON value or None, the session holding its lock)."""
        try:
            entries = self.consul(f"/v1/kv/{prefix}?recurse")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return {}
            raise
        out: dict[str, tuple[Any, str | None]] = {}
        for e in entries:
            raw = base64.b64decode(e["Value"] or "")
            try:
                value = json.loads(raw) if raw else None
            except ValueError:
                value = None
            out[e["Key"]] = (value, e.get("Session"))
        return out

    def session_node(self, session: str) -> str | None:
        found = self.consul(f"/v1/session/info/{session}")
        return found[0]["Node"] if found else None

    # ---- the hosts' engines and bridges ------------------------------------------------

    def docker(self, host: str, *args: str) -> str:
        return run(["docker", "exec", self.stack.container(host), "docker", *args]).stdout

    def load_image(self, tar: Path) -> None:
        for host in HOSTS:
            with tar.open("rb") as stream:
                loaded = subprocess.run(
                    ["docker", "exec", "-i", self.stack.container(host), "docker", "load"],
                    stdin=stream,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
            assert loaded.returncode == 0, loaded.stderr

    def start_mcp(self, host: str, container: str, service: str) -> str:
        return self.docker(
            host, "run", "-d", "--restart", "unless-stopped", "--name", container,
            "--label", "mcp.enable=true", "--label", f"mcp.name={service}",
            "--label", "mcp.port=8000", "--label", "mcp.check.interval=2s",
            MCP_SERVER_IMAGE,
        ).strip()  # fmt: skip

    def running_mcp(self, host: str) -> dict[str, str]:
        """Container id -> name of the MCP containers running on the host."""
        out = self.docker(
            host, "ps", "--no-trunc", "--filter", "label=mcp.enable=true",
            "--format", "{{.ID}} {{.Names}}",
        )  # fmt: skip
        return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())

    def bridge_cli(self, host: str, *args: str) -> str:
        """`mcp-bridge ...` in the host's bridge container (works while the host is cut)."""
        bridge = self.stack.container(f"bridge-{host.removeprefix('host-')}")
        return run(["docker", "exec", bridge, "mcp-bridge", *args]).stdout

    def bridge_status(self, host: str, port: int = 9105) -> Any:
        return http_json(f"http://{self.ip(host)}:{port}/v1/status", timeout=5)

    # ---- the invariant ----------------------------------------------------------------

    def invariant(self) -> None:
        """Every running MCP container of every host has exactly one healthy instance, at
        its host's address and the fleet's port for its service, answering MCP; every
        instance and key a bridge owns sits on its own node."""
        names = [n for n, tags in self.consul("/v1/catalog/services").items() if "mcp" in tags]
        instances = [e for n in names for e in self.consul(f"/v1/health/service/{n}")]
        fleet = {
            key.rsplit("/", 1)[1]: value["port"]
            for key, (value, _) in self.kv(f"{PREFIX}/ports/service/").items()
        }
        for host in HOSTS:
            for cid, cname in self.running_mcp(host).items():
                mine = [e for e in instances if e["Service"]["Meta"].get("container_id") == cid]
                assert len(mine) == 1, f"{host}/{cname}: {len(mine)} instances"
                entry = mine[0]
                service = entry["Service"]
                assert all(c["Status"] == "passing" for c in entry["Checks"]), entry["Checks"]
                assert entry["Node"]["Node"] == host
                assert service["Address"] == self.ip(host)
                assert service["Port"] == fleet[service["Service"]], "not the fleet's port"
                answer = mcp_initialize(f"http://{service['Address']}:{service['Port']}/mcp")
                assert answer["serverInfo"]["name"] == "fixture-mcp"
        for entry in instances:
            meta = entry["Service"]["Meta"]
            assert meta["bridge_node"] == entry["Node"]["Node"], "registered by another bridge"
        keys = self.kv(f"{PREFIX}/")
        for host in HOSTS:  # each bridge holds its node id, and its uses of fleet ports
            assert f"{PREFIX}/{host}/owner" in keys, f"{host}'s bridge does not hold its node id"
            for entry in instances:
                if entry["Node"]["Node"] == host:
                    assert f"{PREFIX}/ports/users/{entry['Service']['Service']}/{host}" in keys
        for key, (_, session) in keys.items():
            parts = key.split("/")
            if parts[1] == "ports":
                if parts[2] == "users":  # users/<service>/<node>: locked by that node
                    assert session and self.session_node(session) == parts[4], key
            elif parts[2] == "owner":
                assert session and self.session_node(session) == parts[1], key
            else:  # <node>/<service id>/tools
                assert parts[2].startswith(f"{parts[1]}:"), key
        ports = list(fleet.values())
        assert len(ports) == len(set(ports)), f"one port for two services: {fleet}"
