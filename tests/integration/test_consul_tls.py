"""Consul over mutual TLS with ACLs default-deny, and the least-privilege token the README
gives: it works (services, TTL checks, the node-id lock, an MCP server's tool record in
KV); a wrong CA, an expired client certificate and a token without rights each give a
clear error naming the cause, leave the previous registrations and records alone through
several failed passes, and mending the files or the token is enough: no restart."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.integration.conftest import Bridge, free_tcp_port, wait_for
from tests.integration.gateway_process import GatewayProcess
from tests.pki import Authority

MASTER = "7c1f6c0e-5a3b-4f44-9b0c-2a7d0f6e8b21"
# The policy README.md gives (and docs/operations.md), with this test's node id.
POLICY = """
service_prefix "" { policy = "write" }
key_prefix "mcp-bridge/%s/" { policy = "write" }
key_prefix "mcp-bridge/ports/" { policy = "write" }
session_prefix "" { policy = "write" }
"""
# The gateway's (README.md, docs/gateway.md): it only reads.
GATEWAY_POLICY = """
service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
key_prefix "mcp-bridge/" { policy = "read" }
"""


class TLSConsul:
    def __init__(self, root: Path) -> None:
        self.ca, self.other_ca = Authority(root / "ca", "ca"), Authority(root / "other", "other")
        self.server = self.ca.issue("consul", server=True)
        self.admin = self.ca.issue("admin", server=False)
        self.port = free_tcp_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.root = root

    def start(self) -> None:
        consul = shutil.which("consul")
        assert consul, "scripts/local-services.sh up installs consul"
        serf_lan, serf_wan, server = (free_tcp_port() for _ in range(3))
        config = self.root / "consul.hcl"
        config.write_text(
            f"""
ports {{ http = -1  https = {self.port}  dns = -1  grpc = -1
         serf_lan = {serf_lan}  serf_wan = {serf_wan}  server = {server} }}
