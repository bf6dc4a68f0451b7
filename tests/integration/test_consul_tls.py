"""Consul over mutual TLS with ACLs default-deny, and the least-privilege token the README
gives: it works; a wrong CA, an expired client certificate and a token without rights each
give a clear error naming the cause, leave the previous registrations alone, and mending
the files or the token is enough: no restart."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Bridge, free_tcp_port, wait_for
from tests.pki import Authority

MASTER = "7c1f6c0e-5a3b-4f44-9b0c-2a7d0f6e8b21"
# The policy docs/operations.md gives, with this test's node id.
POLICY = """
service_prefix "" { policy = "write" }
key_prefix "mcp-bridge/%s/" { policy = "write" }
key_prefix "mcp-bridge/ports/" { policy = "write" }
session_prefix "" { policy = "write" }
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

    def token(self, node_id: str, *, with_rights: bool) -> dict[str, Any]:
        policies = []
        if with_rights:
            policy = self.api("PUT", "/v1/acl/policy", {"Name": f"mcp-bridge-{node_id}",
                                                        "Rules": POLICY % node_id})  # fmt: skip
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


def test_mutual_tls_and_a_least_privilege_token(bridge: Bridge, tls_consul: TLSConsul) -> None:
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
    wait_for("registered", lambda: f"{node}:{bridge.tag}a" in tls_consul.services(node))
    wait_for("TTL reported", lambda: bridge.agent.status()["managed"][0]["check_status"])
    assert bridge.agent.events("node_id_claimed"), "the policy lacks what the claim needs"
    bridge.agent.stop()

    # 1. A CA that did not sign Consul's certificate.
    shutil.copy(tls_consul.other_ca.pem, ca_file)
    bridge.agent.start(wait_ready=False)
    wait_for("a clear TLS error", lambda: failures(bridge, "does not verify against CONSUL_CACERT"))
    assert tls_consul.services(node) == {f"{node}:{bridge.tag}a"}
    shutil.copy(tls_consul.ca.pem, ca_file)  # mended in place
    wait_for("ready again, no restart", bridge.agent.ready)
    bridge.run("b", labels=labels)
    wait_for("b registered", lambda: len(tls_consul.services(node)) == 2)
    bridge.agent.stop()

    # 2. An expired client certificate.
    expired = tls_consul.ca.issue("expired", server=False, expired=True)
    shutil.copy(expired.cert, cert)
    shutil.copy(expired.key, key)
    bridge.agent.start(wait_ready=False)
    said = wait_for("a clear TLS error", lambda: failures(bridge, "client certificate"))
    assert "expired" in str(said[-1]["error"]), said[-1]
    assert len(tls_consul.services(node)) == 2
    shutil.copy(client.cert, cert)
    shutil.copy(client.key, key)
    wait_for("ready again, no restart", bridge.agent.ready)
    bridge.agent.stop()

    # 3. A token without rights.
    rightless = tls_consul.token(node, with_rights=False)
    bridge.agent.env["CONSUL_HTTP_TOKEN"] = rightless["SecretID"]
    bridge.agent.start(wait_ready=False)
    said = wait_for("a clear ACL error", lambda: failures(bridge, "lacks a permission"))
    assert "Permission denied" in str(said[-1]["error"])
    assert len(tls_consul.services(node)) == 2
    policy_id = token["Policies"][0]["ID"]
    tls_consul.api(
        "PUT", f"/v1/acl/token/{rightless['AccessorID']}", {"Policies": [{"ID": policy_id}]}
    )
    wait_for("ready again, no restart", bridge.agent.ready)
    assert len(tls_consul.services(node)) == 2


def test_the_readme_policy_is_the_one_tested() -> None:
    readme = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    for line in POLICY.strip().splitlines():
        assert line.replace("%s", "<node id>") in readme, line
