"""The README's run command, as a user types it: scripts/run.sh."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import docker

from tests.integration.conftest import (
    IMAGE,
    ROOT,
    TEST_LABEL,
    consul_get,
    consul_put,
    consul_url,
    free_tcp_port,
    wait_for,
)


def test_run_script_brings_up_the_agent_and_a_container_appears_in_consul(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    node = f"readme-{os.getpid()}"
    http = f"127.0.0.1:{free_tcp_port()}"
    env = {
        **os.environ,
        "BRIDGE_NODE_ID": node,
        "BRIDGE_STATE_FILE": str(tmp_path / "state.db"),
        "BRIDGE_HTTP_ADDR": http,
        "BRIDGE_ADVERTISE_ADDRESS": "127.0.0.1",
        "BRIDGE_PORT_RANGE": "21950-21959",
        "BRIDGE_NAME_PATTERN": "^readme-only-",  # leave other tests' containers alone
    }
    log = (tmp_path / "run.log").open("wb")
    agent = subprocess.Popen(
        [str(ROOT / "scripts" / "run.sh")], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    container = None
    try:
        wait_for("agent ready", lambda: _ready(http), timeout=600)
        container = docker_client.containers.run(
            IMAGE,
            ["httpd", "-f", "-p", "8080"],
            name=f"readme-{os.getpid()}",
            labels={"mcp.enable": "true", "mcp.port": "8080", TEST_LABEL: "1"},
            detach=True,
        )
        started = time.monotonic()
        sid = f"{node}:readme-{os.getpid()}"
        wait_for("in Consul", lambda: sid in consul_get("/v1/agent/services"))
        print(f"container visible in Consul {time.monotonic() - started:.3f}s after run returned")
        # And in the Consul UI's data source: the catalog the UI reads.
        service = consul_get("/v1/agent/services")[sid]["Service"]
        assert any(e["ServiceID"] == sid for e in consul_get(f"/v1/catalog/service/{service}"))
        with urllib.request.urlopen(consul_url() + "/ui/", timeout=10) as ui:
            assert ui.status == 200 and b"<html" in ui.read().lower()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0
        # Registrations stay after a clean stop: the container still runs.
        assert sid in consul_get("/v1/agent/services")
    finally:
        if agent.poll() is None:
            agent.kill()
        if container is not None:
            container.remove(force=True)
        for sid in [s for s in consul_get("/v1/agent/services") if s.startswith(node + ":")]:
            consul_put(f"/v1/agent/service/deregister/{sid}")
        log.close()


def _ready(http: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
