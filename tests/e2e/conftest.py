"""End-to-end tests: the compose stacks of compose/, brought up as a user would.

Everything is built here, with no container registry: the local Docker engine
(scripts/local-services.sh), the images (scripts/build-local-images.sh: Consul, DinD, the
bridge from the repository's Dockerfile, the fixture MCP server) and Compose v2
(scripts/install-compose.sh). A missing piece is a failure, never a skip.

Each stack gets a unique project name and host ports of its own (below the kernel's
ephemeral range and apart from the integration tests' 21000-25999), and is torn down with
`docker compose down -v --remove-orphans` even when the test fails; the stack's logs are
printed then. Traffic goes only to loopback and to the containers these tests create.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import local_services_up
from tests.integration.conftest import wait_for as shared_wait_for

ROOT = Path(__file__).parents[2]
SCRIPTS = ROOT / "scripts"
COMPOSE_DIR = ROOT / "compose"
WAIT = 120.0  # a liveness bound for polling, not a timing assertion

CONSUL_IMAGE = "mcp-bridge/consul:local"
DIND_IMAGE = "mcp-bridge/dind:local"
BRIDGE_IMAGE = "mcp-bridge/bridge:local"
MCP_SERVER_IMAGE = "mcp-bridge/mcp-server:local"
LOCAL_IMAGES = {
    "CONSUL_IMAGE": CONSUL_IMAGE,
    "DIND_IMAGE": DIND_IMAGE,
    "BRIDGE_IMAGE": BRIDGE_IMAGE,
    "MCP_EXAMPLE_IMAGE": MCP_SERVER_IMAGE,
}
# Variables a compose file reads: none may leak in from the environment the tests run in
# (e.g. BRIDGE_CONSUL_URL from scripts/local-services.sh).
_COMPOSE_VARIABLE_PREFIXES = ("BRIDGE_", "CONSUL_", "COMPOSE_", "DIND_", "MCP_", "HAPROXY_")
_COMPOSE_VARIABLES = ("HOST_BIND_IP", "DOCKER_GID", "DOCKER_SOCKET")


def run(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited with {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = WAIT) -> Any:
    return shared_wait_for(what, predicate, timeout, interval=0.25)


def http_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port_block(size: int) -> int:
    """The first port of `size` consecutive free ports between 17000 and 18999: below the
    ephemeral range (32768-) and apart from the integration tests' pools (21000-25999)."""
    for _ in range(100):
        base = 17000 + 20 * secrets.randbelow(95)
        if all(port_is_free(p) for p in range(base, base + size)):
            return base
    raise AssertionError(f"no {size} consecutive free ports found between 17000 and 18999")


def healthy_service(consul: str, name: str) -> list[dict[str, Any]] | None:
    """The service's instances when there is one and every check on it passes."""
    entries: list[dict[str, Any]] = http_json(f"{consul}/v1/health/service/{name}")
    if not entries:
        return None
    for entry in entries:
        if not entry["Checks"] or any(c["Status"] != "passing" for c in entry["Checks"]):
            return None
    return entries


@dataclass
class ComposeStack:
    """One `docker compose` project: these files, this project name, these variables."""

    files: list[Path]
    project: str
    variables: dict[str, str]
    up_seconds: float | None = None
    _env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(_COMPOSE_VARIABLE_PREFIXES) and k not in _COMPOSE_VARIABLES
        }
        self._env = {**clean, **self.variables}

    @property
    def env(self) -> dict[str, str]:
        """The environment its commands run with: these variables, no leaks from ours."""
        return dict(self._env)

    def compose(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        files = [a for f in self.files for a in ("-f", str(f))]
        return run(
            ["docker", "compose", "--ansi", "never", "-p", self.project, *files, *args],
            env=self._env,
            timeout=timeout,
            check=check,
        )

    def up(self) -> None:
        started = time.monotonic()
        # --pull never, --no-build: the images are the local ones built for the test
        self.compose(
            "up", "-d", "--wait", "--wait-timeout", "240", "--pull", "never", "--no-build",
            timeout=400,
        )  # fmt: skip
        self.up_seconds = time.monotonic() - started
        print(f"{self.project}: `docker compose up -d --wait` took {self.up_seconds:.1f}s")

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).stdout.split()
        assert len(ids) == 1, f"expected one container for {service}, got {ids}"
        return ids[0]

    def address(self, service: str) -> str:
        """The container's address on the project's network."""
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        found = run(["docker", "inspect", "-f", fmt, self.container(service)]).stdout.split()
        assert found, f"{service} has no address"
        return found[0]

    def logs(self) -> str:
        result = self.compose(
            "logs", "--no-color", "--timestamps", "--tail", "300", timeout=120, check=False
        )
        return result.stdout + result.stderr

    def down(self) -> None:
        """Everything the project made goes, even if the engine hiccups once."""
        last: subprocess.CompletedProcess[str] | None = None
        for _ in range(3):
            last = self.compose(
                "down", "-v", "--remove-orphans", "--timeout", "10", timeout=300, check=False
            )
            left = run(
                [
                    "docker", "ps", "-aq",
                    "--filter", f"label=com.docker.compose.project={self.project}",
                ],
                check=False,
            )  # fmt: skip
            if last.returncode == 0 and not left.stdout.strip():
                return
            time.sleep(2)
        assert last is not None
        raise AssertionError(f"`docker compose down` of {self.project} failed:\n{last.stderr}")


@pytest.fixture(scope="session")
def e2e_tools() -> dict[str, str]:
    """A Docker engine, the local images and Compose v2, each made here when missing."""
    started = time.monotonic()
    env = local_services_up()
    if "DOCKER_HOST" in env:
        os.environ["DOCKER_HOST"] = env["DOCKER_HOST"]
    built = run(
        [
            str(SCRIPTS / "build-local-images.sh"),
            "python",
            "mcp-server",
            "consul",
            "dind",
            "bridge",
        ],
        timeout=2400,
    )
    print(built.stdout)
    compose = run([str(SCRIPTS / "install-compose.sh")], timeout=600)
    print(
        f"docker compose {compose.stdout.strip()}; tools ready in {time.monotonic() - started:.1f}s"
    )
    return env


def failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "rep_call", None)
    return report is None or bool(report.failed)


@pytest.fixture
def stack_guard(request: pytest.FixtureRequest) -> Iterator[list[ComposeStack]]:
    """Stacks a test registers here are torn down after it, their logs printed if it failed."""
    stacks: list[ComposeStack] = []
    yield stacks
    for stack in stacks:
        try:
            if failed(request):
                print(f"===== logs of {stack.project} =====\n{stack.logs()}")
        finally:
            stack.down()
