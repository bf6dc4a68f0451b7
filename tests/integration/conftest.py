"""Integration tests: the real Docker engine and the real Consul agent, no mocks.

scripts/local-services.sh starts both when nothing answers (it is what `.ci/run` and the
README's commands use). Missing services are a failure, never a skip.

Each test's agent runs as a real `python -m bridge run` process with its own label
prefix, name pattern, node id, port range, state file and HTTP port, so tests cannot
see each other's containers even if a clean-up failed.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import secrets
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration.agent_process import WAIT as WAIT
from tests.integration.agent_process import AgentProcess
from tests.integration.agent_process import wait_for as wait_for

ROOT = Path(__file__).parents[2]
SERVICES = ROOT / "scripts" / "local-services.sh"
IMAGE = "mcp-bridge/busybox:local"
TEST_LABEL = "mcp-bridge-test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def local_services_up() -> dict[str, str]:
    """`scripts/local-services.sh up`: Docker and Consul answer (started here when none
    does); returns the environment it prints (DOCKER_HOST, BRIDGE_CONSUL_URL)."""
    result = subprocess.run(
        [str(SERVICES), "up"], capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, f"local services failed to start:\n{result.stderr[-3000:]}"
    env: dict[str, str] = {}
    for line in result.stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'\"")
    return env


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    """Docker + Consul up (started if needed) and the busybox image built."""
    env = local_services_up()
    os.environ.update(env)
    built = subprocess.run(
        [str(SERVICES), "busybox-image"], capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return env


@pytest.fixture(scope="session")
def docker_client(services: dict[str, str]) -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    for c in client.containers.list(all=True, filters={"label": TEST_LABEL}):
        _remove(c)
    client.close()


def _remove(container: Any) -> None:
    # Another clean-up (or --rm) may be removing it already: gone is what we want.
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            raise


def consul_url() -> str:
    return os.environ.get("BRIDGE_CONSUL_URL", "http://127.0.0.1:8500")


def consul_get(path: str) -> Any:
    with urllib.request.urlopen(consul_url() + path, timeout=10) as response:
        return json.load(response)


def consul_put(path: str, body: Any = None) -> None:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(consul_url() + path, data=data, method="PUT")
    with urllib.request.urlopen(request, timeout=10):
        pass


def mcp_initialize(url: str) -> dict[str, Any]:
    """POST an MCP `initialize` as a streamable-HTTP client does; the JSON-RPC result.

    The server may answer with JSON or with an SSE stream carrying the response."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "mcp-bridge-e2e", "version": "0"},
        },
    }
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        kind = response.headers.get("Content-Type", "")
        text = response.read().decode()
    if kind.startswith("text/event-stream"):
        messages = [
            json.loads(line.removeprefix("data:"))
            for line in text.splitlines()
            if line.startswith("data:") and line.removeprefix("data:").strip()
        ]
    else:
        messages = [json.loads(text)]
    replies = [m for m in messages if isinstance(m, dict) and m.get("id") == 1]
    assert replies, f"no reply to initialize from {url}: {text[:500]!r}"
    assert "result" in replies[0], f"initialize failed at {url}: {replies[0]!r}"
    return dict(replies[0]["result"])


