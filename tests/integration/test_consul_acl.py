"""CONSUL_HTTP_TOKEN against a real Consul with ACLs on (default deny), and doctor."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Bridge, free_tcp_port, wait_for

TOKEN = "0b6e3c8e-4f1a-4d2b-9a47-5f7c2d1e9b10"


@pytest.fixture
def acl_consul(services: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A second Consul dev agent, ACLs on and default deny, on ports of its own."""
    consul = shutil.which("consul")
    assert consul, "scripts/local-services.sh up installs consul"
    http = free_tcp_port()
    config = tmp_path / "acl.hcl"
    config.write_text(
        f'acl {{ enabled = true\n default_policy = "deny"\n tokens {{ master = "{TOKEN}" }} }}\n'
    )
    ports = [free_tcp_port() for _ in range(4)]
    proc = subprocess.Popen(
        [
            consul,
            "agent",
            "-dev",
            "-client",
            "127.0.0.1",
            "-bind",
            "127.0.0.1",
            "-node",
            f"acl-{os.getpid()}",
            "-http-port",
            str(http),
            "-dns-port",
            "-1",
            "-grpc-port",
            "-1",
            "-serf-lan-port",
            str(ports[0]),
            "-serf-wan-port",
            str(ports[1]),
            "-server-port",
            str(ports[2]),
            "-config-file",
            str(config),
        ],
        stdout=(tmp_path / "consul.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{http}"

    def leader() -> bool:
        with urllib.request.urlopen(url + "/v1/status/leader", timeout=2) as r:
            return len(r.read()) > 2

    try:
        wait_for("ACL consul leader", leader)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _agent_services(url: str) -> dict[str, object]:
    request = urllib.request.Request(url + "/v1/agent/services", headers={"X-Consul-Token": TOKEN})
    with urllib.request.urlopen(request, timeout=5) as r:
        import json

        return dict(json.load(r))


def test_token_is_honoured_and_its_absence_is_a_clear_error(
    bridge: Bridge, acl_consul: str
) -> None:
    bridge.agent.env.update({"BRIDGE_CONSUL_URL": acl_consul, "CONSUL_HTTP_TOKEN": TOKEN})
    bridge.agent.start()
    bridge.run("secured")
    sid = f"{bridge.agent.node_id}:{bridge.tag}secured"
    wait_for("registered with the token", lambda: sid in _agent_services(acl_consul))
    bridge.agent.stop()

    del bridge.agent.env["CONSUL_HTTP_TOKEN"]
    bridge.agent.start(wait_ready=False)
    failed = wait_for(
        "refused without a token", lambda: bridge.agent.events("consul_register_failed")
    )
    assert failed[0]["service_id"] == sid
    assert "Consul refused it" in failed[0]["error"] and "denied" in failed[0]["error"].lower()
    assert not bridge.agent.status()["ready"]


def test_doctor_passes_against_the_real_services(bridge: Bridge) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "doctor"],
        capture_output=True,
        text=True,
        env={**os.environ, **bridge.agent.env},
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    docker:" in result.stdout and "ok    consul:" in result.stdout