ca_file = "{self.ca.pem}"
cert_file = "{self.server.cert}"
key_file = "{self.server.key}"
verify_incoming_https = true
acl {{ enabled = true  default_policy = "deny"  tokens {{ master = "{MASTER}" }} }}
"""
        )
        self.proc = subprocess.Popen(
            [consul, "agent", "-dev", "-client", "127.0.0.1", "-bind", "127.0.0.1",
             "-node", f"tls-{os.getpid()}", "-config-file", str(config)],
            stdout=(self.root / "consul.log").open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for("TLS consul leader", lambda: len(self.api("GET", "/v1/status/leader")) > 2)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        context = ssl.create_default_context(cafile=str(self.ca.pem))
        context.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"X-Consul-Token": MASTER}
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def token(self, node_id: str, *, with_rights: bool, rules: str | None = None) -> dict[str, Any]:
        policies = []
        if with_rights:
            named = {"Name": f"mcp-bridge-{node_id}", "Rules": rules or POLICY % node_id}
            policy = self.api("PUT", "/v1/acl/policy", named)
            policies = [{"ID": policy["ID"]}]
        return dict(self.api("PUT", "/v1/acl/token", {"Policies": policies}))

    def services(self, node_id: str) -> set[str]:
        return {
            sid
            for sid, s in self.api("GET", "/v1/agent/services").items()
            if (s.get("Meta") or {}).get("bridge_node") == node_id
        }

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def tls_consul(services: dict[str, str], tmp_path: Path) -> Iterator[TLSConsul]:
    consul = TLSConsul(tmp_path / "pki")
    try:
        consul.start()
        yield consul
    finally:
        consul.stop()


def failures(bridge: Bridge, words: str) -> list[dict[str, Any]]:
    said = bridge.agent.events("reconcile_failed") + bridge.agent.events("consul_register_failed")
    return [e for e in said if words in str(e.get("error"))]


FAILED_PASSES = 3  # a misconfiguration must be outlasted, not only its first pass


def start_failing(bridge: Bridge, words: str) -> list[dict[str, Any]]:
    """Start the agent and wait until FAILED_PASSES of its passes have failed and its
    failures said `words`; those of this start (the log outlives a restart)."""
    earlier_passes = len(bridge.agent.events("reconcile_failed"))
    earlier_said = len(failures(bridge, words))
    bridge.agent.start(wait_ready=False)

    def failed() -> list[dict[str, Any]] | None:
        passes = bridge.agent.events("reconcile_failed")[earlier_passes:]
        said = failures(bridge, words)[earlier_said:]
        return said if said and len(passes) >= FAILED_PASSES else None

    return list(wait_for(f"{FAILED_PASSES} failed passes saying {words!r}", failed))


def test_mutual_tls_and_a_least_privilege_token(
    bridge: Bridge, tls_consul: TLSConsul, mcp_server_image: str
) -> None:
    node = bridge.agent.node_id
    ca_file, cert, key = (bridge.agent.log_path.parent / n for n in ("ca.pem", "c.pem", "k.pem"))
    client = tls_consul.ca.issue("bridge", server=False)
    shutil.copy(tls_consul.ca.pem, ca_file)
    shutil.copy(client.cert, cert)
    shutil.copy(client.key, key)
    token = tls_consul.token(node, with_rights=True)
    bridge.agent.env.update(
        {
            "BRIDGE_CONSUL_URL": tls_consul.url,
            "CONSUL_CACERT": str(ca_file),
            "CONSUL_CLIENT_CERT": str(cert),
            "CONSUL_CLIENT_KEY": str(key),
            "CONSUL_HTTP_TOKEN": token["SecretID"],
        }
    )
    labels = bridge.labels(enable="true", port="8080", check="docker")  # a TTL check too
    bridge.agent.start()  # ready: it listed its KV prefix and its services, so it may
    bridge.run("a", labels=labels)
    # A real MCP server: its tool record goes to KV, under the policy's key_prefix.
    bridge.docker.containers.run(
        mcp_server_image,
        name=bridge.tag + "m",
        detach=True,
        labels=bridge.labels(
            {"check.interval": "2s", "check.timeout": "2s"},
            enable="true",
            port="8000",
            expose="proxy",
        ),
    )
    ours = {f"{node}:{bridge.tag}{name}" for name in ("a", "m")}
    wait_for("registered", lambda: tls_consul.services(node) == ours)

    def managed_checks() -> bool:
        managed = bridge.agent.status()["managed"]
        return len(managed) == 2 and all(m["check_status"] for m in managed)

    wait_for("TTLs reported", managed_checks)
    record = wait_for("the tool record in KV", lambda: tools_record(tls_consul, node, bridge))
    assert [t["name"] for t in record["tools"]] == ["echo"], record
    meta = tls_consul.api("GET", "/v1/agent/services")[f"{node}:{bridge.tag}m"]["Meta"]
    assert record["hash"] == meta["mcp_tools_hash"]
    assert bridge.agent.events("node_id_claimed"), "the policy lacks what the claim needs"
    bridge.agent.stop()

    # 1. A CA that did not sign Consul's certificate.
    shutil.copy(tls_consul.other_ca.pem, ca_file)
    start_failing(bridge, "does not verify against CONSUL_CACERT")
    assert tls_consul.services(node) == ours
    shutil.copy(tls_consul.ca.pem, ca_file)  # mended in place
    wait_for("ready again, no restart", bridge.agent.ready)
    bridge.run("b", labels=labels)
    ours.add(f"{node}:{bridge.tag}b")
    wait_for("b registered", lambda: tls_consul.services(node) == ours)
    bridge.agent.stop()

    # 2. An expired client certificate.
    expired = tls_consul.ca.issue("expired", server=False, expired=True)
    shutil.copy(expired.cert, cert)
    shutil.copy(expired.key, key)
    said = start_failing(bridge, "client certificate")
    assert "expired" in str(said[-1]["error"]), said[-1]
    assert tls_consul.services(node) == ours
    shutil.copy(client.cert, cert)
    shutil.copy(client.key, key)
    wait_for("ready again, no restart", bridge.agent.ready)
    bridge.agent.stop()

    # 3. A token without rights.
    rightless = tls_consul.token(node, with_rights=False)
    bridge.agent.env["CONSUL_HTTP_TOKEN"] = rightless["SecretID"]
    said = start_failing(bridge, "lacks a permission")
    assert "Permission denied" in str(said[-1]["error"])
    assert tls_consul.services(node) == ours
    assert tools_record(tls_consul, node, bridge) == record
    policy_id = token["Policies"][0]["ID"]
    tls_consul.api(
        "PUT", f"/v1/acl/token/{rightless['AccessorID']}", {"Policies": [{"ID": policy_id}]}
    )
    wait_for("ready again, no restart", bridge.agent.ready)
    assert tls_consul.services(node) == ours


def tools_record(consul: TLSConsul, node: str, bridge: Bridge) -> dict[str, Any]:
    """The MCP server's tool record, read with the management token."""
    (item,) = consul.api("GET", f"/v1/kv/mcp-bridge/{node}/{node}:{bridge.tag}m/tools")
    return dict(json.loads(base64.b64decode(item["Value"])))


