"""The README's run command, as a user types it: scripts/run.sh."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def test_run_script_and_the_readmes_first_mcp_container(
    docker_client: docker.DockerClient, mcp_server_image: str, tmp_path: Path
) -> None:
    """scripts/run.sh as typed, then the README's first example: a real MCP server run
    with no labels (managed by its name) turns passing in Consul's health API, and a
    server that does not speak MCP shows its reason in the catalog at once."""
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
    containers: list[Any] = []
    try:
        wait_for("agent ready", lambda: _ready(http), timeout=600)
        name = f"readme-only-{os.getpid()}"
        listening = _Watch()
        containers.append(docker_client.containers.run(mcp_server_image, name=name, detach=True))
        ran = time.monotonic()
        address = wait_for("container address", lambda: _address(docker_client, name))
        listening.start(lambda: _accepts(address, 8000))
        sid = f"{node}:{name}"
        wait_for("in Consul", lambda: sid in consul_get("/v1/agent/services"))
        in_consul = time.monotonic() - ran
        passing = wait_for("passing", lambda: consul_get(f"/v1/health/service/{name}?passing"))
        passed = time.monotonic()
        check = {c["CheckID"]: c for c in passing[0]["Checks"]}[f"{sid}:mcp"]
        assert "MCP 2026-07-28 OK" in check["Output"], check
        assert listening.at is not None
        print(
            f"first MCP container: in Consul {in_consul:.3f}s after `docker run` returned,"
            f" passing {passed - ran:.2f}s after it, {passed - listening.at:.2f}s after the"
            " server started listening"
        )
        # And in the Consul UI's data source: the catalog the UI reads.
        assert any(e["ServiceID"] == sid for e in consul_get(f"/v1/catalog/service/{name}"))
        with urllib.request.urlopen(consul_url() + "/ui/", timeout=10) as ui:
            assert ui.status == 200 and b"<html" in ui.read().lower()

        # busybox httpd answers 501 to an MCP POST: critical, with the reason in the
        # catalog (where the UI reads it), not only in the agent's own view.
        bad = f"readme-only-httpd-{os.getpid()}"
        containers.append(
            docker_client.containers.run(
                IMAGE,
                ["httpd", "-f", "-p", "8080"],
                name=bad,
                labels={"mcp.port": "8080", TEST_LABEL: "1"},
                detach=True,
            )
        )

        def reason_in_catalog() -> str | None:
            for entry in consul_get(f"/v1/health/service/{bad}"):
                for c in entry["Checks"]:
                    if c["CheckID"].endswith(":mcp") and c["Output"]:
                        return str(c["Output"])
            return None

        assert "501" in wait_for("the reason in the catalog", reason_in_catalog)

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0
        # Registrations stay after a clean stop: the container still runs.
        assert sid in consul_get("/v1/agent/services")
    finally:
        if agent.poll() is None:
            agent.kill()
        for container in containers:
            container.remove(force=True)
        for sid in [s for s in consul_get("/v1/agent/services") if s.startswith(node + ":")]:
            consul_put(f"/v1/agent/service/deregister/{sid}")
        log.close()


class _Watch:
    """When a condition first held, polled every 10 ms in a thread."""

    def __init__(self) -> None:
        self.at: float | None = None

    def start(self, condition: Callable[[], bool]) -> None:
        def poll() -> None:
            deadline = time.monotonic() + 120
            while self.at is None and time.monotonic() < deadline:
                if condition():
                    self.at = time.monotonic()
                time.sleep(0.01)

        threading.Thread(target=poll, daemon=True).start()


def _address(client: docker.DockerClient, name: str) -> str | None:
    container = client.containers.get(name)
    networks = container.attrs["NetworkSettings"]["Networks"]
    return next((n["IPAddress"] for n in networks.values() if n["IPAddress"]), None)


def _accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _ready(http: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