def http_status(address: str, port: int, path: str = "/") -> int:
    """The status of one GET: any status means something answered at address:port."""
    connection = http.client.HTTPConnection(address, port, timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Each world's pool gets 50 ports of 21000-25999, below the ephemeral range and the
# benchmarks' 28000; worlds run one after another, so the 101st reuses the first's.
_range_counter = itertools.cycle(range(100))


@dataclass
class Bridge:
    """One test's world: its agent, its label prefix, its containers, its Consul view."""

    docker: docker.DockerClient
    agent: AgentProcess
    prefix: str  # label prefix, e.g. "it3f2a."
    tag: str  # container name prefix, e.g. "it3f2a-"

    def labels(self, dotted: dict[str, str] | None = None, **plain: str) -> dict[str, str]:
        """Labels under this test's prefix: labels(enable="true", port="8080") or, for
        names with dots, labels({"check.interval": "1s"})."""
        merged = {**(dotted or {}), **plain}
        return {TEST_LABEL: "1", **{self.prefix + k: v for k, v in merged.items()}}

    def run(self, name: str, *, labels: dict[str, str] | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("command", ["httpd", "-f", "-p", "8080"])
        return self.docker.containers.run(
            IMAGE,
            name=self.tag + name,
            labels=labels if labels is not None else self.labels(enable="true", port="8080"),
            detach=True,
            **kwargs,
        )

    def run_mcp_standin(
        self, name: str, www: Path, *, dotted: dict[str, str] | None = None, **labels: Any
    ) -> Any:
        """busybox httpd serving tests/fixtures/cgi_mcp.sh at /cgi-bin/mcp; creating
        `www/broken` makes it stop speaking MCP while still answering HTTP."""
        (www / "cgi-bin").mkdir(parents=True, exist_ok=True)
        script = www / "cgi-bin" / "mcp"
        script.write_bytes((ROOT / "tests" / "fixtures" / "cgi_mcp.sh").read_bytes())
        script.chmod(0o755)
        plain = {"enable": "true", "port": "8080", "path": "/cgi-bin/mcp", **labels}
        extra = {k: v for k, v in plain.items() if not isinstance(v, str)}
        return self.run(
            name,
            labels=self.labels(
                {"check.interval": "1s", "check.timeout": "1s", **(dotted or {})},
                **{k: v for k, v in plain.items() if isinstance(v, str)},
            ),
            command=["httpd", "-f", "-p", "8080", "-h", "/www"],
            volumes={str(www): {"bind": "/www", "mode": "ro"}},
            **extra,
        )

    def check(self, container: str) -> dict[str, Any] | None:
        """The Consul check of this container's service, if any."""
        sid = f"{self.agent.node_id}:{self.tag}{container}"
        found = [c for c in consul_get("/v1/agent/checks").values() if c["ServiceID"] == sid]
        return found[0] if found else None

    def services(self) -> dict[str, dict[str, Any]]:
        """Our node's services in the local Consul agent."""
        return {
            sid: s
            for sid, s in consul_get("/v1/agent/services").items()
            if (s.get("Meta") or {}).get("bridge_node") == self.agent.node_id
        }

    def service(self, container: str) -> dict[str, Any] | None:
        return self.services().get(f"{self.agent.node_id}:{self.tag}{container}")


@contextlib.contextmanager
def bridge_world(
    docker_client: docker.DockerClient,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Bridge]:
    """One test's agent (not started) and everything it makes, removed afterwards; its
    log printed when the test failed."""
    token = secrets.token_hex(3)
    base = 21000 + 50 * next(_range_counter)
    env = {
        "BRIDGE_NODE_ID": f"it-{token}",
        "BRIDGE_LABEL_PREFIX": f"it{token}.",
        "BRIDGE_NAME_PATTERN": f"^it{token}-",
        "BRIDGE_STATE_FILE": str(tmp_path / "state" / "state.db"),
        "BRIDGE_PORT_RANGE": f"{base}-{base + 49}",
        "BRIDGE_HTTP_ADDR": f"127.0.0.1:{free_tcp_port()}",
        "BRIDGE_ADVERTISE_ADDRESS": "127.0.0.1",
        "BRIDGE_RESYNC_INTERVAL": "2s",
        "BRIDGE_STALE_AFTER": "3s",
        "BRIDGE_LOG_FORMAT": "json",
        "BRIDGE_LOG_LEVEL": "debug",
        "BRIDGE_CONSUL_URL": consul_url(),
        **(extra_env or {}),
    }
    marker = request.node.get_closest_marker("bridge_env")
    if marker:
        env.update(marker.args[0])
    agent = AgentProcess(env, tmp_path / "agent.log")
    world = Bridge(docker_client, agent, env["BRIDGE_LABEL_PREFIX"], f"it{token}-")
    try:
        yield world
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.kill()
        with contextlib.suppress(docker.errors.DockerException):
            for c in docker_client.containers.list(all=True, filters={"name": world.tag}):
                _remove(c)
        for sid in list(world.services()):
            consul_put(f"/v1/agent/service/deregister/{sid}")
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            # Without the per-pass debug lines, which would crowd out what happened.
            lines = [
                line
                for line in agent.logs().splitlines()
                if "reconcile_done" not in line and "docker_event" not in line
            ]
            print("\n".join(lines)[-12000:])


@pytest.fixture
def bridge(
    docker_client: docker.DockerClient, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Bridge]:
    with bridge_world(docker_client, tmp_path, request) as world:
        yield world


def build_image(name: str) -> str:
    """One of scripts/build-local-images.sh's images, built when missing or stale."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-local-images.sh"), name],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return f"mcp-bridge/{name}:local"


@pytest.fixture(scope="session")
def mcp_server_image(services: dict[str, str]) -> str:
    """mcp-bridge/mcp-server:local, a real MCP server on the official SDK (2.x: both
    protocol eras), built here."""
    return build_image("mcp-server")


@pytest.fixture(scope="session")
def mcp_server_time_image(services: dict[str, str]) -> str:
    """mcp-bridge/mcp-server-time:local: the MCP project's reference time server from
    PyPI, a stdio server that exposes no port."""
    return build_image("mcp-server-time")


@pytest.fixture(scope="session")
def mcp_server_git_image(services: dict[str, str]) -> str:
    """mcp-bridge/mcp-server-git:local: the MCP project's reference git server from PyPI,
    a stdio server over the image's own repository at /repo."""
    return build_image("mcp-server-git")


@pytest.fixture(scope="session")
def mcp_server_npm_image(services: dict[str, str]) -> str:
    """mcp-bridge/mcp-server-npm:local: the MCP project's reference stdio servers from npm
    (server-everything by default, server-memory), on Node."""
    return build_image("mcp-server-npm")


@pytest.fixture(scope="session")
def mcp_server_v1_image(services: dict[str, str]) -> str:
    """mcp-bridge/mcp-server-v1:local: the same server on the SDK's 1.x line, which speaks
    only the `initialize` handshake."""
    return build_image("mcp-server-v1")