def hcl_blocks(markdown: str) -> list[str]:
    """The ```hcl blocks of a Markdown text, each without its fences."""
    return re.findall(r"^```hcl\n(.*?)^```$", markdown, flags=re.MULTILINE | re.DOTALL)


def test_the_readme_policy_is_the_one_tested() -> None:
    root = Path(__file__).parents[2]
    tested = POLICY.strip() % "<node id>"
    readme = hcl_blocks((root / "README.md").read_text())
    assert readme, "README.md gives no ```hcl policy"
    assert readme[0].strip() == tested
    assert readme[1].strip() == GATEWAY_POLICY.strip()  # the gateway's, next to it
    (gateway_doc,) = hcl_blocks((root / "docs" / "gateway.md").read_text())
    assert gateway_doc.strip() == GATEWAY_POLICY.strip()
    # docs/operations.md gives it too, when it does: the same.
    for block in hcl_blocks((root / "docs" / "operations.md").read_text()):
        if "key_prefix" in block:
            assert block.strip() == tested


def test_the_gateway_reads_through_tls_with_its_least_privilege_token(
    bridge: Bridge, tls_consul: TLSConsul, mcp_server_image: str, tmp_path: Path
) -> None:
    node = bridge.agent.node_id
    pki = {n: tmp_path / f"{n}.pem" for n in ("ca", "c", "k")}
    client = tls_consul.ca.issue("bridge", server=False)
    for name, source in (("ca", tls_consul.ca.pem), ("c", client.cert), ("k", client.key)):
        shutil.copy(source, pki[name])
    tls = {"CONSUL_CACERT": str(pki["ca"]), "CONSUL_CLIENT_CERT": str(pki["c"]),
           "CONSUL_CLIENT_KEY": str(pki["k"])}  # fmt: skip
    agent_token = tls_consul.token(node, with_rights=True)["SecretID"]
    bridge.agent.env.update(
        {"BRIDGE_CONSUL_URL": tls_consul.url, "CONSUL_HTTP_TOKEN": agent_token, **tls}
    )
    bridge.agent.start()
    bridge.docker.containers.run(
        mcp_server_image,
        name=bridge.tag + "m",
        detach=True,
        labels=bridge.labels(
            {"check.interval": "2s", "check.timeout": "2s"},
            enable="true",
            port="8000",
            expose="proxy",
        ),
    )
    wait_for("the tool record in KV", lambda: tools_record(tls_consul, node, bridge))
    token = tls_consul.token(f"gateway-{node}", with_rights=True, rules=GATEWAY_POLICY)
    gateway = GatewayProcess.for_services(
        [f"{bridge.tag}m"], tmp_path / "gateway.log",
        BRIDGE_CONSUL_URL=tls_consul.url, CONSUL_HTTP_TOKEN=token["SecretID"], **tls,
    )  # fmt: skip
    try:
        gateway.start()
        wait_for("the union", lambda: gateway.status()["tools"] == 1, timeout=90)

        async def call() -> str:
            async with Client(gateway.url) as mcp:
                said = await mcp.call_tool(f"{bridge.tag}m__echo", {"text": "through tls"})
                return str(said.content[0].text)  # type: ignore[union-attr]

        assert asyncio.run(call()) == "through tls"
        assert gateway.status()["consul_error"] is None
    finally:
        gateway.stop()
